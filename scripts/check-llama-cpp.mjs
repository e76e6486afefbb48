// Interop check (not a test, no dependency): does llama.cpp, through node-llama-cpp, load a
// GGUF written by qkd's writeGguf and agree with qkd's greedy generation and next-token
// distribution on a tiny random llama?
//
//   npm install --prefix /tmp/nlc node-llama-cpp      # once, outside the repo
//   npm run build && NODE_PATH=/tmp/nlc/node_modules node scripts/check-llama-cpp.mjs [F32|F16|BF16|Q8_0|Q4_0]
import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const require = createRequire(join(process.env.NODE_PATH ?? process.cwd(), 'x.js'));
const { getLlama } = await import(require.resolve('node-llama-cpp'));
import { writeGguf, hfToGgufName, quantizeQ8_0, dequantizeQ8_0, quantizeQ4_0, dequantizeQ4_0 } from '../dist/src/io/gguf.js';
import { fromF16, toF16, fromBf16, toBf16 } from '../dist/src/tensor/dtype.js';
import { halfToInterleavedRows } from '../dist/src/io/llama2c.js';
import { createLlama } from '../dist/src/models/llama.js';
import { generate } from '../dist/src/models/generate.js';

const type = process.argv[2] ?? 'F32';
const special = ['<unk>', '<s>', '</s>'];
const bytes = Array.from({ length: 256 }, (_, i) => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`);
const words = ['▁a', '▁b', '▁c', 'ab', 'bc'];
const tokens = [...special, ...bytes, ...words];
const V = tokens.length;
const c = { vocab_size: V, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128, initializer_range: 0.25 };
const model = createLlama(c, 7);
const D = c.hidden_size / c.num_attention_heads;
const meta = {
  'general.architecture': { type: 'string', value: 'llama' },
  'general.name': { type: 'string', value: 'qkd-tiny' },
  'llama.context_length': { type: 'u32', value: 128 },
  'llama.embedding_length': { type: 'u32', value: c.hidden_size },
  'llama.block_count': { type: 'u32', value: c.num_hidden_layers },
  'llama.feed_forward_length': { type: 'u32', value: c.intermediate_size },
  'llama.rope.dimension_count': { type: 'u32', value: D },
  'llama.attention.head_count': { type: 'u32', value: c.num_attention_heads },
  'llama.attention.head_count_kv': { type: 'u32', value: c.num_key_value_heads },
  'llama.attention.layer_norm_rms_epsilon': { type: 'f32', value: 1e-5 },
  'llama.rope.freq_base': { type: 'f32', value: 10000 },
  'tokenizer.ggml.model': { type: 'string', value: 'llama' },
  'tokenizer.ggml.tokens': { type: 'array', itemType: 'string', value: tokens },
  'tokenizer.ggml.scores': { type: 'array', itemType: 'f32', value: tokens.map((_, i) => -i) },
  'tokenizer.ggml.token_type': { type: 'array', itemType: 'i32', value: tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1)) },
  'tokenizer.ggml.bos_token_id': { type: 'u32', value: 1 },
  'tokenizer.ggml.eos_token_id': { type: 'u32', value: 2 },
  'tokenizer.ggml.unknown_token_id': { type: 'u32', value: 0 },
};
const path = join(mkdtempSync(join(tmpdir(), 'qkd-llama-cpp-')), `tiny-${type}.gguf`);
writeGguf(path, {
  metadata: meta,
  tensors: model.arena.entries.map((e) => {
    let data = e.tensor.data;
    // llama.cpp's converter permutes q/k rows per head (rotate-half → adjacent pairs).
    if (e.name.endsWith('q_proj.weight')) data = halfToInterleavedRows(data, c.num_attention_heads, e.shape[1]);
    if (e.name.endsWith('k_proj.weight')) data = halfToInterleavedRows(data, c.num_key_value_heads, e.shape[1]);
    const t = e.shape.length === 2 ? type : 'F32';
    return { name: hfToGgufName(e.name), shape: e.shape, type: t, data };
  }),
});
const prompt = [1, 100, 200, 262, 150];
// qkd runs the same (dequantized) weights llama.cpp sees.
const roundTrip = { F32: (x) => x, F16: (x) => fromF16(toF16(x)), BF16: (x) => fromBf16(toBf16(x)), Q8_0: (x) => dequantizeQ8_0(quantizeQ8_0(x), x.length), Q4_0: (x) => dequantizeQ4_0(quantizeQ4_0(x), x.length) }[type];
const { noGrad } = await import('../dist/src/tensor/tape.js');
const probsOf = (mdl) => { const l = noGrad(() => mdl.forward(Int32Array.from(prompt), 1, prompt.length).data).subarray((prompt.length - 1) * V, prompt.length * V); let mx = -Infinity; for (const v of l) mx = Math.max(mx, v); const q = Array.from(l, (v) => Math.exp(v - mx)); const s = q.reduce((a, b) => a + b, 0); return q.map((v) => v / s); };
const before = probsOf(model);
for (const e of model.arena.entries) if (e.shape.length === 2) e.tensor.data.set(roundTrip(e.tensor.data));
const after = probsOf(model);
let tvQuant = 0; for (let i = 0; i < V; i++) tvQuant += Math.abs(before[i] - after[i]); tvQuant /= 2;
const ours = Array.from(generate(model, Int32Array.from(prompt), { steps: 12, temperature: 0 }));
const llama = await getLlama({ gpu: false, build: 'never' });
const m = await llama.loadModel({ modelPath: path });
const ctx = await m.createContext({ contextSize: 128 });
const seq = ctx.getSequence();
const theirs = [];
for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
  theirs.push(t);
  if (theirs.length === 12) break;
}
// First-step next-token distribution: qkd's softmax(logits) vs llama.cpp's probabilities (temperature 1).
const logits = noGrad(() => model.forward(Int32Array.from(prompt), 1, prompt.length).data).subarray((prompt.length - 1) * V, prompt.length * V);
let max = -Infinity; for (const v of logits) max = Math.max(max, v);
const p = Array.from(logits, (v) => Math.exp(v - max)); const z = p.reduce((a, b) => a + b, 0);
await seq.clearHistory();
let tv = NaN;
for await (const out of seq.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 1, topK: 0, topP: 1 })) {
  tv = 0; for (let i = 0; i < V; i++) tv += Math.abs(p[i] / z - (out.probabilities.get(i) ?? 0)); tv /= 2;
  break;
}
console.log(JSON.stringify({ type, ours, theirs, same: JSON.stringify(ours) === JSON.stringify(theirs), firstStepTotalVariation: tv, quantizationItselfMoves: tvQuant }));
await ctx.dispose(); await m.dispose(); await llama.dispose();
