/**
 * Fused kernels at training sizes (train-step reference config: B·T = 2048
 * rows, C = 256, I = 704, V = 256, 64 attention blocks of 256×256). Kernel
 * versions: v0 = TypeScript reference, v1 = native. Every v1 is validated
 * against v0 on the same inputs before either is timed. Last stdout line:
 * one JSON object with ms per call for each version.
 */
import { Rng, nativeKernelNames, type Kernels } from '../src/tensor/index.js';
import { referenceAgainstNative, requireNative } from './_util.js';
import { tierBytes } from '../src/sat/dbwa.js';

const rng = new Rng(1);
const rand = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * scale);
const rows = 2048, C = 256, I = 704, V = 256, BH = 64, T = 256, D = 32;

interface Case {
  name: string;
  /** Bytes moved per call (for GB/s). */
  bytes: number;
  /** Fresh inputs; returns the call and the buffers to compare. */
  setup(): { run(k: Kernels): void; outputs: Float32Array[] };
}

const cases: Case[] = [
  {
    name: 'rmsnormForward', bytes: rows * C * 8,
    setup() { const x = rand(rows * C), w = rand(C), y = new Float32Array(rows * C), r = new Float32Array(rows); return { run: (k) => k.rmsnormForward(x, w, y, r, rows, C, 1e-5), outputs: [y, r] }; },
  },
  {
    name: 'rmsnormBackward', bytes: rows * C * 16,
    setup() { const x = rand(rows * C), w = rand(C), r = rand(rows).map((v) => 1 + Math.abs(v)), dy = rand(rows * C), dx = new Float32Array(rows * C), dw = new Float32Array(C); return { run: (k) => k.rmsnormBackward(x, w, r, dy, dx, dw, rows, C), outputs: [dx, dw] }; },
  },
  {
    name: 'swigluForward', bytes: rows * I * 12,
    setup() { const g = rand(rows * I, 4), u = rand(rows * I), y = new Float32Array(rows * I); return { run: (k) => k.swigluForward(g, u, y, rows * I), outputs: [y] }; },
  },
  {
    name: 'swigluBackward', bytes: rows * I * 28,
    setup() { const g = rand(rows * I, 4), u = rand(rows * I), dy = rand(rows * I), dg = new Float32Array(rows * I), du = new Float32Array(rows * I); return { run: (k) => k.swigluBackward(g, u, dy, dg, du, rows * I), outputs: [dg, du] }; },
  },
  {
    name: 'rope', bytes: rows * C * 8,
    setup() { const x = rand(rows * C), y = new Float32Array(rows * C), cos = rand(T * D / 2), sin = rand(T * D / 2); return { run: (k) => k.rope(x, y, cos, sin, rows / T, T, C / D, D, 0, 1, false), outputs: [y] }; },
  },
  {
    name: 'causalSoftmaxForward', bytes: BH * T * T * 4,
    setup() { const x = rand(BH * T * T, 5), y = new Float32Array(BH * T * T); return { run: (k) => k.causalSoftmaxForward(x, y, BH, T, T, 0), outputs: [y] }; },
  },
  {
    name: 'causalSoftmaxBackward', bytes: BH * T * T * 6,
    setup() { const y = rand(BH * T * T).map(Math.abs), dy = rand(BH * T * T), dx = new Float32Array(BH * T * T); return { run: (k) => k.causalSoftmaxBackward(y, dy, dx, BH, T, T, 0, true), outputs: [dx] }; },
  },
  {
    name: 'crossEntropyForward+Backward', bytes: rows * V * 12,
    setup() { const z = rand(rows * V, 3), t = Int32Array.from({ length: rows }, () => rng.int(V)), lse = new Float32Array(rows), dz = new Float32Array(rows * V); return { run: (k) => { k.crossEntropyForward(z, t, lse, rows, V, -100); k.crossEntropyBackward(z, t, lse, dz, rows, V, -100, 1 / rows); }, outputs: [lse, dz] }; },
  },
  {
    name: 'klForward+Backward', bytes: rows * V * 16,
    setup() { const zt = rand(rows * V, 3), zs = rand(rows * V, 3), a = new Float32Array(rows), b = new Float32Array(rows), kl = new Float32Array(rows), ds = new Float32Array(rows * V); return { run: (k) => { k.klForward(zt, zs, a, b, kl, rows, V, 0.25); k.klBackward(zt, zs, a, b, kl, ds.subarray(0, 0), ds, rows, V, 0.25, 1 / rows); }, outputs: [kl, ds] }; },
  },
  {
    name: 'adamw', bytes: 4_951_296 * 20,
    setup() { const n = 4_951_296, w = rand(n), g = rand(n), m = new Float32Array(n), v = new Float32Array(n); return { run: (k) => k.adamw(w, g, m, v, n, 1e-3, 0.9, 0.95, 1e-8, 1 - 1e-5, 10, 20), outputs: [w, m, v] }; },
  },
  {
    name: 'fakeQuantForward', bytes: rows * I * 9,
    setup() { const w = rand(rows * I), out = new Float32Array(rows * I), mask = new Uint8Array(rows * I); return { run: (k) => k.fakeQuantForward(w, out, mask, rows, I, 4, false, 1, 128, 1), outputs: [out] }; },
  },
  // DBWA: pack one reference-model-sized tensor set at a tier with stochastic rounding, then unpack it.
  ...([16, 12, 8] as const).map((tier): Case => ({
    name: `dbwaEncode+Decode (tier ${tier})`, bytes: 4_951_296 * 8 + 2 * tierBytes(4_951_296, tier),
    setup() { const n = 4_951_296, x = rand(n, 0.05), storage = new Uint8Array(tierBytes(n, tier)), y = new Float32Array(n); return { run: (k) => { k.dbwaEncode(tier, x, storage, Uint32Array.of(1, 2, 3, 4)); k.dbwaDecode(tier, storage, y); }, outputs: [y] }; },
  })),
  {
    name: 'addInto', bytes: rows * C * 12,
    setup() { const a = rand(rows * C), b = rand(rows * C); return { run: (k) => k.addInto(a, b, rows * C), outputs: [a] }; },
  },
];

const status = requireNative();
const nativeNames = new Set(nativeKernelNames());
const results: Record<string, { v0_ms: number; v1_ms: number | null; max_rel_diff: number | null }> = {};
console.log(`kernel                         v0 ref ms   v1 native ms   speed-up   v1 GB/s   max |Δ|/max|ref|`);
for (const c of cases) {
  const kernelNames = c.name.split(' ')[0]!.split('+').map((n, i, all) => (i > 0 ? all[0]!.replace(/(Forward|Encode)$/, '') + n : n));
  const isNative = kernelNames.every((n) => nativeNames.has(n));
  const r = referenceAgainstNative(c, rng, isNative);
  const { v0_ms: v0, v1_ms: v1, max_rel_diff: maxRel } = r;
  results[c.name] = r;
  console.log(
    `${c.name.padEnd(30)} ${v0.toFixed(2).padStart(9)}   ${v1 === null ? '(not native)'.padStart(12) : v1.toFixed(3).padStart(12)}   ${v1 === null ? '' : (v0 / v1).toFixed(1).padStart(7) + 'x'}   ${v1 === null ? '' : (c.bytes / (v1 / 1000) / 1e9).toFixed(1).padStart(7)}   ${maxRel === null ? '' : maxRel.toExponential(1)}`,
  );
}
console.log(JSON.stringify({ name: 'kernels', isa: status.isa, threads: status.threads, kernels: results }));
