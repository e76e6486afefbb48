// Text files are read as strict UTF-8: the first byte that is not UTF-8 is
// named, so Latin-1 text is refused instead of read with U+FFFD in it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeUtf8Text, firstInvalidUtf8 } from '../../src/io/text-file.js';

const bytes = (...parts: (string | number[])[]): Uint8Array => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

describe('strict UTF-8 text', () => {
  it('decodes valid text as it is (multi-byte characters and a byte-order mark kept)', () => {
    const text = '\uFEFFcafé ½ 日本 🙂\n';
    assert.equal(decodeUtf8Text(Buffer.from(text, 'utf8'), 'x.txt'), text);
    assert.equal(firstInvalidUtf8(Buffer.from(text, 'utf8')), Buffer.byteLength(text));
  });

  it('names the first byte that is not UTF-8: Latin-1, a cut-short character, overlongs, surrogates, past U+10FFFF', () => {
    assert.equal(firstInvalidUtf8(bytes('caf', [0xe9], ' crème')), 3);
    assert.equal(firstInvalidUtf8(bytes('ok ', [0xe6, 0x97])), 3, 'a 3-byte character the file cuts short');
    assert.equal(firstInvalidUtf8(bytes('a', [0xc0, 0x80])), 1, 'an overlong NUL');
    assert.equal(firstInvalidUtf8(bytes('ab', [0xe0, 0x80, 0x80])), 2, 'an overlong 3-byte form');
    assert.equal(firstInvalidUtf8(bytes([0xed, 0xa0, 0x80])), 0, 'a UTF-16 surrogate');
    assert.equal(firstInvalidUtf8(bytes([0xf4, 0x90, 0x80, 0x80])), 0, 'past U+10FFFF');
    assert.equal(firstInvalidUtf8(bytes('x', [0x80])), 1, 'a lone continuation byte');
    assert.throws(() => decodeUtf8Text(bytes('Café '.repeat(20000), 'caf', [0xe9], ' end'), 'latin1.txt', { field: '--file' }), (e: Error & { path?: string; field?: string }) => /not UTF-8 text: line 1, byte 120003 \(0xe9\) is not part of a UTF-8 character/.test(e.message) && e.path === 'latin1.txt' && e.field === '--file');
    assert.throws(() => decodeUtf8Text(bytes('one\ntwo\nok ', [0xe6, 0x97]), 'cut.txt'), /line 3, byte 11 \(0xe6\) starts a character the file cuts short/);
    assert.throws(() => decodeUtf8Text(bytes('text', [0], 'more'), 'bin.txt'), /NUL byte at byte 4/);
  });
});
