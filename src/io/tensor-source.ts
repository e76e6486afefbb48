/**
 * One streaming read API over every model format qkd reads, so code that
 * visits a model tensor by tensor (profiling, quantization, export) does not
 * care where the weights live:
 *
 *   - a .safetensors file;
 *   - a Hugging Face model directory: model.safetensors, or shards listed in
 *     model.safetensors.index.json (as models/llama-io.ts saveLlama writes);
 *   - a qkd training run directory: latest.json names the newest complete
 *     checkpoint directory (see train/trainer.ts), which is read as above;
 *   - a .gguf file (tensor names mapped to Hugging Face names when
 *     general.architecture is llama; see gguf-names.ts on the q/k row order);
 *   - a llama2.c .bin checkpoint (legacy, v1 or v2), under the Hugging Face
 *     names io/llama2c.ts uses.
 *
 * Opening reads headers only; `readFloat32` reads one tensor from disk, so
 * memory is bounded by the largest tensor, never the whole model.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFileHead } from './file-head.js';
import { basename, join } from 'node:path';
import { QkdError } from '../errors.js';
import type { StorageDType } from '../tensor/dtype.js';
import { openGguf, type GgufFile } from './gguf-reader.js';
import { ggufToHfName } from './gguf-names.js';
import { openLlama2c, type Llama2cReader } from './llama2c.js';
import { openSafetensors, type SafetensorsFile } from './safetensors.js';

export interface SourceTensor {
  name: string;
  /** Row-major shape. */
  shape: number[];
  /** Element type as stored: 'F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', … ('Q8_G<n>' for llama2.c v2 groups of n). */
  dtype: string;
}

export type TensorSourceFormat = 'safetensors' | 'gguf' | 'llama2c';

export interface TensorSource {
  /** The path it was opened from. */
  readonly path: string;
  readonly format: TensorSourceFormat;
  /** In file order (for shards: shard by shard). */
  readonly tensors: readonly SourceTensor[];
  /**
   * Reads one tensor from disk as float32 (widening / dequantizing). A
   * source may read into `scratch` when it is big enough, or into a buffer
   * of its own (the result is then valid until the next read with a scratch).
   */
  readFloat32(name: string, scratch?: Float32Array): Float32Array;
  /**
   * The raw bfloat16 bits of a tensor stored as BF16, else null (optional).
   * With `scratch` big enough the bits are read into it (the result is a
   * view of it, valid until the next read into the same scratch).
   */
  readBf16?(name: string, scratch?: Uint16Array): Uint16Array | null;
  /**
   * Starts reading a tensor stored as BF16 into `scratch` (which must hold
   * it) in the background (optional; safetensors with the addon): returns
   * the function that completes the read and gives its bits (a view of
   * scratch), or null when the tensor is another dtype or the source cannot
   * (readBf16 then). scratch must not be touched until the read completes.
   */
  readBf16Start?(name: string, scratch: Uint16Array): (() => Uint16Array) | null;
  /**
   * A BF16, F16 or F32 tensor where it lies in a memory mapping of the file
   * (backend.mapFileRange: no copy, no fresh memory), else null: another
   * dtype, a source that does not map (GGUF, llama2.c), or a file that
   * cannot be mapped (optional). The view must not be written.
   */
  mapped?(name: string): MappedTensor | null;
  /**
   * Starts reading a tensor into the OS's file cache in the background, for
   * a read that comes later (optional; safetensors and GGUF).
   */
  prefetch?(name: string): void;
  close(): void;
}

/** A tensor as TensorSource.mapped gives it: raw bfloat16 or half bits, or float32 values. */
export type MappedTensor = { dtype: 'bf16' | 'f16'; data: Uint16Array } | { dtype: 'f32'; data: Float32Array };

const ACCEPTED =
  'a .safetensors file, a .gguf file, a llama2.c .bin checkpoint, a Hugging Face model directory (model.safetensors or model.safetensors.index.json), or a qkd training run directory (latest.json)';

/** Opens any model qkd reads as a TensorSource (headers only; tensors are read on demand). */
export function openTensorSource(path: string): TensorSource {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch (err) {
    throw new QkdError('IO', `cannot open model: ${(err as Error).message}`, { path, hint: ACCEPTED });
  }
  if (isDirectory) return openDirectory(path);
  const kind = modelFileFormat(path);
  switch (kind) {
    case 'gguf':
      return ggufSource(path);
    case 'safetensors':
      return safetensorsSource(path, [openSafetensors(path)]);
    case 'llama2c':
      return llama2cSource(path);
    default:
      throw new QkdError('IO', `not a model file qkd reads: ${basename(path)}`, { path, hint: ACCEPTED });
  }
}

/**
 * The format of a model file, by content first: the GGUF and llama2.c
 * magics, or a safetensors header (a little-endian u64 length that fits the
 * file, then '{'). The extension decides only for files without a magic
 * (legacy llama2.c checkpoints). null: not a format qkd reads.
 */
export function modelFileFormat(path: string): TensorSourceFormat | null {
  const head = readFileHead(path, 9, 'model file');
  const magic = head.length >= 4 ? head.subarray(0, 4).toString('latin1') : '';
  if (magic === 'GGUF') return 'gguf';
  if (magic === 'ak42') return 'llama2c';
  if (head.length === 9 && head[8] === 0x7b) {
    const headerLength = head.readBigUInt64LE(0);
    if (headerLength >= 2n && headerLength + 8n <= BigInt(statSync(path).size)) return 'safetensors';
  }
  const lower = path.toLowerCase();
  if (lower.endsWith('.gguf')) return 'gguf';
  if (lower.endsWith('.safetensors')) return 'safetensors';
  if (lower.endsWith('.bin')) return 'llama2c';
  return null;
}

// ---------------------------------------------------------------------------
// Directories

function openDirectory(dir: string): TensorSource {
  const latest = join(dir, 'latest.json');
  if (existsSync(latest)) {
    const checkpoint = readJsonObject(latest).dir;
    if (typeof checkpoint !== 'string' || checkpoint === '' || checkpoint === '.' || checkpoint === '..' || /[\\/]/.test(checkpoint)) {
      throw new QkdError('IO', `latest.json names checkpoint directory ${JSON.stringify(checkpoint)}`, { path: latest, field: 'dir', hint: 'a directory name inside the run directory, e.g. "checkpoint-100"' });
    }
    return openModelDirectory(join(dir, checkpoint), dir);
  }
  return openModelDirectory(dir, dir);
}

/** A Hugging Face model directory; `reportedPath` is what the source says it was opened from. */
function openModelDirectory(dir: string, reportedPath: string): TensorSource {
  const single = join(dir, 'model.safetensors');
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(single)) return safetensorsSource(reportedPath, [openSafetensors(single)]);
  if (existsSync(index)) return shardedSource(reportedPath, dir, index);
  throw new QkdError('IO', `no model.safetensors, model.safetensors.index.json or latest.json in ${dir}`, { path: dir, hint: ACCEPTED });
}

function readJsonObject(path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new QkdError('IO', `${basename(path)} is not readable JSON: ${(err as Error).message}`, { path });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new QkdError('IO', `${basename(path)} is not a JSON object`, { path });
  return value as Record<string, unknown>;
}

/** Shards listed in weight_map; each name must be in the shard the index says. */
function shardedSource(reportedPath: string, dir: string, index: string): TensorSource {
  const weightMap = readJsonObject(index).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new QkdError('IO', 'index has no weight_map object', { path: index, field: 'weight_map', hint: '{"tensor name": "shard file name", …}' });
  }
  const shards = new Map<string, SafetensorsFile>();
  const names = new Map<string, Set<string>>(); // shard file → names listed for it
  try {
    for (const [name, file] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[\\/]/.test(file)) {
        throw new QkdError('IO', `weight_map entry for '${name}' is ${JSON.stringify(file)}`, { path: index, field: `weight_map.${name}`, hint: 'a file name in the same directory' });
      }
      if (!names.has(file)) names.set(file, new Set());
      names.get(file)!.add(name);
    }
    for (const file of [...names.keys()].sort()) {
      const shard = openSafetensors(join(dir, file));
      shards.set(file, shard);
      for (const name of names.get(file)!) {
        if (!shard.entries.has(name)) throw new QkdError('IO', `index lists '${name}' in ${file}, which does not hold it`, { path: index, field: `weight_map.${name}` });
      }
    }
  } catch (err) {
    for (const s of shards.values()) s.close();
    throw err;
  }
  return safetensorsSource(reportedPath, [...shards.values()], (shard) => names.get(basename(shard.path))!);
}

// ---------------------------------------------------------------------------
// safetensors

const SAFETENSORS_DTYPE: Record<StorageDType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i8: 'I8', u8: 'U8', i32: 'I32' };

/** Tensors of one or more safetensors files, file by file, each in data order. */
function safetensorsSource(path: string, files: SafetensorsFile[], listed?: (f: SafetensorsFile) => ReadonlySet<string>): TensorSource {
  const where = new Map<string, SafetensorsFile>();
  const tensors: SourceTensor[] = [];
  for (const f of files) {
    const keep = listed?.(f);
    const entries = [...f.entries.values()].filter((e) => keep === undefined || keep.has(e.name)).sort((a, b) => a.begin - b.begin);
    for (const e of entries) {
      where.set(e.name, f);
      tensors.push({ name: e.name, shape: [...e.shape], dtype: SAFETENSORS_DTYPE[e.dtype] });
    }
  }
  return {
    path,
    format: 'safetensors',
    tensors,
    readFloat32(name: string, scratch?: Float32Array): Float32Array {
      const f = where.get(name);
      if (f === undefined) throw missing(path, name);
      return f.readFloat32(name, scratch).data;
    },
    readBf16(name: string, scratch?: Uint16Array): Uint16Array | null {
      const f = where.get(name);
      if (f === undefined) throw missing(path, name);
      if (f.entry(name).dtype !== 'bf16') return null;
      const bytes = f.readBytes(name, scratch && new Uint8Array(scratch.buffer, scratch.byteOffset, scratch.byteLength));
      return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
    },
    readBf16Start(name: string, scratch: Uint16Array): (() => Uint16Array) | null {
      const f = where.get(name);
      if (f === undefined) throw missing(path, name);
      if (f.entry(name).dtype !== 'bf16') return null;
      const finish = f.readBytesStart(name, new Uint8Array(scratch.buffer, scratch.byteOffset, scratch.byteLength));
      if (finish === null) return null;
      return () => {
        const bytes = finish();
        return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
      };
    },
    prefetch(name: string): void {
      const f = where.get(name);
      if (f === undefined) throw missing(path, name);
      f.prefetch(name);
    },
    mapped(name: string): MappedTensor | null {
      const f = where.get(name);
      if (f === undefined) throw missing(path, name);
      const dtype = f.entry(name).dtype;
      if (dtype !== 'bf16' && dtype !== 'f16' && dtype !== 'f32') return null;
      const map = f.mapped(name);
      if (map === null) return null;
      return dtype === 'f32' ? { dtype, data: new Float32Array(map.buffer, map.byteOffset, map.length / 4) } : { dtype, data: new Uint16Array(map.buffer, map.byteOffset, map.length / 2) };
    },
    close(): void {
      for (const f of files) f.close();
    },
  };
}

function missing(path: string, name: string): QkdError {
  return new QkdError('IO', `tensor '${name}' is not in the model`, { path, field: name });
}

// ---------------------------------------------------------------------------
// GGUF and llama2.c

function ggufSource(path: string): TensorSource {
  const file: GgufFile = openGguf(path);
  try {
    // The decoder architectures whose tensor names map to Hugging Face's.
    const mapped = ['llama', 'qwen2', 'qwen3', 'gemma2', 'gemma3', 'phi3'].includes(file.architecture ?? '');
    const stored = new Map<string, string>(); // exposed name → name in the file
    const tensors: SourceTensor[] = [];
    file.tensors.forEach((t, i) => {
      const name = mapped ? ggufToHfName(t.name, file.architecture) : t.name;
      if (stored.has(name)) {
        throw new QkdError('IO', `tensors '${stored.get(name)}' and '${t.name}' both map to '${name}'`, { path, field: `tensor_infos[${i}].name`, hint: 'one tensor per Hugging Face name' });
      }
      stored.set(name, t.name);
      tensors.push({ name, shape: [...t.shape], dtype: t.typeName });
    });
    return {
      path,
      format: 'gguf',
      tensors,
      readFloat32(name: string, scratch?: Float32Array): Float32Array {
        const original = stored.get(name);
        if (original === undefined) throw missing(path, name);
        return file.readFloat32(original, scratch);
      },
      prefetch(name: string): void {
        const original = stored.get(name);
        if (original === undefined) throw missing(path, name);
        file.prefetch(original);
      },
      close: () => file.close(),
    };
  } catch (err) {
    file.close();
    throw err;
  }
}

function llama2cSource(path: string): TensorSource {
  const reader: Llama2cReader = openLlama2c(path);
  const dtype = reader.header.format === 'v2' ? `Q8_G${reader.header.group_size}` : 'F32';
  const tensors = reader.tensors.map((t): SourceTensor => ({ name: t.name, shape: [...t.shape], dtype: t.encoding === 'q8' ? dtype : 'F32' }));
  const names = new Set(tensors.map((t) => t.name));
  return {
    path,
    format: 'llama2c',
    tensors,
    readFloat32(name: string): Float32Array {
      if (!names.has(name)) throw missing(path, name);
      return reader.read(name);
    },
    close: () => reader.close(),
  };
}
