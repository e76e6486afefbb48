/**
 * Reference kernels of DBWA's packed formats (sat/dbwa.ts documents the
 * formats, the rounding and the error bounds): encode a float32 array at a
 * precision tier into codes + block scale bytes, and decode it. Plain
 * TypeScript on integer bit patterns; the native addon runs the same
 * algorithm and must match it bit for bit, stochastic rounding included.
 *
 * Stochastic rounding draws from xorshift128 (Marsaglia) seeded with four
 * 32-bit words (not all zero): one 32-bit draw serves two values (low, then
 * high 16 bits), refilled in chunks of CHUNK values, so value i of the
 * array uses the (i mod CHUNK)-th 16 bits of its chunk's refill.
 */

import { QkdError } from '../../errors.js';

/** Values per scale byte in the 8- and 12-bit tiers. */
export const DBWA_BLOCK = 64;

/** Values per refill of random draws: whole blocks, two values per draw. */
export const DBWA_CHUNK = 64 * DBWA_BLOCK;

// ---- random bits -------------------------------------------------------------

const CHUNK = DBWA_CHUNK;

const SHARED_DRAWS = new Uint16Array(CHUNK);

/**
 * xorshift128 (Marsaglia) from four seed words: bulk 32-bit draws for
 * stochastic rounding, filled a chunk at a time in one tight loop so the
 * encode loops only read an array. Each draw serves two values (16 bits each).
 */
class RoundingBits {
  /** The generator state (int32 words: no boxing). */
  private readonly s = new Int32Array(4);
  /** 16 random bits for each value of a chunk (one buffer shared by all encodes: JS runs one at a time). */
  readonly draws = SHARED_DRAWS;

  constructor(seed: Uint32Array) {
    for (let i = 0; i < 4; i++) this.s[i] = seed[i]!;
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

/** Index of the first non-finite value in [from, to), or −1. */
function firstNonFinite(bits: Int32Array, from: number, to: number): number {
  for (let i = from; i < to; i++) if ((bits[i]! & 0x7f800000) === 0x7f800000) return i;
  return -1;
}

/** The block shift: the largest exponent goes to the minifloat's top exponent − 1 (no overflow on rounding up); −1 when the block holds a non-finite value. */
function blockShift(f: MiniFloat, bits: Int32Array, from: number, to: number): number {
  let maxAbs = 0;
  for (let i = from; i < to; i++) {
    const a = bits[i]! & 0x7fffffff;
    if (a > maxAbs) maxAbs = a;
  }
  if (maxAbs >= 0x7f800000) return -1;
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

/** bf16 codes: the top 16 bits, rounded; a finite value that would round to Inf saturates. */
function encodeBf16(bits: Int32Array, storage: Uint8Array, rand: RoundingBits | null): number {
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
  return bad < 0 ? firstNonFinite(bits, 0, n) : -1;
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

/**
 * Walks the values block by block: refills the random draws at each chunk
 * (null when rounding to nearest), computes the block's shift, writes its
 * scale byte and calls encodeBlock. Returns −1, or the index of a
 * non-finite value (its block gets no codes).
 */
function forEachBlock(f: MiniFloat, bits: Int32Array, scales: Uint8Array, rand: RoundingBits | null, encodeBlock: (start: number, end: number, shift: number, draws: Uint16Array | null, chunk: number) => void): number {
  const n = bits.length;
  for (let chunk = 0; chunk < n; chunk += CHUNK) {
    const draws = rand === null ? null : rand.refill();
    const chunkEnd = Math.min(n, chunk + CHUNK);
    for (let start = chunk; start < chunkEnd; start += DBWA_BLOCK) {
      const end = Math.min(chunkEnd, start + DBWA_BLOCK);
      const shift = blockShift(f, bits, start, end);
      if (shift < 0) return firstNonFinite(bits, start, end);
      scales[start / DBWA_BLOCK] = shift;
      encodeBlock(start, end, shift, draws, chunk);
    }
  }
  return -1;
}

/** e4m3 codes, one byte each: sign, 4 exponent bits, 3 mantissa bits. */
function encode8(bits: Int32Array, out: Uint8Array, scales: Uint8Array, rand: RoundingBits | null): number {
  const k = 23 - E4M3.mantBits;
  return forEachBlock(E4M3, bits, scales, rand, (start, end, shift, draws, chunk) => {
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
  });
}

/** e5m6 codes, two in 3 bytes: c0 low byte, c0 high nibble + c1 low nibble, c1 high byte. */
function encode12(bits: Int32Array, out: Uint8Array, scales: Uint8Array, rand: RoundingBits | null): number {
  const k = 23 - E5M6.mantBits;
  return forEachBlock(E5M6, bits, scales, rand, (start, end, shift, draws, chunk) => {
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
  });
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

// ---- kernels -------------------------------------------------------------------

/** The same checks as the native kernels: a known tier and enough storage (else writes would fall off the end silently). */
function checkStorage(fn: string, tier: number, n: number, storage: Uint8Array): void {
  if (tier !== 8 && tier !== 12 && tier !== 16) throw new QkdError('ARGUMENT', `${fn}: tier must be 8, 12 or 16, got ${tier}`, { field: 'tier' });
  const needed = codeBytes(n, tier) + (tier === 16 ? 0 : Math.ceil(n / DBWA_BLOCK));
  if (storage.length < needed) throw new QkdError('SHAPE', `${fn}: storage has ${storage.length} bytes, needs at least ${needed}`, { field: 'storage' });
}

/** Code bytes (before the scale bytes) of n values at a tier. */
function codeBytes(n: number, tier: number): number {
  return tier === 16 ? 2 * n : tier === 12 ? 3 * Math.ceil(n / 2) : n;
}

/**
 * Packs src at `tier` (8, 12 or 16) into storage (codes, then one scale byte
 * per block of 64 for tiers 8 and 12): stochastic rounding from the four
 * seed words, round to nearest even with null. Returns −1, or the index of
 * a non-finite value (storage is then partly written).
 */
export function dbwaEncode(tier: number, src: Float32Array, storage: Uint8Array, seed: Uint32Array | null): number {
  checkStorage('dbwaEncode', tier, src.length, storage);
  const bits = new Int32Array(src.buffer, src.byteOffset, src.length); // int32 loads stay integers in V8
  const rand = seed === null ? null : new RoundingBits(seed);
  const scales = storage.subarray(codeBytes(src.length, tier));
  if (tier === 16) return encodeBf16(bits, storage, rand);
  if (tier === 12) return encode12(bits, storage, scales, rand);
  return encode8(bits, storage, scales, rand);
}

/** Unpacks storage written by dbwaEncode at `tier` into dst. */
export function dbwaDecode(tier: number, storage: Uint8Array, dst: Float32Array): void {
  checkStorage('dbwaDecode', tier, dst.length, storage);
  const scales = storage.subarray(codeBytes(dst.length, tier));
  if (tier === 16) decodeBf16(storage, dst);
  else if (tier === 12) decode12(storage, scales, dst);
  else decode8(storage, scales, dst);
}
