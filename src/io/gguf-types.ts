/**
 * The GGUF file layout (ggml / llama.cpp), versions 2 and 3, little-endian,
 * and what the reader (gguf-reader.ts) and the writer (gguf-writer.ts) both
 * need of it: the magic, the alignment rule, the metadata value types and
 * their sizes, and the typed form of a metadata value.
 *
 *   "GGUF" u32 version  u64 tensor_count  u64 metadata_kv_count
 *   metadata_kv_count × { string key, u32 value_type, value }
 *   tensor_count × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   zero padding to the alignment, then the data section
 *
 * A string is a u64 byte length and UTF-8 bytes; an array value is a u32
 * item type, a u64 item count and the items. ne[0] is the fastest-varying
 * dimension (the number of columns of a matrix), so qkd's row-major shape
 * is ne reversed: [rows, cols]. Tensor offsets are relative to the data
 * section, which starts at the first multiple of the alignment
 * (metadata "general.alignment", a u32 power of two, default 32) after the
 * tensor infos; every offset is itself a multiple of the alignment.
 *
 * Tensor element types are not here: every ggml format (block size, bytes,
 * encode, decode) is one row of the table in quant/ggml-formats.ts.
 */
import type { GgmlFormat } from '../quant/ggml-formats.js';

/** "GGUF" as bytes. */
export const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
export const DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most 4 dimensions (GGML_MAX_DIMS). */
export const MAX_DIMS = 4;
/** The spec allows arrays of arrays; ggml reads none. A small bound keeps recursion shallow. */
export const MAX_ARRAY_NESTING = 4;

/** A ggml element type (the format table lives in quant/ggml-formats.ts). */
export type GgmlTypeInfo = GgmlFormat;

/** Metadata value types, by their id in the file. */
export const VALUE_TYPES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GgufValueType = (typeof VALUE_TYPES)[number];
/** Bytes of each fixed-size value type. */
export const FIXED_BYTES: Partial<Record<GgufValueType, number>> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8 };

export type GgufNumberType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64';
export type GgufScalarValue =
  | { type: GgufNumberType; value: number }
  | { type: 'u64' | 'i64'; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string };
/** An array: items are plain values of `itemType` (nested arrays are GgufArrayValues). */
export interface GgufArrayValue {
  type: 'array';
  itemType: GgufValueType;
  value: Array<number | bigint | boolean | string | GgufArrayValue>;
}
/** One metadata value, typed as in the file: what the reader returns and the writer takes. */
export type GgufValue = GgufScalarValue | GgufArrayValue;

/** `x` rounded up to a multiple of `alignment`. */
export function alignUp(x: number, alignment: number): number {
  return Math.ceil(x / alignment) * alignment;
}
