/**
 * Fake quantization (SPEC section 2) with the straight-through estimator.
 *
 * Uniform affine, b bits, on groups of a weight viewed as [rows, cols]
 * (rows = shape[0], the output channels):
 *   asymmetric: scale = (max − min)/(2^b − 1), zero = round(−min/scale),
 *               q = clamp(round(w/scale) + zero, 0, 2^b − 1), ŵ = (q − zero)·scale
 *   symmetric:  scale = max|w|/(2^(b−1) − 1), zero = 0,
 *               q = clamp(round(w/scale), −2^(b−1), 2^(b−1) − 1)
 * Granularity: one group per tensor, per output channel (row), or per run of
 * `groupSize` input columns within a row (the last run may be shorter).
 * `clipRatio` ≤ 1 shrinks the range (min·r, max·r) so outliers are clipped.
 *
 * Choices where SPEC is silent: rounding is half-to-even (as torch.round);
 * a group whose range is zero (constant) is reproduced exactly; the STE
 * passes the gradient where the unclamped q lies inside the integer range
 * and blocks it where w was clipped.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor, type FloatArray } from '../tensor.js';

export type QuantGranularity = 'tensor' | 'channel' | 'group';

export interface FakeQuantOptions {
  /** Bits per weight, 2..8. */
  bits: number;
  /** Symmetric (zero = 0) instead of asymmetric (default false). */
  symmetric?: boolean;
  /** Default 'channel'. */
  granularity?: QuantGranularity;
  /** Input columns per group for 'group' granularity (default 128). */
  groupSize?: number;
  /** Range shrink factor in (0, 1] (default 1: min/max of the group). */
  clipRatio?: number;
}

/** Rounds half to even, like torch.round and numpy.round. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function validateQuantOptions(op: string, o: FakeQuantOptions): Required<FakeQuantOptions> {
  const full = { symmetric: false, granularity: 'channel' as QuantGranularity, groupSize: 128, clipRatio: 1, ...o };
  if (!Number.isInteger(full.bits) || full.bits < 2 || full.bits > 8) {
    throw new QkdError('ARGUMENT', `${op}: bits must be an integer from 2 to 8, got ${o.bits}`, { field: 'bits' });
  }
  if (!['tensor', 'channel', 'group'].includes(full.granularity)) {
    throw new QkdError('ARGUMENT', `${op}: unknown granularity '${full.granularity}'`, { field: 'granularity', hint: "'tensor', 'channel' or 'group'" });
  }
  if (!Number.isInteger(full.groupSize) || full.groupSize < 1) {
    throw new QkdError('ARGUMENT', `${op}: groupSize must be a positive integer, got ${full.groupSize}`, { field: 'groupSize' });
  }
  if (!(full.clipRatio > 0 && full.clipRatio <= 1)) {
    throw new QkdError('ARGUMENT', `${op}: clipRatio must be in (0, 1], got ${full.clipRatio}`, { field: 'clipRatio' });
  }
  return full;
}

/**
 * Quantizes then dequantizes `w` (viewed as [rows, cols]) into `out`; sets
 * mask[i] = 1 where the gradient passes (may be null). Pure function, also
 * used by the PTQ quantizers.
 */
export function quantizeDequantize(w: FloatArray, rows: number, cols: number, options: FakeQuantOptions, out: FloatArray, mask: Uint8Array | null): void {
  const o = validateQuantOptions('quantizeDequantize', options);
  const span = o.granularity === 'tensor' ? rows * cols : o.granularity === 'channel' ? cols : Math.min(o.groupSize, cols);
  // A group is a contiguous run [start, start + len) of the flat buffer; for
  // 'tensor' there is one, for 'channel' one per row, for 'group' several per row.
  const runsPerRow = o.granularity === 'tensor' ? 0 : Math.ceil(cols / Math.max(span, 1));
  const qmaxAsym = 2 ** o.bits - 1;
  const qmaxSym = 2 ** (o.bits - 1) - 1;
  const qminSym = -(2 ** (o.bits - 1));
  const quantizeRun = (start: number, len: number): void => {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = start; i < start + len; i++) {
      const v = w[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    lo *= o.clipRatio;
    hi *= o.clipRatio;
    let scale: number;
    let zero: number;
    let qmin: number;
    let qmax: number;
    if (o.symmetric) {
      scale = Math.max(Math.abs(lo), Math.abs(hi)) / qmaxSym;
      zero = 0;
      qmin = qminSym;
      qmax = qmaxSym;
    } else {
      scale = (hi - lo) / qmaxAsym;
      zero = scale > 0 ? roundHalfEven(-lo / scale) : 0;
      qmin = 0;
      qmax = qmaxAsym;
    }
    if (!(scale > 0) || !Number.isFinite(scale)) {
      // Constant (or empty / non-finite) group: representable exactly.
      for (let i = start; i < start + len; i++) {
        out[i] = w[i]!;
        if (mask) mask[i] = 1;
      }
      return;
    }
    for (let i = start; i < start + len; i++) {
      const q = roundHalfEven(w[i]! / scale) + zero;
      const inside = q >= qmin && q <= qmax;
      const qc = inside ? q : q < qmin ? qmin : qmax;
      out[i] = (qc - zero) * scale;
      if (mask) mask[i] = inside ? 1 : 0;
    }
  };
  if (o.granularity === 'tensor') {
    quantizeRun(0, rows * cols);
    return;
  }
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < runsPerRow; g++) {
      const begin = g * span;
      quantizeRun(r * cols + begin, Math.min(span, cols - begin));
    }
  }
}

/**
 * ŵ = Q(w) in the forward pass; straight-through gradient in backward
 * (passes where w is inside the quantization range, zero where clipped).
 */
export function fakeQuantize(w: Tensor, options: FakeQuantOptions): Tensor {
  if (w.rank < 1) throw new QkdError('SHAPE', `fakeQuantize: needs at least 1 dim, got ${fmtShape(w.shape)}`);
  validateQuantOptions('fakeQuantize', options);
  const rows = w.rank === 1 ? 1 : w.shape[0]!;
  const cols = rows === 0 ? 0 : w.size / rows;
  const out = new Tensor(w.shape);
  const mask = new Uint8Array(w.size);
  quantizeDequantize(w.data, rows, cols, options, out.data, mask);
  return record(out, 'fakeQuantize', [w], (dy) => {
    const dw = w.ensureGrad();
    for (let i = 0; i < dy.length; i++) if (mask[i]) dw[i]! += dy[i]!;
  });
}
