import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpeTokenizer, loadTokenizerJson, preTokenize, saveTokenizerJson, trainBpe } from '../../src/data/bpe.js';
import { loadDefaultCorpus } from '../../src/data/corpus.js';
import { ByteTokenizer, byteToUnicode } from '../../src/data/tokenizer.js';
import { QkdError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-bpe-'));
const corpus = loadDefaultCorpus().slice(0, 300_000);
const tokenizer = trainBpe(corpus, 2048);

const SAMPLES: Record<string, string> = {
  ascii: "The whale's back, isn't it? 42 harpoons & 3.5 boats -- all lost!",
  accented: 'Café naïve Ærøskøbing: señor Müller façade, Ångström.',
  emoji: 'Thar she blows 🐋🐳! 👋🏽 family 👨‍👩‍👧 flags 🇳🇴',
  cjk: '日本語のテキスト、中文字符和한국어 텍스트。',
  empty: '',
  whitespace: '   a  \t\tb\n\n\n   c \r\n  \u00a0\u3000 end   ',
  longRun: `${'-'.repeat(5000)}${' '.repeat(3000)}${'a'.repeat(4000)}`,
};

/** The textbook definition: merge every occurrence of the lowest-rank pair, left to right, until none applies. */
function referenceEncode(tok: BpeTokenizer, text: string): number[] {
  const rank = new Map(tok.merges.map(([l, r], k) => [`${l},${r}`, k]));
  const out: number[] = [];
  for (const chunk of preTokenize(text)) {
    let ids = Array.from(Buffer.from(chunk, 'utf8'));
    for (;;) {
      let best = Infinity;
      for (let i = 0; i + 1 < ids.length; i++) best = Math.min(best, rank.get(`${ids[i]},${ids[i + 1]}`) ?? Infinity);
      if (best === Infinity) break;
      const [l, r] = tok.merges[best]!;
      const next: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === l && ids[i + 1] === r) {
          next.push(256 + best);
          i++;
        } else next.push(ids[i]!);
      }
      ids = next;
    }
    out.push(...ids);
  }
  return out;
}

function assertQkdError(fn: () => unknown, check: (e: QkdError) => void): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof QkdError, `expected a QkdError, got ${String(e)}`);
    check(e);
    return true;
  });
}

describe('preTokenize', () => {
  it('splits GPT-2 style and covers the whole text', () => {
    assert.deepEqual(preTokenize("I'm here  now, 2024!\n"), ['I', "'m", ' here', ' ', ' now', ',', ' 2024', '!', '\n']);
    for (const text of Object.values(SAMPLES)) assert.equal(preTokenize(text).join(''), text);
  });
});

describe('trainBpe', () => {
  it('makes the hand-computed merges on a tiny text', () => {
    // Chunks: "hug" " hug" " pug" " pun" " bun" " hugs".
    //  1. (u,g)=4 → 256 "ug"
    //  2. (h,ug)=3 → 257 "hug"
    //  3. tie at 2 between ( ,hug) (32,257), ( ,p) (32,112), (u,n) (117,110): smallest is (32,112) → 258 " p"
    //  4. tie at 2 between (32,257) and (117,110) → 259 " hug"
    //  5. (u,n)=2 → 260 "un"; every pair left occurs once, below minFrequency 2.
    const tok = trainBpe('hug hug pug pun bun hugs', 512);
    assert.deepEqual(tok.merges, [[117, 103], [104, 256], [32, 112], [32, 257], [117, 110]]);
    assert.equal(tok.vocabSize, 261);
    assert.deepEqual(Array.from(tok.encode('hug pun')), [257, 258, 260]);
    // With minFrequency 1 training goes on past the pairs that occur once.
    assert.ok(trainBpe('hug hug pug pun bun hugs', 512, { minFrequency: 1 }).vocabSize > 261);
  });

  it('reaches the requested vocab size on Moby-Dick and compresses', () => {
    assert.equal(tokenizer.vocabSize, 2048);
    assert.equal(tokenizer.merges.length, 2048 - 256);
    const ids = tokenizer.encode(corpus);
    const ratio = ids.length / Buffer.byteLength(corpus, 'utf8');
    assert.ok(ratio < 0.45, `tokens/bytes = ${ratio}`);
    assert.ok(ids.every((id) => id >= 0 && id < 2048));
    // Every id has distinct bytes.
    const seen = new Set<string>();
    for (let id = 0; id < tokenizer.vocabSize; id++) seen.add(Buffer.from(tokenizer.tokenBytes(id)).toString('latin1'));
    assert.equal(seen.size, tokenizer.vocabSize);
  });

  it('is deterministic', () => {
    const text = corpus.slice(0, 100_000);
    const a = trainBpe(text, 1024);
    const b = trainBpe(text, 1024);
    assert.deepEqual(a.merges, b.merges);
    assert.deepEqual(a.toTokenizerJson(), b.toTokenizerJson());
  });

  it('reports progress up to the target', () => {
    const calls: Array<[number, number]> = [];
    trainBpe(corpus.slice(0, 50_000), 600, { onProgress: (m, t) => calls.push([m, t]) });
    assert.ok(calls.length > 1);
    assert.deepEqual(calls[calls.length - 1], [344, 344]);
    for (let i = 1; i < calls.length; i++) assert.ok(calls[i]![0] > calls[i - 1]![0]);
  });

  it('validates vocab_size and min_frequency', () => {
    for (const bad of [511, 32769, 1000.5, Number.NaN]) {
      assertQkdError(() => trainBpe('some text', bad), (e) => {
        assert.equal(e.field, 'vocab_size');
        assert.equal(e.code, 'ARGUMENT');
      });
    }
    assertQkdError(() => trainBpe('some text', 512, { minFrequency: 0 }), (e) => assert.equal(e.field, 'min_frequency'));
  });
});

describe('BpeTokenizer', () => {
  for (const [name, text] of Object.entries(SAMPLES)) {
    it(`round-trips ${name} text`, () => {
      const ids = tokenizer.encode(text);
      assert.equal(tokenizer.decode(ids), text);
      if (text.length > 0) assert.ok(ids.length <= Buffer.byteLength(text, 'utf8'));
    });
  }

  it('merges ASCII words into few tokens', () => {
    const text = 'the whale and the sea';
    assert.ok(tokenizer.encode(text).length <= 6, `${tokenizer.encode(text).length} tokens`);
  });

  it('encodes as the textbook lowest-rank-first definition does', () => {
    const text = `${corpus.slice(200_000, 220_000)} ${Object.values(SAMPLES).join(' ')}`;
    assert.deepEqual(Array.from(tokenizer.encode(text)), referenceEncode(tokenizer, text));
    // Twice, so the second pass comes from the chunk cache.
    assert.deepEqual(Array.from(tokenizer.encode(text)), referenceEncode(tokenizer, text));
  });

  it('decodes invalid UTF-8 to U+FFFD and rejects out-of-range ids', () => {
    assert.equal(tokenizer.decode([0x68, 0xff, 0x69]), 'h\uFFFDi');
    assert.equal(tokenizer.decode([0xe6, 0x97]), '\uFFFD');
    for (const bad of [2048, -1, 1.5]) {
      assertQkdError(() => tokenizer.decode([104, bad]), (e) => {
        assert.ok(e.message.includes(`token id ${bad}`), e.message);
        assert.equal(e.field, 'ids');
      });
    }
  });

  it('rejects merges that use later ids', () => {
    assertQkdError(() => new BpeTokenizer([[97, 98], [256, 257]]), (e) => assert.equal(e.field, 'merges[1]'));
  });
});

describe('tokenizer.json', () => {
  const text = `${corpus.slice(250_000, 260_000)} ${Object.values(SAMPLES).join(' ')}`;

  it('writes the Hugging Face ByteLevel BPE layout', () => {
    const json = tokenizer.toTokenizerJson() as { model: { type: string; vocab: Record<string, number>; merges: string[] }; pre_tokenizer: { type: string }; decoder: { type: string } };
    const map = byteToUnicode();
    assert.equal(json.model.type, 'BPE');
    assert.equal(json.pre_tokenizer.type, 'ByteLevel');
    assert.equal(json.decoder.type, 'ByteLevel');
    assert.equal(Object.keys(json.model.vocab).length, 2048);
    assert.equal(json.model.merges.length, 2048 - 256);
    const [l, r] = tokenizer.merges[0]!;
    assert.equal(json.model.merges[0], `${map[l]} ${map[r]}`);
    assert.equal(json.model.vocab[map[l]! + map[r]!], 256);
    assert.equal(json.model.vocab['Ġ'], 32);
  });

  it('save → load gives identical merges and encodings, atomically', () => {
    const path = join(dir, 'tokenizer.json');
    saveTokenizerJson(path, tokenizer);
    assert.deepEqual(readdirSync(dir), ['tokenizer.json']);
    const loaded = loadTokenizerJson(path);
    assert.equal(loaded.kind, 'bpe');
    assert.equal(loaded.vocabSize, 2048);
    assert.deepEqual(loaded.merges, tokenizer.merges);
    assert.deepEqual(loaded.encode(text), tokenizer.encode(text));
    assert.equal(loaded.decode(loaded.encode(text)), text);
  });

  it('accepts merges as [left, right] pairs', () => {
    const json = structuredClone(tokenizer.toTokenizerJson()) as { model: { merges: unknown[] } };
    json.model.merges = json.model.merges.map((m) => (m as string).split(' '));
    const loaded = BpeTokenizer.fromTokenizerJson(json);
    assert.deepEqual(loaded.merges, tokenizer.merges);
    assert.deepEqual(loaded.encode(text), tokenizer.encode(text));
  });

  it("reads the ByteTokenizer's tokenizer.json as a BPE with no merges", () => {
    const path = join(dir, 'byte.json');
    saveTokenizerJson(path, new ByteTokenizer());
    const loaded = loadTokenizerJson(path);
    assert.equal(loaded.vocabSize, 256);
    assert.deepEqual(loaded.encode(text), new ByteTokenizer().encode(text));
  });

  /** A copy of the trained tokenizer's JSON, changed by `edit`, must fail naming `field`. */
  function rejects(edit: (json: any) => void, field: string | RegExp): void {
    const json = structuredClone(tokenizer.toTokenizerJson());
    edit(json);
    assertQkdError(() => BpeTokenizer.fromTokenizerJson(json, 'some/tokenizer.json'), (e) => {
      if (typeof field === 'string') assert.equal(e.field, field);
      else assert.match(e.field ?? '', field);
      assert.equal(e.path, 'some/tokenizer.json');
      assert.equal(e.code, 'IO');
    });
  }

  it('rejects byte symbols that are not ids 0..255 in byte order', () => {
    // GPT-2's own vocab lists the printable bytes first; swap two byte ids.
    rejects((j) => {
      j.model.vocab['A'] = 66;
      j.model.vocab['B'] = 65;
    }, 'model.vocab["A"]');
  });

  it('rejects a merge whose result is not id 256+k', () => {
    rejects((j) => {
      const [first, second] = [j.model.merges[0], j.model.merges[1]];
      j.model.merges[0] = second;
      j.model.merges[1] = first;
    }, 'model.merges[0]');
  });

  it('rejects other layouts, naming the field', () => {
    rejects((j) => (j.model.type = 'WordPiece'), 'model.type');
    rejects((j) => (j.added_tokens = [{ id: 2048, content: '<|endoftext|>', special: true }]), 'added_tokens');
    rejects((j) => (j.model.merges[3] = 'a b c'), 'model.merges[3]');
    rejects((j) => (j.model.merges[3] = 42), 'model.merges[3]');
    rejects((j) => (j.model.vocab['extra'] = 5000), 'model.vocab');
    rejects((j) => (j.model.vocab['Ġ'] = 'x'), /^model\.vocab\[/);
    rejects((j) => (j.model.vocab['\u{1F40B}'] = 2048), /^model\.vocab\[/);
    rejects((j) => (j.model.merges = 'none'), 'model.merges');
    rejects((j) => (j.pre_tokenizer = { type: 'Whitespace' }), 'pre_tokenizer.type');
    rejects((j) => (j.pre_tokenizer.add_prefix_space = true), 'pre_tokenizer.add_prefix_space');
    rejects((j) => (j.normalizer = { type: 'NFC' }), 'normalizer');
    rejects((j) => delete j.model, 'model');
    assertQkdError(() => BpeTokenizer.fromTokenizerJson([1, 2]), (e) => assert.equal(e.field, '(root)'));
  });

  it('reports a missing file or bad JSON with its path', () => {
    const missing = join(dir, 'nope.json');
    assertQkdError(() => loadTokenizerJson(missing), (e) => {
      assert.equal(e.path, missing);
      assert.equal(e.code, 'IO');
    });
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{"model": ');
    assertQkdError(() => loadTokenizerJson(broken), (e) => {
      assert.equal(e.path, broken);
      assert.match(e.message, /not valid JSON/);
    });
    assert.equal(readFileSync(broken, 'utf8'), '{"model": ');
  });
});
