/**
 * Shared vocabulary of the post-training quantizers: a scheme (how one tensor
 * is quantized), a plan (bits per tensor) and the byte count of the packed
 * format, which the bit allocator uses to meet a size budget.
 *
 * Packed layout (see quant/packed.ts): for a weight [rows, cols] at b < 16
 * bits, codes are packed LSB-first into rows of ceil(cols·b/8) bytes; each
 * group of `groupSize` input columns (one group per row when groupSize = 0)
 * has an F16 scale and, when asymmetric, a U8 zero point. 16 bits means the
 * weight is stored as F16.
 */

/** Bit widths a plan may assign. 16 = unquantized F16. */
export const PLAN_BITS = [2, 3, 4, 8, 16] as const;
export type PlanBits = (typeof PLAN_BITS)[number];

export interface QuantScheme {
  /** Input columns per group; 0 = one group per output channel (row). */
  groupSize: number;
  /** Symmetric (no zero point) instead of asymmetric (default). */
  symmetric: boolean;
  /**
   * One scale (and zero point) for the whole tensor; needs groupSize 0. The
   * packed format still stores it once per row (replicated), so every
   * granularity shares one layout and packedBytes holds for all of them.
   */
  perTensor?: boolean;
}

/** Bits per quantizable tensor (2-D weights), by tensor name. */
export interface QuantPlan {
  scheme: QuantScheme;
  bits: Record<string, PlanBits>;
}

/** Groups per row for a scheme. */
export function groupsPerRow(cols: number, groupSize: number): number {
  return groupSize > 0 ? Math.ceil(cols / groupSize) : 1;
}

/** Bytes a [rows, cols] weight takes in the packed format at `bits`. */
export function packedBytes(rows: number, cols: number, bits: number, scheme: QuantScheme): number {
  if (bits >= 16) return 2 * rows * cols;
  const codes = rows * Math.ceil((cols * bits) / 8);
  const perGroup = 2 + (scheme.symmetric ? 0 : 1);
  return codes + rows * groupsPerRow(cols, scheme.groupSize) * perGroup;
}
