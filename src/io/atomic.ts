/**
 * Atomic file writes: data goes to a temporary file in the same directory,
 * is flushed to disk, and is renamed over the target only when complete. A
 * crash or error mid-write leaves the previous file untouched.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { QkdError } from '../errors.js';
import { removeOnSigint } from '../tensor/backend.js';

/** Calls write(fd) on a temporary file, then renames it to `path`. */
export function writeFileAtomic(path: string, write: (fd: number) => void): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  let fd: number | null = null;
  // A Ctrl-C that ends the process mid-write (the addon's handler) deletes the temporary file too.
  removeOnSigint(resolve(tmp));
  try {
    fd = openSync(tmp, 'w');
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== null) closeSync(fd);
    rmSync(tmp, { force: true });
    if (err instanceof QkdError) throw err;
    throw new QkdError('IO', `could not write ${path}: ${(err as Error).message}`, { path });
  } finally {
    removeOnSigint(null);
  }
}

/** Writes all of `bytes` at the current position of fd. */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** Atomically writes a text or byte file. */
export function writeBytesAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  writeFileAtomic(path, (fd) => writeAll(fd, bytes));
}
