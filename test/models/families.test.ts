// Every model family qkd runs, on its real config.json scaled down: the
// config loads as Hugging Face means it, the forward pass equals an
// independent float64 implementation of the published modeling code, the
// checkpoint round-trips, KV-cached generation equals the full forward, and
// the GGUF export runs in llama.cpp with the same logits.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FAMILY_FIXTURES, randomizeModel, realConfigJson, referenceLogits, scaledConfig } from '../helpers/families.js';
import { configFromHfJson, loadLlama, saveLlama } from '../../src/models/llama-io.js';
import { KvCache, LlamaModel } from '../../src/models/llama.js';
import { llamaGgufMetadata, llamaGgufTensors, loadLlamaGguf } from '../../src/models/llama-gguf.js';
import { writeGguf } from '../../src/io/gguf-writer.js';
import { tokenizerGgufMetadata } from '../../src/data/tokenizer-gguf.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { llamaCppLogits } from '../../src/eval/llama-cpp.js';
import { noGrad } from '../../src/tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-families-'));
const T = 12;
const sequence = (seed: number, V: number) => Array.from({ length: T }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % V);

function logits(model: LlamaModel, ids: number[]): Float32Array {
  return noGrad(() => model.forward(Int32Array.from(ids), 1, ids.length)).data as Float32Array;
}

/** max |a − b| over max |b|. */
function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

describe('real config.json files load as their families', () => {
  it('each family field is read as Hugging Face reads it', () => {
    const c = (name: Parameters<typeof realConfigJson>[0]) => configFromHfJson(realConfigJson(name), name);
    assert.equal(c('smollm2-135m').head_dim, 64);
    assert.deepEqual(c('llama-3.2-1b').rope_scaling, { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
    const qwen25 = c('qwen2.5-0.5b');
    assert.equal(qwen25.model_type, 'qwen2');
    assert.equal(qwen25.sliding_window, null, 'use_sliding_window false: no window');
    assert.equal(c('qwen3-0.6b').head_dim, 128);
    const gemma3 = c('gemma-3-270m');
    assert.equal(gemma3.hidden_act, 'gelu_pytorch_tanh');
    assert.equal(gemma3.sliding_window, 512);
    assert.deepEqual(gemma3.layer_types!.slice(0, 6), ['sliding_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention', 'sliding_attention', 'full_attention']);
    assert.equal(gemma3.rope_local_base_freq, 10000);
    assert.equal(gemma3.tie_word_embeddings, true);
    const gemma2 = c('gemma-2-2b');
    assert.equal(gemma2.attn_logit_softcapping, 50);
    assert.equal(gemma2.final_logit_softcapping, 30);
    assert.equal(gemma2.layer_types![0], 'sliding_attention');
    assert.equal(gemma2.layer_types![1], 'full_attention');
    assert.equal(c('phi-3-mini-4k').sliding_window, 2047);
    assert.equal(c('mistral-7b-v0.3').head_dim, 128);
  });
});

describe('model families against an independent float64 forward', () => {
  for (const name of FAMILY_FIXTURES) {
    it(`${name}: logits equal the reference; checkpoint round-trip; KV-cached steps equal the full forward`, () => {
      const config = scaledConfig(name);
      const model = new LlamaModel(config);
      randomizeModel(model, 7);
      const ids = sequence(3, config.vocab_size);
      const ours = logits(model, ids);
      const ref = referenceLogits(config, (n) => model.arena.get(n).data as Float32Array, ids);
      const flat = new Float64Array(T * config.vocab_size);
      ref.forEach((row, t) => flat.set(row, t * config.vocab_size));
      const err = relativeError(ours, flat);
      assert.ok(err < 1e-4, `${name}: relative error ${err}`);

      const path = join(dir, name);
      saveLlama(path, model);
      const back = loadLlama(path);
      assert.deepEqual(back.config, model.config);
      assert.deepEqual(Array.from(logits(back, ids)), Array.from(ours));

      // Prompt of 5 tokens, then one token at a time through the cache.
      const cache = new KvCache(config);
      const V = config.vocab_size;
      const first = noGrad(() => model.forward(Int32Array.from(ids.slice(0, 5)), 1, 5, { cache })).data;
      assert.ok(relativeError(first, ours.subarray(0, 5 * V)) < 1e-5);
      for (let t = 5; t < T; t++) {
        const step = noGrad(() => model.forward(Int32Array.of(ids[t]!), 1, 1, { cache })).data;
        assert.ok(relativeError(step, ours.subarray(t * V, (t + 1) * V)) < 1e-5, `${name}: cached step ${t}`);
      }
    });
  }
});

describe('model families through GGUF in llama.cpp', () => {
  for (const name of FAMILY_FIXTURES) {
    it(`${name}: qkd reads its GGUF back exactly, and llama.cpp's logits equal qkd's (F32, ≤ 1e-3 relative)`, async () => {
      const config = scaledConfig(name, 256);
      const model = new LlamaModel(config);
      randomizeModel(model, 11);
      const out = join(dir, `${name}.gguf`);
      // general.name is neutral: llama.cpp sets Phi-3 token attributes by the name and expects Phi-3's vocabulary then.
      writeGguf(out, { metadata: { ...llamaGgufMetadata(config, 'scaled'), ...tokenizerGgufMetadata(new ByteTokenizer(), 256) }, tensors: llamaGgufTensors(model, () => 'F32') });
      let reference = model;
      {
        const back = loadLlamaGguf(out);
        // GGUF stores no initializer_range, floats as f32, and Mistral as llama.cpp's llama architecture.
        // Phi-3's window is not applied by llama.cpp, so qkd reads its GGUF without one, to compute what llama.cpp computes.
        const comparable = (c: typeof config) => ({ ...c, initializer_range: 0, model_type: c.model_type === 'mistral' ? 'llama' : c.model_type, rms_norm_eps: Math.fround(c.rms_norm_eps), rope_theta: Math.fround(c.rope_theta), ...(c.model_type === 'phi3' ? { sliding_window: null } : {}) });
        assert.deepEqual(comparable(back.config), comparable(model.config));
        for (const e of model.arena.entries) {
          const a = e.tensor.data as Float32Array;
          const b = back.arena.get(e.name).data as Float32Array;
          assert.ok(relativeError(b, a) < 1e-6, `${e.name} read back`); // Gemma's stored 1 + w is rounded once
        }
        // llama.cpp does not apply Phi-3's window: what it runs is the model without one, as qkd reads it back.
        if (config.model_type === 'phi3') reference = back;
      }
      const ids = sequence(5, 256);
      const ours = logits(reference, ids);
      const theirs = await llamaCppLogits(out, ids, 256);
      // llama.cpp warns that it does not apply Phi-3's window; every other family loads without a warning.
      if (name === 'phi-3-mini-4k') assert.match(theirs.warnings.join('\n'), /Phi SWA is currently disabled/);
      else assert.deepEqual(theirs.warnings, []);
      const flat = new Float32Array(T * 256);
      theirs.logits.forEach((row, t) => flat.set(row, t * 256));
      const err = relativeError(flat, ours);
      assert.ok(err < 1e-3, `${name}: llama.cpp vs qkd relative error ${err}`);
    });
  }
});
