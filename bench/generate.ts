/**
 * Token-by-token generation speed of `qkd generate` against llama.cpp on the
 * same F32 model, same run: the reference preset's shape (width 256, 6
 * layers, byte vocabulary; random weights, speed does not depend on them),
 * greedy, a 16-token prompt and N new tokens. qkd runs its KV-cached
 * generateStream; llama.cpp runs the model's F32 GGUF (written by qkd
 * export) through node-llama-cpp with one thread (its default thread count
 * is many times slower on a model this small: hand-offs dominate a token).
 *
 * Usage: npm run bench -- generate [TOKENS=200]. Last stdout line: JSON.
 * llama.cpp's column needs node-llama-cpp (`npm test` installs it into
 * .cache/node-llama-cpp; QKD_NODE_LLAMA_CPP points at it).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../src/models/llama.js';
import { saveLlama } from '../src/models/llama-io.js';
import { saveTokenizerJson } from '../src/data/bpe.js';
import { ByteTokenizer } from '../src/data/tokenizer.js';
import { presetConfig } from '../src/train/config.js';
import { exportGguf } from '../src/compress/export-gguf.js';
import { generateStream } from '../src/models/generate.js';
import { loadNodeLlamaCpp } from '../src/eval/llama-cpp.js';
import { currentBackend } from '../src/tensor/index.js';

const tokens = Number(process.argv[2] ?? 200);
const model = createLlama({ ...presetConfig('reference').model, vocab_size: 256, max_position_embeddings: 256 }, 7);
const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-generate-'));
saveLlama(dir, model);
saveTokenizerJson(join(dir, 'tokenizer.json'), new ByteTokenizer());
const gguf = join(dir, 'model-F32.gguf');
exportGguf(dir, { out: gguf, type: 'F32' });
const prompt = Int32Array.from(Buffer.from('Call me Ishmael. '.slice(0, 16)));

// qkd: one warm-up run, then the timed one.
for (const _ of generateStream(model, prompt, { steps: 8, temperature: 0 })) void _;
let t0 = performance.now();
let count = 0;
for (const _ of generateStream(model, prompt, { steps: tokens, temperature: 0 })) count++;
const qkdSeconds = (performance.now() - t0) / 1000;
console.log(`qkd generate (${currentBackend()}, KV cache): ${model.parameterCount} params, ${count} tokens in ${qkdSeconds.toFixed(2)} s = ${(count / qkdSeconds).toFixed(1)} tokens/s`);

type Seq = { evaluate(t: number[], o?: object): AsyncGenerator<number, void, void> };
type NodeLlama = { getLlama(o: object): Promise<{ loadModel(o: object): Promise<{ createContext(o: object): Promise<{ getSequence(): Seq; dispose(): Promise<void> }>; dispose(): Promise<void> }> }> };
let llamaSeconds: number | null = null;
let note = '';
try {
  const { getLlama } = await loadNodeLlamaCpp<NodeLlama>();
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  const m = await llama.loadModel({ modelPath: gguf });
  const run = async (n: number): Promise<number> => {
    const context = await m.createContext({ contextSize: 256, batchSize: 64, sequences: 1, threads: 1 });
    let produced = 0;
    try {
      for await (const _ of context.getSequence().evaluate(Array.from(prompt), { temperature: 0 })) {
        void _;
        if (++produced >= n) break;
      }
    } finally {
      await context.dispose();
    }
    return produced;
  };
  await run(8);
  t0 = performance.now();
  const produced = await run(tokens);
  llamaSeconds = (performance.now() - t0) / 1000;
  console.log(`llama.cpp (node-llama-cpp, 1 thread): ${produced} tokens in ${llamaSeconds.toFixed(2)} s = ${(produced / llamaSeconds).toFixed(1)} tokens/s`);
  console.log(`ratio (qkd tokens/s over llama.cpp's): ${(llamaSeconds / qkdSeconds).toFixed(2)}×`);
  await m.dispose();
} catch (err) {
  note = (err as Error).message;
  console.log(`llama.cpp reference unavailable: ${note}`);
}
console.log(JSON.stringify({ params: model.parameterCount, tokens: count, qkd_tokens_per_s: count / qkdSeconds, llamacpp_tokens_per_s: llamaSeconds === null ? null : count / llamaSeconds, ratio: llamaSeconds === null ? null : llamaSeconds / qkdSeconds, ...(note ? { note } : {}) }));
