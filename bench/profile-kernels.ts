/**
 * The profiler's kernels on one weight of the Llama-3.2-1B shape (an MLP
 * projection, 8192 × 2048, bf16): the two Krylov products of one step
 * (A·X and Aᵀ·Y with a block of 64 columns, `bf16Gemm`) and the bit plan's
 * RTN errors at its four widths (`rtnErrorsBf16`, groups of 128). Each
 * native kernel (v1) is checked against the TypeScript reference (v0) on
 * the same inputs, then both are timed (median). `qkd audit` of the 1B
 * shape spends most of its time in these (BENCHMARKS.md). Where the CPU has
 * AVX-512 VNNI the audit takes the int8 route instead of the bf16 products
 * (int8Quantize once per weight, then int8Gemm): both are timed here.
 *
 * Usage: npm run bench -- profile-kernels. Last stdout line: JSON.
 */
import { Rng, kernels, withBackend } from '../src/tensor/index.js';
import { toBf16 } from '../src/tensor/dtype.js';
import { requireNative, timeMedian } from './_util.js';
import { int8Stride } from '../src/tensor/reference/int8-gemm.js';

const M = 8192, K = 2048, N = 64, WIDTHS = Int32Array.of(2, 3, 4, 8), GROUP = 128;
const rng = new Rng(5);
const w = toBf16(Float32Array.from({ length: M * K }, () => rng.normal() * 0.02));
const x = Float32Array.from({ length: Math.max(M, K) * N }, () => rng.normal());

interface Case {
  name: string;
  /** Floating-point operations per call (0: report GB/s of the weight instead). */
  flops: number;
  run(): Float32Array | Float64Array;
  /** Largest |native − reference| allowed, relative to the largest |reference|. */
  tolerance: number;
}

const gemm = (transA: boolean): Case => {
  const c = new Float32Array((transA ? K : M) * N);
  return {
    name: transA ? `bf16Gemm Aᵀ·Y (${K}×${N}, K ${M})` : `bf16Gemm A·X (${M}×${N}, K ${K})`,
    flops: 2 * M * K * N,
    run: () => {
      kernels().bf16Gemm({ transA, M: transA ? K : M, N, K: transA ? M : K, a: w, lda: K, b: x, ldb: N, c, ldc: N });
      return c;
    },
    // The reference sums in float64, the kernel in float32.
    tolerance: 1e-5,
  };
};

// The int8 route of the same Krylov step (the default where the CPU has AVX-512 VNNI): the weight
// quantized once into its two quad layouts, then A·X and Aᵀ·Y on int8Gemm.
const stride = { rows: int8Stride(M), cols: int8Stride(K) };
const byRows = new Uint8Array(M * stride.cols);
const byCols = new Uint8Array(K * stride.rows);
const scales = new Float32Array(M);
const quantize: Case = {
  name: `int8Quantize (${M}×${K}, both layouts)`,
  flops: 0,
  run: () => Float64Array.of(kernels().int8Quantize(w, M, K, true, byRows, byCols, scales), ...scales),
  tolerance: 1e-5, // the relative error: float32 sums per row quad; the scales bit for bit
};
const int8 = (transA: boolean): Case => {
  const c = new Float32Array((transA ? K : M) * N);
  return {
    name: transA ? `int8Gemm Aᵀ·Y (${K}×${N}, K ${M})` : `int8Gemm A·X (${M}×${N}, K ${K})`,
    flops: 2 * M * K * N,
    run: () => {
      if (transA) kernels().int8Gemm(byRows, stride.cols, K, N, M, scales, x, N, null, c, N);
      else kernels().int8Gemm(byCols, stride.rows, M, N, K, null, x, N, scales, c, N);
      return c;
    },
    // The reference sums in float64; the kernel sums int8 products exactly and the rest in float32.
    tolerance: 1e-5,
  };
};

const rtn: Case = {
  name: `rtnErrorsBf16 (${M}×${K}, widths ${WIDTHS.join(',')}, g${GROUP})`,
  flops: 0,
  run: () => {
    const out = new Float64Array(WIDTHS.length);
    kernels().rtnErrorsBf16(w, M, K, GROUP, false, false, WIDTHS, out);
    return out;
  },
  tolerance: 0, // bit for bit
};

const status = requireNative();
const results: Record<string, { v0_ms: number; v1_ms: number; speedup: number; rate: string; max_rel_diff: number }> = {};
console.log(`kernel                                             v0 ref ms   v1 native ms   speed-up   v1 rate      max |Δ|/max|ref|`);
for (const c of [gemm(false), gemm(true), quantize, int8(false), int8(true), rtn]) {
  const reference = Float64Array.from(withBackend('reference', () => c.run()));
  const native = Float64Array.from(withBackend('native', () => c.run()));
  let scale = 1e-300;
  let worst = 0;
  for (let i = 0; i < reference.length; i++) scale = Math.max(scale, Math.abs(reference[i]!));
  for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs(reference[i]! - native[i]!) / scale);
  if (worst > c.tolerance) throw new Error(`${c.name}: native differs from the reference by ${worst} (allowed ${c.tolerance})`);
  const v0 = withBackend('reference', () => timeMedian(() => c.run(), 1, 0)) * 1000;
  const v1 = withBackend('native', () => timeMedian(() => c.run(), 15, 2)) * 1000;
  const rate = c.flops > 0 ? `${(c.flops / (v1 / 1000) / 1e9).toFixed(0)} GFLOP/s` : `${((2 * M * K) / (v1 / 1000) / 1e9).toFixed(1)} GB/s`;
  results[c.name] = { v0_ms: v0, v1_ms: v1, speedup: v0 / v1, rate, max_rel_diff: worst };
  console.log(`${c.name.padEnd(50)} ${v0.toFixed(0).padStart(9)}   ${v1.toFixed(2).padStart(12)}   ${(v0 / v1).toFixed(0).padStart(7)}x   ${rate.padStart(13)}   ${worst.toExponential(1)}`);
}
console.log(JSON.stringify({ name: 'profile-kernels', isa: status.isa, threads: status.threads, kernels: results }));
