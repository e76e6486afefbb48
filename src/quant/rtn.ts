/**
 * Round-to-nearest (RTN) post-training quantization (docs/algorithms.md §2) into the
 * form a packed checkpoint stores: one unsigned code per weight, an F16 scale
 * per group and, when asymmetric, a U8 zero point per group. Every variant
 * dequantizes as ŵ = (code − zero) · scale.
 *
 * Legend: a weight is [rows, cols] = [out, in]; a group is a run of
 * `groupSize` input columns of one row (the last run of a row may be
 * shorter), a whole row (groupSize 0), or the whole tensor (perTensor).
 *
 * Choices the method leaves open. They differ on purpose from the fake
 * quantizer of tensor/ops/quant.ts, which models training noise, not storage:
 * - Asymmetric: the range is extended to include 0 (lo = min(min w, 0),
 *   hi = max(max w, 0)), as GPTQ and deployed int4 formats do. The zero point
 *   round(−lo/scale) is then an integer in [0, 2^b − 1] that fits a U8, and
 *   w = 0 (dead columns, pruned weights) is represented exactly.
 * - Symmetric: scale = max|w| / (2^(b−1) − 1); the signed value
 *   q ∈ [−2^(b−1), 2^(b−1) − 1] is stored as the unsigned code q + 2^(b−1),
 *   i.e. symmetric is asymmetric with the implicit zero point 2^(b−1).
 * - The scale is rounded to f16 BEFORE the codes are computed, so the scale
 *   in the file reproduces the dequantized weights bit for bit.
 * - An all-zero group (the only zero-range group once 0 is in the range)
 *   gets scale 1 and dequantizes to exact zeros. A non-zero constant group
 *   is reproduced to the precision of its f16 scale (relative ≤ 2^-11).
 * - A scale below the smallest f16 subnormal (2^-24) is raised to it; a
 *   scale above the f16 maximum, or a NaN weight, is an error.
 * - Rounding is half-to-even (as torch.round and the fake quantizer).
 * - Per-tensor granularity is `scheme.perTensor`; its single scale is stored
 *   once per row so all granularities share one layout.
 */
import { QkdError } from '../errors.js';
import { kernels } from '../tensor/backend.js';
import { rtnGroupParams } from '../tensor/reference/rtn-error.js';
import type { QuantGranularity } from '../tensor/ops/quant.js';
import { groupsPerRow, type QuantScheme } from './scheme.js';

export interface QuantizedTensor {
  rows: number;
  cols: number;
  /** 2..8. */
  bits: number;
  scheme: QuantScheme;
  granularity: QuantGranularity;
  /** [rows, cols] unsigned codes in [0, 2^bits − 1], one per weight (unpacked). */
  codes: Uint8Array;
  /** [rows, groups] scales, exactly representable in f16. */
  scales: Float32Array;
  /** [rows, groups] zero points in [0, 2^bits − 1]; null when symmetric (implicit 2^(bits−1)). */
  zeros: Uint8Array | null;
}

/**
 * 1.5·2^52: (x + M) − M rounds x to an integer half-to-even for |x| < 2^51
 * (the sum has no fraction bits left and IEEE addition rounds ties to even).
 * Same result as roundHalfEven, without Math.round's cost in the hot loops;
 * larger |x| only occur far outside the code range and are clamped anyway.
 */
const ROUND_MAGIC = 6755399441055744;

/** Granularity a scheme describes. */
export function schemeGranularity(scheme: QuantScheme): QuantGranularity {
  if (scheme.perTensor) return 'tensor';
  return scheme.groupSize > 0 ? 'group' : 'channel';
}

/** Validates the arguments every quantizer shares; `op` names the caller in errors. */
export function checkQuantArgs(op: string, length: number, rows: number, cols: number, bits: number, scheme: QuantScheme): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0 || length !== rows * cols) {
    throw new QkdError('SHAPE', `${op}: ${length} weights do not form [${rows}, ${cols}]`, { field: 'shape' });
  }
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) {
    throw new QkdError('ARGUMENT', `${op}: bits must be an integer from 2 to 8, got ${bits}`, { field: 'bits' });
  }
  checkScheme(op, scheme);
}

/** Validates a scheme: groupSize ≥ 0, symmetric boolean, perTensor only with groupSize 0. */
export function checkScheme(op: string, scheme: QuantScheme): void {
  if (!Number.isInteger(scheme.groupSize) || scheme.groupSize < 0) {
    throw new QkdError('ARGUMENT', `${op}: groupSize must be a non-negative integer, got ${scheme.groupSize}`, { field: 'groupSize', hint: '0 (per output channel) or a group of input columns such as 32, 64, 128' });
  }
  if (typeof scheme.symmetric !== 'boolean') {
    throw new QkdError('ARGUMENT', `${op}: symmetric must be true or false, got ${JSON.stringify(scheme.symmetric)}`, { field: 'symmetric' });
  }
  if (scheme.perTensor && scheme.groupSize > 0) {
    throw new QkdError('ARGUMENT', `${op}: perTensor needs groupSize 0, got ${scheme.groupSize}`, { field: 'groupSize', hint: 'groupSize 0 with perTensor' });
  }
}

/**
 * Scale and zero point of a group spanning [lo, hi], written into
 * out[0] (f16-exact scale) and out[1] (integer zero, 2^(b−1) when symmetric).
 * The grid is defined once, in tensor/reference/rtn-error.ts.
 */
export function groupParams(lo: number, hi: number, bits: number, symmetric: boolean, out: Float64Array): void {
  if (!rtnGroupParams(lo, hi, bits, symmetric, out)) {
    throw new QkdError('ARGUMENT', `quantization scale of weights spanning [${lo}, ${hi}] exceeds the f16 range`, { field: 'weights', hint: 'weights with |w| below ~65504·2^(b−1)' });
  }
}

/** The code of value v: clamp(round(v/scale) + zero, 0, qmax). */
export function encode(v: number, scale: number, zero: number, qmax: number): number {
  const q = v / scale + ROUND_MAGIC - ROUND_MAGIC + zero;
  return q < 0 ? 0 : q > qmax ? qmax : q;
}

/** Min and max of w over a strided run, into out[0], out[1]; NaN is an error. */
function rangeOf(w: Float32Array, start: number, len: number, out: Float64Array): void {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = start; i < start + len; i++) {
    const v = w[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    if (v !== v) throw new QkdError('ARGUMENT', `weight ${i} is NaN`, { field: 'weights', hint: 'finite weights' });
  }
  out[0] = lo === Infinity ? 0 : lo;
  out[1] = hi === -Infinity ? 0 : hi;
}

/** Visits every group as (row, group index, start, length) in row-major order. */
function forEachGroup(rows: number, cols: number, groupSize: number, visit: (row: number, group: number, start: number, len: number) => void): void {
  const span = groupSize > 0 ? groupSize : cols;
  const groups = groupsPerRow(cols, groupSize);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) visit(r, g, r * cols + g * span, Math.min(span, cols - g * span));
  }
}

/** Round-to-nearest quantization of w [rows, cols]. */
export function rtnQuantize(w: Float32Array, rows: number, cols: number, bits: number, scheme: QuantScheme): QuantizedTensor {
  checkQuantArgs('rtnQuantize', w.length, rows, cols, bits, scheme);
  const groups = groupsPerRow(cols, scheme.groupSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeros = scheme.symmetric ? null : new Uint8Array(rows * groups);
  const qmax = 2 ** bits - 1;
  const range = new Float64Array(2);
  const params = new Float64Array(2);
  if (scheme.perTensor) {
    rangeOf(w, 0, w.length, range);
    groupParams(range[0]!, range[1]!, bits, scheme.symmetric, params);
  }
  forEachGroup(rows, cols, scheme.groupSize, (r, g, start, len) => {
    if (!scheme.perTensor) {
      rangeOf(w, start, len, range);
      groupParams(range[0]!, range[1]!, bits, scheme.symmetric, params);
    }
    const scale = params[0]!;
    const zero = params[1]!;
    scales[r * groups + g] = scale;
    if (zeros) zeros[r * groups + g] = zero;
    for (let i = start; i < start + len; i++) codes[i] = encode(w[i]!, scale, zero, qmax);
  });
  return { rows, cols, bits, scheme: { ...scheme }, granularity: schemeGranularity(scheme), codes, scales, zeros };
}

/** The zero point of group index gi (implicit 2^(bits−1) when symmetric). */
export function zeroOf(q: QuantizedTensor, gi: number): number {
  return q.zeros ? q.zeros[gi]! : 2 ** (q.bits - 1);
}

/** ŵ = (code − zero) · scale, as float32 [rows, cols]. */
export function dequantize(q: QuantizedTensor): Float32Array {
  const out = new Float32Array(q.rows * q.cols);
  const groups = groupsPerRow(q.cols, q.scheme.groupSize);
  forEachGroup(q.rows, q.cols, q.scheme.groupSize, (r, g, start, len) => {
    const scale = q.scales[r * groups + g]!;
    const zero = zeroOf(q, r * groups + g);
    for (let i = start; i < start + len; i++) out[i] = (q.codes[i]! - zero) * scale;
  });
  return out;
}

/**
 * ‖Q(W) − W‖_F / ‖W‖_F of round-to-nearest at `bits` (0 for an all-zero W),
 * equal to what dequantize(rtnQuantize(...)) gives, with float64 sums.
 */
export function quantizationError(w: Float32Array, rows: number, cols: number, bits: number, scheme: QuantScheme): number {
  return quantizationErrors(w, rows, cols, [bits], scheme)[0]!;
}

/**
 * quantizationError at several widths in one pass over W (the backend's
 * rtnErrors kernel: native when built). The bit allocator calls this for
 * every tensor with every width it may choose.
 */
export function quantizationErrors(w: Float32Array | { bf16: Uint16Array }, rows: number, cols: number, widths: readonly number[], scheme: QuantScheme): number[] {
  return rtnErrorsCall(w, rows, cols, widths, scheme, false)();
}

/**
 * quantizationErrors as a background job (kernels().rtnErrorsStart): the
 * native kernel works on it while a core is idle, and the returned function
 * completes it (on the pool, for what is left) and gives the errors. `w`
 * must stay unchanged until that function has been called, and it must be
 * called once (until then the job's arrays are kept from the garbage
 * collector). The results equal quantizationErrors'.
 */
export function quantizationErrorsStart(w: Float32Array | { bf16: Uint16Array }, rows: number, cols: number, widths: readonly number[], scheme: QuantScheme): () => number[] {
  return rtnErrorsCall(w, rows, cols, widths, scheme, true);
}

/** The arrays of background jobs not yet waited for (see rtnErrorsCall). */
const inFlight = new Set<object>();

function rtnErrorsCall(w: Float32Array | { bf16: Uint16Array }, rows: number, cols: number, widths: readonly number[], scheme: QuantScheme, background: boolean): () => number[] {
  const length = w instanceof Float32Array ? w.length : w.bf16.length;
  for (const bits of widths) checkQuantArgs('quantizationError', length, rows, cols, bits, scheme);
  const out = new Float64Array(widths.length);
  const args = [rows, cols, scheme.groupSize, scheme.symmetric, scheme.perTensor === true, Int32Array.from(widths), out] as const;
  const k = kernels();
  let wait: () => number;
  if (background) {
    const handle = w instanceof Float32Array ? k.rtnErrorsStart(w, ...args) : k.rtnErrorsBf16Start(w.bf16, ...args);
    // The job reads w and writes out on other threads until it is waited for: both stay reachable until
    // then (forever, if it never is) so that the collector cannot free them under it.
    const held = { w, out };
    inFlight.add(held);
    wait = () => {
      try {
        return k.backgroundWait(handle);
      } finally {
        inFlight.delete(held);
      }
    };
  } else {
    const status = w instanceof Float32Array ? k.rtnErrors(w, ...args) : k.rtnErrorsBf16(w.bf16, ...args);
    wait = () => status;
  }
  return () => {
    const status = wait();
    if (status >= 0) throw new QkdError('ARGUMENT', `weight ${status} is NaN`, { field: 'weights', hint: 'finite weights' });
    if (status === -2) throw new QkdError('ARGUMENT', 'a quantization scale exceeds the f16 range', { field: 'weights', hint: 'weights with |w| below ~65504·2^(b−1)' });
    return Array.from(out);
  };
}
