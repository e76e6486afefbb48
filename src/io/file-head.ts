/** The first bytes of a file, for telling formats apart by content rather than by name. */
import { closeSync, openSync, readSync } from 'node:fs';
import { QkdError } from '../errors.js';

/** Up to the first `n` bytes of the file at `path`; `what` names the file's role in the error. */
export function readFileHead(path: string, n: number, what = 'file'): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new QkdError('IO', `cannot open ${what}: ${(err as Error).message}`, { path });
  }
  try {
    const b = Buffer.alloc(n);
    return b.subarray(0, readSync(fd, b, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}
