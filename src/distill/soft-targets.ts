/**
 * Offline KD (docs/algorithms.md §3, soft-target cache): the teacher's top-k log-probs per
 * token, computed once, stored compactly on disk, and reused across epochs
 * and runs; plus the KD loss against such truncated targets.
 *
 * Legend: V vocab, k kept tokens per position, N = seqLen positions per
 * window, W windows. Window w covers inputs tokens[w·N, w·N + N) and targets
 * one token later (softTargetWindow), so W = floor((tokens − 1) / N).
 *
 * File layout (little-endian):
 *   header, 48 bytes
 *     0  magic        8 bytes  "QKDSOFT\0"
 *     8  version      u32      1
 *    12  vocab        u32      V
 *    16  top_k        u32      k, 1 ≤ k ≤ V
 *    20  seq_len      u32      N
 *    24  count        u32      W
 *    28  id_bytes     u32      2 (u16 ids) when V ≤ 65535, else 4 (u32)
 *    32  temperature  f32      the τ the cache was made for (a note: the data is at τ = 1)
 *    36  tokens_hash  u32      FNV-1a of the W·N + 1 covered tokens (as u32 LE), to catch reuse on other data
 *    40  teacher      8 bytes  the first 8 bytes of the teacher's fingerprint (zero: unknown), to catch reuse with another teacher
 *   then W windows of N·(k·id_bytes + 2k + 2) bytes, each planar:
 *     ids       [N, k]  u16/u32  the teacher's top-k ids, by descending probability
 *     logp      [N, k]  f16      log p_T(id) at τ = 1 (full-vocabulary softmax)
 *     tail_logp [N]     f16      log of the remaining mass 1 − Σ top-k p (−∞ when k = V)
 * f16 keeps log-probs to ~3 significant digits (|error| ≲ 5e-4·|logp|), which
 * is far below the noise of a KD gradient. Files are written atomically.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { QkdError, fmtShape } from '../errors.js';
import { writeAll, writeFileAtomic } from '../io/atomic.js';
import { f16BitsToF32, f32ToF16Bits } from '../tensor/dtype.js';
import { record } from '../tensor/tape.js';
import { Tensor } from '../tensor/tensor.js';
import { SINGLE_PROCESS, type World } from '../parallel/world.js';

const MAGIC = 'QKDSOFT\0';
const VERSION = 1;
export const HEADER_BYTES = 48;

/** Teacher targets for `rows` positions: top-k ids and log-probs, and the tail bucket. */
export interface SoftTargets {
  k: number;
  /** [rows, k] token ids, by descending teacher probability. */
  ids: Int32Array;
  /** [rows, k] teacher log-probabilities at τ = 1. */
  logp: Float32Array;
  /** [rows] log of the teacher's probability mass outside the top k (−∞ when k = V). */
  tailLogp: Float32Array;
}

/** What cachedKd needs: k = ids.length / tailLogp.length. */
export type CachedTargets = Pick<SoftTargets, 'ids' | 'logp' | 'tailLogp'>;

export interface SoftTargetCacheHeader {
  version: number;
  V: number;
  k: number;
  seqLen: number;
  /** Number of windows. */
  count: number;
  /** The KD temperature the cache was made for (the stored data is at τ = 1). */
  temperature: number;
  tokensHash: number;
  /** 16 hex digits identifying the teacher ('0000000000000000': not recorded). */
  teacher: string;
}

export interface SoftTargetCache extends SoftTargetCacheHeader {
  readonly path: string;
  /** The soft targets of window `index` (seqLen rows). */
  window(index: number): SoftTargets;
  /** Whether window `index` holds targets (false only for the windows a sparse cache was not filled at). */
  has(index: number): boolean;
  close(): void;
}

export interface SoftTargetCacheOptions {
  /** The token stream the windows tile (see softTargetWindow). */
  tokens: Int32Array;
  topK: number;
  seqLen: number;
  V: number;
  /** The teacher's fingerprint (hex; its first 16 digits are recorded). */
  teacher?: string;
  /** Recorded in the header as the intended KD temperature (default 1). */
  temperature?: number;
}

/** Bytes stored per token position: k ids, k f16 log-probs and one f16 tail. */
export function bytesPerToken(V: number, k: number): number {
  return k * idBytesFor(V) + 2 * k + 2;
}

function idBytesFor(V: number): number {
  return V > 65535 ? 4 : 2;
}

/** Number of windows of seqLen inputs (plus one target each) in `tokens`. */
export function softTargetWindowCount(tokenCount: number, seqLen: number): number {
  return Math.max(0, Math.floor((tokenCount - 1) / seqLen));
}

/** Inputs and next-token targets of window `index`: tokens[index·N ..] (the cache's convention). */
export function softTargetWindow(tokens: Int32Array, seqLen: number, index: number): { inputs: Int32Array; targets: Int32Array } {
  const count = softTargetWindowCount(tokens.length, seqLen);
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new QkdError('ARGUMENT', `soft-target window ${index} is outside [0, ${count}) for ${tokens.length} tokens of seqLen ${seqLen}`, { field: 'window' });
  }
  const start = index * seqLen;
  return { inputs: tokens.slice(start, start + seqLen), targets: tokens.slice(start + 1, start + seqLen + 1) };
}

// ---- top-k extraction ------------------------------------------------------------

/**
 * Top-k soft targets of [rows, V] teacher logits at τ = 1 (float64 sums). The
 * tail mass is summed directly over the tokens left out, not as 1 − Σ top,
 * so a tiny tail keeps its precision. Ties prefer the lower id.
 */
export function softTargetsFromLogits(logits: Float32Array, rows: number, V: number, k: number): SoftTargets {
  checkTopK(V, k);
  if (logits.length !== rows * V) {
    throw new QkdError('SHAPE', `soft targets: ${logits.length} teacher logits are not rows=${rows} × V=${V}`, { hint: `${rows * V} values` });
  }
  const out: SoftTargets = { k, ids: new Int32Array(rows * k), logp: new Float32Array(rows * k), tailLogp: new Float32Array(rows) };
  const heap = new TopK(k);
  const kept = new Uint8Array(V);
  for (let r = 0; r < rows; r++) {
    const z = logits.subarray(r * V, (r + 1) * V);
    let m = -Infinity;
    for (let j = 0; j < V; j++) if (z[j]! > m) m = z[j]!;
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(z[j]! - m);
    const lse = m + Math.log(s);
    const top = heap.select(z);
    let tail = 0;
    for (const id of top) kept[id] = 1;
    for (let j = 0; j < V; j++) if (kept[j] === 0) tail += Math.exp(z[j]! - lse);
    top.forEach((id, i) => {
      out.ids[r * k + i] = id;
      out.logp[r * k + i] = z[id]! - lse;
      kept[id] = 0;
    });
    out.tailLogp[r] = Math.log(tail);
  }
  return out;
}

export function checkTopK(V: number, k: number): void {
  if (!Number.isInteger(V) || V < 1 || V > 0xffffffff) throw new QkdError('ARGUMENT', `soft targets: vocab size ${V} is invalid`, { field: 'V', hint: 'a positive integer' });
  if (!Number.isInteger(k) || k < 1 || k > V) throw new QkdError('ARGUMENT', `soft targets: top-k ${k} is outside [1, ${V}]`, { field: 'topK', hint: `1 ≤ k ≤ V = ${V}` });
}

/** Selects the k largest entries of a row with a size-k min-heap (O(V log k)). */
export class TopK {
  private readonly ids: Int32Array;
  private readonly values: Float64Array;
  private size = 0;

  constructor(private readonly k: number) {
    this.ids = new Int32Array(k);
    this.values = new Float64Array(k);
  }

  /** Ids of the k largest values, descending (ties: lower id first). */
  select(z: ArrayLike<number>): number[] {
    this.size = 0;
    for (let j = 0; j < z.length; j++) {
      const v = z[j]!;
      if (this.size < this.k) this.push(j, v);
      else if (this.worse(this.ids[0]!, this.values[0]!, j, v)) this.replaceRoot(j, v);
    }
    const order = Array.from({ length: this.size }, (_, i) => i).sort((a, b) => this.values[b]! - this.values[a]! || this.ids[a]! - this.ids[b]!);
    return order.map((i) => this.ids[i]!);
  }

  /** True when (idA, a) ranks below (idB, b). */
  private worse(idA: number, a: number, idB: number, b: number): boolean {
    return a < b || (a === b && idA > idB);
  }

  private push(id: number, v: number): void {
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.worse(id, v, this.ids[parent]!, this.values[parent]!)) break;
      this.ids[i] = this.ids[parent]!;
      this.values[i] = this.values[parent]!;
      i = parent;
    }
    this.ids[i] = id;
    this.values[i] = v;
  }

  private replaceRoot(id: number, v: number): void {
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= this.size) break;
      const right = left + 1;
      const child = right < this.size && this.worse(this.ids[right]!, this.values[right]!, this.ids[left]!, this.values[left]!) ? right : left;
      if (!this.worse(this.ids[child]!, this.values[child]!, id, v)) break;
      this.ids[i] = this.ids[child]!;
      this.values[i] = this.values[child]!;
      i = child;
    }
    this.ids[i] = id;
    this.values[i] = v;
  }
}

// ---- the file ---------------------------------------------------------------------

/**
 * Writes the cache for every window of options.tokens, asking
 * teacherLogitsFor(w) for the [seqLen, V] logits of window w (inputs from
 * softTargetWindow). Streams one window at a time; the file appears
 * atomically when complete. Returns the header.
 */
export function writeSoftTargetCache(path: string, options: SoftTargetCacheOptions, teacherLogitsFor: (windowIndex: number) => Float32Array, world: World = SINGLE_PROCESS): SoftTargetCacheHeader {
  const header = softTargetCacheHeader(options);
  const { topK: k, seqLen, V } = options;
  const count = header.count;
  const encoded = (w: number): Uint8Array => {
    const logits = teacherLogitsFor(w);
    if (logits.length !== seqLen * V) {
      throw new QkdError('SHAPE', `soft-target cache: teacher logits of window ${w} have ${logits.length} values, not seqLen × V = ${seqLen} × ${V}`, { path });
    }
    return encodeWindow(softTargetsFromLogits(logits, seqLen, V, k), seqLen, V);
  };
  if (world.size === 1) {
    writeFileAtomic(path, (fd) => {
      writeAll(fd, encodeHeader(header));
      for (let w = 0; w < count; w++) writeAll(fd, encoded(w));
    });
    return header;
  }
  // Several ranks: in each round rank r scores window round·size + r; rank 0 gathers the round's
  // windows (fixed-size records, in rank order = window order) and writes them.
  const empty = new Uint8Array(windowBytes(header));
  const rounds = Math.ceil(count / world.size);
  const writeRounds = (fd: number | null): void => {
    for (let round = 0; round < rounds; round++) {
      const w = round * world.size + world.rank;
      const all = world.gatherToRoot(w < count ? encoded(w) : empty);
      if (fd !== null) writeAll(fd, all.subarray(0, Math.min(world.size, count - round * world.size) * empty.length));
    }
  };
  if (world.isRoot) {
    writeFileAtomic(path, (fd) => {
      writeAll(fd, encodeHeader(header));
      writeRounds(fd);
    });
  } else writeRounds(null);
  return header;
}

/** The header of the cache of `options` (its arguments checked). */
export function softTargetCacheHeader(options: SoftTargetCacheOptions): SoftTargetCacheHeader {
  const { tokens, topK: k, seqLen, V } = options;
  checkTopK(V, k);
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new QkdError('ARGUMENT', `soft-target cache: seqLen ${seqLen} is invalid`, { field: 'seqLen', hint: 'a positive integer' });
  const temperature = options.temperature ?? 1;
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new QkdError('ARGUMENT', `soft-target cache: temperature ${temperature} is invalid`, { field: 'temperature', hint: 'a positive number' });
  const count = softTargetWindowCount(tokens.length, seqLen);
  if (count === 0) throw new QkdError('ARGUMENT', `soft-target cache: ${tokens.length} tokens hold no window of ${seqLen} + 1`, { field: 'tokens' });
  return { version: VERSION, V, k, seqLen, count, temperature: Math.fround(temperature), tokensHash: tokensHash(tokens, count * seqLen + 1), teacher: teacherTag(options.teacher) };
}

/** The 8 header bytes of a teacher fingerprint, as 16 hex digits. */
export function teacherTag(fingerprint: string | undefined): string {
  const hex = (fingerprint ?? '').slice(0, 16);
  if (!/^[0-9a-f]*$/.test(hex)) throw new QkdError('ARGUMENT', `soft-target cache: teacher fingerprint '${fingerprint}' is not hex`, { field: 'teacher' });
  return hex.padEnd(16, '0');
}

/** FNV-1a (32-bit) over the first n tokens, each as 4 little-endian bytes. */
export function tokensHash(tokens: Int32Array, n: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < n; i++) {
    const t = tokens[i]! >>> 0;
    for (let b = 0; b < 32; b += 8) h = Math.imul(h ^ ((t >>> b) & 0xff), 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function encodeHeader(h: SoftTargetCacheHeader): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < MAGIC.length; i++) bytes[i] = MAGIC.charCodeAt(i);
  view.setUint32(8, h.version, true);
  view.setUint32(12, h.V, true);
  view.setUint32(16, h.k, true);
  view.setUint32(20, h.seqLen, true);
  view.setUint32(24, h.count, true);
  view.setUint32(28, idBytesFor(h.V), true);
  view.setFloat32(32, h.temperature, true);
  view.setUint32(36, h.tokensHash, true);
  bytes.set(Buffer.from(h.teacher, 'hex'), 40);
  return bytes;
}

export function windowBytes(h: { V: number; k: number; seqLen: number }): number {
  return h.seqLen * bytesPerToken(h.V, h.k);
}

/** One window, planar: ids [N, k], logp [N, k] f16, tail [N] f16. */
export function encodeWindow(t: SoftTargets, seqLen: number, V: number): Uint8Array {
  const n = seqLen * t.k;
  const idBytes = idBytesFor(V);
  const bytes = new Uint8Array(windowBytes({ V, k: t.k, seqLen }));
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < n; i++) {
    if (idBytes === 2) view.setUint16(i * 2, t.ids[i]!, true);
    else view.setUint32(i * 4, t.ids[i]!, true);
  }
  const logpAt = n * idBytes;
  for (let i = 0; i < n; i++) view.setUint16(logpAt + i * 2, f32ToF16Bits(t.logp[i]!), true);
  const tailAt = logpAt + n * 2;
  for (let r = 0; r < seqLen; r++) view.setUint16(tailAt + r * 2, f32ToF16Bits(t.tailLogp[r]!), true);
  return bytes;
}

/**
 * Opens a cache and checks its header against the file size. With
 * options.tokens, also checks that the cache was made from those tokens.
 * Every problem is a QkdError naming the file and the header field.
 * options.present: a sparse cache's bitmap of the windows it holds
 * (cache-job.ts); reading another window is an error.
 */
export function openSoftTargetCache(path: string, options: { tokens?: Int32Array; present?: Uint8Array } = {}): SoftTargetCache {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new QkdError('IO', `cannot open soft-target cache: ${(err as Error).message}`, { path });
  }
  try {
    const header = readHeader(fd, path);
    if (options.tokens !== undefined) {
      const needed = header.count * header.seqLen + 1;
      const actual = options.tokens.length < needed ? null : tokensHash(options.tokens, needed);
      if (actual !== header.tokensHash) {
        throw new QkdError('IO', 'soft-target cache was made from other tokens', { path, field: 'tokens_hash', hint: 'the same corpus, tokenizer and split as when the cache was written' });
      }
    }
    return cacheReader(fd, path, header, options.present);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function readHeader(fd: number, path: string): SoftTargetCacheHeader {
  const size = fstatSync(fd).size;
  const bad = (field: string, message: string, hint: string): QkdError => new QkdError('IO', `soft-target cache: ${message}`, { path, field, hint });
  if (size < HEADER_BYTES) throw bad('header', `file has ${size} bytes, shorter than the ${HEADER_BYTES}-byte header`, 'a file written by writeSoftTargetCache');
  const bytes = new Uint8Array(HEADER_BYTES);
  readSync(fd, bytes, 0, HEADER_BYTES, 0);
  const view = new DataView(bytes.buffer);
  const magic = String.fromCharCode(...bytes.subarray(0, 8));
  if (magic !== MAGIC) throw bad('magic', `bad magic ${JSON.stringify(magic)}`, JSON.stringify(MAGIC));
  const version = view.getUint32(8, true);
  if (version !== VERSION) throw bad('version', `unsupported version ${version}`, String(VERSION));
  const V = view.getUint32(12, true);
  if (V < 1) throw bad('vocab', `vocab size ${V}`, 'a positive vocab size');
  const k = view.getUint32(16, true);
  if (k < 1 || k > V) throw bad('top_k', `top-k ${k} is outside [1, ${V}]`, `1 ≤ top_k ≤ vocab (${V})`);
  const seqLen = view.getUint32(20, true);
  if (seqLen < 1) throw bad('seq_len', `seq_len ${seqLen}`, 'a positive sequence length');
  const count = view.getUint32(24, true);
  const idBytes = view.getUint32(28, true);
  if (idBytes !== idBytesFor(V)) throw bad('id_bytes', `id_bytes ${idBytes} for vocab ${V}`, String(idBytesFor(V)));
  const temperature = view.getFloat32(32, true);
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw bad('temperature', `temperature ${temperature}`, 'a positive number');
  const tokensHashValue = view.getUint32(36, true);
  const expected = HEADER_BYTES + count * windowBytes({ V, k, seqLen });
  if (size !== expected) {
    throw bad('count', `${count} windows of ${seqLen} × ${bytesPerToken(V, k)} bytes need ${expected} bytes but the file has ${size}${size < expected ? ' (truncated)' : ''}`, `${expected} bytes`);
  }
  return { version, V, k, seqLen, count, temperature, tokensHash: tokensHashValue, teacher: Buffer.from(bytes.subarray(40, 48)).toString('hex') };
}

function cacheReader(fd: number, path: string, header: SoftTargetCacheHeader, present?: Uint8Array): SoftTargetCache {
  let open = true;
  const { V, k, seqLen, count } = header;
  const idBytes = idBytesFor(V);
  const size = windowBytes(header);
  const has = (index: number): boolean => Number.isInteger(index) && index >= 0 && index < count && (present === undefined || (present[index >> 3]! & (1 << (index & 7))) !== 0);
  return {
    ...header,
    path,
    has,
    window(index: number): SoftTargets {
      if (!open) throw new QkdError('STATE', 'soft-target cache is closed', { path });
      if (!Number.isInteger(index) || index < 0 || index >= count) {
        throw new QkdError('ARGUMENT', `soft-target cache has windows 0..${count - 1}, not ${index}`, { path, field: 'window' });
      }
      if (!has(index)) {
        throw new QkdError('STATE', `soft-target cache: window ${index} was never filled (a sparse cache holds only the windows its run reads)`, { path, field: 'window', hint: 'the run the cache was filled for (same steps, batch size, seed and data), or let the job fill the missing windows' });
      }
      const bytes = new Uint8Array(size);
      readSync(fd, bytes, 0, size, HEADER_BYTES + index * size);
      const view = new DataView(bytes.buffer);
      const n = seqLen * k;
      const out: SoftTargets = { k, ids: new Int32Array(n), logp: new Float32Array(n), tailLogp: new Float32Array(seqLen) };
      for (let i = 0; i < n; i++) {
        const id = idBytes === 2 ? view.getUint16(i * 2, true) : view.getUint32(i * 4, true);
        if (id >= V) throw new QkdError('IO', `soft-target cache: window ${index} holds token id ${id} ≥ vocab ${V}`, { path, field: 'ids', hint: `ids below ${V}` });
        out.ids[i] = id;
      }
      const logpAt = n * idBytes;
      for (let i = 0; i < n; i++) out.logp[i] = f16BitsToF32(view.getUint16(logpAt + i * 2, true));
      const tailAt = logpAt + n * 2;
      for (let r = 0; r < seqLen; r++) out.tailLogp[r] = f16BitsToF32(view.getUint16(tailAt + r * 2, true));
      return out;
    },
    close(): void {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

// ---- the loss ---------------------------------------------------------------------

/**
 * KD against cached top-k targets: τ² · mean over rows of KL(q ‖ s) over
 * k + 1 buckets — the teacher's k cached tokens and one tail bucket.
 *   teacher q: softmax over the buckets of the tempered log-probs. At τ = 1
 *     this is the teacher's distribution with the tail lumped together
 *     (exact up to f16 rounding). At τ ≠ 1 it is an approximation: the cache
 *     no longer has the individual tail logits, so the tempered tail mass
 *     Σ_tail p^(1/τ) is estimated as if the tail were uniform over its V − k
 *     tokens (exact for a flat tail; tempering the tail as one token,
 *     (Σ_tail p)^(1/τ), badly under-weights it at τ = 4).
 *   student s: softmax(z_S/τ) over the full vocabulary, aggregated the same
 *     way: the k cached ids, and the tail = logsumexp of every other token.
 * With k = V the tail is empty and this equals logitKd. studentLogits is
 * [..., V] with as many rows as the targets. The backward, per row:
 * ∂/∂z_j = τ·(s_j − q_b(j)) for a cached id, τ·s_j(1 − q_tail/S_tail) for a
 * tail token (then scaled by 1/rows); checked against finite differences in
 * the tests.
 */
export function cachedKd(studentLogits: Tensor, cached: CachedTargets, temperature: number): Tensor {
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new QkdError('ARGUMENT', `cachedKd: temperature must be a positive finite number, got ${temperature}`, { field: 'temperature' });
  const V = studentLogits.shape[studentLogits.rank - 1] ?? 0;
  const rows = cached.tailLogp.length;
  const k = rows === 0 ? 0 : cached.ids.length / rows;
  if (V === 0 || rows === 0 || !Number.isInteger(k) || k < 1 || studentLogits.size !== rows * V || cached.logp.length !== rows * k || k > V) {
    throw new QkdError('SHAPE', `cachedKd: student logits ${fmtShape(studentLogits.shape)} do not fit ${rows} cached rows of top-${k}`, {
      hint: `[..., V] logits with ${rows} rows and k ≤ V`,
    });
  }
  const inv = 1 / temperature;
  const z = studentLogits.data;
  const kept = new Uint8Array(V);
  const markRow = (r: number, on: 0 | 1): void => {
    for (let i = 0; i < k; i++) {
      const id = cached.ids[r * k + i]!;
      if (id < 0 || id >= V) throw new QkdError('ARGUMENT', `cachedKd: cached id ${id} at row ${r} is outside [0, ${V})`, { field: 'ids' });
      if (on === 1 && kept[id] === 1) throw new QkdError('ARGUMENT', `cachedKd: cached id ${id} appears twice at row ${r}`, { field: 'ids' });
      kept[id] = on;
    }
  };
  // Per row: the student's log-sum-exp at τ and its tail log-prob; teacher bucket log-probs.
  const lse = new Float64Array(rows);
  const studentTail = new Float64Array(rows);
  const teacherLogq = new Float64Array(rows * (k + 1));
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    markRow(r, 1);
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, z[o + j]! * inv);
    let all = 0;
    let rest = 0;
    for (let j = 0; j < V; j++) {
      const e = Math.exp(z[o + j]! * inv - m);
      all += e;
      if (kept[j] === 0) rest += e;
    }
    lse[r] = m + Math.log(all);
    studentTail[r] = Math.log(rest / all);
    teacherBuckets(cached, k, V, r, inv, teacherLogq);
    let kl = 0;
    for (let i = 0; i <= k; i++) {
      const lq = teacherLogq[r * (k + 1) + i]!;
      if (lq === -Infinity) continue;
      const ls = i < k ? z[o + cached.ids[r * k + i]!]! * inv - lse[r]! : studentTail[r]!;
      kl += Math.exp(lq) * (lq - ls);
    }
    total += kl;
    markRow(r, 0);
  }
  const factor = (temperature * temperature) / Math.max(rows, 1);
  const out = new Tensor([]);
  out.data[0] = total * factor;
  return record(out, 'cachedKd', [studentLogits], (dy) => {
    const dz = studentLogits.ensureGrad();
    const g = dy[0]! * factor * inv;
    for (let r = 0; r < rows; r++) {
      const o = r * V;
      const qTail = Math.exp(teacherLogq[r * (k + 1) + k]!);
      const sTail = Math.exp(studentTail[r]!);
      // Tail tokens: s_j (1 − q_tail / S_tail); S_tail = 0 only when no tail token exists.
      const tailScale = sTail > 0 ? 1 - qTail / sTail : 1;
      for (let j = 0; j < V; j++) dz[o + j]! += g * Math.exp(z[o + j]! * inv - lse[r]!) * tailScale;
      // Cached ids: s_j − q_i (undo the tail term just added).
      for (let i = 0; i < k; i++) {
        const j = cached.ids[r * k + i]!;
        const s = Math.exp(z[o + j]! * inv - lse[r]!);
        dz[o + j]! += g * (s - Math.exp(teacherLogq[r * (k + 1) + i]!) - s * tailScale);
      }
    }
  });
}

/**
 * log q over the k + 1 buckets of row r, written to out[r·(k+1) ..]: the
 * log-softmax of (logp/τ, tempered tail). The tail's tempered mass assumes
 * its probability is spread evenly over the V − k tail tokens:
 * log((V−k)·(P_tail/(V−k))^(1/τ)) = log(V−k) + (log P_tail − log(V−k))/τ.
 */
function teacherBuckets(cached: CachedTargets, k: number, V: number, r: number, inv: number, out: Float64Array): void {
  const base = r * (k + 1);
  const logTailCount = Math.log(V - k);
  const tail = cached.tailLogp[r]!;
  const temperedTail = tail === -Infinity || V === k ? -Infinity : logTailCount + (tail - logTailCount) * inv;
  let m = -Infinity;
  for (let i = 0; i <= k; i++) {
    const b = i < k ? cached.logp[r * k + i]! * inv : temperedTail;
    out[base + i] = b;
    if (b > m) m = b;
  }
  let s = 0;
  for (let i = 0; i <= k; i++) s += Math.exp(out[base + i]! - m);
  const lse = m + Math.log(s);
  for (let i = 0; i <= k; i++) out[base + i] = out[base + i]! - lse;
}
