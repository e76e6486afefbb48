/**
 * GGUF (ggml / llama.cpp), versions 2 and 3, little-endian:
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
 * Reading is lazy: `openGguf` parses and validates the header through a
 * bounded window, and `readFloat32` reads one tensor with positional reads.
 * Every count and length in the header is checked against the bytes left
 * in the file before anything is allocated or looped over, so a corrupt or
 * hostile file costs at most its own size in memory and time; every
 * inconsistency is a QkdError naming the file and the field
 * (e.g. `tensor_infos[3].offset`, `metadata["general.alignment"]`).
 *
 * Writing streams one tensor at a time into a temporary file renamed into
 * place, in the layout llama.cpp writes (data section aligned, each tensor
 * padded to the alignment). Every format is encoded and decoded through the
 * one table of ggml formats (quant/ggml-formats.ts), byte for byte as
 * llama.cpp's reference quantizers and dequantizers.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { QkdError, fmtShape } from '../errors.js';
import { GGML_FORMATS, GGML_READABLE, GGML_WRITABLE, ggmlFormat, ggmlFormatById, type GgmlFormat, type GgmlWritableName } from '../quant/ggml-formats.js';
import { writeAll, writeFileAtomic } from './atomic.js';

// ---------------------------------------------------------------------------
// Constants and tables

/** "GGUF" as bytes. */
const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
const DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most 4 dimensions (GGML_MAX_DIMS). */
const MAX_DIMS = 4;
/** ggml refuses tensor names of 64 bytes or more (GGML_MAX_NAME); the writer keeps to that. */
const MAX_NAME_BYTES = 63;
/** The spec allows arrays of arrays; ggml reads none. A small bound keeps recursion shallow. */
const MAX_ARRAY_NESTING = 4;
/** ggml's current quantization scheme version (GGML_QNT_VERSION). */
const QUANTIZATION_VERSION = 2;
/**
 * Limits on what one metadata value may hold. A file could claim more
 * (its size bounds every count), but JS cannot hold it: V8 strings stop
 * below 2^29 characters, arrays are bounded too. Real files stay far below
 * (a 256k-token vocabulary, chat templates of kilobytes).
 */
const MAX_STRING_BYTES = 1 << 28;
const MAX_ARRAY_ITEMS = 1 << 26;
/** Header bytes read per window refill. */
const WINDOW_BYTES = 1 << 20;
/** Bytes per readSync call (well under the 2 GiB limit of one read). */
const READ_CHUNK = 1 << 30;
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

/** Smallest possible encodings, used to refuse counts the rest of the file cannot hold. */
const MIN_KV_BYTES = 8 + 4 + 1; // empty key, value type, a 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8; // empty name, n_dims = 0, type, offset

/** A ggml element type (the format table lives in quant/ggml-formats.ts). */
export type GgmlTypeInfo = GgmlFormat;

/** The ggml types readFloat32 decodes. */
export const GGUF_READABLE_TYPES: readonly string[] = GGML_READABLE;

/** The type table entry of a ggml type name ('Q8_0', …), or undefined. */
export function ggmlTypeInfo(name: string): GgmlTypeInfo | undefined {
  return ggmlFormat(name);
}

/** Metadata value types, by their id in the file. */
const VALUE_TYPES = ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'bool', 'string', 'array', 'u64', 'i64', 'f64'] as const;
export type GgufValueType = (typeof VALUE_TYPES)[number];
/** Bytes of each fixed-size value type. */
const FIXED_BYTES: Partial<Record<GgufValueType, number>> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8 };

// ---------------------------------------------------------------------------
// Public types

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
export type GgufValue = GgufScalarValue | GgufArrayValue;

export interface GgufTensorInfo {
  name: string;
  /** Row-major shape: ggml's ne reversed, so a matrix is [rows, cols]. */
  shape: number[];
  /** ggml type id as stored. */
  ggmlType: number;
  /** ggml type name ('F32', 'Q8_0', …). */
  typeName: string;
  /** Absolute byte position of the tensor's data in the file. */
  offset: number;
  byteLength: number;
}

// ---------------------------------------------------------------------------
// Reading: a bounded window over the header

function formatError(path: string, field: string, message: string, hint?: string): QkdError {
  return new QkdError('IO', `invalid GGUF file: ${message}`, { path, field, ...(hint === undefined ? {} : { hint }) });
}

/** Reads exactly `count` bytes at `position` into `into` (from `at`). */
function readFully(path: string, fd: number, into: Uint8Array, at: number, count: number, position: number, field: string): void {
  let done = 0;
  while (done < count) {
    const n = readSync(fd, into, at + done, Math.min(READ_CHUNK, count - done), position + done);
    if (n === 0) throw formatError(path, field, `file ended while reading ${field} (was it truncated while open?)`);
    done += n;
  }
}

/**
 * A cursor over the header that reads the file through a 1 MiB window, so
 * the header is never loaded whole and every read is checked against the
 * file size first.
 */
class HeaderReader {
  pos = 0;
  private window: Buffer;
  private windowStart = 0;
  private windowLength = 0;

  constructor(
    readonly path: string,
    private readonly fd: number,
    readonly size: number,
  ) {
    this.window = Buffer.alloc(Math.min(WINDOW_BYTES, size));
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  /** Makes the next `n` bytes available and returns [buffer, index]; advances past them. */
  private take(n: number, field: string): [Buffer, number] {
    if (n > this.remaining) {
      throw formatError(this.path, field, `file ends at byte ${this.size}, inside ${field} (${n} bytes at offset ${this.pos})`, 'a complete file (truncated?)');
    }
    let buffer = this.window;
    if (this.pos < this.windowStart || this.pos + n > this.windowStart + this.windowLength) {
      if (n > this.window.length) {
        // A long string: read it on its own (its length was checked against the file).
        buffer = Buffer.alloc(n);
        readFully(this.path, this.fd, buffer, 0, n, this.pos, field);
        this.pos += n;
        return [buffer, 0];
      }
      this.windowStart = this.pos;
      this.windowLength = Math.min(this.window.length, this.size - this.pos);
      readFully(this.path, this.fd, this.window, 0, this.windowLength, this.pos, field);
    }
    const at = this.pos - this.windowStart;
    this.pos += n;
    return [buffer, at];
  }

  u32(field: string): number {
    const [b, i] = this.take(4, field);
    return b.readUInt32LE(i);
  }
  u64(field: string): bigint {
    const [b, i] = this.take(8, field);
    return b.readBigUInt64LE(i);
  }

  /** One fixed-size scalar of a numeric type. */
  scalar(type: GgufValueType, field: string): number | bigint | boolean {
    const [b, i] = this.take(FIXED_BYTES[type]!, field);
    switch (type) {
      case 'u8':
        return b.readUInt8(i);
      case 'i8':
        return b.readInt8(i);
      case 'u16':
        return b.readUInt16LE(i);
      case 'i16':
        return b.readInt16LE(i);
      case 'u32':
        return b.readUInt32LE(i);
      case 'i32':
        return b.readInt32LE(i);
      case 'f32':
        return b.readFloatLE(i);
      case 'f64':
        return b.readDoubleLE(i);
      case 'u64':
        return b.readBigUInt64LE(i);
      case 'i64':
        return b.readBigInt64LE(i);
      case 'bool': {
        const v = b.readUInt8(i);
        if (v > 1) throw formatError(this.path, field, `bool value is ${v}`, '0 or 1');
        return v === 1;
      }
      default:
        throw formatError(this.path, field, `value type ${type} is not a fixed-size scalar`);
    }
  }

  /** A u64 length and that many UTF-8 bytes; the length must fit the rest of the file. */
  string(field: string): string {
    const length = this.u64(`${field}.length`);
    if (length > BigInt(this.remaining)) {
      throw formatError(this.path, field, `string length ${length} exceeds the ${this.remaining} bytes left in the file`, 'a length that fits the file');
    }
    if (length > BigInt(MAX_STRING_BYTES)) throw formatError(this.path, field, `string of ${length} bytes is longer than qkd reads`, `at most ${MAX_STRING_BYTES} bytes`);
    const n = Number(length);
    if (n === 0) return '';
    const [b, i] = this.take(n, field);
    return b.toString('utf8', i, i + n);
  }
}

/** Reads one metadata value of type id `typeId`. */
function readValue(r: HeaderReader, typeId: number, field: string, depth: number): GgufValue {
  const type = VALUE_TYPES[typeId];
  if (type === undefined) throw formatError(r.path, `${field}.type`, `unknown metadata value type ${typeId}`, '0..12 (u8, i8, u16, i16, u32, i32, f32, bool, string, array, u64, i64, f64)');
  if (type === 'string') return { type, value: r.string(field) };
  if (type === 'array') return readArray(r, field, depth);
  const value = r.scalar(type, field);
  return { type, value } as GgufScalarValue;
}

function readArray(r: HeaderReader, field: string, depth: number): GgufArrayValue {
  if (depth >= MAX_ARRAY_NESTING) throw formatError(r.path, field, `arrays nested more than ${MAX_ARRAY_NESTING} deep`, `at most ${MAX_ARRAY_NESTING} levels`);
  const itemTypeId = r.u32(`${field}.item_type`);
  const itemType = VALUE_TYPES[itemTypeId];
  if (itemType === undefined) throw formatError(r.path, `${field}.item_type`, `unknown array item type ${itemTypeId}`, '0..12');
  const count = r.u64(`${field}.length`);
  // Each item takes at least this many bytes: a count the file cannot hold is refused before looping.
  const minItemBytes = itemType === 'string' ? 8 : itemType === 'array' ? 12 : FIXED_BYTES[itemType]!;
  if (count * BigInt(minItemBytes) > BigInt(r.remaining)) {
    throw formatError(r.path, `${field}.length`, `array of ${count} ${itemType} items cannot fit the ${r.remaining} bytes left in the file`, 'a length that fits the file');
  }
  if (count > BigInt(MAX_ARRAY_ITEMS)) throw formatError(r.path, `${field}.length`, `array of ${count} items is longer than qkd reads`, `at most ${MAX_ARRAY_ITEMS} items`);
  const n = Number(count);
  const items: GgufArrayValue['value'] = new Array(n);
  for (let i = 0; i < n; i++) {
    const itemField = `${field}[${i}]`;
    if (itemType === 'string') items[i] = r.string(itemField);
    else if (itemType === 'array') items[i] = readArray(r, itemField, depth + 1);
    else items[i] = r.scalar(itemType, itemField);
  }
  return { type: 'array', itemType, value: items };
}

// ---------------------------------------------------------------------------
// Reading: header and tensor infos

interface ParsedGguf {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataOffset: number;
}

function parseGguf(path: string, fd: number, size: number): ParsedGguf {
  const r = new HeaderReader(path, fd, size);
  if (size < 4) throw formatError(path, 'magic', `file is ${size} bytes, too short for the GGUF magic`, '"GGUF" at offset 0');
  const magic = Buffer.alloc(4);
  readFully(path, fd, magic, 0, 4, 0, 'magic');
  if (!magic.equals(GGUF_MAGIC)) throw formatError(path, 'magic', `magic is 0x${magic.toString('hex')}`, '"GGUF" (0x47475546) at offset 0');
  r.pos = 4;
  const version = readVersion(r);
  const tensorCount = r.u64('tensor_count');
  const kvCount = r.u64('metadata_kv_count');
  const left = BigInt(r.remaining);
  if (kvCount * BigInt(MIN_KV_BYTES) > left) {
    throw formatError(path, 'metadata_kv_count', `${kvCount} metadata entries cannot fit the ${left} bytes left in the file`, 'a count that fits the file');
  }
  if (tensorCount * BigInt(MIN_TENSOR_INFO_BYTES) + kvCount * BigInt(MIN_KV_BYTES) > left) {
    throw formatError(path, 'tensor_count', `${tensorCount} tensor infos cannot fit the ${left} bytes left in the file`, 'a count that fits the file');
  }
  const metadata = readMetadata(r, Number(kvCount));
  const alignment = alignmentOf(path, metadata);
  const raw = readTensorInfos(r, Number(tensorCount));
  const dataOffset = alignUp(r.pos, alignment);
  const tensors = placeTensors(path, raw, dataOffset, alignment, size);
  return { version, metadata, tensors, alignment, dataOffset };
}

function readVersion(r: HeaderReader): number {
  const version = r.u32('version');
  if (version === 2 || version === 3) return version;
  if (version === 1) throw formatError(r.path, 'version', 'GGUF version 1 (32-bit counts) is not supported', 'version 2 or 3');
  if ((version & 0xffff) === 0) {
    throw formatError(r.path, 'version', `version reads as ${version}: a big-endian GGUF file?`, 'a little-endian GGUF file, version 2 or 3');
  }
  throw formatError(r.path, 'version', `GGUF version ${version} is not supported`, 'version 2 or 3');
}

function readMetadata(r: HeaderReader, count: number): Map<string, GgufValue> {
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < count; i++) {
    const key = r.string(`metadata[${i}].key`);
    // Keys name the field in errors; a pathological one is shortened there.
    const field = `metadata[${JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}…` : key)}]`;
    if (metadata.has(key)) throw formatError(r.path, field, `duplicate metadata key ${JSON.stringify(key)}`, 'unique keys');
    const typeId = r.u32(`${field}.type`);
    metadata.set(key, readValue(r, typeId, field, 0));
  }
  return metadata;
}

function alignmentOf(path: string, metadata: ReadonlyMap<string, GgufValue>): number {
  const value = metadata.get('general.alignment');
  if (value === undefined) return DEFAULT_ALIGNMENT;
  const field = 'metadata["general.alignment"]';
  if (value.type !== 'u32') throw formatError(path, field, `general.alignment has type ${value.type}`, 'a u32');
  const a = value.value;
  if (a === 0 || (a & (a - 1)) !== 0) throw formatError(path, field, `general.alignment is ${a}`, 'a power of two');
  return a;
}

/** A tensor info as stored: offset relative to the data section, sizes exact. */
interface RawTensorInfo {
  name: string;
  ne: number[];
  type: GgmlTypeInfo;
  offset: bigint;
  byteLength: bigint;
}

function readTensorInfos(r: HeaderReader, count: number): RawTensorInfo[] {
  const tensors: RawTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < count; i++) {
    const field = `tensor_infos[${i}]`;
    const name = r.string(`${field}.name`);
    if (names.has(name)) throw formatError(r.path, `${field}.name`, `duplicate tensor name ${JSON.stringify(name)}`, 'unique tensor names');
    names.add(name);
    const nDims = r.u32(`${field}.n_dims`);
    if (nDims > MAX_DIMS) throw formatError(r.path, `${field}.n_dims`, `tensor '${name}' has ${nDims} dimensions`, `0..${MAX_DIMS}`);
    const ne: number[] = [];
    for (let j = 0; j < nDims; j++) {
      const d = r.u64(`${field}.ne[${j}]`);
      if (d > BigInt(Number.MAX_SAFE_INTEGER)) {
        const shown = d >= 1n << 63n ? `${d - (1n << 64n)} (negative as int64)` : String(d);
        throw formatError(r.path, `${field}.ne[${j}]`, `tensor '${name}' dimension ${j} is ${shown}`, 'a non-negative size below 2^53');
      }
      ne.push(Number(d));
    }
    const typeId = r.u32(`${field}.type`);
    const type = ggmlFormatById(typeId);
    if (type === undefined) {
      throw formatError(r.path, `${field}.type`, `tensor '${name}' has unknown ggml type ${typeId}`, `one of ${GGML_FORMATS.map((t) => `${t.id} (${t.name})`).join(', ')}`);
    }
    const columns = ne[0] ?? 1;
    if (columns % type.blockSize !== 0) {
      throw formatError(r.path, `${field}.ne[0]`, `tensor '${name}' of type ${type.name} has ${columns} elements per row, not a multiple of the block size ${type.blockSize}`, `a multiple of ${type.blockSize}`);
    }
    const offset = r.u64(`${field}.offset`);
    const elements = ne.reduce((a, d) => a * BigInt(d), 1n);
    tensors.push({ name, ne, type, offset, byteLength: (elements / BigInt(type.blockSize)) * BigInt(type.blockBytes) });
  }
  return tensors;
}

/** Checks each tensor's size, alignment, bounds and overlaps; returns infos with absolute offsets. */
function placeTensors(path: string, raw: readonly RawTensorInfo[], dataOffset: number, alignment: number, size: number): GgufTensorInfo[] {
  const tensors = raw.map((t, i): GgufTensorInfo => {
    const shape = [...t.ne].reverse();
    if (t.byteLength > BigInt(size)) {
      throw formatError(path, `tensor_infos[${i}].ne`, `tensor '${t.name}' of shape ${fmtShape(shape)} and type ${t.type.name} needs ${t.byteLength} bytes, more than the whole ${size}-byte file`, 'a shape that fits the file');
    }
    const field = `tensor_infos[${i}].offset`;
    if (t.offset % BigInt(alignment) !== 0n) {
      throw formatError(path, field, `tensor '${t.name}' has offset ${t.offset}, not a multiple of the alignment ${alignment}`, `a multiple of ${alignment}`);
    }
    const end = BigInt(dataOffset) + t.offset + t.byteLength;
    if (end > BigInt(size)) {
      throw formatError(path, field, `tensor '${t.name}' (${t.byteLength} bytes at data offset ${t.offset}) ends at byte ${end}, past the end of the ${size}-byte file (truncated?)`, 'data within the file');
    }
    return { name: t.name, shape, ggmlType: t.type.id, typeName: t.type.name, offset: dataOffset + Number(t.offset), byteLength: Number(t.byteLength) };
  });
  const order = tensors.map((t, i) => ({ t, i })).filter(({ t }) => t.byteLength > 0).sort((a, b) => a.t.offset - b.t.offset);
  for (let k = 1; k < order.length; k++) {
    const prev = order[k - 1]!.t;
    const cur = order[k]!;
    if (cur.t.offset < prev.offset + prev.byteLength) {
      throw formatError(path, `tensor_infos[${cur.i}].offset`, `tensor '${cur.t.name}' overlaps tensor '${prev.name}'`, 'tensors that do not overlap');
    }
  }
  return tensors;
}

function alignUp(x: number, alignment: number): number {
  return Math.ceil(x / alignment) * alignment;
}

// ---------------------------------------------------------------------------
// Reading: the file object

export class GgufFile {
  readonly path: string;
  readonly version: number;
  readonly metadata: Map<string, GgufValue>;
  /** Tensor infos in file (header) order. */
  readonly tensors: readonly GgufTensorInfo[];
  readonly alignment: number;
  /** Absolute byte position of the data section. */
  readonly dataOffset: number;
  private readonly byName: Map<string, GgufTensorInfo>;
  private fd: number | null;

  constructor(path: string, fd: number, parsed: ParsedGguf) {
    this.path = path;
    this.fd = fd;
    this.version = parsed.version;
    this.metadata = parsed.metadata;
    this.tensors = parsed.tensors;
    this.alignment = parsed.alignment;
    this.dataOffset = parsed.dataOffset;
    this.byName = new Map(parsed.tensors.map((t) => [t.name, t]));
  }

  /** general.architecture, or undefined. */
  get architecture(): string | undefined {
    return this.stringValue('general.architecture');
  }

  /** A string metadata value (undefined when absent or not a string). */
  stringValue(key: string): string | undefined {
    const v = this.metadata.get(key);
    return v?.type === 'string' ? v.value : undefined;
  }

  /** A numeric metadata value as a number (undefined when absent, not numeric or not exactly representable). */
  numberValue(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type === 'u64' || v.type === 'i64') return v.value >= BigInt(Number.MIN_SAFE_INTEGER) && v.value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v.value) : undefined;
    return typeof v.value === 'number' ? v.value : undefined;
  }

  tensor(name: string): GgufTensorInfo {
    const t = this.byName.get(name);
    if (t === undefined) throw new QkdError('IO', `tensor '${name}' is not in the file`, { path: this.path, field: name });
    return t;
  }

  /** The tensor's stored bytes (an aligned copy of its own). */
  readBytes(name: string): Uint8Array {
    const t = this.tensor(name);
    if (this.fd === null) throw new QkdError('STATE', 'GGUF file already closed', { path: this.path });
    const bytes = new Uint8Array(t.byteLength);
    readFully(this.path, this.fd, bytes, 0, t.byteLength, t.offset, name);
    return bytes;
  }

  /** One tensor as float32, widened or dequantized (types in GGUF_READABLE_TYPES). */
  readFloat32(name: string): Float32Array {
    const t = this.tensor(name);
    if (!GGUF_READABLE_TYPES.includes(t.typeName)) {
      throw new QkdError('DTYPE', `tensor '${name}' has ggml type ${t.typeName}, which qkd cannot dequantize`, { path: this.path, field: `${name}.type`, hint: GGUF_READABLE_TYPES.join(', ') });
    }
    const count = t.shape.reduce((a, d) => a * d, 1);
    try {
      return ggmlFormat(t.typeName)!.decode!(this.readBytes(name), count);
    } catch (err) {
      // The only RangeError here is an allocation JS refuses (a typed array beyond its maximum length).
      if (err instanceof RangeError) {
        throw new QkdError('IO', `tensor '${name}' (${count} elements, ${t.byteLength} bytes) is too large to read into one array: ${err.message}`, { path: this.path, field: name, hint: 'tensors below 2^32 elements' });
      }
      throw err;
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Opens a GGUF file and validates its header (tensors are read on demand). */
export function openGguf(path: string): GgufFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new QkdError('IO', `cannot open GGUF file: ${(err as Error).message}`, { path });
  }
  try {
    return new GgufFile(path, fd, parseGguf(path, fd, fstatSync(fd).size));
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Writing

/** The ggml types writeGguf encodes (GGML_WRITABLE). */
export type GgufWriteType = GgmlWritableName;

export interface GgufTensorToWrite {
  name: string;
  /** Row-major shape ([rows, cols]); stored as ggml ne (reversed). 1 to 4 dimensions. */
  shape: readonly number[];
  type: GgufWriteType;
  /** The values, or a function producing them when the tensor is written (streaming). */
  data: Float32Array | (() => Float32Array);
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

/** Encodes one tensor's values in its ggml type (F32 without a copy). */
function encodeTensor(type: GgmlFormat, data: Float32Array): Uint8Array {
  if (type.name === 'F32' && LITTLE_ENDIAN_HOST) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return type.encode!(data);
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
      writeAll(fd, encodeTensor(p.type, data));
      writeAll(fd, new Uint8Array(alignUp(p.byteLength, alignment) - p.byteLength));
    }
  });
}

// ---------------------------------------------------------------------------
// llama.cpp ↔ Hugging Face tensor names

/** Per-layer tensor names: llama.cpp's blk.N.<part> ↔ Hugging Face model.layers.N.<part>. */
const LAYER_PARTS: readonly [string, string][] = [
  ['attn_q', 'self_attn.q_proj'],
  ['attn_k', 'self_attn.k_proj'],
  ['attn_v', 'self_attn.v_proj'],
  ['attn_output', 'self_attn.o_proj'],
  ['ffn_gate', 'mlp.gate_proj'],
  ['ffn_up', 'mlp.up_proj'],
  ['ffn_down', 'mlp.down_proj'],
  ['attn_norm', 'input_layernorm'],
  ['ffn_norm', 'post_attention_layernorm'],
];
const GLOBAL_PARTS: readonly [string, string][] = [
  ['token_embd', 'model.embed_tokens'],
  ['output_norm', 'model.norm'],
  ['output', 'lm_head'],
];

function mapName(name: string, from: 0 | 1): string {
  const to = 1 - from;
  const layerPattern = from === 0 ? /^blk\.(\d+)\.(.+)\.(weight|bias)$/ : /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/;
  const layer = layerPattern.exec(name);
  if (layer !== null) {
    const part = LAYER_PARTS.find((p) => p[from] === layer[2]);
    if (part === undefined) return name;
    return from === 0 ? `model.layers.${layer[1]}.${part[to]}.${layer[3]}` : `blk.${layer[1]}.${part[to]}.${layer[3]}`;
  }
  const global = /^(.+)\.(weight|bias)$/.exec(name);
  const part = global === null ? undefined : GLOBAL_PARTS.find((p) => p[from] === global[1]);
  return part === undefined ? name : `${part[to]}.${global![2]}`;
}

/**
 * The Hugging Face name of a llama.cpp tensor of a llama model
 * (token_embd.weight → model.embed_tokens.weight, blk.3.attn_q.weight →
 * model.layers.3.self_attn.q_proj.weight, …); other names are returned as
 * they are.
 *
 * llama.cpp's converter also permutes the rows of each head of attn_q and
 * attn_k (Hugging Face's rotate-half RoPE pairs → adjacent pairs). Names
 * are mapped but the rows are left as stored: a row permutation changes no
 * metric qkd audits (kurtosis, singular values, the per-row quantization
 * error and noise amplification are all invariant under reordering rows).
 * Code that runs the model from a GGUF must undo the permutation.
 */
export function ggufToHfName(name: string): string {
  return mapName(name, 0);
}

/** The llama.cpp name of a Hugging Face llama tensor (inverse of ggufToHfName). */
export function hfToGgufName(name: string): string {
  return mapName(name, 1);
}
