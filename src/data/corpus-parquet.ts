/**
 * Parquet shards as corpora (datasets are published that way): the string
 * column `text` of each row (or another column, by name), or, in a file
 * without that column, chat rows in a `messages` column (a list of
 * {role, content} structs, as Hugging Face datasets store conversations, or
 * a JSON string of that list), read with hyparquet. Reading is asynchronous, so a corpus that holds Parquet files
 * is read once by preloadCorpus (every command does it before it starts)
 * and then served to the synchronous loadCorpus from memory.
 *
 * Codecs: uncompressed, Snappy (hyparquet's own), GZIP and Brotli (Node's
 * zlib); others (ZSTD, LZ4) are refused naming the file and the codec.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { parquetMetadata, parquetReadObjects, parquetSchema } from 'hyparquet';
import { QkdError } from '../errors.js';
import { parseChatRow, type Conversation } from './chat.js';

/** What to do with a row whose text is missing or not a string: stop with an error naming it, or skip it (counted). */
export type BadRows = 'refuse' | 'skip';

export interface ParquetTexts {
  texts: string[];
  /** Chat rows (a file read through its `messages` column); then `texts` is empty. */
  conversations?: Conversation[];
  /** Rows skipped as malformed (BadRows 'skip'), with the first one's description. */
  skipped: number;
  firstSkipped?: string;
}

const loaded = new Map<string, ParquetTexts>();

const COMPRESSORS = {
  GZIP: (input: Uint8Array) => new Uint8Array(gunzipSync(input)),
  BROTLI: (input: Uint8Array) => new Uint8Array(brotliDecompressSync(input)),
};

function isParquet(path: string): boolean {
  return /\.parquet$/i.test(path);
}

/** The Parquet files of a corpus source (a file, or a directory searched recursively), sorted. */
export function parquetFilesOf(source: string): string[] {
  let stat;
  try {
    stat = statSync(source);
  } catch {
    return [];
  }
  if (stat.isFile()) return isParquet(source) ? [source] : [];
  return (readdirSync(source, { recursive: true }) as string[]).filter(isParquet).sort().map((f) => join(source, f));
}

/** Reads the text column of one Parquet file. */
export async function readParquetTexts(path: string, options: { column?: string; badRows?: BadRows } = {}): Promise<ParquetTexts> {
  const column = options.column ?? 'text';
  let buffer: ArrayBuffer;
  try {
    const bytes = readFileSync(path);
    buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  } catch (err) {
    throw new QkdError('IO', `cannot read Parquet file: ${(err as Error).message}`, { path });
  }
  let metadata;
  try {
    metadata = parquetMetadata(buffer);
  } catch (err) {
    throw new QkdError('IO', `not a Parquet file: ${(err as Error).message}`, { path, hint: 'a .parquet shard (PAR1 magic at both ends)' });
  }
  const names = parquetSchema(metadata).children.map((c) => c.element.name);
  // Chat rows: a file without the asked-for text column that has `messages`.
  const chat = !names.includes(column) && options.column === undefined && names.includes('messages');
  const read = chat ? 'messages' : column;
  if (!names.includes(read)) {
    throw new QkdError('IO', `the Parquet file has no "${column}" column`, { path, field: column, hint: `a string column (or chat rows in a "messages" column); the file has ${names.join(', ')}` });
  }
  for (const rg of metadata.row_groups) {
    for (const chunk of rg.columns) {
      const codec = chunk.meta_data?.codec;
      if (codec !== undefined && !['UNCOMPRESSED', 'SNAPPY', 'GZIP', 'BROTLI'].includes(codec)) {
        throw new QkdError('IO', `the Parquet file is compressed with ${codec}, which qkd does not decompress`, { path, field: chunk.meta_data?.path_in_schema.join('.'), hint: 'UNCOMPRESSED, SNAPPY, GZIP or BROTLI (re-save the shard with one of them)' });
      }
    }
  }
  let rows: Record<string, unknown>[];
  try {
    rows = (await parquetReadObjects({ file: buffer, metadata, columns: [read], compressors: COMPRESSORS })) as Record<string, unknown>[];
  } catch (err) {
    throw new QkdError('IO', `cannot decode the Parquet file: ${(err as Error).message}`, { path, field: read });
  }
  return chat ? chatRows(path, rows, options.badRows) : textRows(path, rows, column, options.badRows);
}

function textRows(path: string, rows: Record<string, unknown>[], column: string, badRows: BadRows | undefined): ParquetTexts {
  const out: ParquetTexts = { texts: [], skipped: 0 };
  rows.forEach((row, i) => {
    const v = row[column];
    if (typeof v === 'string') {
      out.texts.push(v);
      return;
    }
    const what = `row ${i} has ${v === null || v === undefined ? 'no value' : `a ${typeof v}`} in "${column}"`;
    if (badRows !== 'skip') throw new QkdError('IO', what, { path, field: `row ${i}`, hint: `a string in every row, or skip malformed rows (--skip-bad-rows)` });
    out.skipped++;
    out.firstSkipped ??= `${path}: ${what}`;
  });
  if (out.texts.length === 0) throw new QkdError('IO', `the Parquet file has no text rows`, { path, field: column });
  return out;
}

/** Conversations of a `messages` column: a list of {role, content} structs per row, or its JSON text. */
function chatRows(path: string, rows: Record<string, unknown>[], badRows: BadRows | undefined): ParquetTexts {
  const out: ParquetTexts = { texts: [], conversations: [], skipped: 0 };
  rows.forEach((row, i) => {
    let messages = row.messages;
    let problem: string | null = null;
    if (typeof messages === 'string') {
      try {
        messages = JSON.parse(messages);
      } catch (err) {
        problem = `"messages" is a string that is not JSON: ${(err as Error).message}`;
      }
    }
    const conversation = problem ?? parseChatRow({ messages });
    if (typeof conversation !== 'string') {
      out.conversations!.push(conversation);
      return;
    }
    const what = `row ${i}: ${conversation}`;
    if (badRows !== 'skip') throw new QkdError('IO', what, { path, field: `row ${i}`, hint: 'a list of {role, content} with at least one assistant message in every row, or skip malformed rows (--skip-bad-rows)' });
    out.skipped++;
    out.firstSkipped ??= `${path}: ${what}`;
  });
  if (out.conversations!.length === 0) throw new QkdError('IO', 'the Parquet file has no usable chat rows', { path, field: 'messages' });
  return out;
}

/**
 * Reads every Parquet file of a corpus source into memory, so that
 * loadCorpus(source) can serve it. Sources without Parquet files need no
 * preloading (this returns at once).
 */
export async function preloadCorpus(source: string, options: { column?: string; badRows?: BadRows } = {}): Promise<void> {
  for (const file of parquetFilesOf(source)) {
    const key = resolve(file);
    if (!loaded.has(key)) loaded.set(key, await readParquetTexts(file, options));
  }
}

/** The preloaded texts of a Parquet file; a file not preloaded is an error that says how to load it. */
export function preloadedParquet(path: string): ParquetTexts {
  const texts = loaded.get(resolve(path));
  if (texts === undefined) throw new QkdError('STATE', 'a Parquet corpus is read asynchronously and was not preloaded', { path, hint: 'await preloadCorpus(path) before loadCorpus (the qkd commands do)' });
  return texts;
}
