/**
 * A resumable job that produces JSON Lines rows one by one (data generation:
 * distill/synth-local.ts), surviving kill -9 with no row lost or made twice.
 *
 * Beside the output OUT:
 *   OUT.partial       the journal: one finished row per line, each appended
 *                     and fsynced before it counts as done;
 *   OUT.partial.json  the job's settings; a journal of other settings is
 *                     refused (or, with force, discarded).
 * On open, a torn last line (a crash mid-append) is cut off and rows are
 * keyed by `key`, the first copy of a key kept. finish() writes OUT
 * atomically with the rows in key order and removes the journal.
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from './atomic.js';

export interface JsonlJournal<R> {
  /** Rows already done (from an earlier run of the job), by key. */
  readonly done: ReadonlyMap<number, R>;
  /** Appends a finished row (durable when this returns). */
  append(row: R): void;
  /** Writes OUT (rows in key order) atomically and removes the journal files. */
  finish(): number;
  close(): void;
}

export interface JournalOptions<R> {
  /** The job's settings: a journal made with other settings is not resumed. */
  settings: Record<string, unknown>;
  /** A row's key (rows are unique by key; OUT is ordered by it). */
  key: (row: R) => number;
  /** Discard a journal of other settings, and replace an existing OUT. */
  force?: boolean;
  onNote?: (note: string) => void;
}

export function openJournal<R>(out: string, o: JournalOptions<R>): JsonlJournal<R> {
  const partial = `${out}.partial`;
  const meta = `${out}.partial.json`;
  const settings = JSON.stringify(o.settings);
  if (existsSync(out) && !existsSync(partial) && o.force !== true) {
    throw new QkdError('IO', `${out} exists; refusing to overwrite it`, { path: out, field: '--out', hint: 'another --out, or --force to replace it' });
  }
  const done = new Map<number, R>();
  if (existsSync(partial) && existsSync(meta)) {
    let saved: Record<string, unknown> = {};
    try {
      saved = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, unknown>;
    } catch {
      saved = {};
    }
    const differing = Object.keys({ ...saved, ...o.settings }).find((k) => JSON.stringify(saved[k]) !== JSON.stringify(o.settings[k]));
    if (differing !== undefined) {
      if (o.force !== true) {
        throw new QkdError('CONFIG', `an unfinished job with other settings is in ${partial} (${differing}: ${JSON.stringify(saved[differing])}, now ${JSON.stringify(o.settings[differing])})`, { path: meta, field: differing, hint: 'the same settings to continue it, or --force to discard it' });
      }
      o.onNote?.(`discarding the unfinished job in ${partial} (other settings: ${differing})`);
      rmSync(partial, { force: true });
    } else {
      const text = readFileSync(partial, 'utf8');
      // A crash mid-append leaves a torn last line: cut the file back to the last complete one.
      const complete = text.lastIndexOf('\n') + 1;
      if (complete < Buffer.byteLength(text)) {
        const fd = openSync(partial, 'r+');
        try {
          ftruncateSync(fd, Buffer.byteLength(text.slice(0, complete)));
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
      for (const line of text.slice(0, complete).split('\n')) {
        if (line === '') continue;
        const row = JSON.parse(line) as R;
        const k = o.key(row);
        if (!done.has(k)) done.set(k, row);
      }
      if (done.size > 0) o.onNote?.(`resuming: ${done.size} rows already in ${partial}`);
    }
  } else if (existsSync(partial)) rmSync(partial, { force: true });
  writeBytesAtomic(meta, settings + '\n');
  const fd = openSync(partial, 'a');
  const rows = new Map(done);
  let open = true;
  return {
    done,
    append(row: R) {
      const k = o.key(row);
      if (rows.has(k)) return;
      writeSync(fd, JSON.stringify(row) + '\n');
      fsyncSync(fd);
      rows.set(k, row);
    },
    finish() {
      this.close();
      const keys = [...rows.keys()].sort((a, b) => a - b);
      writeBytesAtomic(out, keys.map((k) => JSON.stringify(rows.get(k)) + '\n').join(''));
      rmSync(partial, { force: true });
      rmSync(meta, { force: true });
      return keys.length;
    },
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
