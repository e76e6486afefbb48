/**
 * The llama2.c tokenizer (tokenizer.bin, as written by llama2.c's
 * tokenizer.py from a SentencePiece model): int32 max_token_length, then for
 * each of vocab_size tokens: float32 score, int32 byte length, the piece's
 * bytes (UTF-8, with SentencePiece's "▁" already turned into " "). The file
 * does not store vocab_size; it comes from the model header. Little-endian.
 *
 * Encoding follows run.c's encode(): optional BOS (id 1); a dummy-prefix " "
 * piece when the text is non-empty; each UTF-8 code point looked up as a
 * piece, falling back to one <0xXX> byte token per byte (id byte + 3); then
 * repeatedly merge the adjacent pair whose concatenation is a piece with the
 * highest score (leftmost on ties; scores must exceed −1e10), until no pair
 * merges; optional EOS (id 2). Decoding follows run.c's decode(): the leading
 * space of a piece right after BOS is dropped, and "<0xXX>" pieces are the raw
 * byte. Unlike run.c (which never prints them), BOS and EOS decode to nothing.
 */
import { readFileSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import type { EncodeOptions, Tokenizer } from './tokenizer.js';

const BOS_ID = 1;
const EOS_ID = 2;
/** Byte b falls back to token b + 3 (after <unk>, <s>, </s>). */
const BYTE_FALLBACK_OFFSET = 3;
/** run.c's initial best score: a merge must score strictly above it. */
const MIN_MERGE_SCORE = Math.fround(-1e10);
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** A byte string as a Map key (one char per byte). */
function keyOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

export class Llama2cTokenizer implements Tokenizer {
  readonly kind = 'llama2c' as const;
  readonly bosId = BOS_ID;
  readonly eosId = EOS_ID;
  readonly vocabSize: number;
  /** Longest piece in bytes (from the file header). */
  readonly maxTokenLength: number;
  /** Piece bytes, by id. */
  readonly pieces: readonly Uint8Array[];
  /** Merge scores, by id (float32, as run.c compares them). */
  readonly scores: Float32Array;
  /** Piece bytes (latin1 key) → id; on duplicate pieces the lowest id wins. */
  private readonly ids: Map<string, number>;
  private readonly keys: string[];
  /** Byte value each "<0xXX>" piece decodes to, or −1. */
  private readonly byteOf: Int16Array;

  constructor(pieces: readonly Uint8Array[], scores: ArrayLike<number>, maxTokenLength: number) {
    if (pieces.length !== scores.length) {
      throw new QkdError('ARGUMENT', `Llama2cTokenizer: ${pieces.length} pieces but ${scores.length} scores`, { field: 'scores', hint: 'one score per piece' });
    }
    if (pieces.length <= EOS_ID) {
      throw new QkdError('ARGUMENT', `Llama2cTokenizer: vocabulary of ${pieces.length} pieces has no BOS (1) and EOS (2)`, { field: 'vocabSize', hint: 'at least 3 pieces: <unk>, <s>, </s>, …' });
    }
    this.vocabSize = pieces.length;
    this.maxTokenLength = maxTokenLength;
    this.pieces = pieces.map((p) => Uint8Array.from(p));
    this.scores = Float32Array.from(scores);
    this.keys = this.pieces.map(keyOf);
    this.ids = new Map();
    this.byteOf = new Int16Array(pieces.length).fill(-1);
    this.keys.forEach((key, id) => {
      if (!this.ids.has(key)) this.ids.set(key, id);
      const m = BYTE_PIECE.exec(key);
      if (m !== null) this.byteOf[id] = parseInt(m[1]!, 16);
    });
  }

  /** The id of a piece given as text, or −1. */
  pieceId(piece: string): number {
    return this.ids.get(Buffer.from(piece, 'utf8').toString('latin1')) ?? -1;
  }

  encode(text: string, options: EncodeOptions = {}): Int32Array {
    const bytes = Buffer.from(text, 'utf8');
    const tokens: number[] = [];
    if (options.bos === true) tokens.push(BOS_ID);
    if (bytes.length > 0) {
      const space = this.ids.get(' ');
      if (space === undefined) throw new QkdError('STATE', 'llama2c tokenizer: the vocabulary has no " " piece for the dummy prefix', { field: 'pieces', hint: 'a SentencePiece vocabulary with "▁" (stored as " ")' });
      tokens.push(space);
    }
    this.pushCodePoints(bytes, tokens);
    const merged = this.merge(tokens);
    if (options.eos === true) merged.push(EOS_ID);
    return Int32Array.from(merged);
  }

  /** One token per UTF-8 code point, or one byte token per byte when the code point is not a piece. */
  private pushCodePoints(bytes: Uint8Array, tokens: number[]): void {
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      // A code point is a lead byte and up to three continuation bytes (10xxxxxx), as run.c reads it.
      if ((bytes[i]! & 0xc0) !== 0x80) start = i;
      const next = bytes[i + 1];
      if (next !== undefined && (next & 0xc0) === 0x80 && i + 1 - start < 4) continue;
      const codePoint = bytes.subarray(start, i + 1);
      const id = this.ids.get(keyOf(codePoint));
      if (id !== undefined) tokens.push(id);
      else {
        for (const b of codePoint) {
          const fallback = b + BYTE_FALLBACK_OFFSET;
          if (fallback >= this.vocabSize) {
            throw new QkdError('STATE', `llama2c tokenizer: byte 0x${b.toString(16).padStart(2, '0')} needs fallback token ${fallback}, beyond the vocabulary of ${this.vocabSize}`, { field: 'pieces', hint: 'a vocabulary with the 256 <0xXX> byte tokens at ids 3..258' });
          }
          tokens.push(fallback);
        }
      }
      start = i + 1;
    }
  }

  /**
   * run.c's greedy merge loop (best-scoring adjacent pair, leftmost on ties),
   * done with a heap over a linked list so long texts stay O(n log n); it
   * makes exactly the merges of the quadratic loop, in the same order.
   */
  private merge(tokens: number[]): number[] {
    const n = tokens.length;
    const id = Int32Array.from(tokens);
    const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    const alive = new Uint8Array(n).fill(1);
    // A candidate: merge node `left` with its successor into `merged`; stale when either changed.
    const heap = new CandidateHeap();
    const consider = (left: number): void => {
      const right = next[left]!;
      if (right < 0) return;
      const merged = this.ids.get(this.keys[id[left]!]! + this.keys[id[right]!]!);
      if (merged !== undefined && this.scores[merged]! > MIN_MERGE_SCORE) heap.push({ score: this.scores[merged]!, left, leftId: id[left]!, rightId: id[right]!, merged });
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    for (let c = heap.pop(); c !== undefined; c = heap.pop()) {
      const right = next[c.left]!;
      if (!alive[c.left] || right < 0 || id[c.left] !== c.leftId || id[right] !== c.rightId) continue;
      id[c.left] = c.merged;
      alive[right] = 0;
      next[c.left] = next[right]!;
      if (next[right]! >= 0) prev[next[right]!] = c.left;
      if (prev[c.left]! >= 0) consider(prev[c.left]!);
      consider(c.left);
    }
    const out: number[] = [];
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]!) out.push(id[i]!);
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    const parts: Uint8Array[] = [];
    let previous = -1;
    for (let k = 0; k < ids.length; k++) {
      const token = ids[k]!;
      if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) {
        throw new QkdError('ARGUMENT', `llama2c tokenizer: token id ${token} at position ${k} is outside the vocabulary`, { field: 'ids', hint: `0..${this.vocabSize - 1}` });
      }
      if (token !== BOS_ID && token !== EOS_ID) {
        let piece = this.pieces[token]!;
        // After BOS, SentencePiece's decoder drops the dummy-prefix space.
        if (previous === BOS_ID && piece[0] === 0x20) piece = piece.subarray(1);
        const byte = this.byteOf[token]!;
        parts.push(byte >= 0 ? Uint8Array.of(byte) : piece);
      }
      previous = token;
    }
    return Buffer.concat(parts).toString('utf8');
  }

  /**
   * A minimal Hugging Face tokenizer.json for this vocabulary, for
   * interoperability: a BPE model with byte_fallback whose vocab is the
   * pieces (" " written back as "▁") and whose merges are every split of a
   * piece into two pieces, ranked by the merged piece's score; the normalizer
   * prepends "▁" and maps " " → "▁"; the decoder undoes it. Hugging Face
   * ranks merges where run.c compares scores, and always adds the prefix, so
   * ids agree for typical SentencePiece vocabularies but are not guaranteed
   * to match encode() on every input; encode() is the reference.
   */
  toTokenizerJson(): Record<string, unknown> {
    const names = this.pieces.map((p) => Buffer.from(p).toString('utf8').replaceAll(' ', '▁'));
    const vocab: Record<string, number> = {};
    names.forEach((name, i) => {
      if (!(name in vocab)) vocab[name] = i;
    });
    const merges: { merged: number; left: number; right: number }[] = [];
    names.forEach((name, merged) => {
      if (merged <= EOS_ID || this.byteOf[merged]! >= 0 || vocab[name] !== merged) return;
      const chars = [...name];
      for (let k = 1; k < chars.length; k++) {
        const left = vocab[chars.slice(0, k).join('')];
        const right = vocab[chars.slice(k).join('')];
        if (left !== undefined && right !== undefined) merges.push({ merged, left, right });
      }
    });
    merges.sort((a, b) => this.scores[b.merged]! - this.scores[a.merged]! || a.merged - b.merged || a.left - b.left);
    const special = (id: number) => ({ id, content: names[id]!, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [special(0), special(BOS_ID), special(EOS_ID)],
      normalizer: {
        type: 'Sequence',
        normalizers: [
          { type: 'Prepend', prepend: '▁' },
          { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
        ],
      },
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: 'Sequence',
        decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: names[0],
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        vocab,
        merges: merges.map((m) => `${names[m.left]} ${names[m.right]}`),
      },
    };
  }
}

interface Candidate {
  score: number;
  /** List node of the left token; its position orders ties (leftmost first). */
  left: number;
  leftId: number;
  rightId: number;
  merged: number;
}

/** Max-heap on score, then min on position. */
class CandidateHeap {
  private readonly items: Candidate[] = [];

  private before(a: Candidate, b: Candidate): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }

  push(c: Candidate): void {
    const items = this.items;
    items.push(c);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): Candidate | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && this.before(items[l]!, items[best]!)) best = l;
        if (r < items.length && this.before(items[r]!, items[best]!)) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best]!, items[i]!];
        i = best;
      }
    }
    return top;
  }
}

function tokenizerError(path: string, field: string, message: string, hint: string): QkdError {
  return new QkdError('IO', `invalid llama2.c tokenizer: ${message}`, { path, field, hint });
}

/** A tokenizer.bin's bytes, at least its int32 header. */
function readTokenizerBytes(path: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new QkdError('IO', `cannot read llama2.c tokenizer: ${(err as Error).message}`, { path });
  }
  if (bytes.length < 4) throw tokenizerError(path, 'max_token_length', `file is ${bytes.length} bytes, too short for the int32 max_token_length`, 'a tokenizer.bin');
  return bytes;
}

/**
 * The number of tokens in a tokenizer.bin, found by walking its entries to
 * the end of the file (the format does not store it; a model's header does).
 * Throws when the entries do not end exactly at the end of the file.
 */
export function llama2cTokenizerSize(path: string): number {
  const bytes = readTokenizerBytes(path);
  let offset = 4;
  let count = 0;
  while (offset + 8 <= bytes.length) {
    const length = bytes.readInt32LE(offset + 4);
    if (length < 0 || offset + 8 + length > bytes.length) break;
    offset += 8 + length;
    count++;
  }
  if (offset !== bytes.length) throw tokenizerError(path, `token ${count}`, `the entries do not end at the end of the file (${bytes.length - offset} bytes left)`, 'a complete tokenizer.bin');
  return count;
}

/** Reads tokenizer.bin for a model with `vocabSize` tokens. */
export function readLlama2cTokenizer(path: string, vocabSize: number): Llama2cTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize <= EOS_ID) {
    throw new QkdError('ARGUMENT', `readLlama2cTokenizer: vocabSize is ${vocabSize}`, { path, field: 'vocabSize', hint: 'an integer ≥ 3 (the model header’s vocab_size)' });
  }
  const bytes = readTokenizerBytes(path);
  const maxTokenLength = bytes.readInt32LE(0);
  if (maxTokenLength < 1) throw tokenizerError(path, 'max_token_length', `max_token_length is ${maxTokenLength}`, 'a positive int32');
  const pieces: Uint8Array[] = [];
  const scores = new Float32Array(vocabSize);
  let offset = 4;
  for (let i = 0; i < vocabSize; i++) {
    if (offset + 8 > bytes.length) {
      throw tokenizerError(path, `token ${i}`, `file ends after ${i} of ${vocabSize} tokens`, `${vocabSize} tokens (is vocabSize right?)`);
    }
    const score = bytes.readFloatLE(offset);
    const length = bytes.readInt32LE(offset + 4);
    if (Number.isNaN(score)) throw tokenizerError(path, `token ${i}.score`, 'score is NaN', 'a float32 score');
    if (length < 0 || length > maxTokenLength) throw tokenizerError(path, `token ${i}.length`, `piece length is ${length}`, `0..max_token_length (${maxTokenLength})`);
    if (offset + 8 + length > bytes.length) throw tokenizerError(path, `token ${i}.length`, `piece of ${length} bytes runs past the end of the file`, 'a complete file');
    scores[i] = score;
    pieces.push(Uint8Array.from(bytes.subarray(offset + 8, offset + 8 + length)));
    offset += 8 + length;
  }
  if (offset !== bytes.length) {
    throw tokenizerError(path, 'vocabSize', `${bytes.length - offset} bytes follow the ${vocabSize} tokens`, 'vocabSize equal to the number of tokens in the file');
  }
  return new Llama2cTokenizer(pieces, scores, maxTokenLength);
}

/**
 * Writes tokenizer.bin atomically. Pieces given as strings are UTF-8 encoded;
 * maxTokenLength defaults to the longest piece in bytes.
 */
export function writeLlama2cTokenizer(path: string, pieces: readonly (string | Uint8Array)[], scores: ArrayLike<number>, maxTokenLength?: number): void {
  if (pieces.length !== scores.length) {
    throw new QkdError('ARGUMENT', `writeLlama2cTokenizer: ${pieces.length} pieces but ${scores.length} scores`, { path, field: 'scores', hint: 'one score per piece' });
  }
  const encoded = pieces.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p)));
  const longest = encoded.reduce((m, p) => Math.max(m, p.length), 0);
  const maxLength = maxTokenLength ?? longest;
  if (!Number.isInteger(maxLength) || maxLength < Math.max(1, longest) || maxLength > 2 ** 31 - 1) {
    throw new QkdError('ARGUMENT', `writeLlama2cTokenizer: maxTokenLength ${maxLength} but the longest piece has ${longest} bytes`, { path, field: 'maxTokenLength', hint: `an int32 ≥ ${Math.max(1, longest)}` });
  }
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeInt32LE(maxLength, 0);
  parts.push(head);
  encoded.forEach((piece, i) => {
    const entry = Buffer.alloc(8);
    entry.writeFloatLE(scores[i]!, 0);
    entry.writeInt32LE(piece.length, 4);
    parts.push(entry, piece);
  });
  writeBytesAtomic(path, Buffer.concat(parts));
}
