/**
 * Reading GGUF files (layout in gguf-types.ts).
 *
 * Reading is lazy: `openGguf` parses and validates the header through a
 * bounded window, and `readFloat32` reads one tensor with positional reads,
 * decoded through the one table of ggml formats (quant/ggml-formats.ts).
 * Every count and length in the header is checked against the bytes left
 * in the file before anything is allocated or looped over, so a corrupt or
 * hostile file costs at most its own size in memory and time; every
 * inconsistency is a QkdError naming the file and the field
 * (e.g. `tensor_infos[3].offset`, `metadata["general.alignment"]`).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { QkdError, fmtShape } from '../errors.js';
import { GGML_FORMATS, GGML_READABLE, ggmlFormat, ggmlFormatById } from '../quant/ggml-formats.js';
import { adviseHugePages, mapFileRange, prefetchFileRange, releaseMapped } from '../tensor/backend.js';
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
  type GgufScalarValue,
  type GgufValue,
  type GgufValueType,
} from './gguf-types.js';

// ---------------------------------------------------------------------------
// Limits

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

/** Smallest possible encodings, used to refuse counts the rest of the file cannot hold. */
const MIN_KV_BYTES = 8 + 4 + 1; // empty key, value type, a 1-byte value
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8; // empty name, n_dims = 0, type, offset

// ---------------------------------------------------------------------------
// Public types and look-ups

/**
 * Tensors of any type but F32 whose stored bytes exceed this (64 MiB) are
 * decoded from a mapping of the file when readFloat32 has a scratch (an
 * embedding; docs/architecture.md, "Memory"); smaller ones are read into a
 * reused buffer.
 */
const MAP_STORED_ABOVE = 1 << 26;

/** The ggml types readFloat32 decodes. */
export const GGUF_READABLE_TYPES: readonly string[] = GGML_READABLE;

/** The type table entry of a ggml type name ('Q8_0', …), or undefined. */
export function ggmlTypeInfo(name: string): GgmlTypeInfo | undefined {
  return ggmlFormat(name);
}

/** One tensor as the header describes it. */
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
// A bounded window over the header

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
// Header and tensor infos

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

// ---------------------------------------------------------------------------
// The file object

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
  /** The stored bytes of the last tensor read with a scratch (readFloat32). */
  private byteScratch = new Uint8Array(0);
  /** Tensors (not F32) with more stored bytes than this are decoded from a mapping (MAP_STORED_ABOVE). */
  mapStoredAbove = MAP_STORED_ABOVE;

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

  /** Starts reading the tensor's stored bytes into the OS's cache in the background (backend.prefetchFileRange). */
  prefetch(name: string): void {
    const t = this.tensor(name);
    if (this.fd !== null) prefetchFileRange(this.fd, t.offset, t.byteLength);
  }

  /** The tensor's stored bytes (an aligned copy of its own). */
  readBytes(name: string): Uint8Array {
    const t = this.tensor(name);
    if (this.fd === null) throw new QkdError('STATE', 'GGUF file already closed', { path: this.path });
    const bytes = new Uint8Array(t.byteLength);
    readFully(this.path, this.fd, bytes, 0, t.byteLength, t.offset, name);
    return bytes;
  }

  /**
   * One tensor as float32, widened or dequantized (types in
   * GGUF_READABLE_TYPES). With `scratch` the stored bytes go to a buffer the
   * reader keeps and the values to `scratch` when it is long enough (or, for
   * F32, stay in that buffer): the result is then valid until the next read
   * with a scratch. Without it the result is the caller's own.
   */
  readFloat32(name: string, scratch?: Float32Array): Float32Array {
    const t = this.tensor(name);
    if (!GGUF_READABLE_TYPES.includes(t.typeName)) {
      throw new QkdError('DTYPE', `tensor '${name}' has ggml type ${t.typeName}, which qkd cannot dequantize`, { path: this.path, field: `${name}.type`, hint: GGUF_READABLE_TYPES.join(', ') });
    }
    const count = t.shape.reduce((a, d) => a * d, 1);
    try {
      if (scratch === undefined) return ggmlFormat(t.typeName)!.decode!(this.readBytes(name), count);
      if (this.fd === null) throw new QkdError('STATE', 'GGUF file already closed', { path: this.path });
      // A large tensor (not F32) is decoded from a mapping of the file: its stored bytes are neither copied nor
      // make the reused byte buffer grow to their size (fresh memory, touched once).
      const widened = t.typeName !== 'F32'; // decoded into scratch, never a view of the bytes
      const map = widened && t.byteLength > this.mapStoredAbove && scratch.length >= count ? mapFileRange(this.fd, t.offset, t.byteLength) : null;
      if (map !== null) {
        try {
          return ggmlFormat(t.typeName)!.decode!(map, count, scratch);
        } finally {
          releaseMapped(map);
        }
      }
      // Reused buffers spare the page faults of fresh ones (about a third of the time of a 67M-value Q8_0 tensor).
      if (this.byteScratch.length < t.byteLength) this.byteScratch = adviseHugePages(new Uint8Array(t.byteLength));
      const bytes = this.byteScratch.subarray(0, t.byteLength);
      readFully(this.path, this.fd, bytes, 0, t.byteLength, t.offset, name);
      return ggmlFormat(t.typeName)!.decode!(bytes, count, scratch);
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
