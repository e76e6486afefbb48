import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Llama2cTokenizer, readLlama2cTokenizer, writeLlama2cTokenizer } from '../../src/data/llama2c-tokenizer.js';
import { Rng } from '../../src/tensor/random.js';
import { QkdError } from '../../src/errors.js';

// A small SentencePiece-style vocabulary: the 3 specials, the 256 byte
// tokens at ids 3..258, then a few pieces (single characters score −100, so
// only the merged pieces' scores decide merges).
const PIECES: [string, number][] = [
  ['<unk>', 0],
  ['\n<s>\n', 0],
  ['\n</s>\n', 0],
  ...Array.from({ length: 256 }, (_, b): [string, number] => [`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0]),
  [' ', -100], // 259
  ['h', -100], // 260
  ['e', -100], // 261
  ['l', -100], // 262
  ['o', -100], // 263
  ['w', -100], // 264
  ['r', -100], // 265
  ['d', -100], // 266
  ['é', -100], // 267
  ['he', -1], // 268
  ['ll', -2], // 269
  ['lo', -2.5], // 270
  ['hell', -3], // 271
  ['hello', -4], // 272
  [' hello', -5], // 273
  ['or', -0.5], // 274
  ['wor', -6], // 275
  ['ld', -7], // 276
  ['world', -8], // 277
  [' world', -9], // 278
  ['rl', -2e10], // 279: at or below run.c's −1e10 floor, so never merged
];
const SP = 259;
const H = 260;
const L = 262;
const R = 265;
const E_ACUTE = 267;
const HE = 268;
const LL = 269;
const LO = 270;
const HELLO_ = 273; // " hello"
const WORLD_ = 278; // " world"

/** tokenizer.bin by hand: int32 max_token_length, then per token float32 score, int32 length, bytes. */
function tokenizerBytes(pieces: [string, number][], maxTokenLength: number): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4);
  head.writeInt32LE(maxTokenLength);
  parts.push(head);
  for (const [piece, score] of pieces) {
    const bytes = Buffer.from(piece, 'utf8');
    const entry = Buffer.alloc(8);
    entry.writeFloatLE(score, 0);
    entry.writeInt32LE(bytes.length, 4);
    parts.push(entry, bytes);
  }
  return Buffer.concat(parts);
}

function tmpFile(bytes: Uint8Array): string {
  const path = join(mkdtempSync(join(tmpdir(), 'qkd-tok-')), 'tokenizer.bin');
  writeFileSync(path, bytes);
  return path;
}

const FILE = tokenizerBytes(PIECES, 6);
const tokenizer = readLlama2cTokenizer(tmpFile(FILE), PIECES.length);

/** run.c's encode, literally: code points, byte fallback, then the quadratic best-pair loop. */
function runcEncode(text: string, bos: boolean): number[] {
  const lookup = (s: Buffer) => PIECES.findIndex(([p]) => Buffer.from(p, 'utf8').equals(s));
  const tokens: number[] = bos ? [1] : [];
  if (text.length > 0) tokens.push(lookup(Buffer.from(' ')));
  for (const ch of text) {
    const bytes = Buffer.from(ch, 'utf8');
    const id = lookup(bytes);
    if (id >= 0) tokens.push(id);
    else for (const b of bytes) tokens.push(b + 3);
  }
  for (;;) {
    let best = Math.fround(-1e10);
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = lookup(Buffer.concat([Buffer.from(PIECES[tokens[i]!]![0]), Buffer.from(PIECES[tokens[i + 1]!]![0])]));
      if (id >= 0 && Math.fround(PIECES[id]![1]) > best) {
        best = Math.fround(PIECES[id]![1]);
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx < 0) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

describe('llama2.c tokenizer', () => {
  it('reads a hand-built tokenizer.bin, and the writer reproduces it byte for byte', () => {
    assert.equal(tokenizer.kind, 'llama2c');
    assert.equal(tokenizer.vocabSize, 280);
    assert.equal(tokenizer.maxTokenLength, 6);
    assert.equal(tokenizer.bosId, 1);
    assert.equal(tokenizer.eosId, 2);
    assert.equal(Buffer.from(tokenizer.pieces[WORLD_]!).toString(), ' world');
    assert.equal(tokenizer.scores[LO], -2.5);
    assert.equal(tokenizer.pieceId('<0x41>'), 0x41 + 3);
    const path = join(mkdtempSync(join(tmpdir(), 'qkd-tok-')), 'out.bin');
    writeLlama2cTokenizer(path, PIECES.map(([p]) => p), PIECES.map(([, s]) => s));
    assert.ok(readFileSync(path).equals(FILE));
  });

  it('encodes as run.c: dummy prefix, greedy best-score merges, leftmost on ties', () => {
    // Worked by hand (see the scores above):
    // "hello": he → ll → hell → hello → " hello"
    assert.deepEqual([...tokenizer.encode('hello', { bos: true })], [1, HELLO_]);
    // "world": or → wor → ld → world → " world" ("rl" is below the score floor)
    assert.deepEqual([...tokenizer.encode('world')], [WORLD_]);
    assert.deepEqual([...tokenizer.encode('hello world', { bos: true, eos: true })], [1, HELLO_, WORLD_, 2]);
    // "lo" merges; "rl" never does
    assert.deepEqual([...tokenizer.encode('lo')], [SP, LO]);
    assert.deepEqual([...tokenizer.encode('rl')], [SP, R, L]);
    // Two "ll" candidates with equal scores: the leftmost merges
    assert.deepEqual([...tokenizer.encode('lll')], [SP, LL, L]);
    // "hel": he (−1) beats ll, and "hel" is no piece; "helo": he, then lo
    assert.deepEqual([...tokenizer.encode('helo')], [SP, HE, LO]);
    // empty text: no dummy prefix
    assert.deepEqual([...tokenizer.encode('')], []);
    assert.deepEqual([...tokenizer.encode('', { bos: true, eos: true })], [1, 2]);
  });

  it('falls back to byte tokens (id byte + 3) for code points not in the vocabulary', () => {
    // é is a piece; € (E2 82 AC), ! (21) and \n (0A) are not
    assert.deepEqual([...tokenizer.encode('hé€!')], [SP, H, E_ACUTE, 0xe2 + 3, 0x82 + 3, 0xac + 3, 0x21 + 3]);
    assert.deepEqual([...tokenizer.encode('he\n')], [SP, HE, 0x0a + 3]);
    assert.deepEqual([...tokenizer.encode('🙂')], [SP, 0xf0 + 3, 0x9f + 3, 0x99 + 3, 0x82 + 3]);
  });

  it('matches a literal transcription of run.c on random strings', () => {
    const rng = new Rng(11);
    const alphabet = [...'helowrd lé€\n!'];
    for (let trial = 0; trial < 300; trial++) {
      const text = Array.from({ length: Math.floor(rng.uniform() * 30) }, () => alphabet[Math.floor(rng.uniform() * alphabet.length)]).join('');
      const bos = trial % 2 === 0;
      assert.deepEqual([...tokenizer.encode(text, { bos })], runcEncode(text, bos), JSON.stringify(text));
    }
  });

  it("decodes as run.c: the space after BOS is dropped, <0xXX> pieces are raw bytes", () => {
    assert.equal(tokenizer.decode([1, HELLO_]), 'hello');
    assert.equal(tokenizer.decode([HELLO_]), ' hello');
    assert.equal(tokenizer.decode([1, HELLO_, WORLD_, 2]), 'hello world');
    assert.equal(tokenizer.decode([1, 0x21 + 3]), '!');
    assert.equal(tokenizer.decode([0xe2 + 3, 0x82 + 3, 0xac + 3]), '€');
    assert.equal(tokenizer.decode([0xe2 + 3]), '\uFFFD');
    assert.equal(tokenizer.decode([0]), '<unk>');
    for (const text of ['hello world', 'hé€!', 'a\nb 🙂', '  two  spaces ', 'lll rl', 'x']) {
      assert.equal(tokenizer.decode(tokenizer.encode(text, { bos: true, eos: true })), text);
    }
    assert.throws(() => tokenizer.decode([280]), (e: unknown) => e instanceof QkdError && e.field === 'ids');
    assert.throws(() => tokenizer.decode([-1]), (e: unknown) => e instanceof QkdError && e.field === 'ids');
  });

  it('describes itself as a Hugging Face BPE with byte fallback', () => {
    const json = tokenizer.toTokenizerJson() as { model: { vocab: Record<string, number>; merges: string[]; byte_fallback: boolean; type: string } };
    assert.equal(json.model.type, 'BPE');
    assert.equal(json.model.byte_fallback, true);
    assert.equal(json.model.vocab['▁hello'], HELLO_);
    assert.equal(json.model.vocab['<0x0A>'], 0x0a + 3);
    assert.equal(json.model.merges[0], 'o r', 'highest-scoring merge first');
    for (const m of ['h e', 'he ll', 'hell o', '▁ hello', 'w or', 'wor ld', '▁ world']) assert.ok(json.model.merges.includes(m), m);
    assert.ok(json.model.merges.indexOf('he ll') < json.model.merges.indexOf('▁ hello'));
  });

  it('refuses malformed files, naming the field', () => {
    const check = (bytes: Buffer, vocabSize: number, field: string) => {
      const path = tmpFile(bytes);
      assert.throws(
        () => readLlama2cTokenizer(path, vocabSize),
        (e: unknown) => e instanceof QkdError && e.path === path && e.field === field,
        field,
      );
    };
    check(FILE.subarray(0, FILE.length - 1), PIECES.length, `token ${PIECES.length - 1}.length`); // piece bytes cut
    check(FILE.subarray(0, FILE.length - 3), PIECES.length, `token ${PIECES.length - 1}`); // header of the last token cut
    check(FILE, PIECES.length + 1, `token ${PIECES.length}`); // vocabSize larger than the file
    check(FILE, PIECES.length - 1, 'vocabSize'); // trailing tokens
    check(FILE.subarray(0, 2), PIECES.length, 'max_token_length');
    check(tokenizerBytes(PIECES, -1), PIECES.length, 'max_token_length');
    check(tokenizerBytes(PIECES, 5), PIECES.length, 'token 2.length'); // "\n</s>\n" is 6 bytes
    assert.throws(() => readLlama2cTokenizer(tmpFile(FILE), 2), (e: unknown) => e instanceof QkdError && e.field === 'vocabSize');
  });

  it('refuses text it cannot encode rather than emitting bad ids', () => {
    const small = new Llama2cTokenizer(['<unk>', '<s>', '</s>', ' ', 'a'].map((p) => Buffer.from(p)), [0, 0, 0, -1, -1], 5);
    assert.deepEqual([...small.encode('aa')], [3, 4, 4]);
    assert.throws(() => small.encode('b'), (e: unknown) => e instanceof QkdError && /fallback token 101/.test(e.message));
    const noSpace = new Llama2cTokenizer(['<unk>', '<s>', '</s>', 'a'].map((p) => Buffer.from(p)), [0, 0, 0, 0], 5);
    assert.throws(() => noSpace.encode('a'), (e: unknown) => e instanceof QkdError && /dummy prefix/.test(e.message));
  });
});
