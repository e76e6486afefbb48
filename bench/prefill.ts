/**
 * Teacher forward against llama.cpp's prompt processing, same F32 model,
 * same threads, one run: tokens per second of one forward over a prompt of
 * T tokens (batch 1, no gradients: what a frozen teacher does per window).
 * qkd runs LlamaModel.forward; llama.cpp runs the model's F32 GGUF (written
 * by qkd export) through node-llama-cpp, evaluating the prompt into an
 * empty context without generating (F32 keys and values, no flash
 * attention, as qkd's llama.cpp teacher uses it). Random weights (the speed
 * does not depend on them) and a byte vocabulary, on two bodies: the
 * reference preset (width 256, 6 layers) and SmolLM2-135M's (width 576,
 * 30 layers, 9 heads over 3 kv heads, MLP 1536).
 *
 * Usage: npm run bench -- prefill [T=512] [--shapes reference,smollm2]. Each
 * figure is the median of 5 timed runs after one warm-up. Last stdout line:
 * JSON {"rows":[{"shape","params","T","threads","qkd_tokens_per_s","llamacpp_tokens_per_s","ratio"}]}.
 * llama.cpp's column needs node-llama-cpp (`npm test` installs it into
 * .cache/node-llama-cpp; QKD_NODE_LLAMA_CPP points at it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLlama } from '../src/models/llama.js';
import { saveLlama } from '../src/models/llama-io.js';
import { saveTokenizerJson } from '../src/data/bpe.js';
import { ByteTokenizer } from '../src/data/tokenizer.js';
import { presetConfig } from '../src/train/config.js';
import { exportGguf } from '../src/compress/export-gguf.js';
import { loadNodeLlamaCpp } from '../src/eval/llama-cpp.js';
import { Rng, nativeStatus, noGrad } from '../src/tensor/index.js';

const { values, positionals } = parseArgs({ args: process.argv.slice(2), options: { shapes: { type: 'string', default: 'reference,smollm2' } }, allowPositionals: true });
const T = Number(positionals[0] ?? 512);
const ROUNDS = 5;
const SHAPES: Record<string, object> = {
  reference: { ...presetConfig('reference').model },
  smollm2: { hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3 },
};
const threads = nativeStatus().threads ?? 1;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

type Seq = { evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void> };
type Ctx = { getSequence(): Seq; dispose(): Promise<void> };
type NodeLlama = { getLlama(o: object): Promise<{ loadModel(o: object): Promise<{ createContext(o: object): Promise<Ctx>; dispose(): Promise<void> }> }> };

interface Row {
  shape: string;
  params: number;
  T: number;
  threads: number;
  qkd_tokens_per_s: number;
  llamacpp_tokens_per_s: number | null;
  ratio: number | null;
}

const rows: Row[] = [];
let note = '';
const llama = await loadNodeLlamaCpp<NodeLlama>()
  .then(({ getLlama }) => getLlama({ gpu: false, build: 'never', logLevel: 'error' }))
  .catch((err: Error) => {
    note = err.message;
    return null;
  });
for (const shape of values.shapes!.split(',')) {
  const body = SHAPES[shape];
  if (body === undefined) throw new Error(`--shapes: unknown shape '${shape}' (${Object.keys(SHAPES).join(', ')})`);
  const model = createLlama({ ...body, vocab_size: 256, max_position_embeddings: Math.max(T + 1, 1024) }, 7);
  const rng = new Rng(3);
  const ids = Int32Array.from({ length: T }, () => rng.int(256));
  const qkdRuns: number[] = [];
  noGrad(() => model.forward(ids, 1, T)); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    noGrad(() => model.forward(ids, 1, T));
    qkdRuns.push((performance.now() - t0) / 1000);
  }
  const qkdRate = T / median(qkdRuns);
  console.log(`${shape}: ${model.parameterCount} params, T ${T}, ${threads} threads — qkd forward ${qkdRate.toFixed(0)} tokens/s`);

  let llamaRate: number | null = null;
  if (llama !== null) {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-prefill-'));
    try {
      saveLlama(dir, model);
      saveTokenizerJson(join(dir, 'tokenizer.json'), new ByteTokenizer());
      const gguf = join(dir, 'model-F32.gguf');
      exportGguf(dir, { out: gguf, type: 'F32' });
      const m = await llama.loadModel({ modelPath: gguf });
      try {
        const once = async (): Promise<number> => {
          const context = await m.createContext({ contextSize: T + 1, batchSize: T, sequences: 1, threads, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false });
          try {
            const t0 = performance.now();
            await context.getSequence().evaluateWithoutGeneratingNewTokens(Array.from(ids));
            return (performance.now() - t0) / 1000;
          } finally {
            await context.dispose();
          }
        };
        await once();
        const runs: number[] = [];
        for (let r = 0; r < ROUNDS; r++) runs.push(await once());
        llamaRate = T / median(runs);
        console.log(`${shape}: llama.cpp prompt processing ${llamaRate.toFixed(0)} tokens/s; qkd at ${(qkdRate / llamaRate).toFixed(2)}× llama.cpp`);
      } finally {
        await m.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  } else console.log(`llama.cpp reference unavailable: ${note}`);
  rows.push({ shape, params: model.parameterCount, T, threads, qkd_tokens_per_s: qkdRate, llamacpp_tokens_per_s: llamaRate, ratio: llamaRate === null ? null : qkdRate / llamaRate });
}
console.log(JSON.stringify({ rows, ...(note ? { note } : {}) }));
