/**
 * Reference kernels in plain TypeScript: the definition every native kernel
 * is tested against, and the fallback when the addon is missing. Sums are
 * accumulated in float64 (JS numbers).
 */
import { symmetricEigen, symmetricEigenvaluesOnly } from '../eigen.js';
import { invertLower, pivotedCholesky } from '../factor.js';
import { Rng } from '../random.js';
import { bf16BitsToF32, f16Table32, f32ToBf16Bits } from '../dtype.js';
import type { Bf16GemmArgs, GemmArgs, Kernels } from '../kernel-types.js';
import type { FloatArray } from '../tensor.js';
import { dbwaDecode, dbwaEncode } from './dbwa-codec.js';
import { causalConvBackward, causalConvForward, ssmMatrixBackward, ssmMatrixForward, ssmScanBackward, ssmScanForward } from './ssm.js';
import { attentionFusedBackward, attentionFusedForward } from './attention.js';
import { rtnErrors, rtnErrorsBf16 } from './rtn-error.js';
import { int8Gemm, int8GemmFast, int8Quantize } from './int8-gemm.js';

function sgemm(p: GemmArgs): void {
  const { batch, transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc } = p;
  const acc = new Float64Array(N);
  for (let i = 0; i < batch; i++) {
    const aOff = i * p.strideA;
    const bOff = i * p.strideB;
    const cOff = i * p.strideC;
    for (let m = 0; m < M; m++) {
      acc.fill(0);
      if (!transB) {
        // Row of C as a combination of rows of B: contiguous inner loop.
        for (let k = 0; k < K; k++) {
          const av = transA ? a[aOff + k * lda + m]! : a[aOff + m * lda + k]!;
          if (av === 0) continue;
          const bRow = bOff + k * ldb;
          for (let n = 0; n < N; n++) acc[n]! += av * b[bRow + n]!;
        }
      } else {
        // Dot products of a row (or column) of A with rows of B.
        for (let n = 0; n < N; n++) {
          const bRow = bOff + n * ldb;
          let s = 0;
          if (transA) for (let k = 0; k < K; k++) s += a[aOff + k * lda + m]! * b[bRow + k]!;
          else {
            const aRow = aOff + m * lda;
            for (let k = 0; k < K; k++) s += a[aRow + k]! * b[bRow + k]!;
          }
          acc[n] = s;
        }
      }
      const cRow = cOff + m * ldc;
      if (beta === 0) for (let n = 0; n < N; n++) c[cRow + n] = alpha * acc[n]!;
      else for (let n = 0; n < N; n++) c[cRow + n] = alpha * acc[n]! + beta * c[cRow + n]!;
    }
  }
}

function softmaxForward(x: FloatArray, y: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let max = -Infinity;
    let nan = false;
    for (let j = 0; j < cols; j++) {
      const v = x[o + j]!;
      if (v > max) max = v;
      else if (v !== v) nan = true;
    }
    if (max === -Infinity) {
      // Fully masked row: no probability mass anywhere (not NaN), unless a NaN is in it, which propagates (as in the addon).
      for (let j = 0; j < cols; j++) y[o + j] = nan ? NaN : 0;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      const e = Math.exp(x[o + j]! - max);
      y[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < cols; j++) y[o + j]! *= inv;
  }
}

function softmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += y[o + j]! * dy[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j]! += y[o + j]! * (dy[o + j]! - dot);
  }
}

function causalSoftmaxForward(x: FloatArray, y: FloatArray, BH: number, T: number, S: number, offset: number): void {
  for (let bh = 0; bh < BH; bh++) {
    for (let t = 0; t < T; t++) {
      const o = (bh * T + t) * S;
      const valid = Math.min(S, offset + t + 1);
      let max = -Infinity;
      for (let j = 0; j < valid; j++) if (x[o + j]! > max) max = x[o + j]!;
      let sum = 0;
      for (let j = 0; j < valid; j++) {
        const e = Math.exp(x[o + j]! - max);
        y[o + j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      for (let j = 0; j < valid; j++) y[o + j]! *= inv;
      for (let j = valid; j < S; j++) y[o + j] = 0;
    }
  }
}

function causalSoftmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, BH: number, T: number, S: number, offset: number, accumulate: boolean): void {
  for (let bh = 0; bh < BH; bh++) {
    for (let t = 0; t < T; t++) {
      const o = (bh * T + t) * S;
      const valid = Math.min(S, offset + t + 1);
      let dot = 0;
      for (let j = 0; j < valid; j++) dot += y[o + j]! * dy[o + j]!;
      if (accumulate) for (let j = 0; j < valid; j++) dx[o + j]! += y[o + j]! * (dy[o + j]! - dot);
      else {
        for (let j = 0; j < valid; j++) dx[o + j] = y[o + j]! * (dy[o + j]! - dot);
        for (let j = valid; j < S; j++) dx[o + j] = 0;
      }
    }
  }
}

function rmsnormForward(x: FloatArray, w: FloatArray, y: FloatArray, rstd: FloatArray, rows: number, cols: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[o + c]! * x[o + c]!;
    const s = 1 / Math.sqrt(ss / cols + eps);
    rstd[r] = s;
    for (let c = 0; c < cols; c++) y[o + c] = x[o + c]! * s * w[c]!;
  }
}

function addRmsnormForward(x: FloatArray, delta: FloatArray, s: FloatArray, w: FloatArray, y: FloatArray, rstd: FloatArray, rows: number, cols: number, eps: number): void {
  for (let i = 0; i < rows * cols; i++) s[i] = x[i]! + delta[i]!;
  rmsnormForward(s, w, y, rstd, rows, cols, eps);
}

function rmsnormBackward(x: FloatArray, w: FloatArray, rstd: FloatArray, dy: FloatArray, dx: FloatArray, dw: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const s = rstd[r]!;
    if (dw.length > 0) for (let c = 0; c < cols; c++) dw[c]! += dy[o + c]! * x[o + c]! * s;
    if (dx.length > 0) {
      let gx = 0;
      for (let c = 0; c < cols; c++) gx += dy[o + c]! * w[c]! * x[o + c]!;
      const k = (s * s * s * gx) / cols;
      for (let c = 0; c < cols; c++) dx[o + c]! += s * dy[o + c]! * w[c]! - k * x[o + c]!;
    }
  }
}

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

function swigluForward(gate: FloatArray, up: FloatArray, y: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    y[i] = g * sigmoid(g) * up[i]!;
  }
}

function swigluBackward(gate: FloatArray, up: FloatArray, dy: FloatArray, dgate: FloatArray, dup: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    const sg = sigmoid(g);
    if (dgate.length > 0) dgate[i]! += dy[i]! * up[i]! * sg * (1 + g * (1 - sg));
    if (dup.length > 0) dup[i]! += dy[i]! * g * sg;
  }
}

function rope(src: FloatArray, dst: FloatArray, cos: FloatArray, sin: FloatArray, B: number, T: number, H: number, D: number, style: 0 | 1, direction: 1 | -1, accumulate: boolean): void {
  const half = D / 2;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const c = cos[t * half + i]!;
          const s = direction * sin[t * half + i]!;
          const ia = style === 0 ? o + i : o + 2 * i;
          const ib = style === 0 ? o + i + half : o + 2 * i + 1;
          const xa = src[ia]!;
          const xb = src[ib]!;
          if (accumulate) {
            dst[ia]! += xa * c - xb * s;
            dst[ib]! += xa * s + xb * c;
          } else {
            dst[ia] = xa * c - xb * s;
            dst[ib] = xa * s + xb * c;
          }
        }
      }
    }
  }
}

function adamw(w: FloatArray, g: FloatArray, m: FloatArray, v: FloatArray, n: number, lr: number, b1: number, b2: number, eps: number, shrink: number, c1: number, c2: number): void {
  for (let i = 0; i < n; i++) {
    const gi = g[i]!;
    const mi = (m[i] = b1 * m[i]! + (1 - b1) * gi);
    const vi = (v[i] = b2 * v[i]! + (1 - b2) * gi * gi);
    w[i] = w[i]! * shrink - (lr * (mi * c1)) / (Math.sqrt(vi * c2) + eps);
  }
}

/** log Σ_j exp(z[off+j]·invTemp), stably. */
function logSumExp(z: FloatArray, off: number, V: number, invTemp: number): number {
  let m = -Infinity;
  for (let j = 0; j < V; j++) m = Math.max(m, z[off + j]! * invTemp);
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(z[off + j]! * invTemp - m);
  return m + Math.log(s);
}

function crossEntropyForward(logits: FloatArray, targets: Int32Array, lse: FloatArray, rows: number, V: number, ignoreIndex: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y === ignoreIndex) continue;
    const l = logSumExp(logits, r * V, V, 1);
    lse[r] = l;
    total += l - logits[r * V + y]!;
  }
  return total;
}

function crossEntropyBackward(logits: FloatArray, targets: Int32Array, lse: FloatArray, dz: FloatArray, rows: number, V: number, ignoreIndex: number, scale: number): void {
  for (let r = 0; r < rows; r++) {
    const y = targets[r]!;
    if (y === ignoreIndex) continue;
    const o = r * V;
    const l = lse[r]!;
    for (let j = 0; j < V; j++) dz[o + j]! += scale * Math.exp(logits[o + j]! - l);
    dz[o + y]! -= scale;
  }
}

function klForward(zT: FloatArray, zS: FloatArray, lseT: FloatArray, lseS: FloatArray, rowKl: FloatArray, rows: number, V: number, inv: number): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    const lt = logSumExp(zT, o, V, inv);
    const ls = logSumExp(zS, o, V, inv);
    lseT[r] = lt;
    lseS[r] = ls;
    let kl = 0;
    for (let j = 0; j < V; j++) {
      const logPT = zT[o + j]! * inv - lt;
      if (logPT === -Infinity) continue; // 0 · log 0 = 0
      kl += Math.exp(logPT) * (logPT - (zS[o + j]! * inv - ls));
    }
    rowKl[r] = kl;
    total += kl;
  }
  return total;
}

function klBackward(zT: FloatArray, zS: FloatArray, lseT: FloatArray, lseS: FloatArray, rowKl: FloatArray, dT: FloatArray, dS: FloatArray, rows: number, V: number, inv: number, g: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    for (let j = 0; j < V; j++) {
      const logPT = zT[o + j]! * inv - lseT[r]!;
      const logPS = zS[o + j]! * inv - lseS[r]!;
      const pT = Math.exp(logPT);
      if (dS.length > 0) dS[o + j]! += g * (Math.exp(logPS) - pT);
      if (dT.length > 0 && pT > 0) dT[o + j]! += g * pT * (logPT - logPS - rowKl[r]!);
    }
  }
}

/** Rounds half to even, like torch.round and numpy.round. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function fakeQuantForward(w: FloatArray, out: FloatArray, mask: Uint8Array, rows: number, cols: number, bits: number, symmetric: boolean, granularity: 0 | 1 | 2, groupSize: number, clipRatio: number): void {
  const useMask = mask.length > 0;
  const qmaxAsym = 2 ** bits - 1;
  const qmaxSym = 2 ** (bits - 1) - 1;
  const qminSym = -(2 ** (bits - 1));
  const quantizeRun = (start: number, len: number): void => {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = start; i < start + len; i++) {
      const v = w[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    lo *= clipRatio;
    hi *= clipRatio;
    const scale = symmetric ? Math.max(Math.abs(lo), Math.abs(hi)) / qmaxSym : (hi - lo) / qmaxAsym;
    if (!(scale > 0) || !Number.isFinite(scale)) {
      // Constant (or empty / non-finite) group: representable exactly.
      for (let i = start; i < start + len; i++) {
        out[i] = w[i]!;
        if (useMask) mask[i] = 1;
      }
      return;
    }
    const zero = symmetric ? 0 : roundHalfEven(-lo / scale);
    const qmin = symmetric ? qminSym : 0;
    const qmax = symmetric ? qmaxSym : qmaxAsym;
    for (let i = start; i < start + len; i++) {
      const q = roundHalfEven(w[i]! / scale) + zero;
      const inside = q >= qmin && q <= qmax;
      const qc = inside ? q : q < qmin ? qmin : qmax;
      out[i] = (qc - zero) * scale;
      if (useMask) mask[i] = inside ? 1 : 0;
    }
  };
  if (granularity === 0) {
    quantizeRun(0, rows * cols);
    return;
  }
  const span = granularity === 1 ? cols : Math.min(groupSize, cols);
  for (let r = 0; r < rows; r++) {
    for (let begin = 0; begin < cols; begin += span) quantizeRun(r * cols + begin, Math.min(span, cols - begin));
  }
}

function fakeQuantBackward(dy: FloatArray, mask: Uint8Array, dw: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) if (mask[i]) dw[i]! += dy[i]!;
}

function addInto(dst: FloatArray, src: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) dst[i]! += src[i]!;
}

function add(a: FloatArray, b: FloatArray, out: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!;
}

function bf16Gemm(p: Bf16GemmArgs): void {
  const { transA, M, N, K, a, lda, b, ldb, c, ldc } = p;
  const keep = p.accumulate === true;
  const rounded = new Float64Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) rounded[k * N + n] = bf16BitsToF32(f32ToBf16Bits(p.transB ? b[n * ldb + k]! : b[k * ldb + n]!));
  const row = new Float64Array(K);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) row[k] = bf16BitsToF32(transA ? a[k * lda + m]! : a[m * lda + k]!);
    for (let n = 0; n < N; n++) {
      const at = p.transC ? n * ldc + m : m * ldc + n;
      let sum = keep ? c[at]! : 0;
      for (let k = 0; k < K; k++) sum += row[k]! * rounded[k * N + n]!;
      c[at] = sum;
    }
  }
}

/** The per-row b-bit quantizer of fakeQuantForward (granularity 1, clip 1); null when the row is copied. */
function rowQuantizer(lo: number, hi: number, bits: number): { scale: number; zero: number; qmax: number } | null {
  const qmax = 2 ** bits - 1;
  const scale = (hi - lo) / qmax;
  if (!(scale > 0) || !Number.isFinite(scale)) return null;
  return { scale, zero: roundHalfEven(-lo / scale), qmax };
}

function weightStatsOf(value: (i: number) => number, rows: number, cols: number, bits: number, shift: number, rowMin: Float32Array, rowMax: Float32Array, totals: Float64Array): void {
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let s4 = 0;
  let squares = 0;
  let error = 0;
  for (let r = 0; r < rows; r++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let c = 0; c < cols; c++) {
      const x = value(r * cols + c);
      if (x < lo) lo = x;
      if (x > hi) hi = x;
      const d = x - shift;
      s1 += d;
      s2 += d * d;
      s3 += d * d * d;
      s4 += d * d * d * d;
      squares += x * x;
    }
    rowMin[r] = lo;
    rowMax[r] = hi;
    const q = bits === 0 ? null : rowQuantizer(lo, hi, bits);
    if (q === null) continue;
    for (let c = 0; c < cols; c++) {
      const x = value(r * cols + c);
      const level = roundHalfEven(x / q.scale) + q.zero;
      const clamped = level >= 0 && level <= q.qmax ? level : level < 0 ? 0 : q.qmax;
      const e = Math.fround((clamped - q.zero) * q.scale) - x;
      error += e * e;
    }
  }
  totals.set([s1, s2, s3, s4, squares, error]);
}

function weightStats(w: Float32Array, rows: number, cols: number, bits: number, shift: number, rowMin: Float32Array, rowMax: Float32Array, totals: Float64Array): void {
  weightStatsOf((i) => w[i]!, rows, cols, bits, shift, rowMin, rowMax, totals);
}

function weightStatsBf16(w: Uint16Array, rows: number, cols: number, bits: number, shift: number, rowMin: Float32Array, rowMax: Float32Array, totals: Float64Array): void {
  weightStatsOf((i) => bf16BitsToF32(w[i]!), rows, cols, bits, shift, rowMin, rowMax, totals);
}

/**
 * The largest eigenvalues of a symmetric matrix (only the lower triangle is
 * read), in float64: Householder tridiagonalisation and implicit QL.
 */
function sumSquares(x: FloatArray, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i]! * x[i]!;
  return s;
}

function scaleInPlace(x: FloatArray, n: number, s: number): void {
  // s rounded to float32 first, as the native kernel takes it: x·s is then the float32 product exactly.
  const f = Math.fround(s);
  for (let i = 0; i < n; i++) x[i]! *= f;
}

function symmetricEigenvalues(a: Float64Array, n: number, count: number, out: Float64Array): void {
  out.set(symmetricEigenvaluesOnly(a, n).subarray(0, count));
}

function normalFill(state: Uint32Array, spare: Float64Array, out: Float64Array, n: number): void {
  const rng = new Rng(0);
  rng.setState({ words: Array.from(state.subarray(0, 4)), spareNormal: spare[0] !== 0 ? spare[1]! : null });
  for (let i = 0; i < n; i++) out[i] = rng.normal();
  const after = rng.getState();
  state.set(after.words);
  spare[0] = after.spareNormal === null ? 0 : 1;
  spare[1] = after.spareNormal ?? 0;
}

function pivotedCholeskyInverse(a: Float64Array, n: number, scale: Float64Array, tolerance: number, order: Float64Array, diag: Float64Array, inverse: Float64Array): number {
  const factor = pivotedCholesky(a, n, scale, tolerance);
  const r = factor.order.length;
  const inv = invertLower(factor.L, r);
  for (let i = 0; i < r; i++) {
    order[i] = factor.order[i]!;
    diag[i] = factor.L[i * r + i]!;
  }
  inverse.set(inv);
  return r;
}

function startBlockFill(state: Uint32Array, spare: Float64Array, out: Float32Array, n: number, width: number, gaussian: number): void {
  const rng = new Rng(0);
  rng.setState({ words: Array.from(state.subarray(0, 4)), spareNormal: spare[0] !== 0 ? spare[1]! : null });
  let bits = 0;
  let left = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < width; j++) {
      if (j < gaussian) {
        out[i * width + j] = rng.normal();
        continue;
      }
      if (left === 0) {
        bits = rng.nextUint32();
        left = 32;
      }
      out[i * width + j] = bits & 1 ? 1 : -1;
      bits >>>= 1;
      left--;
    }
  }
  const after = rng.getState();
  state.set(after.words);
  spare[0] = after.spareNormal === null ? 0 : 1;
  spare[1] = after.spareNormal ?? 0;
}

/** Results of background jobs (rtnErrorsStart) not yet waited for, by handle: the reference runs them at once. */
const backgroundJobs = new Map<number, number>();
let lastBackgroundJob = 0;

function background(result: number): number {
  backgroundJobs.set(++lastBackgroundJob, result);
  return lastBackgroundJob;
}

function backgroundWait(handle: number): number {
  const result = backgroundJobs.get(handle);
  if (result === undefined) throw new Error(`backgroundWait: no background job ${handle} in flight (each handle is waited for once)`);
  backgroundJobs.delete(handle);
  return result;
}

/** eigenBatchStart's result for one matrix with eigenvector rows (whole vectors by tensor/eigen.ts, then the rows picked). */
function eigenRows(lower: Float64Array, n: number, count: number, head: number, tail: number, out: Float64Array): void {
  const full = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) full[i * n + j] = full[j * n + i] = lower[i * n + j]!;
  }
  const { values, vectors } = symmetricEigen(full, n);
  if (!values.every(Number.isFinite)) throw new Error('eigenBatchStart: no eigenvalues for a matrix that is not finite');
  out.set(values.subarray(0, count));
  for (let r = 0; r < head + tail; r++) {
    const row = r < head ? r : n - tail + (r - head);
    for (let t = 0; t < count; t++) out[count + r * count + t] = vectors[row * n + t]!;
  }
}

/** Results of eigenBatchStart jobs not yet waited for, by handle. */
const eigenJobs = new Map<number, Float64Array>();
let lastEigenJob = 0;

function eigenBatchStart(a: Float32Array, sizes: Int32Array, counts: Int32Array, heads: Int32Array, tails: Int32Array): number {
  if (heads.length !== sizes.length || tails.length !== sizes.length || counts.length !== sizes.length) {
    throw new Error(`eigenBatchStart: arguments sizes (${sizes.length}), counts (${counts.length}), heads (${heads.length}) and tails (${tails.length}) must have one entry per matrix`);
  }
  const out = new Float64Array(counts.reduce((s, c, i) => s + c * (1 + heads[i]! + tails[i]!), 0));
  let at = 0;
  let to = 0;
  for (let i = 0; i < sizes.length; i++) {
    const n = sizes[i]!;
    const count = counts[i]!;
    const head = heads[i]!;
    const tail = tails[i]!;
    if (head < 0 || tail < 0 || head + tail > n) throw new Error(`eigenBatchStart: matrix ${i}: heads[i] (${head}) and tails[i] (${tail}) must be >= 0 with heads[i] + tails[i] <= size (${n})`);
    const matrix = Float64Array.from(a.subarray(at, at + n * n));
    if (head + tail === 0) symmetricEigenvalues(matrix, n, count, out.subarray(to, to + count));
    else eigenRows(matrix, n, count, head, tail, out.subarray(to, to + count * (1 + head + tail)));
    at += n * n;
    to += count * (1 + head + tail);
  }
  eigenJobs.set(++lastEigenJob, out);
  return lastEigenJob;
}

function eigenBatchWait(handle: number, out: Float64Array): void {
  const results = eigenJobs.get(handle);
  if (results === undefined) throw new Error(`eigenBatchWait: no job ${handle} in flight (each handle is waited for once)`);
  eigenJobs.delete(handle);
  if (out.length < results.length) throw new Error(`eigenBatchWait: argument out (Float64Array) has ${out.length} elements, fewer than the job's ${results.length} results`);
  out.set(results);
}

function f32ToBf16(src: Float32Array, dst: Uint16Array, n: number): void {
  for (let i = 0; i < n; i++) dst[i] = f32ToBf16Bits(src[i]!);
}

function bf16ToF32(src: Uint16Array, dst: Float32Array, n: number): void {
  const to = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) to[i] = src[i]! << 16;
}

function f16ToF32(src: Uint16Array, dst: Float32Array, n: number): void {
  const table = f16Table32();
  for (let i = 0; i < n; i++) dst[i] = table[src[i]!]!;
}

export const referenceKernels: Kernels = {
  name: 'reference',
  sgemm,
  softmaxForward,
  softmaxBackward,
  causalSoftmaxForward,
  causalSoftmaxBackward,
  rmsnormForward,
  addRmsnormForward,
  rmsnormBackward,
  swigluForward,
  swigluBackward,
  rope,
  adamw,
  crossEntropyForward,
  crossEntropyBackward,
  klForward,
  klBackward,
  fakeQuantForward,
  fakeQuantBackward,
  ssmScanForward,
  ssmScanBackward,
  ssmMatrixForward,
  ssmMatrixBackward,
  causalConvForward,
  causalConvBackward,
  attentionFusedForward,
  attentionFusedBackward,
  addInto,
  add,
  bf16Gemm,
  dbwaEncode,
  dbwaDecode,
  weightStats,
  weightStatsBf16,
  rtnErrors,
  rtnErrorsBf16,
  rtnErrorsStart: (...args: Parameters<typeof rtnErrors>) => background(rtnErrors(...args)),
  rtnErrorsBf16Start: (...args: Parameters<typeof rtnErrorsBf16>) => background(rtnErrorsBf16(...args)),
  backgroundWait,
  int8Quantize,
  int8Gemm,
  int8GemmFast,
  symmetricEigenvalues,
  sumSquares,
  scaleInPlace,
  eigenBatchStart,
  eigenBatchWait,
  normalFill,
  pivotedCholeskyInverse,
  startBlockFill,
  f32ToBf16,
  bf16ToF32,
  f16ToF32,
};
