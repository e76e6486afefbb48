/**
 * Writing GGUF v3 files (layout in gguf-types.ts).
 *
 * `writeGguf` first plans the file: it validates the metadata and the
 * tensors (names, shapes, types) and assigns every offset, so the header is
 * complete before any data is produced. It then streams one tensor at a
 * time into a temporary file renamed into place, in the layout llama.cpp
 * writes (data section aligned, each tensor padded to the alignment). Every
 * format is encoded through the one table of ggml formats
 * (quant/ggml-formats.ts), byte for byte as llama.cpp's reference
 * quantizers.
 */
import { endianness } from 'node:os';
import { QkdError, fmtShape } from '../errors.js';
import { GGML_WRITABLE, ggmlFormat, type GgmlFormat, type GgmlWritableName } from '../quant/ggml-formats.js';
import { writeAll, writeFileAtomic } from './atomic.js';
import {
  DEFAULT_ALIGNMENT,
  FIXED_BYTES,
  GGUF_MAGIC,
  MAX_ARRAY_NESTING,
  MAX_DIMS,
  VALUE_TYPES,
  alignUp,
  type GgmlTypeInfo,
  type GgufArrayValue,
  type GgufValue,
  type GgufValueType,
} from './gguf-types.js';

/** ggml refuses tensor names of 64 bytes or more (GGML_MAX_NAME); the writer keeps to that. */
const MAX_NAME_BYTES = 63;
/** ggml's current quantization scheme version (GGML_QNT_VERSION). */
const QUANTIZATION_VERSION = 2;
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

// ---------------------------------------------------------------------------
// What to write

/** The ggml types writeGguf encodes (GGML_WRITABLE). */
export type GgufWriteType = GgmlWritableName;

export interface GgufTensorToWrite {
  name: string;
  /** Row-major shape ([rows, cols]); stored as ggml ne (reversed). 1 to 4 dimensions. */
  shape: readonly number[];
  type: GgufWriteType;
  /** The values, or a function producing them when the tensor is written (streaming). */
  data: Float32Array | (() => Float32Array);
  /** One importance weight per column for the K-quant fits (see ggml-formats.ts encode); ignored by other types. */
  importance?: Float32Array;
}

export interface GgufContents {
  /**
   * Metadata in the order given. "general.alignment" (u32, power of two)
   * sets the alignment (default 32); "general.quantization_version" = 2 is
   * added when a tensor is quantized and the key is absent (the spec requires it).
   */
  metadata?: ReadonlyMap<string, GgufValue> | Readonly<Record<string, GgufValue>>;
  tensors: readonly GgufTensorToWrite[];
}

// ---------------------------------------------------------------------------
// Header bytes: metadata values

/** Little-endian header bytes, collected in parts. */
class ByteSink {
  readonly parts: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  fixed(n: number, write: (b: Buffer) => void): void {
    const b = Buffer.alloc(n);
    write(b);
    this.push(b);
  }
  u32(v: number): void {
    this.fixed(4, (b) => b.writeUInt32LE(v));
  }
  u64(v: bigint | number): void {
    this.fixed(8, (b) => b.writeBigUInt64LE(BigInt(v)));
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
}

const INT_RANGES: Record<'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32', [number, number]> = {
  u8: [0, 0xff],
  i8: [-0x80, 0x7f],
  u16: [0, 0xffff],
  i16: [-0x8000, 0x7fff],
  u32: [0, 0xffffffff],
  i32: [-0x80000000, 0x7fffffff],
};

/** Appends one value of `type` (validated) to the sink. */
function writeItem(sink: ByteSink, path: string, field: string, type: GgufValueType, value: unknown, depth: number): void {
  const wrong = (hint: string): QkdError => new QkdError('ARGUMENT', `GGUF metadata value ${describeValue(value)} is not a valid ${type}`, { path, field, hint });
  switch (type) {
    case 'u8':
    case 'i8':
    case 'u16':
    case 'i16':
    case 'u32':
    case 'i32': {
      const [lo, hi] = INT_RANGES[type];
      if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || value > hi) throw wrong(`an integer in ${lo}..${hi}`);
      const n = FIXED_BYTES[type]!;
      sink.fixed(n, (b) => (type.startsWith('u') ? b.writeUIntLE(value, 0, n) : b.writeIntLE(value, 0, n)));
      return;
    }
    case 'f32':
      if (typeof value !== 'number') throw wrong('a number');
      sink.fixed(4, (b) => b.writeFloatLE(value));
      return;
    case 'f64':
      if (typeof value !== 'number') throw wrong('a number');
      sink.fixed(8, (b) => b.writeDoubleLE(value));
      return;
    case 'u64':
      if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) throw wrong('a bigint in 0..2^64-1');
      sink.fixed(8, (b) => b.writeBigUInt64LE(value));
      return;
    case 'i64':
      if (typeof value !== 'bigint' || value < -(1n << 63n) || value >= 1n << 63n) throw wrong('a bigint in -2^63..2^63-1');
      sink.fixed(8, (b) => b.writeBigInt64LE(value));
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw wrong('a boolean');
      sink.fixed(1, (b) => b.writeUInt8(value ? 1 : 0));
      return;
    case 'string':
      if (typeof value !== 'string') throw wrong('a string');
      sink.string(value);
      return;
    case 'array': {
      const arr = value as GgufArrayValue;
      if (typeof arr !== 'object' || arr === null || arr.type !== 'array' || !Array.isArray(arr.value)) throw wrong('{type: "array", itemType, value: [...]}');
      if (depth >= MAX_ARRAY_NESTING) throw wrong(`arrays nested at most ${MAX_ARRAY_NESTING} deep`);
      const itemTypeId = VALUE_TYPES.indexOf(arr.itemType);
      if (itemTypeId < 0) throw new QkdError('ARGUMENT', `unknown GGUF array item type ${JSON.stringify(arr.itemType)}`, { path, field: `${field}.itemType`, hint: VALUE_TYPES.join(', ') });
      sink.u32(itemTypeId);
      sink.u64(arr.value.length);
      arr.value.forEach((item, i) => writeItem(sink, path, `${field}[${i}]`, arr.itemType, item, depth + 1));
      return;
    }
  }
}

function describeValue(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'object' && v !== null) return 'object';
  return JSON.stringify(v) ?? String(v);
}

/** One metadata entry: key, type id, value. */
function writeKv(sink: ByteSink, path: string, key: string, value: GgufValue): void {
  const field = `metadata[${JSON.stringify(key)}]`;
  const typeId = VALUE_TYPES.indexOf(value?.type as GgufValueType);
  if (typeId < 0) throw new QkdError('ARGUMENT', `GGUF metadata type ${JSON.stringify(value?.type)} is unknown`, { path, field, hint: VALUE_TYPES.join(', ') });
  sink.string(key);
  sink.u32(typeId);
  writeItem(sink, path, field, value.type, value.type === 'array' ? value : value.value, 0);
}

// ---------------------------------------------------------------------------
// Planning: tensor offsets and metadata entries

interface PlannedTensor {
  source: GgufTensorToWrite;
  type: GgmlTypeInfo;
  elements: number;
  byteLength: number;
  /** Relative to the data section. */
  offset: number;
}

/** Validates the tensors and assigns their offsets (each padded to the alignment). */
function planTensors(path: string, tensors: readonly GgufTensorToWrite[], alignment: number): PlannedTensor[] {
  const names = new Set<string>();
  let offset = 0;
  return tensors.map((t, i) => {
    const field = `tensors[${i}]`;
    const type = ggmlFormat(t.type);
    if (type?.encode === undefined) {
      throw new QkdError('ARGUMENT', `GGUF tensor '${t.name}': cannot write type ${JSON.stringify(t.type)}`, { path, field: `${field}.type`, hint: GGML_WRITABLE.join(', ') });
    }
    if (typeof t.name !== 'string' || t.name.length === 0 || Buffer.byteLength(t.name) > MAX_NAME_BYTES || names.has(t.name)) {
      throw new QkdError('ARGUMENT', `GGUF tensor name ${JSON.stringify(t.name)} is empty, duplicate or longer than ${MAX_NAME_BYTES} bytes`, { path, field: `${field}.name`, hint: `a unique name of 1..${MAX_NAME_BYTES} bytes (llama.cpp's limit)` });
    }
    names.add(t.name);
    if (t.shape.length < 1 || t.shape.length > MAX_DIMS || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new QkdError('SHAPE', `GGUF tensor '${t.name}' has shape ${fmtShape(t.shape)}`, { path, field: `${field}.shape`, hint: `1..${MAX_DIMS} non-negative integer dimensions` });
    }
    const columns = t.shape[t.shape.length - 1]!;
    if (columns % type.blockSize !== 0) {
      throw new QkdError('SHAPE', `GGUF tensor '${t.name}' of shape ${fmtShape(t.shape)}: ${type.name} needs rows of a multiple of ${type.blockSize} elements`, { path, field: `${field}.shape`, hint: `a last dimension divisible by ${type.blockSize}, or type F32/F16/BF16` });
    }
    const elements = t.shape.reduce((a, d) => a * d, 1);
    const byteLength = (elements / type.blockSize) * type.blockBytes;
    const planned = { source: t, type, elements, byteLength, offset };
    offset += alignUp(byteLength, alignment);
    return planned;
  });
}

/** The metadata to write, as entries, with general.quantization_version added when needed. */
function metadataEntries(path: string, contents: GgufContents): { entries: [string, GgufValue][]; alignment: number } {
  const given = contents.metadata ?? new Map<string, GgufValue>();
  const entries: [string, GgufValue][] = given instanceof Map ? [...given.entries()] : Object.entries(given as Record<string, GgufValue>);
  const keys = new Set(entries.map(([k]) => k));
  const quantized = contents.tensors.some((t) => ggmlFormat(t.type)!.blockSize > 1);
  if (quantized && !keys.has('general.quantization_version')) entries.push(['general.quantization_version', { type: 'u32', value: QUANTIZATION_VERSION }]);
  const alignmentValue = entries.find(([k]) => k === 'general.alignment')?.[1];
  let alignment = DEFAULT_ALIGNMENT;
  if (alignmentValue !== undefined) {
    const a = alignmentValue.value;
    if (alignmentValue.type !== 'u32' || typeof a !== 'number' || a <= 0 || (a & (a - 1)) !== 0) {
      throw new QkdError('ARGUMENT', `general.alignment must be a u32 power of two`, { path, field: 'metadata["general.alignment"]', hint: "{type: 'u32', value: 32}" });
    }
    alignment = a;
  }
  return { entries, alignment };
}

// ---------------------------------------------------------------------------
// Writing

/** Encodes one tensor's values in its ggml type (F32 without a copy). */
function encodeTensor(type: GgmlFormat, data: Float32Array, importance: Float32Array | undefined): Uint8Array {
  if (type.name === 'F32' && LITTLE_ENDIAN_HOST) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return type.encode!(data, importance);
}

/**
 * Writes a GGUF v3 file atomically. The header is built first (shapes give
 * every size); then each tensor's data is fetched (when `data` is a
 * function), encoded and written, one tensor in memory at a time.
 */
export function writeGguf(path: string, contents: GgufContents): void {
  const { entries, alignment } = metadataEntries(path, contents);
  const planned = planTensors(path, contents.tensors, alignment);
  const header = new ByteSink();
  header.push(Buffer.from(GGUF_MAGIC));
  header.u32(3);
  header.u64(planned.length);
  header.u64(entries.length);
  const keys = new Set<string>();
  for (const [key, value] of entries) {
    if (keys.has(key)) throw new QkdError('ARGUMENT', `duplicate GGUF metadata key ${JSON.stringify(key)}`, { path, field: `metadata[${JSON.stringify(key)}]` });
    keys.add(key);
    writeKv(header, path, key, value);
  }
  for (const p of planned) {
    header.string(p.source.name);
    header.u32(p.source.shape.length);
    for (const d of [...p.source.shape].reverse()) header.u64(d);
    header.u32(p.type.id);
    header.u64(p.offset);
  }
  header.push(Buffer.alloc(alignUp(header.length, alignment) - header.length));
  writeFileAtomic(path, (fd) => {
    for (const part of header.parts) writeAll(fd, part);
    for (const p of planned) {
      const data = typeof p.source.data === 'function' ? p.source.data() : p.source.data;
      if (!(data instanceof Float32Array) || data.length !== p.elements) {
        const got = data instanceof Float32Array ? `${data.length} elements` : 'not a Float32Array';
        throw new QkdError('SHAPE', `GGUF tensor '${p.source.name}' data is ${got}, shape ${fmtShape(p.source.shape)} needs ${p.elements}`, { path, field: p.source.name });
      }
      writeAll(fd, encodeTensor(p.type, data, p.source.importance));
      writeAll(fd, new Uint8Array(alignUp(p.byteLength, alignment) - p.byteLength));
    }
  });
}
