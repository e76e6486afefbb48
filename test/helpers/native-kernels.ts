/**
 * The native kernels against the TypeScript reference (src/tensor/reference/
 * kernels.ts), on the sizes that reach every tail of the vector and tile
 * loops, the threaded drivers and the special values. Every case runs on the
 * instruction-set path of the process it is called in (QKD_ISA) and
 * throws an AssertionError naming the case, the element and the error;
 * test/tensor/native-kernels.test.ts runs them all in-process, and the
 * per-path ones (no thread splits) in one child process per lower path.
 * threadedDigest() hashes the outputs of the
 * threaded sizes: the README promises the same bits for any thread count.
 *
 * Errors are measured against the magnitude of the terms of each result
 * (the sum of their absolute values), so a cancelling sum is judged by what
 * its float inputs allow; "inherent" is the rounding the interface itself
 * implies (e.g. x − max rounded to float before exp). Call only when the
 * addon is loaded.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Rng, kernels, withBackend, type GemmArgs, type Kernels } from '../../src/tensor/index.js';
import { referenceKernels as R } from '../../src/tensor/reference/kernels.js';
import { int8Stride } from '../../src/tensor/reference/int8-gemm.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../../src/tensor/dtype.js';
import type { Bf16GemmArgs } from '../../src/tensor/kernel-types.js';

const EMPTY = new Float32Array(0);
const EMPTY_U8 = new Uint8Array(0);
const ULP = 2 ** -24;

/** The native kernel table (kernels of the native backend, called directly). */
function native(): Kernels {
  return withBackend('native', () => kernels());
}

/** n floats at an odd offset inside a larger buffer (byteOffset ≠ 0), all `fill` or fill(i). */
function floats(n: number, fill: number | ((i: number) => number) = 0): Float32Array {
  const v = new Float32Array(n + 7).subarray(3, 3 + n);
  if (typeof fill === 'number') v.fill(fill);
  else for (let i = 0; i < n; i++) v[i] = fill(i);
  return v;
}

function copy(a: Float32Array): Float32Array {
  const v = floats(a.length);
  v.set(a);
  return v;
}

/** n uniform floats in [lo, hi) at an odd offset, from a stream seeded by rng (a plain LCG: cheap, 24 good bits). */
function randoms(n: number, rng: Rng, lo: number, hi: number): Float32Array {
  const v = floats(n);
  let state = rng.nextUint32() | 0;
  const step = (hi - lo) / 16777216;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) | 0;
    v[i] = lo + (state >>> 8) * step;
  }
  return v;
}

/** The worst normalised error of one check: (|got − want| − inherent) / magnitude. */
class Worst {
  value = 0;
  at = '';
  add(got: number, want: number, magnitude: number, inherent = 0, label = '', index = -1): void {
    let err: number;
    if (Number.isNaN(want)) err = Number.isNaN(got) ? 0 : Infinity;
    else if (!Number.isFinite(want)) err = got === want ? 0 : Infinity;
    else {
      err = (Math.abs(got - want) - inherent) / (magnitude + 1e-300);
      if (Number.isNaN(err)) err = Infinity;
    }
    if (err > this.value) {
      this.value = err;
      this.at = `${index < 0 ? label : `${label}[${index}]`} is ${got}, want ${want}`;
    }
  }
  check(tolerance: number, what: string): void {
    assert.ok(this.value <= tolerance, `${what}: error ${this.value.toExponential(3)} > ${tolerance} (${this.at})`);
  }
}

/** Same bits (any NaN equals any NaN). */
function sameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: lengths`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) assert.fail(`${what}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

export interface NativeCase {
  name: string;
  /** Small shapes whose vector loops and tails differ per path (the child processes of the other paths run these). */
  perPath: boolean;
  run(): void;
}

const CASE_LIST: NativeCase[] = [];
function kernelCase(name: string, run: () => void, perPath = true): void {
  CASE_LIST.push({ name, perPath, run });
}

// ---- sgemm ------------------------------------------------------------------------------

interface GemmCase { batch: number; M: number; N: number; K: number; transA: boolean; transB: boolean; alpha: number; beta: number; pad: number; shareB: boolean }

/**
 * One GEMM on padded, strided operands with gaps between the matrices:
 * native against the reference, |err| ≤ 1e-5·(|alpha|·‖op(A) row‖·‖op(B) column‖ + |beta·c|)
 * (Cauchy–Schwarz bounds Σ|a·b|), and nothing outside C's rows touched.
 */
function checkGemm(c: GemmCase, seed: number): void {
  const rng = new Rng(seed);
  const aRows = c.transA ? c.K : c.M;
  const aCols = c.transA ? c.M : c.K;
  const bRows = c.transB ? c.N : c.K;
  const bCols = c.transB ? c.K : c.N;
  const lda = aCols + c.pad;
  const ldb = bCols + c.pad;
  const ldc = c.N + c.pad;
  const strideA = aRows * lda + 3;
  const strideB = c.shareB ? 0 : bRows * ldb + 5;
  const strideC = c.M * ldc + 7;
  const a = randoms(c.batch * strideA + 1, rng, -1, 1);
  const b = randoms((c.shareB ? 1 : c.batch) * (bRows * ldb + 5) + 1, rng, -1, 1);
  const c0 = c.beta === 0 ? floats(c.batch * strideC + 1, NaN) : randoms(c.batch * strideC + 1, rng, -1, 1);
  const args = (out: Float32Array): GemmArgs => ({
    batch: c.batch, transA: c.transA, transB: c.transB, M: c.M, N: c.N, K: c.K, alpha: c.alpha,
    a, lda, strideA, b, ldb, strideB, beta: c.beta, c: out, ldc, strideC,
  });
  const got = copy(c0);
  native().sgemm(args(got));
  const want = copy(c0);
  R.sgemm(args(want));
  const worst = new Worst();
  const inC = new Uint8Array(c0.length);
  for (let i = 0; i < c.batch; i++) {
    const rowNorm = new Float64Array(c.M);
    const colNorm = new Float64Array(c.N);
    for (let m = 0; m < c.M; m++) for (let k = 0; k < c.K; k++) rowNorm[m]! += (c.transA ? a[i * strideA + k * lda + m]! : a[i * strideA + m * lda + k]!) ** 2;
    for (let n = 0; n < c.N; n++) for (let k = 0; k < c.K; k++) colNorm[n]! += (c.transB ? b[i * strideB + n * ldb + k]! : b[i * strideB + k * ldb + n]!) ** 2;
    for (let m = 0; m < c.M; m++) {
      for (let n = 0; n < c.N; n++) {
        const at = i * strideC + m * ldc + n;
        inC[at] = 1;
        const old = c.beta === 0 ? 0 : c0[at]!;
        worst.add(got[at]!, want[at]!, Math.abs(c.alpha) * Math.sqrt(rowNorm[m]! * colNorm[n]!) + Math.abs(c.beta * old), 0, 'C', at);
      }
    }
  }
  const what = `sgemm batch ${c.batch} ${c.M}x${c.N}x${c.K} transA ${c.transA} transB ${c.transB} alpha ${c.alpha} beta ${c.beta} pad ${c.pad}${c.shareB ? ' shared B' : ''}`;
  worst.check(1e-5, what);
  for (let i = 0; i < c0.length; i++) {
    if (!inC[i] && !Object.is(got[i], c0[i]) && !(Number.isNaN(got[i]) && Number.isNaN(c0[i]))) assert.fail(`${what}: padding element ${i} changed to ${got[i]}`);
  }
}

const SCALARS: [number, number][] = [[1, 0], [1, 1], [0.5, -2], [-2, 0.5], [0, 0.5], [0, 0]];
const TRANS = [0, 1, 2, 3].map((t) => ({ transA: (t & 1) === 1, transB: (t & 2) === 2 }));

kernelCase('sgemm: square sizes around every tile width (1 … 257), all transposes, every alpha/beta', () => {
  let seed = 1;
  for (const s of [1, 2, 3, 7, 13, 17, 31, 33, 63, 65]) {
    TRANS.forEach((t, i) => {
      const [alpha, beta] = SCALARS[(s + i) % 6]!;
      checkGemm({ batch: 1, M: s, N: s, K: s, ...t, alpha, beta, pad: s % 3, shareB: false }, seed++);
    });
  }
  [127, 129, 255, 257].forEach((s, i) => checkGemm({ batch: 1, M: s, N: s, K: s, ...TRANS[i]!, alpha: 0.5, beta: -2, pad: 1, shareB: false }, seed++));
  for (const [alpha, beta] of SCALARS) for (const t of TRANS) checkGemm({ batch: 1, M: 37, N: 45, K: 29, ...t, alpha, beta, pad: 2, shareB: false }, seed++);
});

kernelCase('sgemm: each dimension odd on its own', () => {
  let seed = 100;
  for (const M of [1, 3, 17, 33]) {
    for (const N of [1, 2, 31, 65]) {
      for (const K of [1, 7, 63, 129]) checkGemm({ batch: 1, M, N, K, ...TRANS[(M + N + K) % 4]!, alpha: 0.5, beta: -2, pad: 1, shareB: false }, seed++);
    }
  }
});

kernelCase('sgemm: rectangular, several K and N blocks, skinny (M or N ≤ 16) and threaded shapes', () => {
  let seed = 200;
  for (const t of TRANS) {
    const run = (batch: number, M: number, N: number, K: number, alpha: number, beta: number, pad: number, shareB = false) =>
      checkGemm({ batch, M, N, K, ...t, alpha, beta, pad, shareB }, seed++);
    run(1, 1, 300, 5, 1, 0, 0);
    run(1, 257, 3, 300, 1, 0, 3);
    run(1, 300, 700, 2, -2, 0.5, 0);
    run(1, 20, 530, 270, 1, 1, 4); // K > kc = 256, N > nc = 512, threaded
    run(1, 2, 2, 3000, 1, 0, 0);
    run(1, 3, 1000, 350, 0.5, -2, 1); // skinny (≤ 4 rows), threaded
    run(1, 600, 2, 900, 1, 1, 2); // skinny (≤ 4 columns), threaded
    run(1, 4, 1500, 33, 1, 0, 0);
    run(1, 5, 600, 400, 1, 0, 0); // dot-product form (≤ 16 rows), threaded
    run(3, 1, 900, 400, -2, 0.5, 0, true);
    run(2, 1, 1, 5000, 1, 0, 0);
  }
});

kernelCase('sgemm: batches (2, 3, 5, 17) with a shared or strided B', () => {
  let seed = 300;
  for (const batch of [2, 3, 5, 17]) {
    for (const t of TRANS) {
      checkGemm({ batch, M: 33, N: 65, K: 31, ...t, alpha: 1, beta: 0, pad: 1, shareB: true }, seed++);
      if (batch <= 5) checkGemm({ batch, M: 65, N: 70, K: 100, ...t, alpha: 0.5, beta: 1, pad: 0, shareB: batch % 2 === 1 }, seed++);
      checkGemm({ batch, M: 7, N: 5, K: 3, ...t, alpha: -2, beta: 0.5, pad: 2, shareB: true }, seed++);
    }
  }
});

kernelCase('sgemm: K = 0 gives beta·C; M = 0 and batch = 0 touch nothing (empty buffers)', () => {
  for (const t of TRANS) {
    checkGemm({ batch: 2, M: 5, N: 9, K: 0, ...t, alpha: 1, beta: 0, pad: 1, shareB: false }, 400);
    checkGemm({ batch: 2, M: 5, N: 9, K: 0, ...t, alpha: 1, beta: -2, pad: 1, shareB: false }, 401);
  }
  const c = Float32Array.from([1, 2, 3, 4]);
  native().sgemm({ batch: 1, transA: false, transB: false, M: 2, N: 2, K: 0, alpha: 1, a: EMPTY, lda: 0, strideA: 0, b: EMPTY, ldb: 2, strideB: 0, beta: 0.5, c, ldc: 2, strideC: 4 });
  assert.deepEqual([...c], [0.5, 1, 1.5, 2]);
  native().sgemm({ batch: 1, transA: false, transB: false, M: 0, N: 5, K: 5, alpha: 1, a: EMPTY, lda: 5, strideA: 0, b: EMPTY, ldb: 5, strideB: 0, beta: 0, c: EMPTY, ldc: 5, strideC: 0 });
  native().sgemm({ batch: 0, transA: false, transB: false, M: 5, N: 5, K: 5, alpha: 1, a: EMPTY, lda: 5, strideA: 0, b: EMPTY, ldb: 5, strideB: 0, beta: 0, c: EMPTY, ldc: 5, strideC: 0 });
});

// ---- softmax ------------------------------------------------------------------------------

function checkSoftmaxForward(rows: number, cols: number, spread: number, rng: Rng): void {
  const n = rows * cols;
  const x = randoms(n, rng, -spread, spread);
  for (let r = 0; r < rows; r += 3) x[r * cols + (r % cols)] = -Infinity; // masked positions
  const want = floats(n);
  R.softmaxForward(x, want, rows, cols);
  const got = floats(n, NaN);
  native().softmaxForward(x, got, rows, cols);
  const worst = new Worst();
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let c = 0; c < cols; c++) max = Math.max(max, x[r * cols + c]!);
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      if (want[i]! < 1e-30 && Math.abs(got[i]!) < 1e-30) continue;
      // x − max is rounded to float first: |x − max|·2^-24 relative is inherent.
      worst.add(got[i]!, want[i]!, want[i]!, want[i]! * Math.abs(x[i]! - max) * ULP, 'element', i);
    }
  }
  const what = `softmaxForward ${rows}x${cols} spread ${spread}`;
  worst.check(1e-6, what);
  const inPlace = copy(x);
  native().softmaxForward(inPlace, inPlace, rows, cols);
  sameBits(inPlace, got, `${what} in place`);
}

function checkSoftmaxBackward(rows: number, cols: number, inPlace: boolean, rng: Rng): void {
  const n = rows * cols;
  const y = floats(n);
  R.softmaxForward(randoms(n, rng, -3, 3), y, rows, cols);
  const dy = randoms(n, rng, -3, 3);
  const dx0 = inPlace ? copy(dy) : randoms(n, rng, -3, 3);
  const got = copy(dx0);
  const want = copy(dx0);
  native().softmaxBackward(y, inPlace ? got : dy, got, rows, cols);
  R.softmaxBackward(y, inPlace ? want : dy, want, rows, cols);
  const worst = new Worst();
  for (let r = 0; r < rows; r++) {
    let dotMag = 0;
    for (let c = 0; c < cols; c++) dotMag += Math.abs(y[r * cols + c]! * dy[r * cols + c]!);
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      worst.add(got[i]!, want[i]!, Math.abs(dx0[i]!) + y[i]! * (Math.abs(dy[i]!) + dotMag), 0, 'element', i);
    }
  }
  worst.check(1e-6, `softmaxBackward ${rows}x${cols}${inPlace ? ' in place (dx = dy)' : ''}`);
}

kernelCase('softmax: columns 1 … 50257 (every SIMD tail), spreads 1, 30, 200, masked entries, in place; backward accumulating and in place', () => {
  const rng = new Rng(11);
  for (const cols of [1, 2, 7, 8, 15, 16, 17, 33, 100, 1000, 50257]) {
    for (const spread of [1, 30, 200]) checkSoftmaxForward(cols > 1000 ? 3 : 9, cols, spread, rng);
    checkSoftmaxBackward(5, cols, false, rng);
    checkSoftmaxBackward(5, cols, true, rng);
  }
});

kernelCase('softmax: threaded size 300x999, forward in place and backward', () => {
  const rng = new Rng(12);
  checkSoftmaxForward(300, 999, 10, rng);
  checkSoftmaxBackward(300, 999, false, rng);
}, false);

kernelCase('softmax: the vectorised exp over [−104, 0] (normal results to 1e-6, subnormal ones within 2 steps)', () => {
  // Rows [0, x]: y1 = exp(x)/(1 + exp(x)), so the kernel's exp of every x shows.
  const rows = 40000;
  const x = floats(2 * rows);
  for (let r = 0; r < rows; r++) x[2 * r + 1] = Math.fround(-103.9 + (103.9 * r) / (rows - 1));
  const want = floats(2 * rows);
  R.softmaxForward(x, want, rows, 2);
  const got = floats(2 * rows);
  native().softmaxForward(x, got, rows, 2);
  const normal = new Worst();
  let subnormal = 0;
  for (let i = 0; i < 2 * rows; i++) {
    if (want[i]! >= 2 ** -126) normal.add(got[i]!, want[i]!, want[i]!, 0, 'row', i >> 1);
    else subnormal = Math.max(subnormal, Math.abs(got[i]! - want[i]!));
  }
  normal.check(1e-6, 'softmax exp, normal results');
  assert.ok(subnormal <= 2 * 2 ** -149, `softmax exp, subnormal results: off by ${subnormal}`);
});

kernelCase('softmax: a row of −Infinity gives zeros, a row with a NaN gives NaN', () => {
  for (const cols of [1, 5, 16, 37]) {
    const x = floats(2 * cols, (i) => (i < cols ? -Infinity : i === 2 * cols - 1 ? NaN : 1));
    const want = floats(2 * cols);
    const got = floats(2 * cols, 123);
    R.softmaxForward(x, want, 2, cols);
    native().softmaxForward(x, got, 2, cols);
    for (let c = 0; c < cols; c++) {
      assert.equal(got[c], 0, `cols ${cols}: masked row`);
      assert.equal(want[c], 0);
      if (cols > 1) assert.ok(Number.isNaN(got[cols + c]) && Number.isNaN(want[cols + c]), `cols ${cols}: NaN row, column ${c}`);
    }
  }
});

// ---- causal softmax --------------------------------------------------------------------------

function checkCausal(BH: number, T: number, S: number, offset: number, rng: Rng): void {
  const n = BH * T * S;
  const valid = (row: number) => Math.min(S, offset + (row % T) + 1);
  const x = randoms(n, rng, -10, 10);
  for (let row = 0; row < BH * T; row++) for (let j = valid(row); j < S; j++) x[row * S + j] = NaN; // never read
  const got = floats(n, 7);
  const want = floats(n, 7);
  native().causalSoftmaxForward(x, got, BH, T, S, offset);
  R.causalSoftmaxForward(x, want, BH, T, S, offset);
  const what = `causalSoftmax BH ${BH} T ${T} S ${S} offset ${offset}`;
  const fw = new Worst();
  for (let row = 0; row < BH * T; row++) {
    let max = -Infinity;
    for (let j = 0; j < valid(row); j++) max = Math.max(max, x[row * S + j]!);
    for (let j = 0; j < S; j++) {
      const i = row * S + j;
      if (j < valid(row)) fw.add(got[i]!, want[i]!, want[i]!, want[i]! * Math.abs(x[i]! - max) * ULP, 'element', i);
      else if (got[i] !== 0) assert.fail(`${what}: masked column ${j} of row ${row} is ${got[i]}`);
    }
  }
  fw.check(1e-6, `${what} forward`);
  const inPlace = copy(x);
  native().causalSoftmaxForward(inPlace, inPlace, BH, T, S, offset);
  sameBits(inPlace, got, `${what} forward in place`);

  // Backward, with garbage (NaN) in the masked part of y and dy.
  const y = copy(want);
  const dy = randoms(n, rng, -2, 2);
  for (let row = 0; row < BH * T; row++) for (let j = valid(row); j < S; j++) y[row * S + j] = dy[row * S + j] = NaN;
  const dx0 = randoms(n, rng, -1, 1);
  for (const mode of ['accumulate', 'write', 'in place'] as const) {
    const accumulate = mode === 'accumulate';
    const run = (k: Kernels) => {
      const dx = mode === 'in place' ? copy(dy) : copy(dx0);
      k.causalSoftmaxBackward(y, mode === 'in place' ? dx : dy, dx, BH, T, S, offset, accumulate);
      return dx;
    };
    const g = run(native());
    const w = run(R);
    const bw = new Worst();
    for (let row = 0; row < BH * T; row++) {
      let dotMag = 0;
      for (let j = 0; j < valid(row); j++) dotMag += Math.abs(y[row * S + j]! * dy[row * S + j]!);
      for (let j = 0; j < S; j++) {
        const i = row * S + j;
        if (j < valid(row)) bw.add(g[i]!, w[i]!, (accumulate ? Math.abs(dx0[i]!) : 0) + y[i]! * (Math.abs(dy[i]!) + dotMag), 0, 'element', i);
        else if (accumulate ? !Object.is(g[i], dx0[i]) : g[i] !== 0) assert.fail(`${what} ${mode}: masked dx[${i}] is ${g[i]}`);
      }
    }
    bw.check(1e-6, `${what} backward ${mode}`);
  }
}

kernelCase('causalSoftmax: S 1 … 257 for training (T = S), decoding (T = 1) and a cached prefix; NaN in masked entries never read', () => {
  const rng = new Rng(21);
  for (const S of [1, 3, 7, 17, 33, 255, 257]) {
    checkCausal(S > 100 ? 1 : 2, S, S, 0, rng);
    checkCausal(3, 1, S, S - 1, rng);
    if (S > 4) checkCausal(1, Math.floor(S / 3), S, S - Math.floor(S / 3), rng);
  }
});

kernelCase('causalSoftmax: threaded 8x128x128', () => checkCausal(8, 128, 128, 0, new Rng(22)), false);

// ---- RMSNorm -------------------------------------------------------------------------------------

const COLS = [1, 3, 7, 17, 33, 255, 257, 1000];

function checkRmsnorm(rows: number, cols: number, rng: Rng): void {
  const spread = cols % 2 === 0 ? 30 : 1.5;
  const x = randoms(rows * cols, rng, -spread, spread);
  const w = randoms(cols, rng, -2, 2);
  const eps = 1e-5;
  const run = (k: Kernels) => {
    const y = floats(rows * cols, NaN);
    const rstd = floats(rows, NaN);
    k.rmsnormForward(x, w, y, rstd, rows, cols, eps);
    return { y, rstd };
  };
  const got = run(native());
  const want = run(R);
  const what = `rmsnorm ${rows}x${cols}`;
  const fw = new Worst();
  for (let r = 0; r < rows; r++) fw.add(got.rstd[r]!, want.rstd[r]!, want.rstd[r]!, 0, 'rstd', r);
  for (let i = 0; i < rows * cols; i++) fw.add(got.y[i]!, want.y[i]!, Math.abs(want.y[i]!), 0, 'y', i);
  fw.check(1e-6, `${what} forward`);
  const inPlace = copy(x);
  const rstd2 = floats(rows);
  native().rmsnormForward(inPlace, w, inPlace, rstd2, rows, cols, eps);
  sameBits(inPlace, got.y, `${what} forward in place`);
  sameBits(rstd2, got.rstd, `${what} forward in place, rstd`);

  const rstd = want.rstd;
  const dy = randoms(rows * cols, rng, -1, 1);
  const dx0 = randoms(rows * cols, rng, -1, 1);
  const dw0 = randoms(cols, rng, -1, 1);
  for (const [useDx, useDw] of [[true, true], [false, true], [true, false]] as const) {
    const run2 = (k: Kernels) => {
      const dx = copy(dx0);
      const dw = copy(dw0);
      k.rmsnormBackward(x, w, rstd, dy, useDx ? dx : EMPTY, useDw ? dw : EMPTY, rows, cols);
      return { dx, dw };
    };
    const g = run2(native());
    const wt = run2(R);
    const bw = new Worst();
    const dwMag = Float64Array.from(dw0, Math.abs);
    for (let r = 0; r < rows; r++) {
      const s = rstd[r]!;
      let dotMag = 0;
      for (let c = 0; c < cols; c++) {
        dotMag += Math.abs(dy[r * cols + c]! * w[c]! * x[r * cols + c]!);
        dwMag[c]! += Math.abs(dy[r * cols + c]! * x[r * cols + c]! * s);
      }
      if (useDx) {
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const k = (s * s * s) / cols;
          bw.add(g.dx[i]!, wt.dx[i]!, Math.abs(dx0[i]!) + Math.abs(s * dy[i]! * w[c]!) + Math.abs(k * x[i]!) * dotMag, 0, 'dx', i);
        }
      }
    }
    if (useDw) for (let c = 0; c < cols; c++) bw.add(g.dw[c]!, wt.dw[c]!, dwMag[c]!, 0, 'dw', c);
    bw.check(1e-5, `${what} backward dx ${useDx} dw ${useDw}`);
    if (!useDx) sameBits(g.dx, dx0, `${what}: skipped dx untouched`);
    if (!useDw) sameBits(g.dw, dw0, `${what}: skipped dw untouched`);
  }
}

kernelCase('rmsnorm: rows 1, 3, 37 × columns 1 … 1000, in place, either gradient skipped', () => {
  const rng = new Rng(31);
  for (const cols of COLS) for (const rows of [1, 3, 37]) checkRmsnorm(rows, cols, rng);
});

// The fused residual add + norm: the same bits as the native add, then the native rmsnorm, on every path
// (the sum rounds to float before the norm reads it), in place into x or delta; near the reference.
function checkAddRmsnorm(rows: number, cols: number, rng: Rng): void {
  const x = randoms(rows * cols, rng, -3, 3);
  const delta = randoms(rows * cols, rng, -3, 3);
  const w = randoms(cols, rng, -2, 2);
  const eps = 1e-5;
  const fused = (k: Kernels) => {
    const s = floats(rows * cols, NaN);
    const y = floats(rows * cols, NaN);
    const rstd = floats(rows, NaN);
    k.addRmsnormForward(x, delta, s, w, y, rstd, rows, cols, eps);
    return { s, y, rstd };
  };
  const got = fused(native());
  const apart = { s: floats(rows * cols), y: floats(rows * cols), rstd: floats(rows) };
  native().add(x, delta, apart.s, rows * cols);
  native().rmsnormForward(apart.s, w, apart.y, apart.rstd, rows, cols, eps);
  const what = `addRmsnorm ${rows}x${cols}`;
  sameBits(got.s, apart.s, `${what} sum`);
  sameBits(got.y, apart.y, `${what} y`);
  sameBits(got.rstd, apart.rstd, `${what} rstd`);
  const want = fused(R);
  const fw = new Worst();
  for (let i = 0; i < rows * cols; i++) fw.add(got.y[i]!, want.y[i]!, Math.abs(want.y[i]!), 0, 'y', i);
  fw.check(1e-6, `${what} against the reference`);
  for (const into of ['x', 'delta'] as const) {
    const xs = copy(x);
    const ds = copy(delta);
    const y = floats(rows * cols);
    const rstd = floats(rows);
    native().addRmsnormForward(xs, ds, into === 'x' ? xs : ds, w, y, rstd, rows, cols, eps);
    sameBits(into === 'x' ? xs : ds, got.s, `${what} sum in place into ${into}`);
    sameBits(y, got.y, `${what} y with the sum in place into ${into}`);
  }
}

kernelCase('addRmsnorm: rows 1, 3, 37 × columns 1 … 1000, threaded 256x704; equal to add then rmsnorm', () => {
  const rng = new Rng(35);
  for (const cols of COLS) for (const rows of [1, 3, 37]) checkAddRmsnorm(rows, cols, rng);
  checkAddRmsnorm(256, 704, rng);
});

kernelCase('rmsnorm: threaded 300x257 and 256x704', () => {
  const rng = new Rng(32);
  checkRmsnorm(300, 257, rng);
  checkRmsnorm(256, 704, rng);
}, false);

// ---- SwiGLU and its sigmoid -------------------------------------------------------------------------

function checkSwiglu(n: number, rng: Rng): void {
  const gate = randoms(n, rng, -12, 12);
  const up = randoms(n, rng, -3, 3);
  const extremes = [0, -0, 30, -30, 90, -90, 120, -120, 1e-4, -1e-4]; // sigmoid saturates, exp overflows
  for (let i = 0; i < n && i < extremes.length; i++) gate[(i * 7919) % n] = extremes[i]!;
  const got = floats(n, NaN);
  const want = floats(n, NaN);
  native().swigluForward(gate, up, got, n);
  R.swigluForward(gate, up, want, n);
  const fw = new Worst();
  for (let i = 0; i < n; i++) fw.add(got[i]!, want[i]!, Math.max(Math.abs(want[i]!), 1e-37), 0, 'y', i);
  fw.check(1e-6, `swigluForward n ${n}`);
  const alias = copy(gate);
  native().swigluForward(alias, up, alias, n);
  sameBits(alias, got, `swigluForward n ${n} in place (y = gate)`);

  const dy = randoms(n, rng, -1, 1);
  const dgate0 = randoms(n, rng, -1, 1);
  const dup0 = randoms(n, rng, -1, 1);
  for (const [useG, useU] of [[true, true], [false, true], [true, false]] as const) {
    const run = (k: Kernels) => {
      const dgate = copy(dgate0);
      const dup = copy(dup0);
      k.swigluBackward(gate, up, dy, useG ? dgate : EMPTY, useU ? dup : EMPTY, n);
      return { dgate, dup };
    };
    const g = run(native());
    const w = run(R);
    const bw = new Worst();
    for (let i = 0; i < n; i++) {
      const x = gate[i]!;
      const s = x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
      const du = dy[i]! * up[i]!;
      if (useG) bw.add(g.dgate[i]!, w.dgate[i]!, Math.abs(dgate0[i]!) + Math.abs(du) * (s + Math.abs(x * s * (1 - s))), 0, 'dgate', i);
      if (useU) bw.add(g.dup[i]!, w.dup[i]!, Math.abs(dup0[i]!) + Math.abs(dy[i]! * x * s), 0, 'dup', i);
    }
    bw.check(1e-6, `swigluBackward n ${n} dgate ${useG} dup ${useU}`);
    if (!useG) sameBits(g.dgate, dgate0, `swigluBackward n ${n}: skipped dgate untouched`);
    if (!useU) sameBits(g.dup, dup0, `swigluBackward n ${n}: skipped dup untouched`);
  }
}

kernelCase('swiglu: n 1 … 3001 (every tail) with saturating gates, in place, either gradient skipped', () => {
  const rng = new Rng(41);
  for (const cols of COLS) {
    checkSwiglu(cols, rng);
    checkSwiglu(3 * cols + 1, rng);
  }
});

kernelCase('swiglu: threaded n = 256·704 + 5', () => checkSwiglu(256 * 704 + 5, new Rng(42)), false);

kernelCase('swiglu: its sigmoid over [−110, 110] and at ±0, ±1e-30, ±88.7, ±104, ±200, NaN (y = g·σ(g) with up = 1)', () => {
  const gates: number[] = [];
  for (let v = -110; v <= 110; v += 0.00137) gates.push(v);
  gates.push(0, -0, 1e-30, -1e-30, 88.7, -88.7, 104, -104, 200, -200, Infinity, NaN);
  const gate = floats(gates.length, (i) => gates[i]!);
  const up = floats(gates.length, 1);
  const got = floats(gates.length);
  const want = floats(gates.length);
  native().swigluForward(gate, up, got, gates.length);
  R.swigluForward(gate, up, want, gates.length);
  const worst = new Worst();
  // Results below the normal range are judged in absolute terms.
  for (let i = 0; i < gates.length; i++) worst.add(got[i]!, want[i]!, Math.max(Math.abs(want[i]!), 1e-37), 0, 'gate', i);
  worst.check(1e-6, 'swiglu sigmoid sweep');
});

// ---- RoPE -------------------------------------------------------------------------------------------

function checkRope(B: number, T: number, H: number, D: number, rng: Rng): void {
  const n = B * T * H * D;
  const half = D / 2;
  const src = randoms(n, rng, -2, 2);
  const cos = floats(T * half);
  const sin = floats(T * half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = (t + 3) * 10000 ** ((-2 * i) / D);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  const dst0 = randoms(n, rng, -1, 1);
  for (const style of [0, 1] as const) {
    for (const direction of [1, -1] as const) {
      for (const accumulate of [false, true]) {
        const got = copy(dst0);
        const want = copy(dst0);
        native().rope(src, got, cos, sin, B, T, H, D, style, direction, accumulate);
        R.rope(src, want, cos, sin, B, T, H, D, style, direction, accumulate);
        const worst = new Worst();
        for (let row = 0; row < B * T * H; row++) {
          for (let i = 0; i < half; i++) {
            const ia = row * D + (style === 0 ? i : 2 * i);
            const ib = row * D + (style === 0 ? i + half : 2 * i + 1);
            const mag = Math.abs(src[ia]!) + Math.abs(src[ib]!);
            worst.add(got[ia]!, want[ia]!, (accumulate ? Math.abs(dst0[ia]!) : 0) + mag, 0, 'dst', ia);
            worst.add(got[ib]!, want[ib]!, (accumulate ? Math.abs(dst0[ib]!) : 0) + mag, 0, 'dst', ib);
          }
        }
        const what = `rope ${B}x${T}x${H}x${D} style ${style} direction ${direction} accumulate ${accumulate}`;
        worst.check(1e-6, what);
        if (!accumulate) {
          const inPlace = copy(src);
          native().rope(inPlace, inPlace, cos, sin, B, T, H, D, style, direction, false);
          sameBits(inPlace, got, `${what} in place`);
        }
      }
    }
  }
}

kernelCase('rope: D 2, 6, 32, 66, both styles and directions, accumulating and in place', () => {
  const rng = new Rng(51);
  for (const D of [2, 6, 32, 66]) {
    checkRope(1, 1, 1, D, rng);
    checkRope(2, 5, 3, D, rng);
  }
});

kernelCase('rope: threaded 4x64x8x64 and 2x33x5x6', () => {
  const rng = new Rng(52);
  checkRope(4, 64, 8, 64, rng);
  checkRope(2, 33, 5, 6, rng);
}, false);

// ---- AdamW -------------------------------------------------------------------------------------------

function checkAdamw(n: number, rng: Rng): void {
  const w0 = randoms(n, rng, -1, 1);
  const g = randoms(n, rng, -0.1, 0.1);
  const m0 = randoms(n, rng, -0.01, 0.01);
  const v0 = randoms(n, rng, 0, 1e-3);
  // Hyperparameters the addon can hold exactly (it takes float32).
  const f = Math.fround;
  const p = [f(3e-4), f(0.9), f(0.999), f(1e-8), f(1 - 3e-5), f(1 / (1 - 0.9 ** 7)), f(1 / (1 - 0.999 ** 7))] as const;
  const run = (k: Kernels) => {
    const w = copy(w0);
    const m = copy(m0);
    const v = copy(v0);
    k.adamw(w, g, m, v, n, ...p);
    return { w, m, v };
  };
  const got = run(native());
  const want = run(R);
  const [lr, b1, , eps, shrink, c1, c2] = p;
  const worst = new Worst();
  for (let i = 0; i < n; i++) {
    const step = (lr * (want.m[i]! * c1)) / (Math.sqrt(want.v[i]! * c2) + eps);
    worst.add(got.m[i]!, want.m[i]!, Math.abs(b1 * m0[i]!) + Math.abs((1 - b1) * g[i]!), 0, 'm', i);
    worst.add(got.v[i]!, want.v[i]!, want.v[i]!, 0, 'v', i);
    worst.add(got.w[i]!, want.w[i]!, Math.abs(w0[i]! * shrink) + Math.abs(step), 0, 'w', i);
  }
  worst.check(1e-6, `adamw n ${n}`);
}

kernelCase('adamw: n 1 … 1000 (every tail)', () => {
  const rng = new Rng(61);
  for (const n of COLS) checkAdamw(n, rng);
});

kernelCase('adamw: threaded n = 256·704 + 7', () => checkAdamw(256 * 704 + 7, new Rng(62)), false);

// ---- cross-entropy ----------------------------------------------------------------------------------------

function checkCrossEntropy(rows: number, V: number, rng: Rng): void {
  const ignore = -100;
  const z = randoms(rows * V, rng, -12, 12);
  const targets = new Int32Array(rows + 2).subarray(2);
  for (let r = 0; r < rows; r++) {
    targets[r] = r % 5 === 3 ? ignore : rng.int(V);
    if (V > 1 && r % 3 === 0 && targets[r] !== ignore) z[r * V + ((targets[r]! + 1) % V)] = -Infinity; // a masked logit, not the target
  }
  const lseGot = floats(rows, 1234.5);
  const lseWant = floats(rows, 1234.5);
  const lossGot = native().crossEntropyForward(z, targets, lseGot, rows, V, ignore);
  const lossWant = R.crossEntropyForward(z, targets, lseWant, rows, V, ignore);
  const what = `crossEntropy ${rows}x${V}`;
  const fw = new Worst();
  let lossMag = 0;
  for (let r = 0; r < rows; r++) {
    if (targets[r] === ignore) {
      assert.equal(lseGot[r], 1234.5, `${what}: lse of ignored row ${r} untouched`);
      continue;
    }
    fw.add(lseGot[r]!, lseWant[r]!, Math.abs(lseWant[r]!) + 1, 0, 'lse', r);
    lossMag += Math.abs(lseWant[r]!) + Math.abs(z[r * V + targets[r]!]!) + 1;
  }
  fw.add(lossGot, lossWant, lossMag, 0, 'loss');
  fw.check(1e-6, `${what} forward`);

  const dz0 = randoms(rows * V, rng, -1e-3, 1e-3);
  const scale = 1 / 37;
  const dzGot = copy(dz0);
  const dzWant = copy(dz0);
  native().crossEntropyBackward(z, targets, lseWant, dzGot, rows, V, ignore, scale);
  R.crossEntropyBackward(z, targets, lseWant, dzWant, rows, V, ignore, scale);
  const bw = new Worst();
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < V; j++) {
      const i = r * V + j;
      if (targets[r] === ignore) {
        if (!Object.is(dzGot[i], dz0[i])) assert.fail(`${what}: dz of ignored row ${r} changed`);
        continue;
      }
      const arg = z[i]! - lseWant[r]!;
      const p = Math.exp(arg);
      const hot = j === targets[r] ? 1 : 0;
      // exp of the float argument z − lse: its rounding is inherent.
      bw.add(dzGot[i]!, dzWant[i]!, Math.abs(dz0[i]!) + scale * (p + hot), p === 0 ? 0 : scale * p * Math.abs(arg) * ULP, 'dz', i);
    }
  }
  bw.check(1e-6, `${what} backward`);
}

kernelCase('crossEntropy: rows 1, 5, 33 × V 1 … 1000 with ignored rows and masked logits', () => {
  const rng = new Rng(71);
  for (const V of COLS) for (const rows of [1, 5, 33]) checkCrossEntropy(rows, V, rng);
  checkCrossEntropy(300, 33, rng);
});

kernelCase('crossEntropy: threaded 512x256', () => checkCrossEntropy(512, 256, new Rng(72)), false);

// ---- KL ------------------------------------------------------------------------------------------------

/** lseT − lseS inherits the float exp rounding near 1 that dominates each sum: a few 1e-8 absolute per row. */
const KL_FLOOR = 2.5e-7;

function checkKl(rows: number, V: number, invTau: number, close: boolean, rng: Rng): void {
  const zT = randoms(rows * V, rng, -8, 8);
  for (let i = 0; i < zT.length; i++) zT[i] = zT[i]! * 1.0123457; // every mantissa bit
  const noise = randoms(rows * V, rng, -1, 1);
  const zS = floats(rows * V, (i) => (close ? zT[i]! + 0.01 * noise[i]! + 3 : 6 * noise[i]!));
  for (let r = 0; r < rows && V > 1; r += 2) {
    zT[r * V + (r % V)] = -Infinity; // the teacher masks an entry (pT = 0) …
    if (r % 4 === 0) zS[r * V + (r % V)] = -Infinity; // … sometimes the student too
  }
  const run = (k: Kernels) => {
    const lseT = floats(rows, NaN);
    const lseS = floats(rows, NaN);
    const rowKl = floats(rows, NaN);
    const total = k.klForward(zT, zS, lseT, lseS, rowKl, rows, V, invTau);
    return { lseT, lseS, rowKl, total };
  };
  const got = run(native());
  const want = run(R);
  const what = `kl ${rows}x${V} invTau ${invTau} ${close ? 'close' : 'far'}`;
  const lw = new Worst();
  const kw = new Worst();
  let totalMag = 0;
  for (let r = 0; r < rows; r++) {
    lw.add(got.lseT[r]!, want.lseT[r]!, Math.abs(want.lseT[r]!) + 1, 0, 'lseT', r);
    lw.add(got.lseS[r]!, want.lseS[r]!, Math.abs(want.lseS[r]!) + 1, 0, 'lseS', r);
    let magnitude = 0;
    for (let j = 0; j < V; j++) {
      const a = zT[r * V + j]! * invTau - want.lseT[r]!;
      if (a === -Infinity) continue;
      const b = zS[r * V + j]! * invTau - want.lseS[r]!;
      // The float exp of a float argument: ~(1 + |log pT|)·2^-24 relative on pT.
      magnitude += Math.exp(a) * Math.abs(a - b) * (1 + Math.abs(a));
    }
    kw.add(got.rowKl[r]!, want.rowKl[r]!, magnitude, KL_FLOOR, 'rowKl', r);
    totalMag += magnitude;
  }
  kw.add(got.total, want.total, totalMag, KL_FLOOR * rows, 'total');
  lw.check(1e-6, `${what} lse`);
  kw.check(1e-6, `${what} KL`);

  const { lseT, lseS, rowKl } = want;
  const dT0 = randoms(rows * V, rng, -1e-3, 1e-3);
  const dS0 = randoms(rows * V, rng, -1e-3, 1e-3);
  const g = 0.75;
  for (const [useT, useS] of [[true, true], [false, true], [true, false]] as const) {
    const run2 = (k: Kernels) => {
      const dT = copy(dT0);
      const dS = copy(dS0);
      k.klBackward(zT, zS, lseT, lseS, rowKl, useT ? dT : EMPTY, useS ? dS : EMPTY, rows, V, invTau, g);
      return { dT, dS };
    };
    const gb = run2(native());
    const wb = run2(R);
    const bw = new Worst();
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < V; j++) {
        const i = r * V + j;
        const a = zT[i]! * invTau - lseT[r]!;
        const b = zS[i]! * invTau - lseS[r]!;
        const pT = Math.exp(a);
        const pS = Math.exp(b);
        const fT = pT === 0 ? 0 : pT * (1 + Math.abs(a));
        const fS = pS === 0 ? 0 : pS * (1 + Math.abs(b));
        if (useS) bw.add(gb.dS[i]!, wb.dS[i]!, Math.abs(dS0[i]!) + g * (fS + fT), 0, 'dS', i);
        if (useT) bw.add(gb.dT[i]!, wb.dT[i]!, Math.abs(dT0[i]!) + (pT === 0 ? 0 : g * fT * (Math.abs(a - b) + Math.abs(rowKl[r]!))), 0, 'dT', i);
      }
    }
    bw.check(1e-6, `${what} backward dT ${useT} dS ${useS}`);
    if (!useT) sameBits(gb.dT, dT0, `${what}: skipped dT untouched`);
    if (!useS) sameBits(gb.dS, dS0, `${what}: skipped dS untouched`);
  }
}

kernelCase('klDivergence: V 1 … 1000 at temperatures 1, 2, 0.4, near-identical and far distributions, masked entries', () => {
  const rng = new Rng(81);
  for (const V of COLS) {
    for (const invTau of [1, 0.5, 2.5]) {
      checkKl(3, V, invTau, true, rng);
      checkKl(4, V, invTau, false, rng);
    }
  }
});

kernelCase('klDivergence: threaded 512x256', () => checkKl(512, 256, 0.5, true, new Rng(82)), false);

// ---- adds ----------------------------------------------------------------------------------------------------

function checkAdds(sizes: number[], rng: Rng): void {
  for (const n of sizes) {
    const a = randoms(n, rng, -1, 1);
    const b = randoms(n, rng, -1, 1);
    const want = floats(n);
    R.add(a, b, want, n);
    const out = floats(n, NaN);
    native().add(a, b, out, n);
    sameBits(out, want, `add n ${n}`);
    const acc = copy(a);
    native().addInto(acc, b, n);
    sameBits(acc, want, `addInto n ${n}`);
    const alias = copy(a);
    native().add(alias, b, alias, n);
    sameBits(alias, want, `add n ${n} with out = a`);
    const aliasB = copy(b);
    native().add(a, aliasB, aliasB, n);
    sameBits(aliasB, want, `add n ${n} with out = b`);
  }
}

kernelCase('add / addInto: exact on n 1 … 1000, out aliasing an input', () => checkAdds(COLS, new Rng(91)));
kernelCase('add / addInto: threaded n = 256·704 + 3', () => checkAdds([256 * 704 + 3], new Rng(92)), false);

// ---- fake quantization ------------------------------------------------------------------------------------------

type Data = 'random' | 'special' | 'constant' | 'zeros';

function fakeQuantWeights(kind: Data, rows: number, cols: number, rng: Rng): Float32Array {
  const n = rows * cols;
  if (kind === 'constant') return floats(n, -0.3125);
  if (kind === 'zeros') return floats(n, (i) => (i % 3 === 1 ? -0 : 0));
  const w = floats(n);
  for (let r = 0; r < rows; r++) {
    const scale = 2 ** (rng.uniform() * 9 - 6);
    for (let c = 0; c < cols; c++) w[r * cols + c] = (rng.uniform() * 2 - 1) * scale;
  }
  if (kind === 'random') {
    // The tensor's extremes late in the buffer (past the first thread's part).
    if (n >= 4) {
      w[n - 2] = 9.5;
      w[Math.floor((n * 3) / 4)] = -9.25;
    }
    return w;
  }
  for (let r = 0; r < rows; r++) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    switch (r % 9) {
      case 0: row.fill(1.75); break; // constant
      case 1: for (let c = 0; c < cols; c++) row[c] = c % 2 ? -0 : 0; break; // zeros of both signs
      case 2: // a dyadic grid: exact .5 ties at several bit widths
        for (let c = 0; c < cols; c++) row[c] = 0.25 * (rng.int(17) - 8);
        if (cols > 1) { row[0] = -2; row[cols - 1] = 2; }
        break;
      case 3: for (let c = 0; c < cols; c += 5) row[c] = NaN; break; // skipped by min/max; q = NaN clamps to qmax
      case 4: row[Math.floor(cols / 2)] = Math.floor(r / 9) % 2 ? -Infinity : Infinity; break; // the group is copied
      case 5: for (let c = 0; c < cols; c++) row[c] = 1000 + Math.abs(row[c]!); break; // large negative zero point
      case 6: for (let c = 0; c < cols; c++) row[c] = row[c]! * 1e-40; break; // subnormal
      case 7: row[Math.floor(cols / 3)] = 50; break; // a lone outlier (clipped below clipRatio 1)
      default: break;
    }
  }
  return w;
}

function checkFakeQuant(w: Float32Array, rows: number, cols: number, bits: number, symmetric: boolean, granularity: 0 | 1 | 2, groupSize: number, clipRatio: number, what: string): void {
  const n = rows * cols;
  const want = floats(n, NaN);
  const wantMask = new Uint8Array(n).fill(7);
  R.fakeQuantForward(w, want, wantMask, rows, cols, bits, symmetric, granularity, groupSize, clipRatio);
  const got = floats(n, NaN);
  const mask = new Uint8Array(n + 8).fill(7).subarray(5, 5 + n);
  native().fakeQuantForward(w, got, mask, rows, cols, bits, symmetric, granularity, groupSize, clipRatio);
  const tag = `fakeQuant ${rows}x${cols} ${what} bits ${bits} ${symmetric ? 'sym' : 'asym'} granularity ${granularity} group ${groupSize} clip ${clipRatio}`;
  sameBits(got, want, tag);
  for (let i = 0; i < n; i++) if (mask[i] !== wantMask[i]) assert.fail(`${tag}: mask[${i}] is ${mask[i]}, want ${wantMask[i]}`);
  const inPlace = copy(w);
  native().fakeQuantForward(inPlace, inPlace, EMPTY_U8, rows, cols, bits, symmetric, granularity, groupSize, clipRatio);
  sameBits(inPlace, want, `${tag}: in place, mask skipped`);
}

kernelCase('fakeQuant forward: bit-identical on special rows (constant, ±0, ties, NaN, ±Inf, subnormal, outliers), every bits/granularity/group/clip, partial groups, 0 rows', () => {
  const rng = new Rng(101);
  for (const [rows, cols] of [[1, 1], [3, 7], [5, 200], [18, 100], [0, 5]] as const) {
    for (const kind of ['random', 'special', 'constant', 'zeros'] as const) {
      const w = fakeQuantWeights(kind, rows, cols, rng);
      for (const bits of [2, 3, 4, 8]) {
        for (const symmetric of [false, true]) {
          for (const granularity of [0, 1, 2] as const) {
            for (const groupSize of granularity === 2 ? [32, 64, 128] : [64]) {
              for (const clipRatio of [1, 0.5]) checkFakeQuant(w, rows, cols, bits, symmetric, granularity, groupSize, clipRatio, kind);
            }
          }
        }
      }
    }
  }
});

kernelCase('fakeQuant forward: threaded shapes (a split inside a row, one long row, 512x704, special rows at 64x1000)', () => {
  const rng = new Rng(102);
  for (const [rows, cols] of [[333, 101], [1, 40000], [512, 704]] as const) {
    const w = fakeQuantWeights('random', rows, cols, rng);
    for (const [bits, symmetric, granularity, groupSize, clipRatio] of [[4, false, 0, 64, 1], [3, true, 0, 64, 0.5], [4, false, 1, 64, 0.5], [8, true, 1, 64, 1], [2, false, 2, 32, 1], [4, true, 2, 128, 0.5]] as const) {
      checkFakeQuant(w, rows, cols, bits, symmetric, granularity, groupSize, clipRatio, 'random');
    }
  }
  const special = fakeQuantWeights('special', 64, 1000, rng);
  for (const granularity of [0, 1, 2] as const) {
    for (const symmetric of [false, true]) checkFakeQuant(special, 64, 1000, 4, symmetric, granularity, 128, granularity === 1 ? 0.5 : 1, 'special');
  }
}, false);

function checkFakeQuantBackward(sizes: number[], rng: Rng): void {
  for (const n of sizes) {
    const dy = randoms(n, rng, -1, 1);
    const dw0 = floats(n, (i) => (i % 7 === 3 ? -0 : rng.uniform() - 0.5));
    const mask = new Uint8Array(n + 8).subarray(5, 5 + n);
    for (let i = 0; i < n; i++) {
      const f = rng.int(6);
      mask[i] = f === 0 || f === 3 ? 0 : f === 2 ? 255 : 1;
      if (mask[i] === 0 && i % 11 === 5) dy[i] = NaN; // never read into dw
    }
    const got = copy(dw0);
    const want = copy(dw0);
    native().fakeQuantBackward(dy, mask, got, n);
    R.fakeQuantBackward(dy, mask, want, n);
    sameBits(got, want, `fakeQuantBackward n ${n}`);
    const both = copy(dw0);
    const twice = copy(dw0);
    native().fakeQuantBackward(both, mask, both, n);
    R.fakeQuantBackward(twice, mask, twice, n);
    sameBits(both, twice, `fakeQuantBackward n ${n} in place (dw = dy)`);
  }
}

kernelCase('fakeQuant backward: flags 0, 1 and 255, NaN behind a 0 flag, −0 kept, in place; n 1 … 1000', () => checkFakeQuantBackward([1, 7, 15, 16, 17, 33, 1000], new Rng(103)));
kernelCase('fakeQuant backward: threaded n = 256·704 + 3', () => checkFakeQuantBackward([256 * 704 + 3], new Rng(104)), false);

// ---- the profiler's kernels ------------------------------------------------------------------------------------------------

interface Bf16Case { transA: boolean; M: number; N: number; K: number; pad: number; accumulate?: boolean }

function checkBf16Gemm(c: Bf16Case, seed: number): void {
  const rng = new Rng(seed);
  const lda = (c.transA ? c.M : c.K) + c.pad;
  const ldb = c.N + c.pad;
  const ldc = c.N + c.pad;
  const a = Uint16Array.from({ length: (c.transA ? c.K : c.M) * lda + 1 }, () => f32ToBf16Bits(rng.normal()));
  const b = floats(c.K * ldb + 1, () => rng.normal());
  const c0 = floats(c.M * ldc + 1, (i) => (c.accumulate && i % ldc < c.N ? rng.normal() : 7));
  const args = (out: Float32Array): Bf16GemmArgs => ({ transA: c.transA, M: c.M, N: c.N, K: c.K, a, lda, b, ldb, c: out, ldc, accumulate: c.accumulate ?? false });
  const got = copy(c0);
  native().bf16Gemm(args(got));
  const want = copy(c0);
  R.bf16Gemm(args(want));
  // Σ|a·b| ≤ ‖op(A) row‖·‖bf16(B) column‖ (Cauchy–Schwarz), plus |c0| when accumulating.
  const rowNorm = new Float64Array(c.M);
  const colNorm = new Float64Array(c.N);
  for (let m = 0; m < c.M; m++) for (let k = 0; k < c.K; k++) rowNorm[m]! += bf16BitsToF32(c.transA ? a[k * lda + m]! : a[m * lda + k]!) ** 2;
  for (let k = 0; k < c.K; k++) for (let n = 0; n < c.N; n++) colNorm[n]! += bf16BitsToF32(f32ToBf16Bits(b[k * ldb + n]!)) ** 2;
  const what = `bf16Gemm transA ${c.transA} ${c.M}x${c.N}x${c.K} pad ${c.pad} accumulate ${c.accumulate ?? false}`;
  const worst = new Worst();
  for (let m = 0; m < c.M; m++) {
    for (let n = 0; n < ldc; n++) {
      const i = m * ldc + n;
      if (n < c.N) worst.add(got[i]!, want[i]!, Math.sqrt(rowNorm[m]! * colNorm[n]!) + (c.accumulate ? Math.abs(c0[i]!) : 0), 0, 'C', i);
      else if (i < c.M * ldc && got[i] !== 7) assert.fail(`${what}: padding C[${m},${n}] changed to ${got[i]}`);
    }
  }
  worst.check(1e-5, what);
}

kernelCase('bf16Gemm: whole and edge tiles (14x32), odd K (half a k-pair), K = 0, accumulating, 16 and 17 columns', () => {
  const cases: Bf16Case[] = [
    { transA: false, M: 1, N: 1, K: 1, pad: 0 }, { transA: true, M: 1, N: 1, K: 1, pad: 0 },
    { transA: false, M: 14, N: 32, K: 2, pad: 0 }, { transA: true, M: 14, N: 32, K: 2, pad: 0 },
    { transA: false, M: 15, N: 33, K: 3, pad: 1 }, { transA: true, M: 15, N: 33, K: 3, pad: 1 },
    { transA: false, M: 29, N: 7, K: 255, pad: 3 }, { transA: true, M: 29, N: 7, K: 255, pad: 3 },
    { transA: false, M: 100, N: 64, K: 257, pad: 0, accumulate: true }, { transA: true, M: 100, N: 64, K: 257, pad: 0 },
    { transA: false, M: 29, N: 7, K: 0, pad: 3, accumulate: true },
    // 16 columns and fewer take the half-width tile loop; 17 the full one.
    { transA: false, M: 29, N: 16, K: 65, pad: 1, accumulate: true }, { transA: true, M: 29, N: 16, K: 65, pad: 0 },
    { transA: false, M: 15, N: 17, K: 64, pad: 0 }, { transA: true, M: 15, N: 17, K: 64, pad: 2, accumulate: true },
  ];
  cases.forEach((c, i) => checkBf16Gemm(c, 500 + i));
});

kernelCase('bf16Gemm: threaded, many row tasks (1000 rows), long K (4099), K split between threads (K ≥ 8·M), accumulating', () => {
  const cases: Bf16Case[] = [
    { transA: false, M: 150, N: 40, K: 1030, pad: 5 }, { transA: true, M: 150, N: 40, K: 1030, pad: 5, accumulate: true },
    { transA: false, M: 1000, N: 32, K: 200, pad: 0 }, { transA: true, M: 130, N: 32, K: 2001, pad: 2 },
    { transA: false, M: 30, N: 96, K: 4099, pad: 1 },
    { transA: true, M: 100, N: 40, K: 3001, pad: 1 }, { transA: true, M: 100, N: 40, K: 3001, pad: 1, accumulate: true },
    { transA: true, M: 14, N: 8, K: 20000, pad: 0 },
  ];
  cases.forEach((c, i) => checkBf16Gemm(c, 600 + i));
}, false);

kernelCase('f32ToBf16: n 0, 1, 17 and 1010 (ties, subnormals, ±0, ±Inf, NaN), nothing past n written', () => {
  const rng = new Rng(7);
  const values = [...Array.from({ length: 1000 }, () => rng.normal() * 3), 0, -0, 1.00390625, 1.01171875, 1e-40, -3e-39, 3.4e38, Infinity, -Infinity, NaN];
  const src = floats(values.length, (i) => values[i]!);
  for (const n of [0, 1, 17, src.length]) {
    const got = new Uint16Array(src.length + 1).fill(0xabcd);
    const want = new Uint16Array(src.length + 1).fill(0xabcd);
    native().f32ToBf16(src, got, n);
    R.f32ToBf16(src, want, n);
    assert.deepEqual(got, want, `f32ToBf16 n ${n}`);
  }
});

// ---- int8 products of the Krylov pass ------------------------------------------------------------------------------


/** A bf16 weight [rows, cols]: normal values, a few columns 12× (outliers), ±0 and a zero row. */
function int8Weight(rows: number, cols: number, rng: Rng): Uint16Array {
  const w = new Uint16Array(rows * cols);
  const loud = new Set([rng.int(cols), rng.int(cols)]);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = i === 1 && rows > 4 ? 0 : rng.normal() * (loud.has(j) ? 12 : 1) * 0.02;
      w[i * cols + j] = f32ToBf16Bits(j === 3 && i === 0 ? -0 : v);
    }
  }
  return w;
}

function quantizeBoth(k: Kernels, w: Uint16Array, rows: number, cols: number, perRow: boolean) {
  const byRows = new Uint8Array(rows * int8Stride(cols) + 3).fill(7);
  const byCols = new Uint8Array(cols * int8Stride(rows) + 3).fill(7);
  const scales = new Float32Array((perRow ? rows : cols) + 1).fill(5);
  const error = k.int8Quantize(w, rows, cols, perRow, byRows, byCols, scales);
  return { byRows, byCols, scales, error };
}

kernelCase('int8Quantize: per row and per column, 4×4 … 68×100 and threaded 512×704 (padding, ±0, a zero row, outlier columns); bytes and scales bit-identical, nothing past them written, non-finite → −1', () => {
  const rng = new Rng(811);
  for (const [rows, cols] of [[4, 4], [8, 20], [68, 100], [20, 36], [512, 704]] as const) {
    const w = int8Weight(rows, cols, rng);
    for (const perRow of [true, false]) {
      const got = quantizeBoth(native(), w, rows, cols, perRow);
      const want = quantizeBoth(R, w, rows, cols, perRow);
      const what = `int8Quantize ${rows}x${cols} ${perRow ? 'per row' : 'per column'}`;
      assert.deepEqual(got.byRows, want.byRows, `${what}: byRows`);
      assert.deepEqual(got.byCols, want.byCols, `${what}: byCols`);
      assert.deepEqual(got.scales, want.scales, `${what}: scales`);
      assert.ok(Math.abs(got.error - want.error) <= 1e-5 * want.error, `${what}: error ${got.error} vs ${want.error}`);
    }
  }
  for (const bad of [Infinity, NaN]) {
    const w = int8Weight(8, 8, rng);
    w[13] = f32ToBf16Bits(bad);
    assert.equal(quantizeBoth(native(), w, 8, 8, true).error, -1, `int8Quantize ${bad}`);
    assert.equal(quantizeBoth(R, w, 8, 8, false).error, -1, `int8Quantize reference ${bad}`);
  }
});

interface Int8Case { rows: number; cols: number; n: number; fold: boolean; rowScale: boolean; ldb: number }

/** Both products of int8Gemm on one weight (sum over columns with byCols, over rows with byRows) against the reference. */
function checkInt8Gemm(c: Int8Case, rng: Rng): void {
  const w = int8Weight(c.rows, c.cols, rng);
  const q = quantizeBoth(R, w, c.rows, c.cols, true);
  for (const sumOverRows of [false, true]) {
    const m = sumOverRows ? c.cols : c.rows;
    const k = sumOverRows ? c.rows : c.cols;
    const layout = sumOverRows ? q.byRows : q.byCols;
    const stride = int8Stride(m);
    const ldb = c.n + c.ldb;
    const b = new Float32Array(k * ldb);
    for (let t = 0; t < k; t++) for (let j = 0; j < c.n; j++) b[t * ldb + j] = rng.normal();
    // Outliers: a few values far beyond 6 rms in some columns.
    for (let o = 0; o < 3; o++) b[rng.int(k) * ldb + rng.int(c.n)] = (rng.normal() > 0 ? 1 : -1) * 60;
    const fold = c.fold ? Float32Array.from({ length: k }, () => 0.25 + rng.uniform()) : null;
    const rowScale = c.rowScale ? Float32Array.from({ length: m }, () => 0.25 + rng.uniform()) : null;
    const got = new Float32Array(m * c.n + 5).fill(3);
    const want = new Float32Array(m * c.n + 5).fill(3);
    const what = `int8Gemm ${c.rows}x${c.cols} ${sumOverRows ? 'byRows' : 'byCols'} n ${c.n}`;
    const outliers = native().int8Gemm(layout, stride, m, c.n, k, fold, b, ldb, rowScale, got, c.n);
    assert.equal(outliers, R.int8Gemm(layout, stride, m, c.n, k, fold, b, ldb, rowScale, want, c.n), `${what}: outlier count`);
    if (k >= 64) assert.ok(outliers >= 1, `${what}: the planted outliers are counted`);
    // The error bound: float32 rounding of each term's magnitude (|a|·|b'| summed), a few ulps.
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < c.n; j++) {
        let magnitude = 0;
        for (let t = 0; t < k; t++) magnitude += Math.abs((layout[(Math.floor(t / 4) * stride + i) * 4 + (t % 4)]! - 128) * b[t * ldb + j]! * (fold?.[t] ?? 1));
        magnitude *= rowScale?.[i] ?? 1;
        const e = Math.abs(got[i * c.n + j]! - want[i * c.n + j]!);
        if (!(e <= 8 * ULP * magnitude + 1e-30)) assert.fail(`${what}: C[${i}, ${j}] = ${got[i * c.n + j]}, want ${want[i * c.n + j]} (error ${e}, magnitude ${magnitude})`);
      }
    }
    assert.deepEqual(got.subarray(m * c.n), want.subarray(m * c.n), `${what}: nothing past C written`);
  }
}

kernelCase('int8Gemm: both layouts, n 1 … 70 (panel tails), row tails, fold and row scales, ldb > n, outliers; NaN → −1', () => {
  const rng = new Rng(821);
  const cases: Int8Case[] = [
    { rows: 4, cols: 4, n: 1, fold: false, rowScale: false, ldb: 0 },
    { rows: 52, cols: 20, n: 9, fold: true, rowScale: true, ldb: 3 },
    { rows: 20, cols: 100, n: 16, fold: true, rowScale: false, ldb: 0 },
    { rows: 100, cols: 36, n: 70, fold: false, rowScale: true, ldb: 1 },
  ];
  for (const c of cases) checkInt8Gemm(c, rng);
  const b = Float32Array.from({ length: 8 * 3 }, () => rng.normal());
  b[5] = NaN;
  const q = quantizeBoth(R, int8Weight(8, 8, rng), 8, 8, true);
  assert.equal(native().int8Gemm(q.byCols, 16, 8, 3, 8, null, b, 3, null, new Float32Array(24), 3), -1);
  assert.equal(R.int8Gemm(q.byCols, 16, 8, 3, 8, null, b, 3, null, new Float32Array(24), 3), -1);
});

kernelCase('int8Gemm: threaded 1000 rows × 96 columns, and k = 65540 (two int32 chunks)', () => {
  const rng = new Rng(831);
  checkInt8Gemm({ rows: 1000, cols: 200, n: 96, fold: true, rowScale: true, ldb: 0 }, rng);
  checkInt8Gemm({ rows: 65540, cols: 16, n: 3, fold: true, rowScale: false, ldb: 0 }, rng);
}, false);

function checkWeightStats(shapes: (readonly [number, number, number])[], rng: Rng): void {
  for (const [rows, cols, bits] of shapes) {
    const n = rows * cols;
    const w16 = new Uint16Array(n);
    for (let i = 0; i < n; i++) w16[i] = f32ToBf16Bits((rng.normal() * 0.05 + 0.3) * (i % 97 === 5 ? 40 : 1)); // outliers
    if (rows > 2) w16.fill(f32ToBf16Bits(0.25), cols, 2 * cols); // a constant row
    const w = Float32Array.from(w16, bf16BitsToF32);
    for (const kind of ['f32', 'bf16'] as const) {
      const run = (k: Kernels) => {
        const lo = new Float32Array(rows);
        const hi = new Float32Array(rows);
        const t = new Float64Array(6);
        if (kind === 'f32') k.weightStats(w, rows, cols, bits, 0.29, lo, hi, t);
        else k.weightStatsBf16(w16, rows, cols, bits, 0.29, lo, hi, t);
        return { lo, hi, t };
      };
      const got = run(native());
      const want = run(R);
      const what = `weightStats ${kind} ${rows}x${cols} bits ${bits}`;
      assert.deepEqual(got.lo, want.lo, `${what}: row minima`);
      assert.deepEqual(got.hi, want.hi, `${what}: row maxima`);
      // Σd and Σd³ cancel: compared with the magnitude of their terms.
      const scales = [Math.sqrt(want.t[1]! * n), want.t[1]!, Math.sqrt(want.t[1]! * want.t[3]!), want.t[3]!, want.t[4]!, want.t[5]!];
      for (let i = 0; i < 6; i++) assert.ok(Math.abs(got.t[i]! - want.t[i]!) <= 1e-11 * scales[i]! + 1e-300, `${what}: total ${i} is ${got.t[i]}, want ${want.t[i]}`);
      if (bits === 0) assert.equal(got.t[5], 0, `${what}: bits 0 skips the error`);
    }
  }
}

kernelCase('weightStats: float32 and bf16, odd shapes, a constant row, bits 0 … 8', () => checkWeightStats([[3, 17, 4], [5, 16, 2], [2, 33, 0], [40, 257, 8]], new Rng(99)));
kernelCase('weightStats: threaded 300x257 and 7x70000', () => checkWeightStats([[300, 257, 8], [7, 70000, 3]], new Rng(98)), false);

/** H₃H₂H₁·diag(λ)·H₁H₂H₃ with Householder reflections H = I − 2vvᵀ: a dense symmetric matrix of known spectrum in O(n²). */
function withSpectrum(lambda: number[], rng: Rng): Float64Array {
  const n = lambda.length;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) a[i * n + i] = lambda[i]!;
  for (let h = 0; h < 3; h++) {
    const v = Float64Array.from({ length: n }, () => rng.normal());
    const norm = Math.hypot(...v);
    for (let i = 0; i < n; i++) v[i] = v[i]! / norm;
    // A ← HAH = A − 2v(Av)ᵀ − 2(Av)vᵀ + 4(vᵀAv)vvᵀ
    const av = new Float64Array(n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) av[i]! += a[i * n + j]! * v[j]!;
    let vav = 0;
    for (let i = 0; i < n; i++) vav += v[i]! * av[i]!;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = a[i * n + j]! - 2 * v[i]! * av[j]! - 2 * av[i]! * v[j]! + 4 * vav * v[i]! * v[j]!;
  }
  return a;
}

kernelCase('symmetricEigenvalues: known spectra with a repeated eigenvalue (n 1 … 300), the largest third by bisection, rank 2, diagonal and zero matrices', () => {
  const rng = new Rng(13);
  for (const n of [1, 2, 3, 5, 17, 64, 300]) {
    const lambda = Array.from({ length: n }, (_, i) => (i % 4 === 1 ? -1 : 1) * (1 + i * 0.37) * (i % 7 === 0 ? 10 : 1));
    if (n > 5) lambda[3] = lambda[4]!; // a repeated eigenvalue
    const a = withSpectrum(lambda, rng);
    const sorted = [...lambda].sort((x, y) => y - x);
    const biggest = Math.max(...lambda.map(Math.abs));
    const want = new Float64Array(n);
    R.symmetricEigenvalues(a, n, n, want);
    for (const count of [n, Math.floor((n + 2) / 3)]) {
      const got = new Float64Array(count);
      native().symmetricEigenvalues(a, n, count, got);
      for (let i = 0; i < count; i++) {
        assert.ok(Math.abs(got[i]! - sorted[i]!) <= 1e-11 * biggest, `n ${n}, ${count} wanted: eigenvalue ${i} is ${got[i]}, want ${sorted[i]}`);
        assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-11 * biggest, `n ${n}, ${count} wanted: eigenvalue ${i} is ${got[i]}, reference ${want[i]}`);
      }
    }
  }
  // Rank 2 (the Gram matrix of an exactly low-rank weight), 10 wanted: bisection.
  const n = 90;
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = 300 * Math.sin(1 + i) * Math.sin(1 + j) + 7 * Math.cos(0.5 * i) * Math.cos(0.5 * j);
  const all = new Float64Array(n);
  const top = new Float64Array(10);
  native().symmetricEigenvalues(a, n, n, all);
  native().symmetricEigenvalues(a, n, 10, top);
  const want = new Float64Array(10);
  R.symmetricEigenvalues(a, n, 10, want);
  for (let i = 0; i < 10; i++) {
    assert.ok(Math.abs(top[i]! - all[i]!) < 1e-11 * all[0]!, `rank 2: bisection eigenvalue ${i} is ${top[i]}, QL ${all[i]}`);
    assert.ok(Math.abs(top[i]! - want[i]!) < 1e-10 * all[0]!, `rank 2: eigenvalue ${i} is ${top[i]}, reference ${want[i]}`);
  }
  assert.ok(all[1]! > 1 && Math.abs(top[9]!) < 1e-10 * all[0]!);
  const out = new Float64Array(3);
  native().symmetricEigenvalues(Float64Array.from([3, 0, 0, 0, -1, 0, 0, 0, 2]), 3, 3, out);
  assert.deepEqual([...out], [3, 2, -1], 'a diagonal matrix is exact');
  native().symmetricEigenvalues(new Float64Array(4), 2, 2, out);
  assert.deepEqual([...out.subarray(0, 2)], [0, 0], 'the zero matrix');
});

// ---- fused attention ----------------------------------------------------------------------------------------------------

interface AttentionCase { B: number; T: number; S: number; H: number; G: number; D: number; causal: boolean; scale: number; window: number; softcap: number }

/**
 * attentionFusedForward and attentionFusedBackward against the reference:
 * o, lse and the gradients (added into non-zero buffers; dk skipped with
 * EMPTY when `skipK`), each within `tol` of its largest reference magnitude.
 */
function checkAttention(c: AttentionCase, skipK: boolean, rng: Rng, tol = 2e-5): void {
  const { B, T, S, H, G, D, causal, scale, window, softcap } = c;
  const what = `attentionFused ${JSON.stringify(c)}`;
  const q = randoms(B * T * H * D, rng, -2, 2);
  const k = randoms(B * S * G * D, rng, -2, 2);
  const v = randoms(B * S * G * D, rng, -1, 1);
  const dO = randoms(B * T * H * D, rng, -1, 1);
  const start = [randoms(q.length, rng, -1, 1), randoms(k.length, rng, -1, 1), randoms(v.length, rng, -1, 1)];
  const run = (kern: Kernels) => {
    const o = floats(q.length, NaN);
    const lse = floats(B * H * T, NaN);
    kern.attentionFusedForward(q, k, v, o, lse, B, T, S, H, G, D, causal, scale, window, softcap);
    const [dq, dk, dv] = start.map(copy) as [Float32Array, Float32Array, Float32Array];
    kern.attentionFusedBackward(q, k, v, o, lse, dO, dq, skipK ? EMPTY : dk, dv, B, T, S, H, G, D, causal, scale, window, softcap);
    return { o, lse, dq, dk, dv };
  };
  const got = run(native());
  const want = run(R);
  for (const key of ['o', 'lse', 'dq', 'dk', 'dv'] as const) {
    const g = got[key], w = want[key];
    let largest = 0;
    for (let i = 0; i < w.length; i++) largest = Math.max(largest, Math.abs(w[i]!));
    const worst = new Worst();
    for (let i = 0; i < w.length; i++) worst.add(g[i]!, w[i]!, largest, 0, key, i);
    worst.check(tol, what);
  }
  if (skipK) sameBits(got.dk, start[1]!, `${what}: dk skipped`);
}

kernelCase('attentionFused: tiles cut unevenly (T, S around 64), D with vector tails, GQA (3 and 130 heads per kv head), causal / window / softcap / not causal, a decode step', () => {
  const rng = new Rng(31);
  const base = { B: 1, causal: true, scale: 0.35, window: 0, softcap: 0 };
  checkAttention({ ...base, T: 1, S: 1, H: 1, G: 1, D: 1 }, false, rng);
  checkAttention({ ...base, B: 2, T: 5, S: 5, H: 4, G: 2, D: 3 }, false, rng);
  checkAttention({ ...base, T: 63, S: 63, H: 2, G: 1, D: 17 }, true, rng);
  checkAttention({ ...base, T: 65, S: 129, H: 3, G: 3, D: 33, window: 40 }, false, rng);
  checkAttention({ ...base, T: 70, S: 70, H: 2, G: 2, D: 8, softcap: 2, window: 64 }, false, rng);
  checkAttention({ ...base, T: 20, S: 67, H: 4, G: 1, D: 16, causal: false }, false, rng);
  checkAttention({ ...base, T: 1, S: 150, H: 4, G: 2, D: 64 }, true, rng);
  // Tiles of query steps × the heads of a group: 3 heads (21 steps per tile), and 130 heads (chunks of 64 heads).
  checkAttention({ ...base, T: 70, S: 75, H: 6, G: 2, D: 5, window: 30 }, false, rng);
  checkAttention({ ...base, T: 3, S: 5, H: 130, G: 1, D: 3 }, false, rng);
  // Fewer (b, kv head) tasks than 4: the backward cuts each one's key tiles
  // into interleaved chunks with partial dq buffers (4 chunks, causal and
  // not; 4 with a window that leaves some chunks no query; 2 chunks of 2
  // kv heads, without dk).
  checkAttention({ ...base, T: 300, S: 300, H: 4, G: 1, D: 24 }, false, rng);
  checkAttention({ ...base, T: 300, S: 300, H: 3, G: 1, D: 24, causal: false }, false, rng);
  checkAttention({ ...base, T: 40, S: 600, H: 2, G: 1, D: 16, window: 100 }, false, rng);
  checkAttention({ ...base, T: 200, S: 200, H: 4, G: 2, D: 8 }, true, rng);
});

export const CASES: readonly NativeCase[] = CASE_LIST;

// ---- determinism ---------------------------------------------------------------------------------------------------------

/**
 * SHA-256 of every output of the fused kernels, fused attention, the fake
 * quantizer and the weight statistics at threaded sizes (≥ 32k elements of work), on the
 * native backend: the README promises the same bits run to run and for any
 * QKD_THREADS.
 */
export function threadedDigest(): string {
  const k = native();
  const rng = new Rng(99);
  const hash = createHash('sha256');
  const put = (...arrays: ArrayBufferView[]) => {
    for (const a of arrays) hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  };
  const rows = 512;
  const cols = 704;
  const V = 256;
  const n = rows * cols;
  const x = randoms(n, rng, -2, 2);
  const w = randoms(cols, rng, -1, 1);
  const dy = randoms(n, rng, -1, 1);
  const y = floats(n);
  const rstd = floats(rows);
  const dx = copy(dy);
  const dw = floats(cols, 0.5);
  k.rmsnormForward(x, w, y, rstd, rows, cols, 1e-5);
  k.rmsnormBackward(x, w, rstd, dy, dx, dw, rows, cols);
  put(y, rstd, dx, dw);
  const sy = floats(n);
  const dgate = copy(dy);
  const dup = copy(dy);
  k.swigluForward(x, dy, sy, n);
  k.swigluBackward(x, dy, y, dgate, dup, n);
  put(sy, dgate, dup);
  const roped = copy(dy);
  const table = randoms(256 * 32, rng, -1, 1);
  k.rope(x, roped, table.subarray(0, 128 * 32), table.subarray(128 * 32), 4, 128, 11, 64, 1, 1, true);
  put(roped);
  const pw = copy(x);
  const pm = floats(n, 0.01);
  const pv = floats(n, 0.001);
  k.adamw(pw, dy, pm, pv, n, 1e-3, 0.9, 0.95, 1e-8, 0.9999, 1.5, 2.5);
  put(pw, pm, pv);
  const zT = randoms(rows * V, rng, -6, 6);
  const zS = randoms(rows * V, rng, -6, 6);
  const targets = Int32Array.from({ length: rows }, (_, r) => (r % 9 === 0 ? -1 : rng.int(V)));
  const lse = floats(rows);
  const dz = copy(zS);
  const lseT = floats(rows);
  const lseS = floats(rows);
  const kl = floats(rows);
  const dT = copy(zT);
  const dS = copy(zS);
  const loss = k.crossEntropyForward(zT, targets, lse, rows, V, -1);
  k.crossEntropyBackward(zT, targets, lse, dz, rows, V, -1, 0.001);
  const total = k.klForward(zT, zS, lseT, lseS, kl, rows, V, 0.5);
  k.klBackward(zT, zS, lseT, lseS, kl, dT, dS, rows, V, 0.5, 0.25);
  put(lse, dz, lseT, lseS, kl, dT, dS, Float64Array.of(loss, total));
  const BH = 16;
  const T = 128;
  const scores = randoms(BH * T * T, rng, -5, 5);
  const probs = floats(BH * T * T);
  const dscores = copy(scores);
  k.causalSoftmaxForward(scores, probs, BH, T, T, 0);
  k.causalSoftmaxBackward(probs, scores, dscores, BH, T, T, 0, true);
  put(probs, dscores);
  const sum = floats(n);
  const acc = copy(x);
  k.add(x, dy, sum, n);
  k.addInto(acc, dy, n);
  put(sum, acc);
  for (const [r, c, granularity] of [[rows, cols, 0], [rows, cols, 1], [rows, cols, 2], [1, 40000, 1], [333, 101, 2]] as const) {
    const out = floats(r * c);
    const mask = new Uint8Array(r * c);
    k.fakeQuantForward(x.subarray(0, r * c), out, mask, r, c, 4, granularity === 1, granularity, 64, 1);
    const g = copy(dy.subarray(0, r * c));
    k.fakeQuantBackward(dy.subarray(0, r * c), mask, g, r * c);
    put(out, mask, g);
  }
  const lo = new Float32Array(5);
  const hi = new Float32Array(5);
  const totals = new Float64Array(6);
  k.weightStats(x.subarray(0, 5 * 70000), 5, 70000, 3, 0.1, lo, hi, totals);
  put(lo, hi, totals);
  // Fused attention: forward one task per 64-row query tile; backward one per kv head and
  // key-tile chunk (B·G = 2 < 4: two chunks, with a partial dq buffer).
  const [aB, aT, aH, aG, aD] = [1, 200, 4, 2, 20];
  const aq = x.subarray(0, aB * aT * aH * aD), ak = x.subarray(aq.length, aq.length + aB * aT * aG * aD), av = dy.subarray(0, ak.length);
  const ao = floats(aq.length), alse = floats(aB * aH * aT), adq = floats(aq.length), adk = floats(ak.length), adv = floats(av.length);
  k.attentionFusedForward(aq, ak, av, ao, alse, aB, aT, aT, aH, aG, aD, true, 0.3, 0, 0);
  k.attentionFusedBackward(aq, ak, av, ao, alse, dy.subarray(aq.length, 2 * aq.length), adq, adk, adv, aB, aT, aT, aH, aG, aD, true, 0.3, 0, 0);
  put(ao, alse, adq, adk, adv);
  const w16 = new Uint16Array(n);
  k.f32ToBf16(x, w16, n);
  k.weightStatsBf16(w16, rows, cols, 4, 0, rstd, y.subarray(0, rows), totals);
  put(w16, rstd, y.subarray(0, rows), totals);
  // The int8 Krylov products: the weight's two layouts, then both products of a block of 40 columns.
  const q8 = quantizeBoth(k, w16, rows, cols, true);
  const p8 = floats(rows * 40);
  const y8 = floats(cols * 40);
  const o1 = k.int8Gemm(q8.byCols, int8Stride(rows), rows, 40, cols, null, x, 40, q8.scales, p8, 40);
  const o2 = k.int8Gemm(q8.byRows, int8Stride(cols), cols, 40, rows, q8.scales, p8, 40, null, y8, 40);
  put(q8.byRows, q8.byCols, q8.scales, p8, y8, Float64Array.of(q8.error, o1, o2));
  return hash.digest('hex');
}
