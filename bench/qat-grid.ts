/**
 * What quantization-aware training on a llama.cpp grid costs per step: one
 * KD + QAT step (frozen teacher forward, student forward with fake-quantized
 * weights, backward, AdamW) of the deploy experiment's shape (width 256,
 * 4 layers, 8 heads, 4 KV heads, byte vocabulary, batch 8 × 128) on each
 * grid, against the same step without fake quantization, in one run. The
 * fake quantizer of a ggml grid is the format's encode-then-decode
 * (native `ggmlRoundTrip` when the addon is loaded, the TypeScript
 * definitions with QKD_BACKEND=reference); "uniform int4" is qkd's own
 * per-channel grid (the fused fakeQuant kernel).
 *
 * Usage: npm run bench -- qat-grid [STEPS=5]. Last stdout line: JSON.
 */
import { createLlama } from '../src/models/llama.js';
import { AdamW, clipGradNorm } from '../src/optim/adamw.js';
import { Rng, add, backward, currentBackend, klDivergence, noGrad, reshape, scale } from '../src/tensor/index.js';
import { FakeQuantController } from '../src/distill/qat.js';
import type { GgmlWritableName } from '../src/quant/ggml-formats.js';
import { timeMedian } from './_util.js';

const shape = { vocab_size: 256, hidden_size: 256, intermediate_size: 768, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 256 };
const B = 8;
const T = 128;
const V = 256;
const steps = Number(process.argv[2] ?? 5);

const teacher = createLlama(shape, 1);
const rng = new Rng(3);
const inputs = Int32Array.from({ length: B * T }, () => rng.int(V));
const targets = Int32Array.from({ length: B * T }, () => rng.int(V));

type Grid = { label: string; format?: string; bits?: number };
const GRIDS: Grid[] = [{ label: 'no fake quantization' }, { label: 'uniform int4 (per channel)', bits: 4 }, { label: 'Q4_0', format: 'Q4_0' }, { label: 'Q8_0', format: 'Q8_0' }, { label: 'Q4_K', format: 'Q4_K' }, { label: 'Q6_K', format: 'Q6_K' }, { label: 'Q3_K', format: 'Q3_K' }];

function timeGrid(grid: Grid): number {
  const student = createLlama(shape, 2);
  const opt = new AdamW(student.arena, { lr: 1e-4 });
  if (grid.format !== undefined || grid.bits !== undefined) {
    const format = grid.format as GgmlWritableName | undefined;
    const controller = new FakeQuantController(student, { bits: grid.bits ?? 4, symmetric: false, granularity: 'channel', groupSize: 128, ...(format !== undefined ? { formatOf: () => format } : {}) });
    controller.enabled = true;
  }
  const step = (): void => {
    const teacherLogits = noGrad(() => teacher.forward(inputs, B, T));
    student.arena.zeroGrad();
    const logits = student.forward(inputs, B, T);
    const kd = klDivergence(reshape(teacherLogits, [B * T, V]), reshape(logits, [B * T, V]), { temperature: 4 });
    backward(add(student.loss(logits, targets), scale(kd, 0.5)));
    clipGradNorm(student.arena.grad, 1);
    opt.update();
  };
  return timeMedian(step, steps, 1);
}

const rows: { grid: string; tokens_per_s: number; vs_plain: number }[] = [];
let plain = 0;
for (const grid of GRIDS) {
  const seconds = timeGrid(grid);
  if (rows.length === 0) plain = seconds;
  rows.push({ grid: grid.label, tokens_per_s: (B * T) / seconds, vs_plain: plain / seconds });
  console.log(`${grid.label.padEnd(28)} ${Math.round((B * T) / seconds).toString().padStart(6)} tokens/s  ${(plain / seconds).toFixed(2)}x the plain step`);
}
console.log(JSON.stringify({ name: 'qat-grid', backend: currentBackend(), rows }));
