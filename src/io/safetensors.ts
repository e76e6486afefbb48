/**
 * safetensors (Hugging Face): an 8-byte little-endian header length N, a
 * JSON header of N bytes ({name: {dtype, shape, data_offsets: [begin, end]}},
 * plus optional "__metadata__": {string: string}), then the tensor bytes;
 * offsets are relative to the end of the header and tile the data section.
 *
 * Reading is lazy: `openSafetensors` reads and validates the header only;
 * each tensor is read from disk when asked for, so a model larger than
 * memory can be processed one tensor at a time. Every inconsistency in a
 * header (size, dtype, shape, offsets, overlaps, holes) is a QkdError naming
 * the file and the field. Writing streams tensor by tensor into a temporary
 * file that is renamed into place (atomic).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { BYTES_PER_ELEMENT, fromBf16, fromF16, type StorageArrayMap, type StorageDType } from '../tensor/dtype.js';
import { writeAll, writeFileAtomic } from './atomic.js';
import { adviseHugePages, kernels, mapFileRange, prefetchFileRange, readFileRangeStart } from '../tensor/backend.js';

/** safetensors dtype names ↔ qkd storage dtypes (the ones qkd reads and writes). */
const DTYPE_FROM_FILE: Record<string, StorageDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16', I8: 'i8', U8: 'u8', I32: 'i32' };
const DTYPE_TO_FILE: Record<StorageDType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i8: 'I8', u8: 'U8', i32: 'I32' };

/** Largest header accepted (the format's own reference limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  name: string;
  dtype: StorageDType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface TensorData<D extends StorageDType = StorageDType> {
  dtype: D;
  shape: number[];
  data: StorageArrayMap[D];
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  private fd: number | null;
  /** Where F16 tensors are read before widening into a caller's scratch (readFloat32). */
  private halves: Uint8Array | null = null;

  constructor(path: string, fd: number, metadata: Record<string, string>, entries: Map<string, SafetensorsEntry>) {
    this.path = path;
    this.fd = fd;
    this.metadata = metadata;
    this.entries = entries;
  }

  get names(): string[] {
    return [...this.entries.keys()];
  }

  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (e === undefined) throw new QkdError('IO', `tensor '${name}' is not in the file`, { path: this.path, field: name });
    return e;
  }

  /**
   * The tensor's raw bytes: read into `scratch` when it is big enough (the
   * result is then a view of it), else into a new aligned buffer. Reading
   * straight into the destination avoids a copy, and reusing one scratch
   * avoids the page faults of a fresh buffer per tensor.
   */
  readBytes(name: string, scratch?: Uint8Array): Uint8Array {
    const e = this.entry(name);
    if (this.fd === null) throw new QkdError('STATE', `safetensors file already closed`, { path: this.path });
    const size = e.end - e.begin;
    const bytes = scratch && scratch.length >= size ? scratch.subarray(0, size) : new Uint8Array(new ArrayBuffer(size));
    let done = 0;
    while (done < size) {
      const n = readSync(this.fd, bytes, done, size - done, e.begin + done);
      if (n === 0) throw new QkdError('IO', `file ended while reading tensor '${name}'`, { path: this.path, field: name });
      done += n;
    }
    return bytes;
  }

  /**
   * Starts reading the tensor's raw bytes into `scratch` (which must hold
   * them) on the addon's background thread (backend.readFileRangeStart):
   * returns the function that completes the read and gives the bytes (a
   * view of scratch), or null when no background read is available (the
   * caller then reads with readBytes). scratch must not be touched until
   * then.
   */
  readBytesStart(name: string, scratch: Uint8Array): (() => Uint8Array) | null {
    const e = this.entry(name);
    if (this.fd === null) throw new QkdError('STATE', `safetensors file already closed`, { path: this.path });
    const size = e.end - e.begin;
    if (scratch.length < size) return null;
    const bytes = scratch.subarray(0, size);
    const finish = readFileRangeStart(this.fd, e.begin, bytes);
    if (finish === null) return null;
    return () => {
      let n: number;
      try {
        n = finish();
      } catch (error) {
        throw new QkdError('IO', `could not read tensor '${name}': ${(error as Error).message}`, { path: this.path, field: name });
      }
      if (n < size) throw new QkdError('IO', `file ended while reading tensor '${name}'`, { path: this.path, field: name });
      return bytes;
    };
  }

  /**
   * The tensor's raw bytes as a view of a memory mapping of the file
   * (backend.mapFileRange: no copy, no fresh memory), or null when mapping
   * is unavailable or the bytes do not start at a multiple of the dtype's
   * size (the caller then reads them). The view stays valid after close().
   */
  mapped(name: string): Uint8Array | null {
    const e = this.entry(name);
    if (this.fd === null) throw new QkdError('STATE', `safetensors file already closed`, { path: this.path });
    if (e.begin % BYTES_PER_ELEMENT[e.dtype] !== 0) return null;
    return mapFileRange(this.fd, e.begin, e.end - e.begin);
  }

  /** Starts reading the tensor's bytes into the OS's cache in the background (backend.prefetchFileRange). */
  prefetch(name: string): void {
    const e = this.entry(name);
    if (this.fd !== null) prefetchFileRange(this.fd, e.begin, e.end - e.begin);
  }

  /** The tensor's raw data in its stored dtype. */
  read(name: string): TensorData {
    const e = this.entry(name);
    const bytes = this.readBytes(name);
    const count = bytes.length / BYTES_PER_ELEMENT[e.dtype];
    const data = viewAs(e.dtype, bytes.buffer as ArrayBuffer, count);
    return { dtype: e.dtype, shape: [...e.shape], data };
  }

  /**
   * The tensor as float32 (f16 and bf16 widened; integer dtypes refused).
   * With `scratch` big enough, an f32 or f16 tensor lands in it (the result
   * is then a view of it, valid until the next read into the same scratch),
   * and an f16 one is widened by the native kernel when it is loaded.
   */
  readFloat32(name: string, scratch?: Float32Array): { shape: number[]; data: Float32Array } {
    const e = this.entry(name);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (scratch !== undefined && scratch.length >= count && (e.dtype === 'f32' || e.dtype === 'f16')) {
      const out = scratch.subarray(0, count);
      if (e.dtype === 'f32') this.readBytes(name, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
      else {
        // The halves are read into a buffer this file keeps for the purpose (grown, never shrunk), then widened.
        if (this.halves === null || this.halves.length < count * 2) this.halves = adviseHugePages(new Uint8Array(new ArrayBuffer(count * 2)));
        const halves = this.readBytes(name, this.halves);
        kernels().f16ToF32(new Uint16Array(halves.buffer, halves.byteOffset, count), out, count);
      }
      return { shape: [...e.shape], data: out };
    }
    const t = this.read(name);
    switch (t.dtype) {
      case 'f32':
        return { shape: t.shape, data: t.data as Float32Array };
      case 'f16':
        return { shape: t.shape, data: fromF16(t.data as Uint16Array) };
      case 'bf16':
        return { shape: t.shape, data: fromBf16(t.data as Uint16Array) };
      default:
        throw new QkdError('DTYPE', `tensor '${name}' has dtype ${DTYPE_TO_FILE[t.dtype]}, not a float type`, { path: this.path, field: `${name}.dtype`, hint: 'F32, F16 or BF16' });
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.halves = null;
  }
}

function viewAs(dtype: StorageDType, buffer: ArrayBuffer, count: number): StorageArrayMap[StorageDType] {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buffer, 0, count);
    case 'f16':
    case 'bf16':
      return new Uint16Array(buffer, 0, count);
    case 'i8':
      return new Int8Array(buffer, 0, count);
    case 'u8':
      return new Uint8Array(buffer, 0, count);
    case 'i32':
      return new Int32Array(buffer, 0, count);
  }
}

/** Opens a safetensors file and validates its header (tensors are read on demand). */
export function openSafetensors(path: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new QkdError('IO', `cannot open safetensors file: ${(err as Error).message}`, { path });
  }
  try {
    const { metadata, entries } = parseHeader(path, fd, fstatSync(fd).size);
    return new SafetensorsFile(path, fd, metadata, entries);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function parseHeader(path: string, fd: number, fileSize: number): { metadata: Record<string, string>; entries: Map<string, SafetensorsEntry> } {
  const bad = (field: string, message: string, hint?: string): QkdError => new QkdError('IO', `invalid safetensors header: ${message}`, { path, field, ...(hint ? { hint } : {}) });
  if (fileSize < 8) throw bad('header length', `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const lengthBytes = Buffer.alloc(8);
  readSync(fd, lengthBytes, 0, 8, 0);
  const headerLength = Number(lengthBytes.readBigUInt64LE(0));
  if (headerLength < 2 || headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileSize) {
    throw bad('header length', `header length ${headerLength} does not fit a file of ${fileSize} bytes`, `2..${Math.min(MAX_HEADER_BYTES, fileSize - 8)}`);
  }
  const headerBytes = Buffer.alloc(headerLength);
  readSync(fd, headerBytes, 0, headerLength, 8);
  let header: unknown;
  try {
    header = JSON.parse(headerBytes.toString('utf8'));
  } catch (err) {
    throw bad('header', `header is not JSON (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header', 'header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, SafetensorsEntry>();
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('__metadata__', 'metadata is not an object of strings');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw bad(`__metadata__.${k}`, `metadata value is ${JSON.stringify(v)}`, 'a string');
        metadata[k] = v;
      }
      continue;
    }
    if (typeof value !== 'object' || value === null) throw bad(name, 'tensor entry is not an object');
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    const storage = typeof dtype === 'string' ? DTYPE_FROM_FILE[dtype] : undefined;
    if (storage === undefined) throw bad(`${name}.dtype`, `unsupported dtype ${JSON.stringify(dtype)}`, Object.keys(DTYPE_FROM_FILE).join(', '));
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw bad(`${name}.shape`, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((o) => !Number.isSafeInteger(o) || o < 0) || offsets[0] > offsets[1]) {
      throw bad(`${name}.data_offsets`, `data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 ≤ begin ≤ end`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataSize) throw bad(`${name}.data_offsets`, `tensor ends at byte ${end} but the data section has ${dataSize} bytes (truncated file?)`);
    let elements = 1;
    for (const d of shape as number[]) elements *= d;
    const expected = elements * BYTES_PER_ELEMENT[storage];
    if (end - begin !== expected) {
      throw bad(`${name}.data_offsets`, `${end - begin} bytes for shape ${JSON.stringify(shape)} of ${dtype}, which needs ${expected}`);
    }
    entries.set(name, { name, dtype: storage, shape: shape as number[], begin: dataStart + begin, end: dataStart + end });
  }
  // Tensors must not overlap (the format also forbids holes; we accept them: harmless for reading).
  // An empty tensor's range overlaps nothing, wherever it starts.
  const sorted = [...entries.values()].filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.begin < sorted[i - 1]!.end) throw bad(`${sorted[i]!.name}.data_offsets`, `tensor overlaps '${sorted[i - 1]!.name}'`);
  }
  return { metadata, entries };
}

export interface TensorToWrite {
  name: string;
  dtype: StorageDType;
  shape: readonly number[];
  /** The elements (a typed array of the dtype's storage type), or a function producing them when written (streaming). */
  data: StorageArrayMap[StorageDType] | (() => StorageArrayMap[StorageDType]);
}

/**
 * Writes a safetensors file atomically. Tensors are laid out in the given
 * order; when `data` is a function, it is called just before that tensor is
 * written, so only one tensor needs to be in memory at a time.
 */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name) || t.name === '__metadata__') throw new QkdError('ARGUMENT', `duplicate or reserved tensor name '${t.name}'`, { path, field: t.name });
    seen.add(t.name);
    const bytes = t.shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[t.dtype];
    header[t.name] = { dtype: DTYPE_TO_FILE[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const lengthBytes = Buffer.alloc(8);
  lengthBytes.writeBigUInt64LE(BigInt(headerBytes.length));
  writeFileAtomic(path, (fd) => {
    writeAll(fd, lengthBytes);
    writeAll(fd, headerBytes);
    for (const t of tensors) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      const expected = t.shape.reduce((a, b) => a * b, 1);
      if (data.length !== expected || BYTES_PER_ELEMENT[t.dtype] !== data.BYTES_PER_ELEMENT) {
        throw new QkdError('SHAPE', `tensor '${t.name}' has ${data.length} elements of ${data.BYTES_PER_ELEMENT} bytes, expected ${expected} of ${t.dtype}`, { path, field: t.name });
      }
      writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  });
}
