/**
 * llama2.c checkpoints (Karpathy's run.c / runq.c and export.py), read and
 * written in three layouts. All numbers are little-endian.
 *
 *   legacy  7 × int32 header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 *           vocab_size, seq_len (vocab_size < 0 means an unshared classifier),
 *           then float32: token_embedding, rms_att[L], wq[L], wk[L], wv[L],
 *           wo[L], rms_ffn[L], w1[L], w2[L], w3[L], rms_final,
 *           freq_cis_real [seq_len, D/2], freq_cis_imag [seq_len, D/2], [wcls].
 *   v1      256-byte header: uint32 magic 0x616b3432 ("ak42"), int32 version 1,
 *           the 7 int32 fields (vocab_size > 0), uint8 shared_classifier, zero
 *           padding; then float32: rms_att[L], rms_ffn[L], rms_final,
 *           token_embedding, wq[L], wk[L], wv[L], wo[L], w1[L], w2[L], w3[L], [wcls].
 *   v2      as v1 with version 2 and an int32 group_size right after the flag
 *           byte (offset 37); then float32 rms_att[L], rms_ffn[L], rms_final,
 *           then Q8_0 tensors token_embedding, wq[L], …, w3[L], [wcls], each as
 *           int8 q[n] followed by float32 scales[n / group_size]; a weight
 *           is q · scale of its group (runq.c). Dequantized on read.
 *
 * Weights map to Hugging Face names (w1 = gate_proj, w2 = down_proj,
 * w3 = up_proj). llama2.c rotates interleaved pairs (2i, 2i+1) of each head
 * of q and k; qkd rotates (i, i + D/2) (Hugging Face rotate_half). Both use
 * the frequency theta^(−2i/D) for pair i, so permuting the rows of each head
 * of wq and wk to "even rows, then odd rows" makes the two compute the same
 * attention. The reader applies that permutation, the writer its inverse.
 *
 * Every header field is checked, and the size the header implies must equal
 * the file size exactly before anything is allocated; errors are QkdErrors
 * naming the file and the header field.
 *
 * Layering: this file knows the format only. It reads and writes tensors
 * under Hugging Face names plus the model shape the header describes;
 * building or reading a LlamaModel is models/llama2c-io.ts.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { QkdError } from '../errors.js';
import { writeAll, writeFileAtomic } from './atomic.js';

export type Llama2cFormat = 'legacy' | 'v1' | 'v2';

/** "ak42" read as a little-endian uint32. */
export const LLAMA2C_MAGIC = 0x616b3432;
const LEGACY_HEADER_BYTES = 28;
const VERSIONED_HEADER_BYTES = 256;
/** run.c hardcodes these; a model with other values would compute differently. */
const LLAMA2C_ROPE_THETA = 10000;
const LLAMA2C_RMS_NORM_EPS = 1e-5;
const INT32_MAX = 2 ** 31 - 1;
/** Bytes per readSync call (well under the 2 GiB limit of one read). */
const READ_CHUNK = 1 << 30;

/** The header of a llama2.c checkpoint, with llama2.c's field names. */
export interface Llama2cHeader {
  format: Llama2cFormat;
  dim: number;
  hidden_dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  /** Always positive here (the legacy sign flag is moved to shared_classifier). */
  vocab_size: number;
  seq_len: number;
  /** The classifier is the token embedding (no wcls in the file). */
  shared_classifier: boolean;
  /** Q8_0 group size (v2 only). */
  group_size?: number;
  /** Bytes before the first weight. */
  header_bytes: number;
}

export interface Llama2cTensor {
  shape: number[];
  data: Float32Array;
}

/** The model shape a llama2.c header describes, with Hugging Face LlamaConfig field names. */
export interface Llama2cModelShape {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  rms_norm_eps: number;
  rope_theta: number;
  tie_word_embeddings: boolean;
  max_position_embeddings: number;
}

export interface Llama2cCheckpoint {
  config: Llama2cModelShape;
  /** Hugging Face names → float32 tensors (q/k rows in qkd's 'half' RoPE order). */
  tensors: Map<string, Llama2cTensor>;
  format: Llama2cFormat;
}

export interface ReadLlama2cOptions {
  /** Refuse files of any other format ('auto', the default, detects it from the magic). */
  format?: Llama2cFormat | 'versioned' | 'auto';
}

export interface WriteLlama2cOptions {
  /** Q8_0 group size for 'v2' (default: 64, halved until it divides dim, as export.py). */
  groupSize?: number;
}

// ---------------------------------------------------------------------------
// Layout: the file as a list of segments

type Encoding = 'f32' | 'q8';

/**
 * One stored array. `name` is the Hugging Face tensor it holds (null for the
 * legacy RoPE tables, which are skipped); `ropeHeads` is set for wq / wk,
 * whose rows are permuted per head.
 */
interface Segment {
  name: string | null;
  /** Which llama2.c array this is, for error messages. */
  label: string;
  shape: number[];
  encoding: Encoding;
  ropeHeads?: number;
}

function layerNames(l: number) {
  const p = `model.layers.${l}`;
  return {
    rmsAtt: `${p}.input_layernorm.weight`,
    wq: `${p}.self_attn.q_proj.weight`,
    wk: `${p}.self_attn.k_proj.weight`,
    wv: `${p}.self_attn.v_proj.weight`,
    wo: `${p}.self_attn.o_proj.weight`,
    rmsFfn: `${p}.post_attention_layernorm.weight`,
    w1: `${p}.mlp.gate_proj.weight`,
    w2: `${p}.mlp.down_proj.weight`,
    w3: `${p}.mlp.up_proj.weight`,
  };
}

/** Segments of a checkpoint in file order. */
function layout(h: Llama2cHeader): Segment[] {
  const C = h.dim;
  const D = h.dim / h.n_heads;
  const kv = h.n_kv_heads * D;
  const L = h.n_layers;
  const matrix: Encoding = h.format === 'v2' ? 'q8' : 'f32';
  const perLayer = (key: keyof ReturnType<typeof layerNames>, label: string, shape: number[], encoding: Encoding, ropeHeads?: number): Segment[] =>
    Array.from({ length: L }, (_, l) => ({ name: layerNames(l)[key], label: `${label}[${l}]`, shape, encoding, ...(ropeHeads === undefined ? {} : { ropeHeads }) }));
  const embedding: Segment = { name: 'model.embed_tokens.weight', label: 'token_embedding', shape: [h.vocab_size, C], encoding: matrix };
  const rmsAtt = perLayer('rmsAtt', 'rms_att', [C], 'f32');
  const rmsFfn = perLayer('rmsFfn', 'rms_ffn', [C], 'f32');
  const rmsFinal: Segment = { name: 'model.norm.weight', label: 'rms_final', shape: [C], encoding: 'f32' };
  const attention = [
    ...perLayer('wq', 'wq', [h.n_heads * D, C], matrix, h.n_heads),
    ...perLayer('wk', 'wk', [kv, C], matrix, h.n_kv_heads),
    ...perLayer('wv', 'wv', [kv, C], matrix),
    ...perLayer('wo', 'wo', [C, h.n_heads * D], matrix),
  ];
  const ffn = [...perLayer('w1', 'w1', [h.hidden_dim, C], matrix), ...perLayer('w2', 'w2', [C, h.hidden_dim], matrix), ...perLayer('w3', 'w3', [h.hidden_dim, C], matrix)];
  const classifier: Segment[] = h.shared_classifier ? [] : [{ name: 'lm_head.weight', label: 'wcls', shape: [h.vocab_size, C], encoding: matrix }];
  if (h.format === 'legacy') {
    const ropeTable = (label: string): Segment => ({ name: null, label, shape: [h.seq_len, D / 2], encoding: 'f32' });
    return [embedding, ...rmsAtt, ...attention, ...rmsFfn, ...ffn, rmsFinal, ropeTable('freq_cis_real'), ropeTable('freq_cis_imag'), ...classifier];
  }
  return [...rmsAtt, ...rmsFfn, rmsFinal, embedding, ...attention, ...ffn, ...classifier];
}

function elementCount(shape: readonly number[]): bigint {
  return shape.reduce((a, d) => a * BigInt(d), 1n);
}

/** Bytes a segment occupies in the file. */
function segmentBytes(s: Segment, groupSize: number): bigint {
  const n = elementCount(s.shape);
  return s.encoding === 'f32' ? 4n * n : n + 4n * (n / BigInt(groupSize));
}

// ---------------------------------------------------------------------------
// Header

const HEADER_FIELDS = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'] as const;

function headerError(path: string, field: string, message: string, hint?: string): QkdError {
  return new QkdError('IO', `invalid llama2.c checkpoint: ${message}`, { path, field, ...(hint === undefined ? {} : { hint }) });
}

/** Reads the first bytes of a file (at most `count`). */
function readPrefix(fd: number, count: number): Buffer {
  const bytes = Buffer.alloc(count);
  let done = 0;
  while (done < count) {
    const n = readSync(fd, bytes, done, count - done, done);
    if (n === 0) break;
    done += n;
  }
  return bytes.subarray(0, done);
}

/** Parses and validates the header against the file size (no weights read). */
function parseHeader(path: string, prefix: Buffer, fileSize: number, expected: ReadLlama2cOptions['format']): Llama2cHeader {
  const want = expected ?? 'auto';
  const hasMagic = prefix.length >= 4 && prefix.readUInt32LE(0) === LLAMA2C_MAGIC;
  if (hasMagic) {
    if (want === 'legacy') throw headerError(path, 'magic', `file starts with the versioned magic 0x616b3432 ("ak42")`, 'a legacy run.c checkpoint (7 int32 fields, no magic)');
    return parseVersioned(path, prefix, fileSize, want);
  }
  if (want !== 'auto' && want !== 'legacy') {
    const found = prefix.length >= 4 ? `0x${prefix.readUInt32LE(0).toString(16).padStart(8, '0')}` : `a ${prefix.length}-byte file`;
    throw headerError(path, 'magic', `magic is ${found}`, '0x616b3432 ("ak42") at offset 0');
  }
  try {
    return parseLegacy(path, prefix, fileSize);
  } catch (err) {
    // Not a consistent legacy file. If it looks like a versioned one whose magic
    // was damaged (a plausible version at offset 4), blame the magic instead.
    const version = prefix.length >= 8 ? prefix.readInt32LE(4) : 0;
    if (want === 'auto' && err instanceof QkdError && fileSize >= VERSIONED_HEADER_BYTES && (version === 1 || version === 2)) {
      throw headerError(path, 'magic', `magic is 0x${prefix.readUInt32LE(0).toString(16).padStart(8, '0')} and the file is not a consistent legacy checkpoint either (${err.field}: ${err.message})`, '0x616b3432 ("ak42") at offset 0');
    }
    throw err;
  }
}

function parseLegacy(path: string, prefix: Buffer, fileSize: number): Llama2cHeader {
  if (prefix.length < LEGACY_HEADER_BYTES) {
    throw headerError(path, 'header', `file is ${fileSize} bytes, shorter than the ${LEGACY_HEADER_BYTES}-byte legacy header`, 'a llama2.c checkpoint (7 int32 fields, or the "ak42" magic)');
  }
  const values = HEADER_FIELDS.map((_, i) => prefix.readInt32LE(4 * i));
  const rawVocab = values[5]!;
  if (rawVocab === 0) throw headerError(path, 'vocab_size', 'vocab_size is 0', 'a non-zero int32 (negative means an unshared classifier)');
  const header = fieldsToHeader('legacy', values, Math.abs(rawVocab), rawVocab > 0, LEGACY_HEADER_BYTES);
  validateHeader(path, header);
  checkFileSize(path, header, fileSize);
  return header;
}

function parseVersioned(path: string, prefix: Buffer, fileSize: number, want: NonNullable<ReadLlama2cOptions['format']>): Llama2cHeader {
  if (prefix.length < 8) throw headerError(path, 'version', `file is ${fileSize} bytes and ends inside the header`, `a ${VERSIONED_HEADER_BYTES}-byte header`);
  const version = prefix.readInt32LE(4);
  if (version !== 1 && version !== 2) throw headerError(path, 'version', `version is ${version}`, '1 (float32) or 2 (int8 Q8_0)');
  const format: Llama2cFormat = version === 1 ? 'v1' : 'v2';
  if (want !== 'auto' && want !== 'versioned' && want !== format) throw headerError(path, 'version', `file is format ${format}`, `format ${want}`);
  if (prefix.length < VERSIONED_HEADER_BYTES) {
    throw headerError(path, 'header', `file is ${fileSize} bytes, shorter than the ${VERSIONED_HEADER_BYTES}-byte header`, `at least ${VERSIONED_HEADER_BYTES} bytes`);
  }
  const values = HEADER_FIELDS.map((_, i) => prefix.readInt32LE(8 + 4 * i));
  const shared = prefix.readUInt8(36);
  if (shared > 1) throw headerError(path, 'shared_classifier', `shared_classifier flag is ${shared}`, '0 or 1');
  const header = fieldsToHeader(format, values, values[5]!, shared === 1, VERSIONED_HEADER_BYTES);
  if (format === 'v2') header.group_size = prefix.readInt32LE(37);
  validateHeader(path, header);
  checkFileSize(path, header, fileSize);
  return header;
}

function fieldsToHeader(format: Llama2cFormat, values: number[], vocab: number, shared: boolean, headerBytes: number): Llama2cHeader {
  return {
    format,
    dim: values[0]!,
    hidden_dim: values[1]!,
    n_layers: values[2]!,
    n_heads: values[3]!,
    n_kv_heads: values[4]!,
    vocab_size: vocab,
    seq_len: values[6]!,
    shared_classifier: shared,
    header_bytes: headerBytes,
  };
}

function validateHeader(path: string, h: Llama2cHeader): void {
  for (const field of HEADER_FIELDS) {
    if (!(h[field] >= 1)) {
      const hint = field === 'vocab_size' && h.format !== 'legacy' ? 'a positive int32 (versioned files flag sharing in shared_classifier)' : 'a positive int32';
      throw headerError(path, field, `${field} is ${h[field]}`, hint);
    }
  }
  if (h.dim % h.n_heads !== 0 || (h.dim / h.n_heads) % 2 !== 0) {
    throw headerError(path, 'n_heads', `dim ${h.dim} is not n_heads ${h.n_heads} × an even head size`, 'n_heads dividing dim with an even quotient (RoPE rotates pairs)');
  }
  if (h.n_heads % h.n_kv_heads !== 0) {
    throw headerError(path, 'n_kv_heads', `n_heads ${h.n_heads} is not a multiple of n_kv_heads ${h.n_kv_heads}`, 'a divisor of n_heads');
  }
  if (h.format === 'v2') {
    const gs = h.group_size!;
    if (!(gs >= 1)) throw headerError(path, 'group_size', `group_size is ${gs}`, 'a positive int32');
    for (const [label, n] of Object.entries(matrixSizes(h))) {
      if (n % BigInt(gs) !== 0n) {
        throw headerError(path, 'group_size', `group_size ${gs} does not divide the ${n} elements of ${label}`, 'a divisor of every quantized tensor size (export.py uses a divisor of dim)');
      }
    }
  }
}

/** Element counts of the distinct matrix shapes (BigInt: absurd headers must not overflow). */
function matrixSizes(h: Llama2cHeader): { token_embedding: bigint; wq: bigint; wk: bigint; w1: bigint } {
  const C = BigInt(h.dim);
  const kv = (C * BigInt(h.n_kv_heads)) / BigInt(h.n_heads);
  return { token_embedding: BigInt(h.vocab_size) * C, wq: C * C, wk: C * kv, w1: BigInt(h.hidden_dim) * C };
}

/**
 * Bytes the header implies, in closed form rather than from the per-layer
 * layout, so an absurd n_layers is refused before anything is built for it.
 */
function impliedFileSize(h: Llama2cHeader): bigint {
  const C = BigInt(h.dim);
  const L = BigInt(h.n_layers);
  const m = matrixSizes(h);
  const stored = (n: bigint): bigint => (h.format === 'v2' ? n + 4n * (n / BigInt(h.group_size!)) : 4n * n);
  let total = BigInt(h.header_bytes);
  total += 4n * (2n * L * C + C); // rms_att, rms_ffn, rms_final (always float32)
  total += stored(m.token_embedding);
  total += L * (2n * stored(m.wq) + 2n * stored(m.wk) + 3n * stored(m.w1)); // wq wo, wk wv, w1 w2 w3
  if (!h.shared_classifier) total += stored(m.token_embedding);
  if (h.format === 'legacy') total += 4n * 2n * BigInt(h.seq_len) * (C / BigInt(h.n_heads) / 2n); // freq_cis_real, freq_cis_imag
  return total;
}

function describe(h: Llama2cHeader): string {
  const parts = HEADER_FIELDS.map((f) => `${f}=${h[f]}`);
  parts.push(`shared_classifier=${h.shared_classifier}`);
  if (h.group_size !== undefined) parts.push(`group_size=${h.group_size}`);
  return parts.join(', ');
}

function checkFileSize(path: string, h: Llama2cHeader, fileSize: number): void {
  const implied = impliedFileSize(h);
  if (implied === BigInt(fileSize)) return;
  // The one header bit that often disagrees with the data: the classifier flag.
  const flipped = impliedFileSize({ ...h, shared_classifier: !h.shared_classifier }) === BigInt(fileSize);
  if (flipped) {
    const field = h.format === 'legacy' ? 'vocab_size' : 'shared_classifier';
    const how = h.format === 'legacy' ? (h.shared_classifier ? 'a negative vocab_size' : 'a positive vocab_size') : `shared_classifier=${h.shared_classifier ? 0 : 1}`;
    throw headerError(path, field, `the file size ${fileSize} fits ${how} (classifier ${h.shared_classifier ? 'present' : 'absent'}), not the header's`, `${field} consistent with the weights present`);
  }
  const what = implied > BigInt(fileSize) ? 'truncated file or header fields too large' : 'trailing bytes or header fields too small';
  throw headerError(path, 'file size', `file is ${fileSize} bytes but the header (${describe(h)}) implies ${implied} (${what})`, `${implied} bytes`);
}

/** The model shape of a (validated) header; run.c fixes rms_norm_eps and rope_theta. */
export function llama2cModelShape(h: Llama2cHeader): Llama2cModelShape {
  return {
    vocab_size: h.vocab_size,
    hidden_size: h.dim,
    intermediate_size: h.hidden_dim,
    num_hidden_layers: h.n_layers,
    num_attention_heads: h.n_heads,
    num_key_value_heads: h.n_kv_heads,
    rms_norm_eps: LLAMA2C_RMS_NORM_EPS,
    rope_theta: LLAMA2C_ROPE_THETA,
    tie_word_embeddings: h.shared_classifier,
    max_position_embeddings: h.seq_len,
  };
}

// ---------------------------------------------------------------------------
// RoPE row permutation

/**
 * Rows of each head reordered from llama2.c's interleaved pairs to qkd's
 * halves: new row j ← old row 2j, new row D/2 + j ← old row 2j + 1.
 * w [heads·D, cols] → a new array.
 */
export function interleavedToHalfRows(w: Float32Array, heads: number, cols: number): Float32Array {
  return permuteHeadRows(w, heads, cols, false);
}

/** The inverse of interleavedToHalfRows. */
export function halfToInterleavedRows(w: Float32Array, heads: number, cols: number): Float32Array {
  return permuteHeadRows(w, heads, cols, true);
}

function permuteHeadRows(w: Float32Array, heads: number, cols: number, inverse: boolean): Float32Array {
  const D = w.length / (heads * cols);
  const half = D / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < D; j++) {
      // row j of the 'half' layout holds interleaved row 2j (first half) or 2(j − D/2) + 1
      const interleaved = j < half ? 2 * j : 2 * (j - half) + 1;
      const halfRow = (h * D + j) * cols;
      const interRow = (h * D + interleaved) * cols;
      if (inverse) out.set(w.subarray(halfRow, halfRow + cols), interRow);
      else out.set(w.subarray(interRow, interRow + cols), halfRow);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Reading

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

/** Reads `count` bytes at `position` into a fresh (aligned) ArrayBuffer. */
function readBytes(path: string, fd: number, position: number, count: number, label: string): ArrayBuffer {
  const buffer = new ArrayBuffer(count);
  const view = new Uint8Array(buffer);
  let done = 0;
  while (done < count) {
    const n = readSync(fd, view, done, Math.min(READ_CHUNK, count - done), position + done);
    if (n === 0) throw headerError(path, label, `file ended while reading ${label}`, 'a complete file');
    done += n;
  }
  return buffer;
}

/** float32 values of little-endian bytes (a view on little-endian hosts, a swapped copy otherwise). */
function float32From(buffer: ArrayBuffer): Float32Array {
  if (LITTLE_ENDIAN_HOST) return new Float32Array(buffer);
  const view = new DataView(buffer);
  return Float32Array.from({ length: buffer.byteLength / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

/** Reads one segment as float32 (Q8_0 dequantized: weight = q · scale of its group). */
function readSegment(path: string, fd: number, position: number, s: Segment, groupSize: number): Float32Array {
  const n = Number(elementCount(s.shape));
  if (s.encoding === 'f32') return float32From(readBytes(path, fd, position, 4 * n, s.label));
  const q = new Int8Array(readBytes(path, fd, position, n, s.label));
  const scales = float32From(readBytes(path, fd, position + n, 4 * (n / groupSize), s.label));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = q[i]! * scales[Math.floor(i / groupSize)]!;
  return out;
}

/** Receives each tensor (Hugging Face name, q/k rows already in 'half' order). */
export type Llama2cVisitor = (name: string, shape: number[], data: Float32Array) => void;

/**
 * Opens a checkpoint and validates its header; `start` is then told the
 * header and returns a visitor called with each weight in file order (one
 * tensor in memory at a time), or null to read no weights.
 */
/**
 * Streams a checkpoint: validates the header, calls start(header) for a
 * visitor, then hands it one tensor at a time (never the whole file).
 */
export function streamLlama2cCheckpoint(path: string, options: ReadLlama2cOptions, start: (header: Llama2cHeader) => Llama2cVisitor | null): Llama2cHeader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new QkdError('IO', `cannot open llama2.c checkpoint: ${(err as Error).message}`, { path });
  }
  try {
    const fileSize = fstatSync(fd).size;
    const header = parseHeader(path, readPrefix(fd, VERSIONED_HEADER_BYTES), fileSize, options.format);
    const visit = start(header);
    if (visit === null) return header;
    const groupSize = header.group_size ?? 1;
    let position = header.header_bytes;
    for (const s of layout(header)) {
      if (s.name !== null) {
        let data = readSegment(path, fd, position, s, groupSize);
        if (s.ropeHeads !== undefined) data = interleavedToHalfRows(data, s.ropeHeads, s.shape[1]!);
        visit(s.name, [...s.shape], data);
      }
      position += Number(segmentBytes(s, groupSize));
    }
    return header;
  } finally {
    closeSync(fd);
  }
}

/** One weight of a checkpoint and where it is stored (for random access). */
export interface Llama2cTensorEntry {
  /** Hugging Face name. */
  name: string;
  shape: number[];
  /** 'f32', or 'q8' (v2: int8 values then float32 group scales). */
  encoding: 'f32' | 'q8';
  /** Absolute byte position of the stored array. */
  position: number;
}

/**
 * Random access to the weights of a llama2.c checkpoint: the header is
 * validated on open, and `read` reads one tensor (q/k rows already in
 * qkd's 'half' order), so memory is bounded by the largest tensor.
 */
export class Llama2cReader {
  readonly path: string;
  readonly header: Llama2cHeader;
  /** Weights in file order (the legacy RoPE tables are not listed). */
  readonly tensors: readonly Llama2cTensorEntry[];
  private readonly segments: Map<string, { segment: Segment; position: number }>;
  private fd: number | null;

  constructor(path: string, fd: number, header: Llama2cHeader) {
    this.path = path;
    this.fd = fd;
    this.header = header;
    this.segments = new Map();
    const groupSize = header.group_size ?? 1;
    let position = header.header_bytes;
    for (const s of layout(header)) {
      if (s.name !== null) this.segments.set(s.name, { segment: s, position });
      position += Number(segmentBytes(s, groupSize));
    }
    this.tensors = [...this.segments.values()].map(({ segment, position }) => ({ name: segment.name!, shape: [...segment.shape], encoding: segment.encoding, position }));
  }

  /** One weight as float32 (v2 dequantized, q/k rows permuted to qkd's order). */
  read(name: string): Float32Array {
    const entry = this.segments.get(name);
    if (entry === undefined) throw new QkdError('IO', `tensor '${name}' is not in the checkpoint`, { path: this.path, field: name });
    if (this.fd === null) throw new QkdError('STATE', 'llama2.c checkpoint already closed', { path: this.path });
    const s = entry.segment;
    const data = readSegment(this.path, this.fd, entry.position, s, this.header.group_size ?? 1);
    return s.ropeHeads === undefined ? data : interleavedToHalfRows(data, s.ropeHeads, s.shape[1]!);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Opens a llama2.c checkpoint for random access (header validated against the file size). */
export function openLlama2c(path: string, options: ReadLlama2cOptions = {}): Llama2cReader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new QkdError('IO', `cannot open llama2.c checkpoint: ${(err as Error).message}`, { path });
  }
  try {
    const header = parseHeader(path, readPrefix(fd, VERSIONED_HEADER_BYTES), fstatSync(fd).size, options.format);
    return new Llama2cReader(path, fd, header);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** The validated header of a llama2.c checkpoint (no weights are read). */
export function readLlama2cHeader(path: string, options: ReadLlama2cOptions = {}): Llama2cHeader {
  return streamLlama2cCheckpoint(path, options, () => null);
}

/** Reads every weight of a llama2.c checkpoint under its Hugging Face name. */
export function readLlama2cCheckpoint(path: string, options: ReadLlama2cOptions = {}): Llama2cCheckpoint {
  const tensors = new Map<string, Llama2cTensor>();
  let config: Llama2cModelShape | undefined;
  const header = streamLlama2cCheckpoint(path, options, (h) => {
    config = llama2cModelShape(h);
    return (name, shape, data) => tensors.set(name, { shape, data });
  });
  return { config: config!, tensors, format: header.format };
}


// ---------------------------------------------------------------------------
// Writing

/** int8 Q8_0 of one tensor: per group scale = max|w| / 127, q = round(w / scale) (half to even, as torch.round). */
export function quantizeQ80(w: Float32Array, groupSize: number): { q: Int8Array; scales: Float32Array } {
  const groups = w.length / groupSize;
  const q = new Int8Array(w.length);
  const scales = new Float32Array(groups);
  for (let g = 0; g < groups; g++) {
    let max = 0;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) max = Math.max(max, Math.abs(w[i]!));
    const scale = Math.fround(max / 127);
    scales[g] = scale;
    if (scale === 0) continue; // an all-zero group stays zero
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) {
      q[i] = Math.max(-127, Math.min(127, roundHalfEven(Math.fround(w[i]! / scale))));
    }
  }
  return { q, scales };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Little-endian bytes of float32 values (a view on little-endian hosts). */
function float32Bytes(values: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return out;
}

function headerFromConfig(path: string, c: Llama2cModelShape, format: Llama2cFormat, groupSize: number | undefined): Llama2cHeader {
  const values: Record<(typeof HEADER_FIELDS)[number], number> = {
    dim: c.hidden_size,
    hidden_dim: c.intermediate_size,
    n_layers: c.num_hidden_layers,
    n_heads: c.num_attention_heads,
    n_kv_heads: c.num_key_value_heads,
    vocab_size: c.vocab_size,
    seq_len: c.max_position_embeddings,
  };
  for (const field of HEADER_FIELDS) {
    if (values[field] > INT32_MAX) throw new QkdError('CONFIG', `llama2.c export: ${field} ${values[field]} does not fit an int32`, { path, field, hint: `at most ${INT32_MAX}` });
  }
  if (c.rope_theta !== LLAMA2C_ROPE_THETA) {
    throw new QkdError('CONFIG', `llama2.c export: rope_theta is ${c.rope_theta}, but run.c hardcodes ${LLAMA2C_ROPE_THETA}`, { path, field: 'rope_theta', hint: String(LLAMA2C_ROPE_THETA) });
  }
  const header: Llama2cHeader = { format, ...values, shared_classifier: c.tie_word_embeddings, header_bytes: format === 'legacy' ? LEGACY_HEADER_BYTES : VERSIONED_HEADER_BYTES };
  if (format === 'v2') {
    let gs = groupSize;
    if (gs === undefined) {
      gs = 64;
      while (c.hidden_size % gs !== 0) gs /= 2;
    }
    header.group_size = gs;
    if (!Number.isInteger(gs) || gs < 1 || gs > INT32_MAX) throw new QkdError('ARGUMENT', `llama2.c export: group size ${gs}`, { path, field: 'groupSize', hint: 'a positive integer' });
    for (const s of layout(header)) {
      if (s.encoding === 'q8' && elementCount(s.shape) % BigInt(gs) !== 0n) {
        throw new QkdError('ARGUMENT', `llama2.c export: group size ${gs} does not divide the ${elementCount(s.shape)} elements of ${s.label}`, { path, field: 'groupSize', hint: 'a divisor of hidden_size' });
      }
    }
  }
  return header;
}

function headerBytes(h: Llama2cHeader): Uint8Array {
  const out = Buffer.alloc(h.header_bytes);
  let offset = 0;
  if (h.format !== 'legacy') {
    out.writeUInt32LE(LLAMA2C_MAGIC, 0);
    out.writeInt32LE(h.format === 'v1' ? 1 : 2, 4);
    offset = 8;
  }
  for (const field of HEADER_FIELDS) {
    const v = field === 'vocab_size' && h.format === 'legacy' && !h.shared_classifier ? -h.vocab_size : h[field];
    out.writeInt32LE(v, offset);
    offset += 4;
  }
  if (h.format !== 'legacy') {
    out.writeUInt8(h.shared_classifier ? 1 : 0, offset);
    if (h.format === 'v2') out.writeInt32LE(h.group_size!, offset + 1);
  }
  return out;
}

/** The legacy freq_cis tables [seq_len, D/2]: cos or sin of pos · theta^(−2i/D) (run.c ignores them). */
function ropeTable(seqLen: number, D: number, part: 'real' | 'imag'): Float32Array {
  const half = D / 2;
  const out = new Float32Array(seqLen * half);
  for (let t = 0; t < seqLen; t++) {
    for (let i = 0; i < half; i++) {
      const angle = t * Math.pow(LLAMA2C_ROPE_THETA, (-2 * i) / D);
      out[t * half + i] = part === 'real' ? Math.cos(angle) : Math.sin(angle);
    }
  }
  return out;
}

/**
 * Writes tensors (Hugging Face names, fetched by tensorOf) as a llama2.c checkpoint (atomically): 'legacy' (run.c),
 * 'v1' (float32 with header) or 'v2' (int8 Q8_0, quantized in llama2.c's
 * row order as export.py does). rms_norm_eps is not stored: run.c uses 1e-5.
 */
export function writeLlama2cTensors(path: string, shape: Llama2cModelShape, tensorOf: (name: string) => Float32Array, format: Llama2cFormat, options: WriteLlama2cOptions = {}): void {
  if (format !== 'legacy' && format !== 'v1' && format !== 'v2') {
    throw new QkdError('ARGUMENT', `unknown llama2.c format ${JSON.stringify(format)}`, { path, field: 'format', hint: "'legacy', 'v1' or 'v2'" });
  }
  const header = headerFromConfig(path, shape, format, options.groupSize);
  const D = header.dim / header.n_heads;
  writeFileAtomic(path, (fd) => {
    writeAll(fd, headerBytes(header));
    for (const s of layout(header)) {
      let data: Float32Array;
      if (s.name === null) data = ropeTable(header.seq_len, D, s.label === 'freq_cis_real' ? 'real' : 'imag');
      else {
        const values = tensorOf(s.name);
        data = values instanceof Float32Array ? values : Float32Array.from(values);
        if (s.ropeHeads !== undefined) data = halfToInterleavedRows(data, s.ropeHeads, s.shape[1]!);
      }
      if (s.encoding === 'f32') writeAll(fd, float32Bytes(data));
      else {
        const { q, scales } = quantizeQ80(data, header.group_size!);
        writeAll(fd, new Uint8Array(q.buffer, q.byteOffset, q.byteLength));
        writeAll(fd, float32Bytes(scales));
      }
    }
  });
}
