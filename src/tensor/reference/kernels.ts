/**
 * Reference kernels in plain TypeScript: the definition every native kernel
 * is tested against, and the fallback when the addon is missing. Sums are
 * accumulated in float64 (JS numbers).
 */
import type { GemmArgs, Kernels } from '../backend.js';
import type { FloatArray } from '../tensor.js';

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
    for (let j = 0; j < cols; j++) if (x[o + j]! > max) max = x[o + j]!;
    if (max === -Infinity) {
      // Fully masked row: no probability mass anywhere (not NaN).
      for (let j = 0; j < cols; j++) y[o + j] = 0;
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

export const referenceKernels: Kernels = {
  name: 'reference',
  sgemm,
  softmaxForward,
  softmaxBackward,
};
