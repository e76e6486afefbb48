/**
 * Element types beyond float32: integer storage for quantized data, and
 * bf16 / fp16 conversion for checkpoints. Autograd tensors are always
 * float32 (see tensor.ts); these types are storage only.
 */
import { QkdError, fmtShape } from '../errors.js';

export type StorageDType = 'f32' | 'f16' | 'bf16' | 'i8' | 'u8' | 'i32';

export interface StorageArrayMap {
  f32: Float32Array;
  f16: Uint16Array; // raw IEEE half bits
  bf16: Uint16Array; // raw bfloat16 bits
  i8: Int8Array;
  u8: Uint8Array;
  i32: Int32Array;
}

export const BYTES_PER_ELEMENT: Record<StorageDType, number> = { f32: 4, f16: 2, bf16: 2, i8: 1, u8: 1, i32: 4 };

/** A typed, shaped block of storage that does not take part in autograd. */
export class RawTensor<D extends StorageDType = StorageDType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: StorageArrayMap[D];

  constructor(dtype: D, shape: readonly number[], data?: StorageArrayMap[D]) {
    const size = shape.reduce((a, b) => a * b, 1);
    this.dtype = dtype;
    this.shape = [...shape];
    if (data === undefined) {
      this.data = allocStorage(dtype, size);
    } else {
      if (data.length !== size) {
        throw new QkdError('SHAPE', `RawTensor(${dtype}): data has ${data.length} elements but shape ${fmtShape(shape)} needs ${size}`);
      }
      this.data = data;
    }
  }

  get size(): number {
    return this.data.length;
  }
}

export function allocStorage<D extends StorageDType>(dtype: D, size: number): StorageArrayMap[D] {
  switch (dtype) {
    case 'f32':
      return new Float32Array(size) as StorageArrayMap[D];
    case 'f16':
    case 'bf16':
      return new Uint16Array(size) as StorageArrayMap[D];
    case 'i8':
      return new Int8Array(size) as StorageArrayMap[D];
    case 'u8':
      return new Uint8Array(size) as StorageArrayMap[D];
    case 'i32':
      return new Int32Array(size) as StorageArrayMap[D];
    default:
      throw new QkdError('DTYPE', `unknown storage dtype '${String(dtype)}'`, { hint: 'f32, f16, bf16, i8, u8 or i32' });
  }
}

// One shared scratch word for bit reinterpretation.
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 → bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) {
    return ((bits >>> 16) | 0x0040) & 0xffff; // quiet NaN, keep sign
  }
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** float32 → IEEE binary16 bits, round to nearest even, with subnormals, ±Inf and NaN. */
export function f32ToF16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // Inf or NaN
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the full mantissa (with hidden bit) right.
    if (e < -10) return sign; // too small → ±0
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    const rounded = rem > mid || (rem === mid && (half & 1) === 1) ? half + 1 : half;
    return sign | rounded;
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // Rounding may carry into the exponent, which is the correct result (up to Inf).
  const rounded = rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1) ? half + 1 : half;
  return sign | rounded;
}

export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function toBf16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16Bits(src[i]!);
  return out;
}

export function fromBf16(src: Uint16Array): Float32Array {
  // bf16 is the top half of a float32: widen by shifting through a u32 view.
  const out = new Float32Array(src.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i]! << 16;
  return out;
}

export function toF16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]!);
  return out;
}

let f16Table: Float32Array | null = null;

/** Every half-precision bit pattern as float32 (256 KiB, built on first use): a lookup instead of arithmetic per value. */
export function f16Table32(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let b = 0; b < 65536; b++) f16Table[b] = f16BitsToF32(b);
  }
  return f16Table;
}

export function fromF16(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const table = f16Table32();
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}
