/**
 * The corpus flags every command that reads text shares (--skip-bad-rows,
 * --text-column) and reading a corpus for a command: Parquet shards are
 * preloaded (asynchronous), skipped rows are reported on stderr.
 */
import { loadCorpusData, type CorpusOptions } from '../data/corpus.js';
import type { ChatCorpus } from '../data/chat.js';
import { preloadCorpus } from '../data/corpus-parquet.js';

export interface CorpusFlags {
  skipBadRows?: boolean;
  textColumn?: string;
}

/** `.option(...SKIP_BAD_ROWS)` and `.option(...TEXT_COLUMN)` on a command that reads --data. */
export const SKIP_BAD_ROWS = ['--skip-bad-rows', 'skip malformed JSON Lines / Parquet rows (counted on stderr) instead of stopping at the first'] as const;
export const TEXT_COLUMN = ['--text-column <name>', 'the text field of JSON Lines rows and column of Parquet files (default: text)'] as const;

export function corpusOptions(o: CorpusFlags): CorpusOptions {
  return { badRows: o.skipBadRows ? 'skip' : 'refuse', ...(o.textColumn !== undefined ? { column: o.textColumn } : {}), onSkip: (m) => process.stderr.write(`qkd: ${m}\n`) };
}

/** Makes `path` readable by loadCorpus (Parquet shards are read now). */
export async function prepareCorpus(path: string, o: CorpusFlags = {}): Promise<void> {
  if (path === 'default') return;
  const options = corpusOptions(o);
  await preloadCorpus(path, { ...(options.badRows ? { badRows: options.badRows } : {}), ...(options.column !== undefined ? { column: options.column } : {}) });
}

/** The text of a corpus for a command, or its conversations (JSON Lines chat rows). */
export async function readCorpus(path: string, o: CorpusFlags = {}): Promise<string | ChatCorpus> {
  await prepareCorpus(path, o);
  return loadCorpusData(path, corpusOptions(o));
}
