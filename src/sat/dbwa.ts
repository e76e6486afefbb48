/**
 * Dynamic bit-width storage (docs/algorithms.md §5 DBWA): a float32 array packed at a
 * precision tier, and the tier assignment from sensitivity scores
 * (top 25% → 16 bits, middle 50% → 12, bottom 25% → 8).
 *
 * Formats (every tier keeps a sign and an exponent per value, so the error is
 * relative to each value, not to its block's largest one):
 *
 *  tier 16  bfloat16 (1 sign, 8 exponent, 7 mantissa bits): the top half of
 *           the float32, full float32 range, no scales. 2 bytes per value.
 *  tier 12  e5m6 minifloat (1 sign, 5 exponent, 6 mantissa bits) with one
 *           power-of-two scale byte per block of 64 values; two values packed
 *           in 3 bytes. 1.5 bytes per value + 1/64.
 *  tier 8   e4m3 minifloat (1 sign, 4 exponent, 3 mantissa bits) with one
 *           power-of-two scale byte per block of 64. 1 byte per value + 1/64.
 *
 * Minifloat details: no Inf / NaN codes (non-finite input is rejected). The
 * block scale byte is a shift s of the float32 exponent: a value with float32
 * exponent field e gets minifloat exponent e − s, where s puts the block's
 * largest exponent one below the top (2^E − 2), so rounding up does not
 * overflow (s ≥ 1 always, so float32 subnormals land in the minifloat
 * subnormals). Minifloat exponent 0 is subnormal. Scaling by a power of two
 * is exact, so the only error is the rounding of the mantissa. A block whose
 * largest value is ≥ 2^127 saturates at the largest finite code instead of
 * rounding past float32's range (as 16-bit does near FLT_MAX).
 *
 * Why minifloats and not int8 / int12 with an absmax scale: a linear grid
 * fits weights (near-Gaussian blocks) well, but gradients and Adam moments do
 * not. v = EMA(g²) spans orders of magnitude within a block of 64 neighbours
 * (activation outlier features make some columns' gradients 100× larger),
 * and Adam divides by √v per element: on a linear grid the small entries of
 * a block are stored with huge relative error or as 0, which turns their
 * update m/(√v + ε) into noise. An exponent per value bounds the relative
 * error of every entry within 2^13 (8-bit) or 2^29 (12-bit) of its block's
 * largest magnitude; below that the absolute error is at most a subnormal
 * step. On Gaussian weights the price is a larger RMS error than int8
 * (e4m3 ≈ 2.7% of the RMS vs ≈ 0.6% for int8 with a per-64 absmax scale,
 * checked in test/sat/dbwa.test.ts), acceptable for the least sensitive
 * quarter of layers; int8 zeroes most of a block spanning 3–4 decades.
 *
 * Error bounds, with M = 7, 6, 3 mantissa bits for tiers 16, 12, 8:
 *   round to nearest:  |x̂ − x| ≤ max(2^-(M+1)·|x|, step/2)   (2^-8, 2^-7, 2^-4)
 *   stochastic:        |x̂ − x| < max(2^-M·|x|, step)         (2^-7, 2^-6, 2^-3)
 * where step is the subnormal spacing of the block: 2^(1−M)·2^(s−127)
 * ≤ blockmax·2^-16 (8-bit), ≤ blockmax·2^-35 (12-bit), 2^-133 (bf16). The
 * relative term governs every value in the normal range, |x| ≥ blockmax·2^-13
 * (8-bit), ≥ blockmax·2^-29 (12-bit), any normal float32 (16-bit).
 *
 * Rounding: stochastic on write when an Rng is given (16 random bits per
 * value, so E[x̂] = x to within 2^-16 of a step: repeated small optimiser
 * updates survive low precision on average), round to nearest-even with
 * null. The Rng seeds a local xorshift128 generator per encode (4 draws),
 * which keeps the inner loops free of calls; the Rng's stream therefore
 * advances by exactly 4 draws per encode.
 *
 * The packing itself runs in the backend's dbwaEncode / dbwaDecode kernels:
 * the TypeScript reference (tensor/reference/dbwa-codec.ts) or the native
 * port, which matches it bit for bit (`npm run bench -- kernels` times both).
 */
import { QkdError } from '../errors.js';
import type { Rng } from '../tensor/random.js';
import { kernels } from '../tensor/backend.js';
import { DBWA_BLOCK } from '../tensor/reference/dbwa-codec.js';

export { DBWA_BLOCK };

/** A storage precision in bits per value. */
export type PrecisionTier = 8 | 12 | 16;

/** Packed storage bytes (codes + scales) for n values at a tier. */
export function tierBytes(n: number, tier: PrecisionTier): number {
  checkTier(tier);
  if (!Number.isInteger(n) || n < 0) throw new QkdError('ARGUMENT', `tierBytes: n = ${n}`, { field: 'n', hint: 'a non-negative integer' });
  return codeBytes(n, tier) + scaleBytes(n, tier);
}

function codeBytes(n: number, tier: PrecisionTier): number {
  return tier === 16 ? 2 * n : tier === 12 ? 3 * Math.ceil(n / 2) : n;
}

function scaleBytes(n: number, tier: PrecisionTier): number {
  return tier === 16 ? 0 : Math.ceil(n / DBWA_BLOCK);
}

function checkTier(tier: number): asserts tier is PrecisionTier {
  if (tier !== 8 && tier !== 12 && tier !== 16) throw new QkdError('ARGUMENT', `precision tier ${tier}`, { field: 'tier', hint: '8, 12 or 16' });
}

// ---- packed array --------------------------------------------------------------

/**
 * A float32 array stored at a precision tier. `storage` holds the codes
 * followed by the block scale bytes (none for tier 16); with tier and length
 * it is everything needed to restore the array (fromStorage).
 */
export class PackedArray {
  readonly tier: PrecisionTier;
  readonly length: number;
  readonly storage: Uint8Array;

  private constructor(tier: PrecisionTier, length: number, storage: Uint8Array) {
    this.tier = tier;
    this.length = length;
    this.storage = storage;
  }

  /** Actual storage bytes (codes + scales). */
  get bytes(): number {
    return this.storage.byteLength;
  }

  /** Packs src at `tier`; stochastic rounding with an Rng, round-to-nearest-even with null. */
  static encode(src: Float32Array, tier: PrecisionTier, rng: Rng | null): PackedArray {
    checkTier(tier);
    const packed = new PackedArray(tier, src.length, new Uint8Array(tierBytes(src.length, tier)));
    packed.encodeFrom(src, rng);
    return packed;
  }

  /** Wraps bytes saved from `storage` (e.g. in a checkpoint); the bytes are not copied unless misaligned. */
  static fromStorage(tier: PrecisionTier, length: number, storage: Uint8Array): PackedArray {
    checkTier(tier);
    const expected = tierBytes(length, tier);
    if (storage.byteLength !== expected) {
      throw new QkdError('SHAPE', `PackedArray.fromStorage: ${storage.byteLength} bytes for ${length} values at ${tier} bits`, { field: 'storage', hint: `${expected} bytes` });
    }
    if (tier === 16 && storage.byteOffset % 4 !== 0) storage = storage.slice();
    return new PackedArray(tier, length, storage);
  }

  /**
   * Re-packs new values of the same length in place (no allocation: the
   * per-step path). On a non-finite value it throws; the storage is then
   * partly overwritten.
   */
  encodeFrom(src: Float32Array, rng: Rng | null): void {
    this.checkLength('encodeFrom', src.length);
    let seed: Uint32Array | null = null;
    if (rng !== null) {
      seed = Uint32Array.of(rng.nextUint32(), rng.nextUint32(), rng.nextUint32(), rng.nextUint32());
      if ((seed[0]! | seed[1]! | seed[2]! | seed[3]!) === 0) seed[3] = 1; // xorshift's one forbidden state
    }
    const bad = kernels().dbwaEncode(this.tier, src, this.storage, seed);
    if (bad >= 0) {
      throw new QkdError('ARGUMENT', `PackedArray.encode: value ${src[bad]} at index ${bad} is not finite`, { field: 'src', hint: 'finite float32 values (NaN and ±Inf cannot be packed)' });
    }
  }

  /** Unpacks into dst (length must match). */
  decodeInto(dst: Float32Array): void {
    this.checkLength('decodeInto', dst.length);
    kernels().dbwaDecode(this.tier, this.storage, dst);
  }

  /** A new float32 array with the unpacked values. */
  decode(): Float32Array {
    const out = new Float32Array(this.length);
    this.decodeInto(out);
    return out;
  }

  private checkLength(op: string, n: number): void {
    if (n !== this.length) throw new QkdError('SHAPE', `PackedArray.${op}: array has ${n} values, the packed array ${this.length}`, { field: 'length', hint: `${this.length} values` });
  }
}

// ---- tier assignment -------------------------------------------------------------

/**
 * docs/algorithms.md §5 tiers from sensitivity scores: the top quarter (by score, equal
 * scores in name order) → 16 bits, the bottom quarter → 8, the rest → 12.
 * Both quarters hold Math.round(n/4) names when n ≥ 2, so the average over
 * names is exactly 12 bits; a single name gets 12.
 */
export function assignTiers(scores: ReadonlyMap<string, number>): Map<string, PrecisionTier> {
  for (const [name, s] of scores) {
    if (Number.isNaN(s)) throw new QkdError('ARGUMENT', `assignTiers: score of '${name}' is NaN`, { field: name, hint: 'a number' });
  }
  const ranked = [...scores.entries()].sort(([na, a], [nb, b]) => b - a || (na < nb ? -1 : na > nb ? 1 : 0));
  const n = ranked.length;
  const quarter = n >= 2 ? Math.round(n / 4) : 0;
  const tiers = new Map<string, PrecisionTier>();
  ranked.forEach(([name], i) => tiers.set(name, i < quarter ? 16 : i >= n - quarter ? 8 : 12));
  return tiers;
}
