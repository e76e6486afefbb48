/**
 * The one table of ggml element formats: id (as in GGUF files), block size,
 * bytes per block, and, for the formats qkd implements, the encoder and the
 * decoder. The GGUF reader and writer, and everything that quantizes to a
 * ggml grid, go through this table; each format has exactly one definition
 * (ggml-legacy.ts, ggml-kquants.ts). Ids 4, 5, 31–33 and 36–38 are retired
 * in ggml.
 */
import { QkdError } from '../errors.js';
import { toBf16, toF16 } from '../tensor/dtype.js';
import { kernels, nativeGgmlCodec } from '../tensor/backend.js';
import { blockCount, checkEncoded, decodeQ4_0, decodeQ4_1, decodeQ5_0, decodeQ5_1, decodeQ8_0, decodeQ8_1, encodeQ4_0, encodeQ4_1, encodeQ5_0, encodeQ5_1, encodeQ8_0, halfToFloat } from './ggml-legacy.js';
import { blockImportance, decodeQ2_K, decodeQ3_K, decodeQ4_K, decodeQ5_K, decodeQ6_K, encodeQ2_K, encodeQ3_K, encodeQ4_K, encodeQ5_K, encodeQ6_K } from './ggml-kquants.js';

/** The formats qkd encodes (the writable rows of the table). */
export type GgmlWritableName = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K';

export interface GgmlFormat {
  id: number;
  name: string;
  /** Elements per block (1 for plain element types). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
  /**
   * float32 → the format's bytes (llama.cpp's reference quantizer); absent:
   * qkd cannot write it. `importance` (one weight per column, the row
   * length; see docs/ggml-formats.md) weights the K-quants' sub-block fits;
   * the other formats have no fit to weight and ignore it.
   */
  encode?: (x: Float32Array, importance?: Float32Array) => Uint8Array;
  /**
   * The format's bytes → `count` float32 values (ggml's dequantizer); absent:
   * qkd cannot read it. With `into` (at least `count` long) a block format
   * decodes into it and returns its first `count` values, sparing a fresh
   * array (so do F16 and BF16); F32 may return a view of `bytes` itself.
   */
  decode?: (bytes: Uint8Array, count: number, into?: Float32Array) => Float32Array;
  /**
   * The TypeScript definitions of encode and decode, for the block formats
   * whose encode/decode above run in the native addon when it is loaded
   * (same bytes; the tests hold the two together).
   */
  reference?: { encode: (x: Float32Array, importance?: Float32Array) => Uint8Array; decode: (bytes: Uint8Array, count: number) => Float32Array };
  /** True when encode fits scales by weighted least squares, so an importance vector changes it (the K-quants). */
  weighted?: boolean;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function bytesOf(a: Uint16Array | Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function decodeF32(bytes: Uint8Array, count: number): Float32Array {
  if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: count }, (_, i) => view.getFloat32(4 * i, true));
}

/**
 * F16 / BF16 bytes widened by the backend's kernel (into `into` when it is
 * long enough) where they can be viewed as 16-bit words in place; else the
 * loop, which reads them little-endian at any offset.
 */
function decodeHalves(name: 'F16' | 'BF16', bytes: Uint8Array, count: number, into?: Float32Array): Float32Array {
  checkEncoded(name, bytes, count, 1, 2);
  const out = into !== undefined && into.length >= count ? into.subarray(0, count) : new Float32Array(count);
  if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
    const words = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
    if (name === 'F16') kernels().f16ToF32(words, out, count);
    else kernels().bf16ToF32(words, out, count);
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (name === 'F16') for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
  else {
    const bits = new Uint32Array(out.buffer, out.byteOffset, count);
    for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
  }
  return out;
}

function decodeF16(bytes: Uint8Array, count: number, into?: Float32Array): Float32Array {
  return decodeHalves('F16', bytes, count, into);
}

function decodeBf16(bytes: Uint8Array, count: number, into?: Float32Array): Float32Array {
  return decodeHalves('BF16', bytes, count, into);
}

function decodeF64(bytes: Uint8Array, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: count }, (_, i) => view.getFloat64(8 * i, true));
}

/** Host byte order is little-endian on every platform qkd builds for; GGUF is little-endian. */
const plain = (fn: (x: Float32Array) => Uint16Array | Float32Array) => (x: Float32Array): Uint8Array => Uint8Array.from(bytesOf(fn(x)));

/**
 * A block format's row: encode and decode go to the native codec when the
 * native backend is in use, else to the TypeScript definition. Lengths are
 * checked here so both paths fail with the same error.
 */
function block(id: number, name: string, blockSize: number, blockBytes: number, encode: (x: Float32Array, importance?: Float32Array) => Uint8Array, decode: (bytes: Uint8Array, count: number) => Float32Array, weighted = false): GgmlFormat {
  return {
    id, name, blockSize, blockBytes, weighted, reference: { encode, decode },
    encode: (x, importance) => {
      const codec = nativeGgmlCodec();
      if (codec === null || !(x instanceof Float32Array)) return encode(x, importance);
      const out = new Uint8Array(blockCount(name, x.length, blockSize) * blockBytes);
      // Checked here so both paths refuse a bad vector with the same message.
      if (importance !== undefined && weighted) blockImportance(importance, name, x.length, blockSize);
      codec.ggmlEncode(id, x, out, weighted ? importance ?? null : null);
      return out;
    },
    decode: (bytes, count, into) => {
      const codec = nativeGgmlCodec();
      if (codec === null) return decode(bytes, count);
      checkEncoded(name, bytes, count, blockSize, blockBytes);
      const out = into !== undefined && into.length >= count ? into.subarray(0, count) : new Float32Array(count);
      codec.ggmlDecode(id, bytes, out);
      return out;
    },
  };
}

export const GGML_FORMATS: readonly GgmlFormat[] = [
  { id: 0, name: 'F32', blockSize: 1, blockBytes: 4, encode: plain((x) => x), decode: decodeF32 },
  { id: 1, name: 'F16', blockSize: 1, blockBytes: 2, encode: plain(toF16), decode: decodeF16 },
  block(2, 'Q4_0', 32, 18, encodeQ4_0, decodeQ4_0),
  block(3, 'Q4_1', 32, 20, encodeQ4_1, decodeQ4_1),
  block(6, 'Q5_0', 32, 22, encodeQ5_0, decodeQ5_0),
  block(7, 'Q5_1', 32, 24, encodeQ5_1, decodeQ5_1),
  block(8, 'Q8_0', 32, 34, encodeQ8_0, decodeQ8_0),
  { id: 9, name: 'Q8_1', blockSize: 32, blockBytes: 36, decode: decodeQ8_1 },
  block(10, 'Q2_K', 256, 84, encodeQ2_K, decodeQ2_K, true),
  block(11, 'Q3_K', 256, 110, encodeQ3_K, decodeQ3_K, true),
  block(12, 'Q4_K', 256, 144, encodeQ4_K, decodeQ4_K, true),
  block(13, 'Q5_K', 256, 176, encodeQ5_K, decodeQ5_K, true),
  block(14, 'Q6_K', 256, 210, encodeQ6_K, decodeQ6_K, true),
  { id: 15, name: 'Q8_K', blockSize: 256, blockBytes: 292 },
  { id: 16, name: 'IQ2_XXS', blockSize: 256, blockBytes: 66 },
  { id: 17, name: 'IQ2_XS', blockSize: 256, blockBytes: 74 },
  { id: 18, name: 'IQ3_XXS', blockSize: 256, blockBytes: 98 },
  { id: 19, name: 'IQ1_S', blockSize: 256, blockBytes: 50 },
  { id: 20, name: 'IQ4_NL', blockSize: 32, blockBytes: 18 },
  { id: 21, name: 'IQ3_S', blockSize: 256, blockBytes: 110 },
  { id: 22, name: 'IQ2_S', blockSize: 256, blockBytes: 82 },
  { id: 23, name: 'IQ4_XS', blockSize: 256, blockBytes: 136 },
  { id: 24, name: 'I8', blockSize: 1, blockBytes: 1 },
  { id: 25, name: 'I16', blockSize: 1, blockBytes: 2 },
  { id: 26, name: 'I32', blockSize: 1, blockBytes: 4 },
  { id: 27, name: 'I64', blockSize: 1, blockBytes: 8 },
  { id: 28, name: 'F64', blockSize: 1, blockBytes: 8, decode: decodeF64 },
  { id: 29, name: 'IQ1_M', blockSize: 256, blockBytes: 56 },
  { id: 30, name: 'BF16', blockSize: 1, blockBytes: 2, encode: plain(toBf16), decode: decodeBf16 },
  { id: 34, name: 'TQ1_0', blockSize: 256, blockBytes: 54 },
  { id: 35, name: 'TQ2_0', blockSize: 256, blockBytes: 66 },
  { id: 39, name: 'MXFP4', blockSize: 32, blockBytes: 17 },
];

const BY_NAME = new Map(GGML_FORMATS.map((t) => [t.name, t]));
const BY_ID = new Map(GGML_FORMATS.map((t) => [t.id, t]));

/** Names of the formats qkd can write (and read back). */
export const GGML_WRITABLE: readonly string[] = GGML_FORMATS.filter((t) => t.encode).map((t) => t.name);
/** Names of the formats qkd can read. */
export const GGML_READABLE: readonly string[] = GGML_FORMATS.filter((t) => t.decode).map((t) => t.name);

export function ggmlFormatById(id: number): GgmlFormat | undefined {
  return BY_ID.get(id);
}

export function ggmlFormat(name: string): GgmlFormat | undefined {
  return BY_NAME.get(name);
}

/** A format qkd can encode, or an error listing the ones it can. */
export function writableFormat(name: string): GgmlFormat & Required<Pick<GgmlFormat, 'encode' | 'decode'>> {
  const t = BY_NAME.get(name);
  if (!t?.encode || !t.decode) throw new QkdError('ARGUMENT', `cannot write ggml type "${name}"`, { field: 'type', hint: GGML_WRITABLE.join(', ') });
  return t as GgmlFormat & Required<Pick<GgmlFormat, 'encode' | 'decode'>>;
}

/** Bytes of `count` elements of a format (count must be a whole number of blocks). */
export function formatBytes(t: GgmlFormat, count: number): number {
  if (count % t.blockSize !== 0) throw new QkdError('SHAPE', `${t.name}: ${count} elements is not a multiple of the block size ${t.blockSize}`, { hint: `a multiple of ${t.blockSize}` });
  return (count / t.blockSize) * t.blockBytes;
}

/** x → the format → back: what a reader of the file sees (the round trip a deployment applies). */
export function roundTrip(name: string, x: Float32Array): Float32Array {
  const t = writableFormat(name);
  const codec = t.reference !== undefined ? nativeGgmlCodec() : null;
  if (codec === null) return t.decode(t.encode(x), x.length);
  blockCount(name, x.length, t.blockSize);
  const out = new Float32Array(x.length);
  codec.ggmlRoundTrip(t.id, x, out);
  return out;
}

/**
 * llama.cpp's fallback when a row length is not a multiple of a format's
 * block (its quantizer's tensor_type_fallback): Q2_K and Q3_K → Q4_0, Q4_K →
 * Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 when the row does not fit 32-blocks
 * either. Returns the format itself when the row fits.
 */
export function fallbackFormat(format: GgmlWritableName, cols: number): GgmlWritableName {
  if (cols % writableFormat(format).blockSize === 0) return format;
  const next: Partial<Record<GgmlWritableName, GgmlWritableName>> = { Q2_K: 'Q4_0', Q3_K: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' };
  const instead = next[format];
  return instead !== undefined && cols % 32 === 0 ? instead : 'F16';
}
