/**
 * Byte-level BPE: training, encoding, and Hugging Face tokenizer.json I/O.
 *
 * Layout (the only one qkd reads or writes): ids 0..255 are the bytes
 * 0..255, merge k (rank k) joins two existing ids into the new id 256+k, and
 * there are no special tokens. Text is first split into chunks GPT-2 style
 * (contractions, words, numbers, punctuation runs, whitespace), and merges
 * never cross a chunk boundary. The chunk regex is GPT-2's, so the
 * tokenizer.json written here (ByteLevel pre-tokenizer, use_regex: true)
 * should encode the same in Hugging Face `tokenizers`.
 *
 * Training keeps, for every adjacent pair of ids, its count over the unique
 * chunks (weighted by chunk frequency) and the chunks it occurs in. A merge
 * rewrites only those chunks and applies the count differences, and a
 * max-heap with lazy invalidation finds the next most frequent pair.
 */
import { readFileSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { byteLevelTokenizerJson, byteToUnicode, type EncodeOptions, type Tokenizer } from './tokenizer.js';

/** Smallest and largest vocabulary trainBpe builds. */
export const MIN_BPE_VOCAB = 512;
export const MAX_BPE_VOCAB = 32768;

/** Ids must stay below this so that a pair of ids packs into one safe integer. */
const ID_LIMIT = 1 << 21;

/** One number for an ordered pair of ids; a smaller key is a lexicographically smaller pair. */
function pairKey(left: number, right: number): number {
  return left * ID_LIMIT + right;
}

// ---------------------------------------------------------------------------
// Pre-tokenization

/**
 * Chunks, in order of preference at each position: an English contraction
 * suffix, an optional space then letters, an optional space then digits, an
 * optional space then other non-space characters, whitespace not followed by
 * a non-space (so a single space before a word stays with the word), and any
 * remaining whitespace. Every character falls in one alternative, so the
 * chunks concatenate back to the text.
 */
const CHUNK_PATTERN = /'(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Splits text into the chunks that BPE merges stay within. */
export function preTokenize(text: string): string[] {
  return text.match(CHUNK_PATTERN) ?? [];
}

/** How often each chunk occurs, in first-occurrence order. */
function countChunks(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  const pattern = new RegExp(CHUNK_PATTERN.source, CHUNK_PATTERN.flags);
  for (let m = pattern.exec(text); m !== null; m = pattern.exec(text)) {
    const chunk = m[0];
    counts.set(chunk, (counts.get(chunk) ?? 0) + 1);
  }
  return counts;
}

// ---------------------------------------------------------------------------
// Training

export interface TrainBpeOptions {
  /** A pair must occur at least this often (over the whole text) to be merged. Default 2. */
  minFrequency?: number;
  /** Called now and then with the merges done so far and the merges wanted (vocabSize − 256). */
  onProgress?: (merges: number, target: number) => void;
}

/**
 * Max-heap of (count, pair key): the largest count first, ties to the
 * smallest key. Entries are not updated when a count falls; the trainer
 * re-checks an entry when it reaches the top.
 */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    this.siftUp(this.keys.length - 1);
  }

  /** Count and key of the top entry (the heap must not be empty). */
  peek(): { count: number; key: number } {
    return { count: this.counts[0]!, key: this.keys[0]! };
  }

  pop(): void {
    const last = this.keys.length - 1;
    this.counts[0] = this.counts[last]!;
    this.keys[0] = this.keys[last]!;
    this.counts.pop();
    this.keys.pop();
    if (this.keys.length > 0) this.siftDown(0);
  }

  /** True when entry i belongs above entry j. */
  private above(i: number, j: number): boolean {
    const ci = this.counts[i]!;
    const cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }

  private swap(i: number, j: number): void {
    const c = this.counts[i]!;
    this.counts[i] = this.counts[j]!;
    this.counts[j] = c;
    const k = this.keys[i]!;
    this.keys[i] = this.keys[j]!;
    this.keys[j] = k;
  }

  private siftUp(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.above(i, parent)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private siftDown(i: number): void {
    const n = this.keys.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < n && this.above(l, best)) best = l;
      if (r < n && this.above(r, best)) best = r;
      if (best === i) return;
      this.swap(i, best);
      i = best;
    }
  }
}

/** Mutable training state: the unique chunks as id sequences, and pair statistics over them. */
class PairStats {
  /** Per unique chunk: its current ids. */
  readonly words: number[][] = [];
  /** Per unique chunk: how often it occurs in the text. */
  readonly freqs: number[] = [];
  /** Pair key → occurrences over the text. */
  readonly counts = new Map<number, number>();
  /** Pair key → chunks that contain (or once contained) the pair. */
  readonly wordsWith = new Map<number, Set<number>>();

  constructor(chunkCounts: Map<string, number>) {
    for (const [chunk, freq] of chunkCounts) {
      const w = this.words.length;
      const ids = Array.from(Buffer.from(chunk, 'utf8'));
      this.words.push(ids);
      this.freqs.push(freq);
      for (let i = 0; i + 1 < ids.length; i++) {
        const key = pairKey(ids[i]!, ids[i + 1]!);
        this.counts.set(key, (this.counts.get(key) ?? 0) + freq);
        this.noteWord(key, w);
      }
    }
  }

  private noteWord(key: number, w: number): void {
    let set = this.wordsWith.get(key);
    if (set === undefined) this.wordsWith.set(key, (set = new Set()));
    set.add(w);
  }

  /**
   * Replaces every non-overlapping occurrence (left to right) of the pair
   * (left, right) by `merged` and returns the pairs whose count rose (all of
   * them contain `merged`).
   */
  merge(left: number, right: number, merged: number): number[] {
    const key = pairKey(left, right);
    const delta = new Map<number, number>();
    const add = (k: number, d: number): void => {
      delta.set(k, (delta.get(k) ?? 0) + d);
    };
    for (const w of [...(this.wordsWith.get(key) ?? [])]) {
      const old = this.words[w]!;
      const next: number[] = [];
      for (let i = 0; i < old.length; ) {
        if (i + 1 < old.length && old[i] === left && old[i + 1] === right) {
          next.push(merged);
          i += 2;
        } else {
          next.push(old[i]!);
          i += 1;
        }
      }
      // A stale entry of wordsWith: the pair left this chunk in an earlier merge.
      if (next.length === old.length) continue;
      const freq = this.freqs[w]!;
      for (let i = 0; i + 1 < old.length; i++) add(pairKey(old[i]!, old[i + 1]!), -freq);
      for (let i = 0; i + 1 < next.length; i++) {
        const k = pairKey(next[i]!, next[i + 1]!);
        add(k, freq);
        if (next[i] === merged || next[i + 1] === merged) this.noteWord(k, w);
      }
      this.words[w] = next;
    }
    const risen: number[] = [];
    for (const [k, d] of delta) {
      if (d === 0) continue;
      const count = (this.counts.get(k) ?? 0) + d;
      if (count > 0) {
        this.counts.set(k, count);
      } else {
        this.counts.delete(k);
        this.wordsWith.delete(k);
      }
      if (d > 0) risen.push(k);
    }
    return risen;
  }
}

/**
 * Trains a byte-level BPE tokenizer on `text`: starting from the 256 byte
 * ids, repeatedly merges the most frequent adjacent pair (ties: the
 * lexicographically smallest pair of ids) until the vocabulary has
 * `vocabSize` ids or no pair occurs `minFrequency` times. Deterministic.
 *
 * Every id has distinct bytes (tokenizer.json keys vocab by them): a pair
 * whose bytes equal an existing token's is skipped. With left-to-right
 * merging this should not occur, since a run of bytes that ends up as one
 * token is always split the same way; the check is a guard.
 */
export function trainBpe(text: string, vocabSize: number, options: TrainBpeOptions = {}): BpeTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_BPE_VOCAB || vocabSize > MAX_BPE_VOCAB) {
    throw new QkdError('ARGUMENT', `trainBpe: vocab_size ${vocabSize} is out of range`, {
      field: 'vocab_size',
      hint: `an integer from ${MIN_BPE_VOCAB} to ${MAX_BPE_VOCAB}`,
    });
  }
  const minFrequency = options.minFrequency ?? 2;
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new QkdError('ARGUMENT', `trainBpe: min_frequency ${minFrequency} is out of range`, { field: 'min_frequency', hint: 'an integer ≥ 1' });
  }
  const target = vocabSize - 256;
  const progressEvery = Math.max(1, Math.floor(target / 100));

  const stats = new PairStats(countChunks(text));
  const heap = new PairHeap();
  for (const [key, count] of stats.counts) if (count >= minFrequency) heap.push(count, key);

  const tokenStrings = byteToUnicode();
  const known = new Set(tokenStrings);
  const merges: Array<[number, number]> = [];
  while (merges.length < target && heap.size > 0) {
    const { count, key } = heap.peek();
    if (count < minFrequency) break;
    heap.pop();
    const current = stats.counts.get(key) ?? 0;
    if (current !== count) {
      // Stale: the count fell since this entry was pushed.
      if (current >= minFrequency) heap.push(current, key);
      continue;
    }
    const left = Math.floor(key / ID_LIMIT);
    const right = key - left * ID_LIMIT;
    const joined = tokenStrings[left]! + tokenStrings[right]!;
    if (known.has(joined)) continue;
    const merged = 256 + merges.length;
    merges.push([left, right]);
    tokenStrings.push(joined);
    known.add(joined);
    for (const k of stats.merge(left, right, merged)) heap.push(stats.counts.get(k)!, k);
    if (options.onProgress !== undefined && merges.length % progressEvery === 0) options.onProgress(merges.length, target);
  }
  if (options.onProgress !== undefined && merges.length % progressEvery !== 0) options.onProgress(merges.length, target);
  return new BpeTokenizer(merges);
}

// ---------------------------------------------------------------------------
// The tokenizer

/** Chunks longer than this (UTF-16 units) are not cached. */
const CACHE_MAX_CHUNK = 64;
/** The cache is emptied when it holds this many chunks, so it keeps the frequent ones. */
const CACHE_MAX_ENTRIES = 1 << 16;

/** Packs (rank, position) so that a smaller number is a lower rank, then an earlier position. */
const POSITION_LIMIT = 2 ** 32;

export class BpeTokenizer implements Tokenizer {
  readonly kind = 'bpe' as const;
  readonly vocabSize: number;
  readonly bosId = null;
  readonly eosId = null;
  /** Merge k joins merges[k][0] and merges[k][1] into id 256+k. */
  readonly merges: ReadonlyArray<readonly [number, number]>;

  /** Pair key → rank. */
  private readonly ranks = new Map<number, number>();
  /** Id → its bytes. */
  private readonly bytesOf: Uint8Array[] = [];
  private readonly cache = new Map<string, Int32Array>();

  /**
   * `merges[k]` are the two ids joined by merge k; both must be below 256+k
   * (a merge only uses tokens that exist before it).
   */
  constructor(merges: ReadonlyArray<readonly [number, number]>) {
    this.vocabSize = 256 + merges.length;
    if (this.vocabSize > ID_LIMIT) {
      throw new QkdError('ARGUMENT', `BpeTokenizer: ${merges.length} merges is too many`, { field: 'merges', hint: `at most ${ID_LIMIT - 256}` });
    }
    for (let b = 0; b < 256; b++) this.bytesOf.push(Uint8Array.of(b));
    merges.forEach(([left, right], k) => {
      const id = 256 + k;
      for (const part of [left, right]) {
        if (!Number.isInteger(part) || part < 0 || part >= id) {
          throw new QkdError('ARGUMENT', `BpeTokenizer: merge ${k} uses id ${part}`, { field: `merges[${k}]`, hint: `ids from 0 to ${id - 1}` });
        }
      }
      const key = pairKey(left, right);
      if (this.ranks.has(key)) {
        throw new QkdError('ARGUMENT', `BpeTokenizer: merge ${k} repeats merge ${this.ranks.get(key)}`, { field: `merges[${k}]`, hint: 'each pair merged once' });
      }
      this.ranks.set(key, k);
      this.bytesOf.push(Buffer.concat([this.bytesOf[left]!, this.bytesOf[right]!]));
    });
    this.merges = merges.map(([l, r]) => [l, r] as const);
  }

  /** The bytes of one id. */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id, 0);
    return this.bytesOf[id]!;
  }

  /** Ids of the text; BPE has no BOS/EOS, so the options change nothing. */
  encode(text: string, _options?: EncodeOptions): Int32Array {
    const out: number[] = [];
    for (const chunk of preTokenize(text)) {
      const ids = this.encodeChunk(chunk);
      for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
    }
    return Int32Array.from(out);
  }

  decode(ids: ArrayLike<number>): string {
    let length = 0;
    for (let i = 0; i < ids.length; i++) {
      this.checkId(ids[i]!, i);
      length += this.bytesOf[ids[i]!]!.length;
    }
    const bytes = new Uint8Array(length);
    let at = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.bytesOf[ids[i]!]!;
      bytes.set(b, at);
      at += b.length;
    }
    // Node's UTF-8 decoder turns invalid sequences into U+FFFD.
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8');
  }

  /** A Hugging Face tokenizer.json: BPE model over ByteLevel-mapped strings, merges in rank order. */
  toTokenizerJson(): Record<string, unknown> {
    const map = byteToUnicode();
    const strings = this.bytesOf.map((bytes) => Array.from(bytes, (b) => map[b]!).join(''));
    // fromEntries defines own properties, so even a token spelled "__proto__" is kept.
    const vocab: Record<string, number> = Object.fromEntries(strings.map((s, id) => [s, id]));
    const merges = this.merges.map(([l, r]) => `${strings[l]!} ${strings[r]!}`);
    return byteLevelTokenizerJson(vocab, merges, true);
  }

  /** Reads a tokenizer.json object in the layout qkd supports (see the file comment). */
  static fromTokenizerJson(json: unknown, path?: string): BpeTokenizer {
    return new BpeTokenizer(readTokenizerJson(json, path));
  }

  private checkId(id: number, position: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new QkdError('ARGUMENT', `BpeTokenizer: token id ${id} at position ${position} is out of range`, {
        field: 'ids',
        hint: `ids from 0 to ${this.vocabSize - 1}`,
      });
    }
  }

  private encodeChunk(chunk: string): ArrayLike<number> {
    const cached = this.cache.get(chunk);
    if (cached !== undefined) return cached;
    const ids = this.applyMerges(Buffer.from(chunk, 'utf8'));
    if (chunk.length <= CACHE_MAX_CHUNK) {
      if (this.cache.size >= CACHE_MAX_ENTRIES) this.cache.clear();
      this.cache.set(chunk, ids);
    }
    return ids;
  }

  /**
   * Merges the lowest-rank adjacent pair first, equal pairs left to right,
   * until no adjacent pair has a merge. The symbols form a linked list over
   * the byte positions; a min-heap holds candidate (rank, position) entries,
   * checked against the list when popped. Since a merge only creates pairs of
   * higher rank, this equals "merge every occurrence of the lowest-rank pair,
   * repeat" in O(n log n).
   */
  private applyMerges(bytes: Uint8Array): Int32Array {
    const n = bytes.length;
    if (n < 2 || this.merges.length === 0) return Int32Array.from(bytes);
    const sym = Int32Array.from(bytes); // −1: absorbed into the symbol on its left
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const offer = (pos: number): void => {
      const q = next[pos]!;
      if (q < 0) return;
      const rank = this.ranks.get(pairKey(sym[pos]!, sym[q]!));
      if (rank !== undefined) heap.push(rank * POSITION_LIMIT + pos);
    };
    for (let i = 0; i + 1 < n; i++) offer(i);
    let count = n;
    while (heap.size > 0) {
      const entry = heap.pop();
      const rank = Math.floor(entry / POSITION_LIMIT);
      const pos = entry - rank * POSITION_LIMIT;
      const q = next[pos]!;
      if (sym[pos]! < 0 || q < 0 || this.ranks.get(pairKey(sym[pos]!, sym[q]!)) !== rank) continue;
      sym[pos] = 256 + rank;
      sym[q] = -1;
      next[pos] = next[q]!;
      if (next[q]! >= 0) prev[next[q]!] = pos;
      count--;
      if (prev[pos]! >= 0) offer(prev[pos]!);
      offer(pos);
    }
    const out = new Int32Array(count);
    for (let i = 0, j = 0; i >= 0; i = next[i]!) out[j++] = sym[i]!;
    return out;
  }
}

/** Binary min-heap of numbers. */
class MinHeap {
  private items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  push(x: number): void {
    const a = this.items;
    a.push(x);
    for (let i = a.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (a[parent]! <= x) break;
      a[i] = a[parent]!;
      a[parent] = x;
      i = parent;
    }
  }

  pop(): number {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length === 0) return top;
    a[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < a.length && a[l]! < a[best]!) best = l;
      if (r < a.length && a[r]! < a[best]!) best = r;
      if (best === i) break;
      a[i] = a[best]!;
      a[best] = last;
      i = best;
    }
    return top;
  }
}

// ---------------------------------------------------------------------------
// tokenizer.json reading

const SUPPORTED_LAYOUT =
  'a byte-level BPE tokenizer.json as qkd writes it: ids 0..255 are the 256 ByteLevel byte symbols in byte order, merge k creates id 256+k, no special tokens';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Value of an own property (never one inherited from Object.prototype). */
function own(obj: Record<string, unknown>, name: string): unknown {
  return Object.prototype.hasOwnProperty.call(obj, name) ? obj[name] : undefined;
}

/** Validates a tokenizer.json object and returns its merges as id pairs. */
function readTokenizerJson(json: unknown, path: string | undefined): Array<[number, number]> {
  const fail = (field: string, message: string, hint: string = SUPPORTED_LAYOUT): never => {
    throw new QkdError('IO', `tokenizer.json: ${message}`, { ...(path !== undefined ? { path } : {}), field, hint });
  };
  if (!isObject(json)) return fail('(root)', 'is not a JSON object');

  const added = own(json, 'added_tokens');
  if (added !== undefined && added !== null && !(Array.isArray(added) && added.length === 0)) {
    fail('added_tokens', 'has special tokens, which qkd BPE does not support', 'an empty added_tokens list');
  }
  const normalizer = own(json, 'normalizer');
  if (normalizer !== undefined && normalizer !== null) fail('normalizer', 'has a normalizer, which qkd BPE does not apply', 'normalizer: null');

  const model = own(json, 'model');
  if (!isObject(model)) return fail('model', 'has no model object');
  if (own(model, 'type') !== 'BPE') fail('model.type', `model type is ${JSON.stringify(own(model, 'type'))}`, '"BPE"');
  if (own(model, 'byte_fallback') === true) fail('model.byte_fallback', 'uses byte_fallback', 'byte_fallback: false (byte-level BPE needs no fallback)');
  if (own(model, 'ignore_merges') === true) fail('model.ignore_merges', 'uses ignore_merges', 'ignore_merges: false');
  for (const field of ['continuing_subword_prefix', 'end_of_word_suffix'] as const) {
    const v = own(model, field);
    if (v !== undefined && v !== null && v !== '') fail(`model.${field}`, `has ${field} ${JSON.stringify(v)}`, 'null');
  }
  const dropout = own(model, 'dropout');
  if (dropout !== undefined && dropout !== null && dropout !== 0) fail('model.dropout', `has dropout ${JSON.stringify(dropout)}`, 'null');

  // Vocab: byte-level string → id.
  const vocabJson = own(model, 'vocab');
  if (!isObject(vocabJson)) return fail('model.vocab', 'has no vocab object');
  const toByte = new Map(byteToUnicode().map((ch, b) => [ch, b]));
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(vocabJson)) {
    const field = `model.vocab[${JSON.stringify(token)}]`;
    if (!Number.isInteger(id) || (id as number) < 0) fail(field, `id ${JSON.stringify(id)} is not a non-negative integer`);
    if (token.length === 0 || [...token].some((ch) => !toByte.has(ch))) fail(field, 'is not a ByteLevel byte string');
    vocab.set(token, id as number);
  }
  const byteSymbols = byteToUnicode();
  for (let b = 0; b < 256; b++) {
    const id = vocab.get(byteSymbols[b]!);
    if (id !== b) fail(`model.vocab[${JSON.stringify(byteSymbols[b])}]`, `byte 0x${b.toString(16).padStart(2, '0')} has id ${id ?? 'missing'}, not ${b}`);
  }

  // Merges: "a b" strings or [a, b] pairs, in rank order.
  const mergesJson = own(model, 'merges');
  if (!Array.isArray(mergesJson)) return fail('model.merges', 'has no merges list');
  if (vocab.size !== 256 + mergesJson.length) {
    fail('model.vocab', `has ${vocab.size} entries for ${mergesJson.length} merges`, `256 + ${mergesJson.length} = ${256 + mergesJson.length} entries (${SUPPORTED_LAYOUT})`);
  }
  const merges: Array<[number, number]> = [];
  mergesJson.forEach((entry: unknown, k) => {
    const field = `model.merges[${k}]`;
    let parts: unknown[] | undefined;
    if (typeof entry === 'string') parts = entry.split(' ');
    else if (Array.isArray(entry)) parts = entry;
    if (parts === undefined || parts.length !== 2 || typeof parts[0] !== 'string' || typeof parts[1] !== 'string') {
      return fail(field, `is ${JSON.stringify(entry)}`, 'a string "left right" or a pair ["left", "right"] of vocab tokens');
    }
    const [left, right] = parts as [string, string];
    const id = 256 + k;
    const leftId = vocab.get(left);
    const rightId = vocab.get(right);
    if (leftId === undefined || leftId >= id || rightId === undefined || rightId >= id) {
      fail(field, `joins ${JSON.stringify(left)} (id ${leftId ?? 'missing'}) and ${JSON.stringify(right)} (id ${rightId ?? 'missing'})`, `tokens with ids below ${id} (${SUPPORTED_LAYOUT})`);
    }
    const resultId = vocab.get(left + right);
    if (resultId !== id) fail(field, `creates ${JSON.stringify(left + right)} with id ${resultId ?? 'missing'}, not ${id}`);
    merges.push([leftId!, rightId!]);
  });

  // With merges, the chunking must be the GPT-2 regex that encode() uses.
  const pre = own(json, 'pre_tokenizer');
  if (!isObject(pre) || own(pre, 'type') !== 'ByteLevel') {
    fail('pre_tokenizer.type', `pre_tokenizer is ${JSON.stringify(isObject(pre) ? own(pre, 'type') : pre)}`, '"ByteLevel"');
  } else {
    if (own(pre, 'add_prefix_space') === true) fail('pre_tokenizer.add_prefix_space', 'adds a prefix space', 'add_prefix_space: false');
    if (own(pre, 'use_regex') === false && merges.length > 0) fail('pre_tokenizer.use_regex', 'does not split with the ByteLevel regex', 'use_regex: true (only a tokenizer without merges may turn it off)');
  }
  const decoder = own(json, 'decoder');
  if (decoder !== undefined && decoder !== null && !(isObject(decoder) && own(decoder, 'type') === 'ByteLevel')) {
    fail('decoder.type', `decoder is ${JSON.stringify(isObject(decoder) ? own(decoder, 'type') : decoder)}`, '"ByteLevel"');
  }
  return merges;
}

// ---------------------------------------------------------------------------
// Files

/** Reads a tokenizer.json file written by saveTokenizerJson (or any file in the same layout). */
export function loadTokenizerJson(path: string): BpeTokenizer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new QkdError('IO', missing ? 'tokenizer file not found' : `cannot read tokenizer file: ${(err as Error).message}`, { path, hint: 'a tokenizer.json written by qkd' });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new QkdError('IO', `tokenizer file is not valid JSON: ${(err as Error).message}`, { path });
  }
  return BpeTokenizer.fromTokenizerJson(json, path);
}

/** Writes the tokenizer's tokenizer.json atomically (temp file + rename). */
export function saveTokenizerJson(path: string, tokenizer: Tokenizer): void {
  writeBytesAtomic(path, `${JSON.stringify(tokenizer.toTokenizerJson(), null, 2)}\n`);
}
