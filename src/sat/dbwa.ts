/**
 * Dynamic bit-width storage (SPEC 5 DBWA): a float32 array packed at a
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
 * Speed (plain TS, one core, 1M Gaussian values, a busy 2-core machine):
 * encode 180–260 M/s stochastic and 230–480 M/s nearest, decode 400–1100 M/s;
 * bf16 is the fastest tier, the minifloats pay for a per-block max pass.
 */
import { QkdError } from '../errors.js';
import type { Rng } from '../tensor/random.js';

/** A storage precision in bits per value. */
export type PrecisionTier = 8 | 12 | 16;

/** Values per scale byte in the 8- and 12-bit tiers. */
export const DBWA_BLOCK = 64;

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

// ---- random bits -------------------------------------------------------------

/** Values per refill of random draws: whole blocks, two values per draw. */
const CHUNK = 64 * DBWA_BLOCK;

const SHARED_DRAWS = new Uint16Array(CHUNK);

/**
 * xorshift128 (Marsaglia) seeded from an Rng: bulk 32-bit draws for
 * stochastic rounding, filled a chunk at a time in one tight loop so the
 * encode loops only read an array. Each draw serves two values (16 bits each).
 */
class RoundingBits {
  /** The generator state (int32 words: no boxing). */
  private readonly s = new Int32Array(4);
  /** 16 random bits for each value of a chunk (one buffer shared by all encodes: JS runs one at a time). */
  readonly draws = SHARED_DRAWS;

  constructor(rng: Rng) {
    for (let i = 0; i < 4; i++) this.s[i] = rng.nextUint32();
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[3] = 1;
  }

  /** Refills `draws` with fresh values. */
  refill(): Uint16Array {
    const s = this.s;
    let x = s[0]!;
    let y = s[1]!;
    let z = s[2]!;
    let w = s[3]!;
    const out = this.draws;
    for (let i = 0; i < out.length; i += 2) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = w ^ (w >>> 19) ^ t ^ (t >>> 8);
      out[i] = w;
      out[i + 1] = w >>> 16;
    }
    s[0] = x;
    s[1] = y;
    s[2] = z;
    s[3] = w;
    return out;
  }
}

// ---- minifloat codec -----------------------------------------------------------

interface MiniFloat {
  expBits: number;
  mantBits: number;
  /** Minifloat exponent given to the block's largest float32 exponent (2^E − 2). */
  topExp: number;
  /** Decoded value of every code (sign included) for a block shift of 127. */
  table: Float64Array;
}

function miniFloat(expBits: number, mantBits: number): MiniFloat {
  const codes = 1 << (1 + expBits + mantBits);
  const magMask = (1 << (expBits + mantBits)) - 1;
  const table = new Float64Array(codes);
  for (let c = 0; c < codes; c++) {
    const mag = c & magMask;
    const exp = mag >>> mantBits;
    const frac = (mag & ((1 << mantBits) - 1)) / (1 << mantBits);
    const value = exp === 0 ? frac * 2 : (1 + frac) * 2 ** exp;
    table[c] = c > magMask ? -value : value;
  }
  return { expBits, mantBits, topExp: (1 << expBits) - 2, table };
}

const E4M3 = miniFloat(4, 3);
const E5M6 = miniFloat(5, 6);

/**
 * A block whose largest exponent is 254 (|x| ≥ 2^127) has this shift; there
 * a carry into the top minifloat exponent would decode past the float32
 * range, so its magnitudes are capped at TOP_MAG (saturation).
 */
const HUGE_SHIFT_8 = 254 - E4M3.topExp;
const HUGE_SHIFT_12 = 254 - E5M6.topExp;
const TOP_MAG_8 = (E4M3.topExp << E4M3.mantBits) | ((1 << E4M3.mantBits) - 1);
const TOP_MAG_12 = (E5M6.topExp << E5M6.mantBits) | ((1 << E5M6.mantBits) - 1);

/** 2^(s − 127) for each block shift s: the factor from a table value to the stored value. */
const SHIFT_SCALE = Float64Array.from({ length: 256 }, (_, s) => 2 ** (s - 127));
/** 2^-j, for the subnormal path. */
const INV_POW2 = Float64Array.from({ length: 320 }, (_, j) => 2 ** -j);

function nonFinite(bits: Int32Array, from: number, to: number): never {
  for (let i = from; i < to; i++) {
    if ((bits[i]! & 0x7f800000) === 0x7f800000) {
      const value = new Float32Array(bits.buffer, bits.byteOffset + 4 * i, 1)[0];
      throw new QkdError('ARGUMENT', `PackedArray.encode: value ${value} at index ${i} is not finite`, { field: 'src', hint: 'finite float32 values (NaN and ±Inf cannot be packed)' });
    }
  }
  throw new QkdError('ARGUMENT', 'PackedArray.encode: non-finite value', { field: 'src' });
}

/** The block shift: the largest exponent goes to the minifloat's top exponent − 1 (no overflow on rounding up). */
function blockShift(f: MiniFloat, bits: Int32Array, from: number, to: number): number {
  let maxAbs = 0;
  for (let i = from; i < to; i++) {
    const a = bits[i]! & 0x7fffffff;
    if (a > maxAbs) maxAbs = a;
  }
  if (maxAbs >= 0x7f800000) nonFinite(bits, from, to);
  return Math.max(1, (maxAbs >>> 23) - f.topExp);
}

/**
 * Magnitude code of a = |float32 bits| with `k` mantissa bits dropped, after
 * subtracting the block's shift from the exponent, rounded to nearest even.
 * A carry out of the mantissa moves into the exponent, which is the
 * correctly rounded result.
 */
function nearestMagnitude(a: number, shift: number, k: number): number {
  const x = a - (shift << 23);
  if (x >= 0x800000) return (x + (1 << (k - 1)) - 1 + ((x >>> k) & 1)) >>> k;
  return subnormalMagnitude(a, shift, k, -1);
}

/**
 * Minifloat exponent te ≤ 0 (subnormal): the code is the significand
 * (hidden bit included) shifted right by k + 1 − te, rounded (r16 = −1: to
 * nearest even).
 */
function subnormalMagnitude(a: number, shift: number, k: number, r16: number): number {
  const e = a >>> 23;
  const sig = e === 0 ? a : (a & 0x7fffff) | 0x800000;
  const drop = k + 1 - ((e === 0 ? 1 : e) - shift);
  if (r16 < 0) return drop <= 24 ? (sig + (1 << (drop - 1)) - 1 + ((sig >>> drop) & 1)) >>> drop : 0;
  return Math.floor(sig * INV_POW2[drop]! + r16 * (1 / 65536));
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
    const bits = new Int32Array(src.buffer, src.byteOffset, src.length); // int32 loads stay integers in V8
    const rand = rng === null ? null : new RoundingBits(rng);
    if (this.tier === 16) encodeBf16(bits, this.storage, rand);
    else if (this.tier === 12) encode12(bits, this.storage, this.scaleView(), rand);
    else encode8(bits, this.storage, this.scaleView(), rand);
  }

  /** Unpacks into dst (length must match). */
  decodeInto(dst: Float32Array): void {
    this.checkLength('decodeInto', dst.length);
    if (this.tier === 16) decodeBf16(this.storage, dst);
    else if (this.tier === 12) decode12(this.storage, this.scaleView(), dst);
    else decode8(this.storage, this.scaleView(), dst);
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

  private scaleView(): Uint8Array {
    const start = codeBytes(this.length, this.tier);
    return this.storage.subarray(start, start + scaleBytes(this.length, this.tier));
  }
}

/** bf16 codes: the top 16 bits, rounded; a finite value that would round to Inf saturates. */
function encodeBf16(bits: Int32Array, storage: Uint8Array, rand: RoundingBits | null): void {
  const n = bits.length;
  const codes = new Uint16Array(storage.buffer, storage.byteOffset, n);
  let bad = 0;
  if (rand === null) {
    for (let i = 0; i < n; i++) {
      const b = bits[i]!;
      bad |= (b & 0x7f800000) + 0x00800000; // bit 31 set when the exponent is all ones
      codes[i] = saturateBf16((b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
    }
  } else {
    for (let chunk = 0; chunk < n; chunk += CHUNK) {
      const draws = rand.refill();
      const end = Math.min(n, chunk + CHUNK);
      for (let i = chunk; i < end; i++) {
        const b = bits[i]!;
        bad |= (b & 0x7f800000) + 0x00800000;
        codes[i] = saturateBf16((b + draws[i - chunk]!) >>> 16);
      }
    }
  }
  if (bad < 0) nonFinite(bits, 0, n);
}

function saturateBf16(h: number): number {
  return (h & 0x7f80) === 0x7f80 ? (h & 0x8000) | 0x7f7f : h;
}

function decodeBf16(storage: Uint8Array, dst: Float32Array): void {
  const n = dst.length;
  const out = new Int32Array(dst.buffer, dst.byteOffset, n);
  const pairs = new Int32Array(storage.buffer, storage.byteOffset, n >>> 1);
  // Two little-endian codes per 32-bit read.
  for (let j = 0; j < pairs.length; j++) {
    const p = pairs[j]!;
    out[2 * j] = p << 16;
    out[2 * j + 1] = p & 0xffff0000;
  }
  if (n % 2 === 1) out[n - 1] = (storage[2 * n - 2]! | (storage[2 * n - 1]! << 8)) << 16;
}

/** e4m3 codes, one byte each: sign, 4 exponent bits, 3 mantissa bits. */
function encode8(bits: Int32Array, out: Uint8Array, scales: Uint8Array, rand: RoundingBits | null): void {
  const n = bits.length;
  const k = 23 - E4M3.mantBits;
  for (let chunk = 0; chunk < n; chunk += CHUNK) {
    const draws = rand === null ? null : rand.refill();
    const chunkEnd = Math.min(n, chunk + CHUNK);
    for (let start = chunk; start < chunkEnd; start += DBWA_BLOCK) {
      const end = Math.min(chunkEnd, start + DBWA_BLOCK);
      const shift = blockShift(E4M3, bits, start, end);
      scales[start / DBWA_BLOCK] = shift;
      if (draws === null) {
        for (let i = start; i < end; i++) {
          const b = bits[i]!;
          out[i] = ((b >>> 24) & 0x80) | nearestMagnitude(b & 0x7fffffff, shift, k);
        }
      } else {
        // Inlined normal path: re-bias, add 16 random bits below the kept 3, truncate.
        const shiftBits = shift << 23;
        for (let i = start; i < end; i++) {
          const b = bits[i]!;
          const r16 = draws[i - chunk]!;
          const x = (b & 0x7fffffff) - shiftBits;
          out[i] = ((b >>> 24) & 0x80) | (x >= 0x800000 ? (x + (r16 << 4)) >>> 20 : subnormalMagnitude(b & 0x7fffffff, shift, k, r16));
        }
      }
      if (shift === HUGE_SHIFT_8) for (let i = start; i < end; i++) out[i] = (out[i]! & 0x80) | Math.min(out[i]! & 0x7f, TOP_MAG_8);
    }
  }
}

/** e5m6 codes, two in 3 bytes: c0 low byte, c0 high nibble + c1 low nibble, c1 high byte. */
function encode12(bits: Int32Array, out: Uint8Array, scales: Uint8Array, rand: RoundingBits | null): void {
  const n = bits.length;
  const k = 23 - E5M6.mantBits;
  for (let chunk = 0; chunk < n; chunk += CHUNK) {
    const draws = rand === null ? null : rand.refill();
    const chunkEnd = Math.min(n, chunk + CHUNK);
    for (let start = chunk; start < chunkEnd; start += DBWA_BLOCK) {
      const end = Math.min(chunkEnd, start + DBWA_BLOCK);
      const shift = blockShift(E5M6, bits, start, end);
      scales[start / DBWA_BLOCK] = shift;
      const shiftBits = shift << 23;
      // Blocks start at even indices, so the block's pairs continue the array's pairs.
      let o = (start >>> 1) * 3;
      for (let i = start; i < end; i += 2, o += 3) {
        const b0 = bits[i]!;
        const b1 = i + 1 < end ? bits[i + 1]! : 0; // an odd last value pairs with a zero code
        const a0 = b0 & 0x7fffffff;
        const a1 = b1 & 0x7fffffff;
        let c0: number;
        let c1: number;
        if (draws === null) {
          c0 = nearestMagnitude(a0, shift, k);
          c1 = nearestMagnitude(a1, shift, k);
        } else {
          const r0 = draws[i - chunk]!;
          const r1 = draws[i + 1 - chunk]!;
          const x0 = a0 - shiftBits;
          const x1 = a1 - shiftBits;
          c0 = x0 >= 0x800000 ? (x0 + (r0 << 1)) >>> 17 : subnormalMagnitude(a0, shift, k, r0);
          c1 = x1 >= 0x800000 ? (x1 + (r1 << 1)) >>> 17 : subnormalMagnitude(a1, shift, k, r1);
        }
        if (shift === HUGE_SHIFT_12) {
          c0 = Math.min(c0, TOP_MAG_12);
          c1 = Math.min(c1, TOP_MAG_12);
        }
        c0 |= (b0 >>> 20) & 0x800;
        c1 |= (b1 >>> 20) & 0x800;
        out[o] = c0 & 0xff;
        out[o + 1] = (c0 >>> 8) | ((c1 & 0xf) << 4);
        out[o + 2] = c1 >>> 4;
      }
    }
  }
}

function decode8(data: Uint8Array, scales: Uint8Array, dst: Float32Array): void {
  const table = E4M3.table;
  const n = dst.length;
  for (let start = 0, blk = 0; start < n; start += DBWA_BLOCK, blk++) {
    const end = Math.min(n, start + DBWA_BLOCK);
    const scale = SHIFT_SCALE[scales[blk]!]!;
    for (let i = start; i < end; i++) dst[i] = table[data[i]!]! * scale;
  }
}

function decode12(data: Uint8Array, scales: Uint8Array, dst: Float32Array): void {
  const table = E5M6.table;
  const n = dst.length;
  for (let start = 0, blk = 0; start < n; start += DBWA_BLOCK, blk++) {
    const end = Math.min(n, start + DBWA_BLOCK);
    const scale = SHIFT_SCALE[scales[blk]!]!;
    let o = (start >>> 1) * 3;
    let i = start;
    for (; i + 1 < end; i += 2, o += 3) {
      const b1 = data[o + 1]!;
      dst[i] = table[data[o]! | ((b1 & 0xf) << 8)]! * scale;
      dst[i + 1] = table[(b1 >>> 4) | (data[o + 2]! << 4)]! * scale;
    }
    if (i < end) dst[i] = table[data[o]! | ((data[o + 1]! & 0xf) << 8)]! * scale;
  }
}

// ---- tier assignment -------------------------------------------------------------

/**
 * SPEC 5 tiers from sensitivity scores: the top quarter (by score, equal
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
