/**
 * ggml's 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1),
 * encoded and decoded byte for byte as llama.cpp's reference quantizers
 * (`quantize_row_*_ref`, no importance matrix) and dequantizers do, so a
 * file qkd writes is the file llama.cpp's own tools would write from the
 * same float weights. docs/ggml-formats.md describes each layout.
 *
 * Bit-exactness rests on three rules, followed in every line below:
 * - every float operation is rounded to float32 (`f` = Math.fround) in the
 *   C code's order (a double-precision result of one +, −, ×, ÷ or sqrt on
 *   float32 inputs, rounded once, equals the float32 operation);
 * - scales are stored as IEEE half precision, round-to-nearest-even;
 * - C's conversions are kept: (int8_t)/(uint8_t) of a float truncates toward
 *   zero, roundf rounds half away from zero.
 */
import { QkdError } from '../errors.js';
import { f16Table32, f32ToF16Bits } from '../tensor/dtype.js';

export const f = Math.fround;

/** Elements per block of the legacy formats. */
export const QK = 32;

/** Half-precision bits → float32, through dtype.ts's 65536-entry table. */
export function halfToFloat(bits: number): number {
  return f16Table32()[bits]!;
}

export const floatToHalf = f32ToF16Bits;

/** Checks a row length against the block size; returns the number of blocks. */
export function blockCount(format: string, count: number, blockSize: number): number {
  if (!Number.isSafeInteger(count) || count < 0 || count % blockSize !== 0) {
    throw new QkdError('SHAPE', `${format}: ${count} elements is not a multiple of the block size ${blockSize}`, { hint: `a multiple of ${blockSize}` });
  }
  return count / blockSize;
}

/** Checks encoded bytes against the element count; returns the number of blocks. */
export function checkEncoded(format: string, bytes: Uint8Array, count: number, blockSize: number, blockBytes: number): number {
  const blocks = blockCount(format, count, blockSize);
  if (bytes.length !== blocks * blockBytes) throw new QkdError('SHAPE', `${format}: ${bytes.length} bytes for ${count} elements, expected ${blocks * blockBytes}`);
  return blocks;
}

/** C's roundf: half away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/** C's (int8_t) conversion of a float in range: truncation toward zero (NaN → 0, as x86 gives for the inputs that reach it). */
function truncToInt(x: number): number {
  return Number.isNaN(x) ? 0 : Math.trunc(x);
}

/** The element of largest magnitude (the first on ties) and that magnitude. */
export function signedMax(x: Float32Array, at: number, n: number): { amax: number; max: number } {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[at + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return { amax, max };
}

function minMax(x: Float32Array, at: number, n: number): { min: number; max: number } {
  let min = f(3.4028234663852886e38);
  let max = -min;
  for (let j = 0; j < n; j++) {
    const v = x[at + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

// Q8_0: f16 d, 32 × int8. x ≈ q·d, d = amax/127.
export function encodeQ8_0(x: Float32Array): Uint8Array {
  const blocks = blockCount('Q8_0', x.length, QK);
  const out = new Uint8Array(blocks * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      // ggml's MAX(a, b) = a > b ? a : b (a NaN is dropped by the next comparison, unlike Math.max).
      const a = Math.abs(x[b * QK + j]!);
      amax = amax > a ? amax : a;
    }
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    view.setUint16(b * 34, floatToHalf(d), true);
    for (let j = 0; j < QK; j++) view.setInt8(b * 34 + 2 + j, roundHalfAway(f(x[b * QK + j]! * id)));
  }
  return out;
}

export function decodeQ8_0(bytes: Uint8Array, count: number): Float32Array {
  const blocks = checkEncoded('Q8_0', bytes, count, QK, 34);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let b = 0; b < blocks; b++) {
    const d = halfToFloat(view.getUint16(b * 34, true));
    for (let j = 0; j < QK; j++) out[b * QK + j] = view.getInt8(b * 34 + 2 + j) * d;
  }
  return out;
}

// Q8_1 (read only; llama.cpp uses it for activations): f16 d, f16 s, 32 × int8.
export function decodeQ8_1(bytes: Uint8Array, count: number): Float32Array {
  const blocks = checkEncoded('Q8_1', bytes, count, QK, 36);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  for (let b = 0; b < blocks; b++) {
    const d = halfToFloat(view.getUint16(b * 36, true));
    for (let j = 0; j < QK; j++) out[b * QK + j] = view.getInt8(b * 36 + 4 + j) * d;
  }
  return out;
}

/**
 * Q4_0: f16 d, 16 bytes of nibbles (byte j: element j low, element j+16
 * high). d = m/−8 with m the signed element of largest magnitude, and
 * q = min(15, trunc(x/d + 8.5)), so x ≈ (q − 8)·d.
 */
export function encodeQ4_0(x: Float32Array): Uint8Array {
  return encodeSymmetric('Q4_0', x, 4);
}

export function decodeQ4_0(bytes: Uint8Array, count: number): Float32Array {
  return decodeNibbles('Q4_0', bytes, count, false, false);
}

/** Q5_0: f16 d, u32 of fifth bits, 16 nibble bytes; d = m/−16, q = min(31, trunc(x/d + 16.5)), x ≈ (q − 16)·d. */
export function encodeQ5_0(x: Float32Array): Uint8Array {
  return encodeSymmetric('Q5_0', x, 5);
}

export function decodeQ5_0(bytes: Uint8Array, count: number): Float32Array {
  return decodeNibbles('Q5_0', bytes, count, false, true);
}

/** Q4_1: f16 d, f16 m, 16 nibble bytes; d = (max − min)/15, q = min(15, trunc((x − min)/d + 0.5)), x ≈ q·d + m. */
export function encodeQ4_1(x: Float32Array): Uint8Array {
  return encodeAffine('Q4_1', x, 4);
}

export function decodeQ4_1(bytes: Uint8Array, count: number): Float32Array {
  return decodeNibbles('Q4_1', bytes, count, true, false);
}

/** Q5_1: f16 d, f16 m, u32 of fifth bits, 16 nibble bytes; d = (max − min)/31, q = trunc((x − min)/d + 0.5). */
export function encodeQ5_1(x: Float32Array): Uint8Array {
  return encodeAffine('Q5_1', x, 5);
}

export function decodeQ5_1(bytes: Uint8Array, count: number): Float32Array {
  return decodeNibbles('Q5_1', bytes, count, true, true);
}

/** Bytes per block: f16 d, [f16 m], [u32 qh], 16 nibble bytes. */
function nibbleBlockBytes(withMin: boolean, fifthBit: boolean): number {
  return 2 + (withMin ? 2 : 0) + (fifthBit ? 4 : 0) + QK / 2;
}

/** Writes 5- or 4-bit codes: low nibbles in 16 bytes, fifth bits (element j → bit j) in a u32 before them. */
function storeCodes(out: Uint8Array, at: number, codes: Uint8Array, fifthBit: boolean): void {
  let qh = 0;
  const qs = at + (fifthBit ? 4 : 0);
  for (let j = 0; j < QK / 2; j++) {
    const lo = codes[j]!;
    const hi = codes[j + QK / 2]!;
    out[qs + j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
    if (fifthBit) qh |= (((lo & 0x10) >> 4) << j) | (((hi & 0x10) >> 4) << (j + QK / 2));
  }
  if (fifthBit) new DataView(out.buffer, out.byteOffset).setUint32(at, qh >>> 0, true);
}

function encodeSymmetric(format: string, x: Float32Array, bits: 4 | 5): Uint8Array {
  const blocks = blockCount(format, x.length, QK);
  const size = nibbleBlockBytes(false, bits === 5);
  const out = new Uint8Array(blocks * size);
  const view = new DataView(out.buffer);
  const half = 1 << (bits - 1); // 8 or 16
  const top = (1 << bits) - 1;
  const offset = f(half + 0.5);
  const codes = new Uint8Array(QK);
  for (let b = 0; b < blocks; b++) {
    const { max } = signedMax(x, b * QK, QK);
    const d = f(max / -half);
    const id = d !== 0 ? f(1 / d) : 0;
    view.setUint16(b * size, floatToHalf(d), true);
    for (let j = 0; j < QK; j++) codes[j] = Math.max(0, Math.min(top, truncToInt(f(f(x[b * QK + j]! * id) + offset))));
    storeCodes(out, b * size + 2, codes, bits === 5);
  }
  return out;
}

function encodeAffine(format: string, x: Float32Array, bits: 4 | 5): Uint8Array {
  const blocks = blockCount(format, x.length, QK);
  const size = nibbleBlockBytes(true, bits === 5);
  const out = new Uint8Array(blocks * size);
  const view = new DataView(out.buffer);
  const top = (1 << bits) - 1;
  const codes = new Uint8Array(QK);
  for (let b = 0; b < blocks; b++) {
    const { min, max } = minMax(x, b * QK, QK);
    const d = f(f(max - min) / top);
    const id = d !== 0 ? f(1 / d) : 0;
    view.setUint16(b * size, floatToHalf(d), true);
    view.setUint16(b * size + 2, floatToHalf(min), true);
    for (let j = 0; j < QK; j++) {
      const q = truncToInt(f(f(f(x[b * QK + j]! - min) * id) + 0.5));
      // Q4_1 clamps at 15; Q5_1's (uint8_t) conversion keeps the low 8 bits (the code never exceeds 31).
      codes[j] = bits === 4 ? Math.min(15, q) & 0xff : q & 0xff;
    }
    storeCodes(out, b * size + 4, codes, bits === 5);
  }
  return out;
}

function decodeNibbles(format: string, bytes: Uint8Array, count: number, withMin: boolean, fifthBit: boolean): Float32Array {
  const size = nibbleBlockBytes(withMin, fifthBit);
  const blocks = checkEncoded(format, bytes, count, QK, size);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  const centre = withMin ? 0 : fifthBit ? 16 : 8;
  for (let b = 0; b < blocks; b++) {
    const at = b * size;
    const d = halfToFloat(view.getUint16(at, true));
    const m = withMin ? halfToFloat(view.getUint16(at + 2, true)) : 0;
    const qhAt = at + (withMin ? 4 : 2);
    const qh = fifthBit ? view.getUint32(qhAt, true) : 0;
    const qs = qhAt + (fifthBit ? 4 : 0);
    for (let j = 0; j < QK / 2; j++) {
      const byte = bytes[qs + j]!;
      const lo = ((byte & 0x0f) | (((qh >>> j) << 4) & 0x10)) - centre;
      const hi = ((byte >> 4) | ((qh >>> (j + 12)) & 0x10)) - centre;
      out[b * QK + j] = withMin ? f(lo * d) + m : lo * d;
      out[b * QK + QK / 2 + j] = withMin ? f(hi * d) + m : hi * d;
    }
  }
  return out;
}
