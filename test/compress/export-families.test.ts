// The GGUF export of every family against llama.cpp's own quantizer: the
// same ggml type for every tensor and the same bytes, and llama.cpp runs
// qkd's file as qkd reads it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomizeModel, scaledConfig, type FamilyFixture } from '../helpers/families.js';
import { llamaQuantize } from '../helpers/llama-quantize.js';
import { LlamaModel } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { loadModelAny } from '../../src/models/load-any.js';
import { saveTokenizerJson } from '../../src/data/bpe.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { exportGguf } from '../../src/compress/export-gguf.js';
import { openGguf } from '../../src/io/gguf-reader.js';
import { llamaCppLogits } from '../../src/eval/llama-cpp.js';
import { noGrad } from '../../src/tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-export-families-'));
const FAMILIES: FamilyFixture[] = ['qwen2.5-0.5b', 'qwen3-0.6b', 'gemma-2-2b', 'gemma-3-270m', 'phi-3-mini-4k', 'llama-3.2-1b'];

describe('GGUF export of every family against llama.cpp', () => {
  for (const name of FAMILIES) {
    for (const type of ['Q4_K_M', 'Q3_K_M'] as const) {
      it(`${name} ${type}: every tensor of llama.cpp's type and bytes; llama.cpp runs it as qkd reads it`, async () => {
        const model = new LlamaModel(scaledConfig(name, 256, 64, 'quant'));
        // Weights of a trained model's scale (std 1/√width), so activations stay in the range Q8_K rounding is made for.
        randomizeModel(model, 3, 1 / 16);
        const path = join(dir, `${name}-${type}`);
        saveLlama(path, model);
        saveTokenizerJson(join(path, 'tokenizer.json'), new ByteTokenizer());
        // A neutral general.name: llama.cpp sets Phi-3 token attributes by name.
        const f32 = join(dir, `${name}-${type}-F32.gguf`);
        exportGguf(path, { out: f32, type: 'F32', name: 'scaled' });
        const theirs = join(dir, `${name}-${type}-llama.gguf`);
        llamaQuantize(f32, theirs, type);
        const ours = join(dir, `${name}-${type}-qkd.gguf`);
        exportGguf(path, { out: ours, type, name: 'scaled' });
        const a = openGguf(ours);
        const b = openGguf(theirs);
        try {
          assert.deepEqual(a.tensors.map((t) => t.name).sort(), b.tensors.map((t) => t.name).sort());
          for (const t of a.tensors) {
            const u = b.tensors.find((x) => x.name === t.name)!;
            assert.equal(t.typeName, u.typeName, `${t.name}: qkd ${t.typeName}, llama.cpp ${u.typeName}`);
            assert.ok(Buffer.from(a.readBytes(t.name)).equals(Buffer.from(b.readBytes(t.name))), `${t.name} (${t.typeName}) bytes`);
          }
        } finally {
          a.close();
          b.close();
        }
        const ids = Array.from({ length: 16 }, (_, i) => (i * 37 + 11) % 256);
        const back = loadModelAny(ours);
        const qkdLogits = noGrad(() => back.forward(Int32Array.from(ids), 1, ids.length)).data;
        const { logits } = await llamaCppLogits(ours, ids, 256);
        const f32Logits = noGrad(() => model.forward(Int32Array.from(ids), 1, ids.length)).data;
        // Root-mean-square distances of logits: llama.cpp from qkd on the same quantized file, and quantization itself (qkd's quantized from float).
        let engines = 0;
        let quantization = 0;
        logits.forEach((row, t) => row.forEach((v, i) => {
          engines += (v - qkdLogits[t * 256 + i]!) ** 2;
          quantization += (qkdLogits[t * 256 + i]! - f32Logits[t * 256 + i]!) ** 2;
        }));
        // llama.cpp multiplies K-quant weights by activations it rounds to 8 bits (Q8_K): close, not equal; far closer than quantization moves the model.
        const ratio = Math.sqrt(engines / quantization);
        assert.ok(ratio < 0.25, `${name} ${type}: llama.cpp differs from qkd by ${ratio.toFixed(3)} of what quantization changes`);
      });
    }
  }
});
