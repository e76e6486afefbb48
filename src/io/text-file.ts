/**
 * Text files as UTF-8, strictly: a file that is not valid UTF-8 (Latin-1
 * text, a binary file) is refused naming the byte where it stops being
 * UTF-8, instead of being read with U+FFFD in place of the bad bytes (which
 * a tokenizer then counts and a model is scored on). A NUL byte marks a
 * binary file. A leading byte-order mark is kept (the callers that parse
 * lines drop it).
 */
import { readFileSync } from 'node:fs';
import { QkdError } from '../errors.js';

/** The bytes of a text file as a string; `what` names the file's role in errors ("text file", "prompts file"). */
export function decodeUtf8Text(bytes: Uint8Array, path: string, options: { field?: string; what?: string } = {}): string {
  const what = options.what ?? 'text file';
  const nul = bytes.indexOf(0);
  if (nul >= 0) throw new QkdError('IO', `${what} is not UTF-8 text: it holds a NUL byte at byte ${nul} (binary data?)`, { path, field: options.field, hint: 'a UTF-8 text file' });
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (err) {
    const at = firstInvalidUtf8(bytes);
    if (at === bytes.length) {
      // Valid UTF-8, but more than one JavaScript string holds (about 512 MiB).
      throw new QkdError('IO', `${what} is too large to read as one text (${bytes.length} bytes: ${(err as Error).message})`, { path, field: options.field, hint: 'a directory of smaller files (qkd reads them in order), or JSON Lines' });
    }
    const line = lineOf(bytes, at);
    throw new QkdError('IO', `${what} is not UTF-8 text: line ${line}, byte ${at} (0x${bytes[at]?.toString(16).padStart(2, '0') ?? '??'}) ${at >= bytes.length - 3 && truncatedAt(bytes, at) ? 'starts a character the file cuts short' : 'is not part of a UTF-8 character'} (Latin-1 or binary data?)`, { path, field: options.field, hint: 'a UTF-8 text file (iconv -f latin1 -t utf-8 converts Latin-1)' });
  }
}

/** readFileSync plus decodeUtf8Text, with a read error named as such. */
export function readUtf8Text(path: string, options: { field?: string; what?: string } = {}): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new QkdError('IO', `cannot read ${options.what ?? 'text file'}: ${(err as Error).message}`, { path, field: options.field });
  }
  return decodeUtf8Text(bytes, path, options);
}

/** The 1-based line of byte `at`. */
function lineOf(b: Uint8Array, at: number): number {
  let line = 1;
  for (let i = b.indexOf(0x0a); i >= 0 && i < at; i = b.indexOf(0x0a, i + 1)) line++;
  return line;
}

/** Whether the sequence starting at `at` is a valid lead byte whose continuation bytes the file ends before. */
function truncatedAt(b: Uint8Array, at: number): boolean {
  const need = sequenceLength(b[at]!);
  if (need <= 1 || at + need <= b.length) return false;
  for (let i = at + 1; i < b.length; i++) if ((b[i]! & 0xc0) !== 0x80) return false;
  return true;
}

/** Bytes of the UTF-8 sequence a lead byte starts (0: not a lead byte). */
function sequenceLength(c: number): number {
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return 2;
  if (c >= 0xe0 && c <= 0xef) return 3;
  if (c >= 0xf0 && c <= 0xf4) return 4;
  return 0;
}

/** Index of the first byte that is not part of a valid UTF-8 sequence (RFC 3629: no overlongs, surrogates or values past U+10FFFF). */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    const need = sequenceLength(c);
    if (need === 0) return i;
    if (need === 1) {
      i++;
      continue;
    }
    if (i + need > b.length) return i;
    const c1 = b[i + 1]!;
    // The second byte's range depends on the lead byte (overlongs, surrogates, > U+10FFFF).
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    if (c1 < lo || c1 > hi) return i;
    for (let k = 2; k < need; k++) if ((b[i + k]! & 0xc0) !== 0x80) return i;
    i += need;
  }
  return b.length;
}
