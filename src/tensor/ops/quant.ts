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
import { kernels } from '../backend.js';

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

export { roundHalfEven } from '../reference/kernels.js';

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

const GRANULARITY_CODE = { tensor: 0, channel: 1, group: 2 } as const;

/**
 * Quantizes then dequantizes `w` (viewed as [rows, cols]) into `out`; sets
 * mask[i] = 1 where the gradient passes (may be null). Pure function, also
 * used by the PTQ quantizers. Runs on the backend's fakeQuantForward kernel.
 */
export function quantizeDequantize(w: FloatArray, rows: number, cols: number, options: FakeQuantOptions, out: FloatArray, mask: Uint8Array | null): void {
  const o = validateQuantOptions('quantizeDequantize', options);
  kernels().fakeQuantForward(w, out, mask ?? new Uint8Array(0), rows, cols, o.bits, o.symmetric, GRANULARITY_CODE[o.granularity], o.groupSize, o.clipRatio);
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
  return record(out, 'fakeQuantize', [w], (dy) => kernels().fakeQuantBackward(dy, mask, w.ensureGrad(), w.size));
}

/**
 * ŵ = roundTrip(w) in the forward pass, for a block format given as its
 * encode-then-decode function (the ggml formats of quant/ggml-formats.ts),
 * so training sees exactly the weights a deployment will decode. The block
 * scales are refit to the current weights at every call, so no weight is
 * clipped and the straight-through gradient passes everywhere (identity).
 */
export function blockFakeQuantize(w: Tensor, roundTrip: (x: Float32Array) => Float32Array): Tensor {
  if (!(w.data instanceof Float32Array)) throw new QkdError('DTYPE', 'blockFakeQuantize: float32 weights only (the formats are float32 codecs)');
  const out = new Tensor(w.shape, roundTrip(w.data));
  return record(out, 'blockFakeQuantize', [w], (dy) => {
    const g = w.ensureGrad();
    for (let i = 0; i < g.length; i++) g[i]! += dy[i]!;
  });
}
