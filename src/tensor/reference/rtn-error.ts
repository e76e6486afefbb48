/**
 * The reference of the `rtnErrors` kernel: the relative error
 * ‖Q(W) − W‖_F / ‖W‖_F of round-to-nearest quantization of W [rows, cols]
 * at several bit widths in one call, the figure the bit allocator needs for
 * every tensor and width (docs/algorithms.md §2). Q is the RTN grid of
 * quant/rtn.ts, defined here (rtnGroupParams) so the reference, the native
 * kernel and the quantizer share one definition:
 *  - a group is `groupSize` columns of one row (the last may be shorter), a
 *    whole row (groupSize 0), or the whole tensor (perTensor);
 *  - asymmetric: the range is extended to include 0, scale = (hi − lo) /
 *    (2^b − 1), zero = round(−lo / scale) clamped to [0, 2^b − 1];
 *    symmetric: scale = max(−lo, hi) / (2^(b−1) − 1), zero = 2^(b−1);
 *  - the scale is rounded to f16 (through float32) before use, and raised
 *    to 2^-24 when that gives 0; an all-zero group gets scale 1;
 *  - codes round half to even: clamp(round(w / scale) + zero, 0, 2^b − 1);
 *    ŵ = float32((code − zero) · scale);
 *  - sums in float64, in a fixed order a vector unit can follow: within a
 *    group, element k goes to lane k mod 8 and the eight lanes are added as
 *    ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)); groups add up per
 *    row, rows in order.
 * Returns −1, or the index of the first NaN weight, or −2 when a scale
 * exceeds the f16 range (|w| too large); `out` is then unspecified.
 */
import { f16BitsToF32, f32ToF16Bits } from '../dtype.js';

const F16_MIN_SUBNORMAL = 2 ** -24;
/** 1.5·2^52: (x + M) − M rounds x to an integer half-to-even for |x| < 2^51. */
const ROUND_MAGIC = 6755399441055744;

/**
 * Scale and zero point of a group spanning [lo, hi] into out[0] (f16-exact
 * scale) and out[1] (integer zero); false when the scale exceeds f16.
 */
export function rtnGroupParams(lo: number, hi: number, bits: number, symmetric: boolean, out: Float64Array): boolean {
  const qmax = 2 ** bits - 1;
  let raw: number;
  if (symmetric) raw = Math.max(-lo, hi) / (2 ** (bits - 1) - 1);
  else {
    lo = Math.min(lo, 0);
    hi = Math.max(hi, 0);
    raw = (hi - lo) / qmax;
  }
  if (!(raw > 0)) {
    // All-zero group: any scale reproduces it; 1 keeps a file readable.
    out[0] = 1;
    out[1] = symmetric ? 2 ** (bits - 1) : 0;
    return true;
  }
  let scale = f16BitsToF32(f32ToF16Bits(raw));
  if (!Number.isFinite(scale)) return false;
  if (scale === 0) scale = F16_MIN_SUBNORMAL;
  out[0] = scale;
  out[1] = symmetric ? 2 ** (bits - 1) : Math.min(Math.max(roundHalfEvenFast(-lo / scale), 0), qmax);
  return true;
}

function roundHalfEvenFast(x: number): number {
  return Math.abs(x) < 2 ** 51 ? x + ROUND_MAGIC - ROUND_MAGIC : x;
}

const params = new Float64Array(2);
const lanes = new Float64Array(8);

/** The eight lane sums added in the kernel's fixed tree order. */
function laneSum(l: Float64Array): number {
  return l[0]! + l[1]! + (l[2]! + l[3]!) + (l[4]! + l[5]! + (l[6]! + l[7]!));
}

export function rtnErrors(w: Float32Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number {
  return rtnErrorsOf(w, rows, cols, groupSize, symmetric, perTensor, bits, out);
}

/** rtnErrors of a weight given as raw bfloat16 bits (its float32 widening). */
export function rtnErrorsBf16(w: Uint16Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number {
  const widened = new Float32Array(w.length);
  // A loop, not Uint32Array.from(w, f): that collects the values in a JS array first, which stops at 2²⁷ entries.
  const words = new Uint32Array(widened.buffer);
  for (let i = 0; i < w.length; i++) words[i] = w[i]! << 16;
  return rtnErrorsOf(widened, rows, cols, groupSize, symmetric, perTensor, bits, out);
}

function rtnErrorsOf(w: Float32Array, rows: number, cols: number, groupSize: number, symmetric: boolean, perTensor: boolean, bits: Int32Array, out: Float64Array): number {
  const span = perTensor || groupSize <= 0 ? cols : groupSize;
  const err = new Float64Array(bits.length);
  const scales = new Float64Array(bits.length);
  const zeros = new Float64Array(bits.length);
  let norm = 0;
  if (perTensor) {
    const range = rangeOf(w, 0, w.length);
    if (typeof range === 'number') return range;
    for (let j = 0; j < bits.length; j++) {
      if (!rtnGroupParams(range[0], range[1], bits[j]!, symmetric, params)) return -2;
      scales[j] = params[0]!;
      zeros[j] = params[1]!;
    }
  }
  // Sums: per group, then per row, then over the rows in order (the native kernel's order, so its results are identical).
  const rowErr = new Float64Array(bits.length);
  for (let r = 0; r < rows; r++) {
    rowErr.fill(0);
    let rowNorm = 0;
    for (let c = 0; c < cols; c += span) {
      const start = r * cols + c;
      const end = start + Math.min(span, cols - c);
      if (!perTensor) {
        const range = rangeOf(w, start, end - start);
        if (typeof range === 'number') return range;
        for (let j = 0; j < bits.length; j++) {
          if (!rtnGroupParams(range[0], range[1], bits[j]!, symmetric, params)) return -2;
          scales[j] = params[0]!;
          zeros[j] = params[1]!;
        }
      }
      lanes.fill(0);
      for (let i = start; i < end; i++) lanes[(i - start) & 7]! += w[i]! * w[i]!;
      rowNorm += laneSum(lanes);
      for (let j = 0; j < bits.length; j++) {
        const scale = scales[j]!;
        const zero = zeros[j]!;
        const qmax = 2 ** bits[j]! - 1;
        lanes.fill(0);
        for (let i = start; i < end; i++) {
          const v = w[i]!;
          let q = v / scale + ROUND_MAGIC - ROUND_MAGIC + zero;
          if (q < 0) q = 0;
          else if (q > qmax) q = qmax;
          const d = Math.fround((q - zero) * scale) - v;
          lanes[(i - start) & 7]! += d * d;
        }
        rowErr[j]! += laneSum(lanes);
      }
    }
    norm += rowNorm;
    for (let j = 0; j < bits.length; j++) err[j]! += rowErr[j]!;
  }
  for (let j = 0; j < bits.length; j++) out[j] = norm > 0 ? Math.sqrt(err[j]! / norm) : 0;
  return -1;
}

/** [min, max] of w[start, start + len), or the index of a NaN. */
function rangeOf(w: Float32Array, start: number, len: number): [number, number] | number {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = start; i < start + len; i++) {
    const v = w[i]!;
    if (v !== v) return i;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}
