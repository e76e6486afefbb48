/**
 * Normalisation over the last axis (C channels), rows = everything before it.
 * rmsNorm:   y = x / sqrt(mean(x²) + eps) · w
 * layerNorm: y = (x − mean) / sqrt(var + eps) · w + b   (biased variance)
 * Per-row statistics accumulate in float64 and are saved for backward.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor, allocFloat } from '../tensor.js';
import { kernels } from '../backend.js';

function checkNorm(op: string, x: Tensor, w: Tensor, b?: Tensor): { rows: number; C: number } {
  const C = x.shape[x.rank - 1];
  if (C === undefined || w.rank !== 1 || w.shape[0] !== C || (b !== undefined && (b.rank !== 1 || b.shape[0] !== C))) {
    throw new QkdError('SHAPE', `${op}: input ${fmtShape(x.shape)} needs weight${b ? '/bias' : ''} of shape [${C ?? '?'}], got ${fmtShape(w.shape)}${b ? ` / ${fmtShape(b.shape)}` : ''}`);
  }
  return { rows: C === 0 ? 0 : x.size / C, C };
}

export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-5): Tensor {
  const { rows, C } = checkNorm('rmsNorm', x, weight);
  const out = new Tensor(x.shape);
  const rstd = allocFloat(rows); // (rows) 1/rms per row, saved for backward
  kernels().rmsnormForward(x.data, weight.data, out.data, rstd, rows, C, eps);
  return record(out, 'rmsNorm', [x, weight], (dy) => {
    const empty = x.data.subarray(0, 0);
    const dx = x.requiresGrad ? x.ensureGrad() : empty;
    const dw = weight.requiresGrad ? weight.ensureGrad() : empty;
    kernels().rmsnormBackward(x.data, weight.data, rstd, dy, dx, dw, rows, C);
  });
}

/**
 * The residual add and the norm that reads its result, in one pass:
 * sum = x + delta (the residual stream, which goes on) and normed =
 * rmsNorm(sum, weight). The graph holds the two ops as if they ran apart
 * (an add, then an rmsNorm of the sum), so gradients reach x and delta both
 * through the residual stream and through the norm.
 */
export function addRmsNorm(x: Tensor, delta: Tensor, weight: Tensor, eps = 1e-5): { sum: Tensor; normed: Tensor } {
  if (x.rank !== delta.rank || x.shape.some((d, i) => d !== delta.shape[i])) {
    throw new QkdError('SHAPE', `addRmsNorm: x ${fmtShape(x.shape)} and delta ${fmtShape(delta.shape)} differ`);
  }
  const { rows, C } = checkNorm('addRmsNorm', x, weight);
  const sum = new Tensor(x.shape);
  const out = new Tensor(x.shape);
  const rstd = allocFloat(rows);
  kernels().addRmsnormForward(x.data, delta.data, sum.data, weight.data, out.data, rstd, rows, C, eps);
  const s = record(sum, 'add', [x, delta], (dy) => {
    if (x.requiresGrad) kernels().addInto(x.ensureGrad(), dy, dy.length);
    if (delta.requiresGrad) kernels().addInto(delta.ensureGrad(), dy, dy.length);
  });
  const normed = record(out, 'rmsNorm', [s, weight], (dy) => {
    const empty = s.data.subarray(0, 0);
    const dx = s.requiresGrad ? s.ensureGrad() : empty;
    const dw = weight.requiresGrad ? weight.ensureGrad() : empty;
    kernels().rmsnormBackward(s.data, weight.data, rstd, dy, dx, dw, rows, C);
  });
  return { sum: s, normed };
}

export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const { rows, C } = checkNorm('layerNorm', x, weight, bias);
  const out = new Tensor(x.shape);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  const X = x.data;
  for (let r = 0; r < rows; r++) {
    const o = r * C;
    let m = 0;
    for (let c = 0; c < C; c++) m += X[o + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (X[o + c]! - m) ** 2;
    const s = 1 / Math.sqrt(v / C + eps);
    mean[r] = m;
    rstd[r] = s;
    for (let c = 0; c < C; c++) out.data[o + c] = (X[o + c]! - m) * s * weight.data[c]! + bias.data[c]!;
  }
  return record(out, 'layerNorm', [x, weight, bias], (dy) => {
    const dx = x.requiresGrad ? x.ensureGrad() : null;
    const dw = weight.requiresGrad ? weight.ensureGrad() : null;
    const db = bias.requiresGrad ? bias.ensureGrad() : null;
    const W = weight.data;
    for (let r = 0; r < rows; r++) {
      const o = r * C;
      const m = mean[r]!;
      const s = rstd[r]!;
      let gMean = 0;
      let gxMean = 0;
      for (let c = 0; c < C; c++) {
        const xhat = (X[o + c]! - m) * s;
        const g = dy[o + c]! * W[c]!;
        gMean += g;
        gxMean += g * xhat;
        if (dw) dw[c]! += dy[o + c]! * xhat;
        if (db) db[c]! += dy[o + c]!;
      }
      gMean /= C;
      gxMean /= C;
      if (dx) {
        for (let c = 0; c < C; c++) {
          const xhat = (X[o + c]! - m) * s;
          dx[o + c]! += s * (dy[o + c]! * W[c]! - gMean - xhat * gxMean);
        }
      }
    }
  });
}
