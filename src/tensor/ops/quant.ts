/**
 * Fake quantization (docs/algorithms.md §2) with the straight-through estimator.
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
 * Choices the method leaves open: rounding is half-to-even (as torch.round);
 * a group whose range is zero (constant) is reproduced exactly; the STE
 * passes the gradient where the unclamped q lies inside the integer range
 * and blocks it where w was clipped.
 */
import { QkdError, fmtShape } from '../../errors.js';
import { record } from '../tape.js';
import { Tensor, type FloatArray } from '../tensor.js';
import { kernels } from '../backend.js';
import { f16BitsToF32, f32ToF16Bits } from '../dtype.js';
import { roundHalfEven } from '../reference/kernels.js';

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

/** The grid of learnedFakeQuantize: b bits, asymmetric (learned zero point) or symmetric (zero 2^(b−1)), groups of input columns (0: a row). */
export interface LearnedQuantOptions {
  bits: number;
  symmetric: boolean;
  /** Input columns per group; 0 = one group per output channel (row). */
  groupSize: number;
}

const F16_MIN = 2 ** -24;

/**
 * The step size a log-step parameter θ stands for: s = e^θ rounded to the
 * nearest f16 (at least the smallest f16 subnormal), exactly the scale the
 * packed checkpoint stores.
 */
export function learnedStep(theta: number): number {
  const s = f16BitsToF32(f32ToF16Bits(Math.exp(theta)));
  return s > F16_MIN ? s : F16_MIN;
}

/** The integer zero point a learned offset z stands for (asymmetric), as the packed checkpoint stores it. */
export function learnedZero(z: number, bits: number): number {
  const qmax = 2 ** bits - 1;
  const r = roundHalfEven(z);
  return r < 0 ? 0 : r > qmax ? qmax : r;
}

/**
 * Fake quantization with a learned step size (LSQ, Esser et al. 2020) and,
 * for asymmetric grids, a learned offset (LSQ+, Bhalgat et al. 2020), per
 * group of a weight viewed as [rows, cols] (docs/qat.md):
 *
 *   s = f16(e^θ),  z = clamp(round(z_learned), 0, 2^b − 1)   (symmetric: z = 2^(b−1), not learned)
 *   q = clamp(round(w/s) + z, 0, 2^b − 1),  ŵ = (q − z)·s
 *
 * so ŵ is exactly what the packed checkpoint decodes from the same s and z.
 * Gradients (straight-through for the roundings; g = 1/√(n·Q_P), n the
 * group's weights, Q_P = 2^b − 1 asymmetric, 2^(b−1) − 1 symmetric):
 *   ∂ŵ/∂w = 1 inside the range, 0 where clipped
 *   ∂ŵ/∂s = round(w/s) − w/s inside, q − z where clipped;  ∂L/∂θ = g·s·∂L/∂s
 *   ∂ŵ/∂z = 0 inside, −s where clipped;                   ∂L/∂z_learned = g·∂L/∂z
 * The step is learned as its logarithm so that AdamW's step (about lr per
 * update, whatever the gradient's scale) is a relative change of the step.
 */
export function learnedFakeQuantize(w: Tensor, logStep: Tensor, offset: Tensor | null, options: LearnedQuantOptions): Tensor {
  if (w.rank !== 2) throw new QkdError('SHAPE', `learnedFakeQuantize: needs a 2-D weight, got ${fmtShape(w.shape)}`);
  const { bits, symmetric, groupSize } = options;
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new QkdError('ARGUMENT', `learnedFakeQuantize: bits must be an integer from 2 to 8, got ${bits}`, { field: 'bits' });
  if (!Number.isInteger(groupSize) || groupSize < 0) throw new QkdError('ARGUMENT', `learnedFakeQuantize: groupSize must be a non-negative integer, got ${groupSize}`, { field: 'groupSize' });
  const [rows, cols] = w.shape as [number, number];
  const span = groupSize > 0 ? groupSize : cols;
  const groups = groupSize > 0 ? Math.ceil(cols / groupSize) : 1;
  if (logStep.size !== rows * groups) throw new QkdError('SHAPE', `learnedFakeQuantize: ${logStep.size} step sizes for ${rows}×${groups} groups`, { field: 'logStep' });
  if (symmetric !== (offset === null)) throw new QkdError('ARGUMENT', `learnedFakeQuantize: ${symmetric ? 'a symmetric grid has no offset' : 'an asymmetric grid needs its offsets'}`, { field: 'offset' });
  if (offset !== null && offset.size !== rows * groups) throw new QkdError('SHAPE', `learnedFakeQuantize: ${offset.size} offsets for ${rows}×${groups} groups`, { field: 'offset' });
  const qmax = 2 ** bits - 1;
  const qp = symmetric ? 2 ** (bits - 1) - 1 : qmax;
  const out = new Tensor(w.shape);
  // Per weight: 0 inside, 1 clipped low, 2 clipped high (the backward pass needs no more).
  const where = new Uint8Array(w.size);
  const steps = new Float64Array(rows * groups);
  const zeros = new Float64Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const gi = r * groups + g;
      const s = learnedStep(logStep.data[gi]!);
      const z = offset === null ? 2 ** (bits - 1) : learnedZero(offset.data[gi]!, bits);
      steps[gi] = s;
      zeros[gi] = z;
      const end = r * cols + Math.min(cols, (g + 1) * span);
      for (let i = r * cols + g * span; i < end; i++) {
        const q = roundHalfEven(w.data[i]! / s) + z;
        if (q < 0) {
          where[i] = 1;
          out.data[i] = (0 - z) * s; // not −z·s: −0 where z = 0
        } else if (q > qmax) {
          where[i] = 2;
          out.data[i] = (qmax - z) * s;
        } else out.data[i] = (q - z) * s;
      }
    }
  }
  return record(out, 'learnedFakeQuantize', offset ? [w, logStep, offset] : [w, logStep], (dy) => {
    const dw = w.requiresGrad ? w.ensureGrad() : null;
    const dTheta = logStep.requiresGrad ? logStep.ensureGrad() : null;
    const dZ = offset?.requiresGrad ? offset.ensureGrad() : null;
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < groups; g++) {
        const gi = r * groups + g;
        const s = steps[gi]!;
        const z = zeros[gi]!;
        const start = r * cols + g * span;
        const end = r * cols + Math.min(cols, (g + 1) * span);
        const gscale = 1 / Math.sqrt((end - start) * qp);
        let ds = 0;
        let dz = 0;
        for (let i = start; i < end; i++) {
          const d = dy[i]!;
          const k = where[i]!;
          if (k === 0) {
            if (dw) dw[i]! += d;
            const v = w.data[i]! / s;
            ds += d * (roundHalfEven(v) - v);
          } else {
            ds += d * (k === 1 ? -z : qmax - z);
            dz -= d * s;
          }
        }
        if (dTheta) dTheta[gi]! += gscale * s * ds;
        if (dZ) dZ[gi]! += gscale * dz;
      }
    }
  });
}
