/**
 * Reductions over one axis (sum, mean, max) or over everything, and softmax
 * / log-softmax over the last axis. Sums accumulate in float64.
 * Legend: a tensor is viewed as [outer, n, inner] around the reduced axis.
 */
import { record } from '../tape.js';
import { Tensor, normaliseAxis } from '../tensor.js';
import { kernels } from '../backend.js';
import { splitAround } from './shape.js';

function reducedShape(shape: readonly number[], axis: number, keepDim: boolean): number[] {
  const out = [...shape];
  if (keepDim) out[axis] = 1;
  else out.splice(axis, 1);
  return out;
}

/** Sum over `axis` (keepDim keeps it as size 1). */
export function sum(x: Tensor, axis: number, keepDim = false): Tensor {
  return sumOrMean('sum', x, axis, keepDim);
}

/** Mean over `axis`. */
export function mean(x: Tensor, axis: number, keepDim = false): Tensor {
  return sumOrMean('mean', x, axis, keepDim);
}

function sumOrMean(op: 'sum' | 'mean', x: Tensor, axis: number, keepDim: boolean): Tensor {
  const ax = normaliseAxis(op, axis, x.rank);
  const { outer, n, inner } = splitAround(x.shape, ax);
  const factor = op === 'mean' ? 1 / n : 1;
  const out = new Tensor(reducedShape(x.shape, ax, keepDim));
  const acc = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    acc.fill(0);
    for (let j = 0; j < n; j++) {
      const base = (o * n + j) * inner;
      for (let i = 0; i < inner; i++) acc[i]! += x.data[base + i]!;
    }
    for (let i = 0; i < inner; i++) out.data[o * inner + i] = acc[i]! * factor;
  }
  return record(out, op, [x], (dy) => {
    const dx = x.ensureGrad();
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < n; j++) {
        const base = (o * n + j) * inner;
        for (let i = 0; i < inner; i++) dx[base + i]! += dy[o * inner + i]! * factor;
      }
    }
  });
}

/** Maximum over `axis`; the gradient goes to the first maximal entry. */
export function max(x: Tensor, axis: number, keepDim = false): Tensor {
  const ax = normaliseAxis('max', axis, x.rank);
  const { outer, n, inner } = splitAround(x.shape, ax);
  const out = new Tensor(reducedShape(x.shape, ax, keepDim));
  const argmax = new Int32Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity;
      let arg = 0;
      for (let j = 0; j < n; j++) {
        const v = x.data[(o * n + j) * inner + i]!;
        if (v > best || Number.isNaN(v)) {
          best = v;
          arg = j;
          if (Number.isNaN(v)) break;
        }
      }
      out.data[o * inner + i] = best;
      argmax[o * inner + i] = arg;
    }
  }
  return record(out, 'max', [x], (dy) => {
    const dx = x.ensureGrad();
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) dx[(o * n + argmax[o * inner + i]!) * inner + i]! += dy[o * inner + i]!;
    }
  });
}

/** Sum of all elements (a scalar). */
export function sumAll(x: Tensor): Tensor {
  let s = 0;
  for (let i = 0; i < x.size; i++) s += x.data[i]!;
  const out = new Tensor([]);
  out.data[0] = s;
  return record(out, 'sumAll', [x], (dy) => {
    const dx = x.ensureGrad();
    const g = dy[0]!;
    for (let i = 0; i < dx.length; i++) dx[i]! += g;
  });
}

/** Mean of all elements (a scalar). */
export function meanAll(x: Tensor): Tensor {
  let s = 0;
  for (let i = 0; i < x.size; i++) s += x.data[i]!;
  const n = x.size;
  const out = new Tensor([]);
  out.data[0] = s / n;
  return record(out, 'meanAll', [x], (dy) => {
    const dx = x.ensureGrad();
    const g = dy[0]! / n;
    for (let i = 0; i < dx.length; i++) dx[i]! += g;
  });
}

/** Softmax over the last axis. */
export function softmax(x: Tensor): Tensor {
  const cols = x.shape[x.rank - 1] ?? 1;
  const rows = cols === 0 ? 0 : x.size / cols;
  const out = new Tensor(x.shape);
  kernels().softmaxForward(x.data, out.data, rows, cols);
  return record(out, 'softmax', [x], (dy) => {
    kernels().softmaxBackward(out.data, dy, x.ensureGrad(), rows, cols);
  });
}

/** log(softmax(x)) over the last axis, computed stably (x − max − log Σ exp). */
export function logSoftmax(x: Tensor): Tensor {
  const cols = x.shape[x.rank - 1] ?? 1;
  const rows = cols === 0 ? 0 : x.size / cols;
  const out = new Tensor(x.shape);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let m = -Infinity;
    for (let j = 0; j < cols; j++) if (x.data[o + j]! > m) m = x.data[o + j]!;
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(x.data[o + j]! - m);
    const lse = m + Math.log(s);
    for (let j = 0; j < cols; j++) out.data[o + j] = x.data[o + j]! - lse;
  }
  return record(out, 'logSoftmax', [x], (dy) => {
    // d/dx_j = dy_j − softmax_j · Σ_k dy_k
    const dx = x.ensureGrad();
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let total = 0;
      for (let j = 0; j < cols; j++) total += dy[o + j]!;
      for (let j = 0; j < cols; j++) dx[o + j]! += dy[o + j]! - Math.exp(out.data[o + j]!) * total;
    }
  });
}
