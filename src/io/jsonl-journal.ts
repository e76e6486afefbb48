/**
 * The journal of a long job that produces JSON Lines rows one by one (qkd
 * synth: completions from a server, data-free sequences), so that Ctrl-C, a
 * crash or kill -9 loses no row and makes none twice (docs/synth.md).
 *
 * A job has rows with keys 0..total−1. Beside its output OUT:
 *   OUT.partial       every finished row, appended and fsynced before it
 *                     counts as done (in the order rows finish);
 *   OUT.partial.json  the job's settings. A journal of other settings is
 *                     refused, naming the first setting that differs (with
 *                     force: discarded, with a note).
 * On opening, the journal is read line by line keeping only each row's
 * offset and length: torn or unreadable lines after the last good row (a
 * write a kill cut short) are cut off; an unreadable line followed by good
 * rows is an error naming it; a key listed twice keeps its first copy. When
 * every row is done, finish() writes OUT atomically in key order, reading
 * the rows back from the journal, and removes both files.
 */
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { writeAll, writeBytesAtomic, writeFileAtomic } from './atomic.js';

export interface JournalOptions {
  /** What messages call the job (e.g. 'synth'). */
  label: string;
  /** The job's settings, compared key by key in this order. Never a secret. */
  settings: Record<string, unknown>;
  /** Rows of the whole job (keys 0..total−1). */
  total: number;
  /** A journal line's key, or null when it is not a row of this job. */
  keyOf: (row: Record<string, unknown>) => number | null;
  /** Discard a journal of other settings, and replace an existing OUT. */
  force?: boolean;
  onNote?: (note: string) => void;
  /** Told each row found in the journal when it opens (first copies only). */
  onResumedRow?: (key: number, row: Record<string, unknown>) => void;
}

export interface JsonlJournal {
  /** OUT.partial. */
  readonly path: string;
  /** Rows done, this run's included. */
  readonly count: number;
  /** Rows that were done when the journal opened. */
  readonly resumed: number;
  has(key: number): boolean;
  /** Appends a finished row; durable when this returns. A key already done is ignored. */
  append(key: number, row: unknown): void;
  /** Every row done: writes OUT in key order and removes the journal files. */
  finish(): void;
  /** Closes the journal; one that holds no row is removed with its settings. */
  close(): void;
}

const show = (v: unknown): string => (typeof v === 'string' && v.length === 64 && /^[0-9a-f]+$/.test(v) ? `sha256 ${v.slice(0, 12)}…` : JSON.stringify(v) ?? 'none');

interface Index {
  offsets: Float64Array;
  lengths: Uint32Array;
  done: Uint8Array;
  count: number;
  /** Bytes of complete, good lines (the file is cut here). */
  end: number;
  duplicates: number;
  torn: number;
}

const isSet = (bits: Uint8Array, k: number): boolean => (bits[k >> 3]! & (1 << (k & 7))) !== 0;

function emptyIndex(total: number): Index {
  return { offsets: new Float64Array(total), lengths: new Uint32Array(total), done: new Uint8Array(Math.ceil(total / 8)), count: 0, end: 0, duplicates: 0, torn: 0 };
}

/** Reads the journal's rows (offsets only), cutting a torn tail. */
function readIndex(path: string, o: JournalOptions): Index {
  const ix = emptyIndex(o.total);
  const fd = openSync(path, 'r+');
  try {
    const size = fstatSync(fd).size;
    const chunk = Buffer.alloc(1 << 22);
    let pending = Buffer.alloc(0);
    let pendingAt = 0;
    let pos = 0;
    let lineNo = 0;
    let badLine = 0;
    const line = (bytes: Buffer, at: number): void => {
      lineNo++;
      if (bytes.length === 0 || (bytes.length === 1 && bytes[0] === 13)) return;
      let key: number | null = null;
      let row: Record<string, unknown> | null = null;
      try {
        const r = JSON.parse(bytes.toString('utf8')) as unknown;
        if (typeof r === 'object' && r !== null && !Array.isArray(r)) row = r as Record<string, unknown>;
      } catch {
        row = null;
      }
      if (row !== null) key = o.keyOf(row);
      if (key === null || !Number.isInteger(key) || key < 0 || key >= o.total) {
        if (badLine === 0) badLine = lineNo;
        return;
      }
      if (badLine !== 0) {
        throw new QkdError('IO', `${o.label}: line ${badLine} of the journal is not a row of this job`, { path: `${path}:${badLine}`, field: 'journal', hint: `a journal this job wrote; --force discards it` });
      }
      ix.end = at + bytes.length + 1;
      if (isSet(ix.done, key)) {
        ix.duplicates++;
        return;
      }
      ix.done[key >> 3]! |= 1 << (key & 7);
      ix.offsets[key] = at;
      ix.lengths[key] = bytes.length + 1;
      ix.count++;
      o.onResumedRow?.(key, row!);
    };
    while (pos < size) {
      const got = readSync(fd, chunk, 0, Math.min(chunk.length, size - pos), pos);
      if (got === 0) break;
      pos += got;
      const buf = pending.length > 0 ? Buffer.concat([pending, chunk.subarray(0, got)]) : chunk.subarray(0, got);
      let start = 0;
      for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
        line(buf.subarray(start, nl), pendingAt + start);
        start = nl + 1;
      }
      pending = Buffer.from(buf.subarray(start));
      pendingAt += start;
    }
    // Blank lines after the last row are kept; torn or unreadable ones are cut.
    if (badLine === 0 && pending.length === 0) ix.end = size;
    ix.torn = size - ix.end;
    if (ix.torn > 0) {
      ftruncateSync(fd, ix.end);
      fsyncSync(fd);
    }
  } finally {
    closeSync(fd);
  }
  return ix;
}

function readSettings(path: string): Record<string, unknown> | null {
  try {
    const s = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return typeof s === 'object' && s !== null && !Array.isArray(s) ? (s as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function openJournal(out: string, o: JournalOptions): JsonlJournal {
  const path = `${out}.partial`;
  const settingsPath = `${out}.partial.json`;
  const note = (s: string): void => o.onNote?.(`${o.label}: ${s}`);
  let index: Index | null = null;
  const haveJournal = existsSync(path);
  if (haveJournal || existsSync(settingsPath)) {
    const saved = readSettings(settingsPath);
    const field = saved === null ? 'settings' : Object.keys(o.settings).find((k) => JSON.stringify(saved[k]) !== JSON.stringify(o.settings[k]));
    if (!haveJournal || statSync(path).size === 0) {
      // Settings without a journal, or an empty one: nothing was done; start afresh.
      rmSync(path, { force: true });
      rmSync(settingsPath, { force: true });
    } else if (field !== undefined) {
      const why = saved === null ? `${settingsPath} is missing or unreadable` : `the partial job beside ${out} was made with another ${field} (${show(saved[field])} there, ${show(o.settings[field])} now)`;
      if (o.force !== true) {
        throw new QkdError('CONFIG', `${o.label}: ${why}; its rows would not belong to this job`, { path: settingsPath, field, hint: 'the same settings to continue it, or --force to discard it (or another --out)' });
      }
      note(`discarding a partial job (${why})`);
      rmSync(path, { force: true });
      rmSync(settingsPath, { force: true });
    } else {
      index = readIndex(path, o);
      if (index.torn > 0) note(`cut a torn last line (${index.torn} bytes) from ${path}; its row is made again`);
      if (index.duplicates > 0) note(`${index.duplicates} rows listed twice in ${path}; the first copy of each is kept`);
    }
  }
  if (existsSync(out)) {
    const finishing = index !== null && index.count === o.total;
    if (o.force !== true && !finishing) throw new QkdError('IO', `${o.label}: the output file already exists`, { path: out, field: '--out', hint: 'another --out, or --force to replace it' });
    note(finishing ? `the journal holds every row; rewriting ${out} from it` : `${out} exists and will be replaced when the job completes (--force)`);
  }
  if (index === null) {
    writeBytesAtomic(settingsPath, `${JSON.stringify(o.settings, null, 2)}\n`);
    closeSync(openSync(path, 'w'));
    index = emptyIndex(o.total);
  }
  const ix = index;
  const resumed = ix.count;
  let fd: number | null = openSync(path, 'a');
  const close = (): void => {
    if (fd !== null) closeSync(fd);
    fd = null;
  };
  return {
    path,
    get count() {
      return ix.count;
    },
    resumed,
    has: (k) => isSet(ix.done, k),
    append(k, row) {
      if (isSet(ix.done, k)) return;
      if (fd === null) throw new QkdError('STATE', `${o.label}: the journal is closed`, { path });
      const line = Buffer.from(`${JSON.stringify(row)}\n`, 'utf8');
      try {
        writeAll(fd, line);
        fsyncSync(fd);
      } catch (err) {
        throw new QkdError('IO', `${o.label}: could not append to the journal: ${(err as Error).message}`, { path, hint: 'a writable disk with free space; the same command continues' });
      }
      ix.offsets[k] = ix.end;
      ix.lengths[k] = line.length;
      ix.end += line.length;
      ix.done[k >> 3]! |= 1 << (k & 7);
      ix.count++;
    },
    finish() {
      close();
      if (ix.count < o.total) throw new QkdError('STATE', `${o.label}: ${ix.count} of ${o.total} rows done; the output is written when all are`, { path });
      const rfd = openSync(path, 'r');
      try {
        writeFileAtomic(out, (w) => {
          const buf = Buffer.alloc(1 << 20);
          let used = 0;
          for (let k = 0; k < o.total; k++) {
            const len = ix.lengths[k]!;
            if (used + len > buf.length) {
              writeAll(w, buf.subarray(0, used));
              used = 0;
            }
            const target = len > buf.length ? Buffer.alloc(len) : buf.subarray(used, used + len);
            for (let got = 0; got < len; ) {
              const r = readSync(rfd, target, got, len - got, ix.offsets[k]! + got);
              if (r === 0) throw new QkdError('IO', `${o.label}: the journal is shorter than its rows (was it changed while the job ran?)`, { path, hint: 'run the same command again' });
              got += r;
            }
            if (len > buf.length) writeAll(w, target);
            else used += len;
          }
          writeAll(w, buf.subarray(0, used));
        });
      } finally {
        closeSync(rfd);
      }
      rmSync(path, { force: true });
      rmSync(settingsPath, { force: true });
    },
    close() {
      close();
      // Nothing done at all: no journal to keep.
      if (ix.count === 0 && existsSync(path)) {
        rmSync(path, { force: true });
        rmSync(settingsPath, { force: true });
      }
    },
  };
}
