/**
 * The one tokenizer loader: a tokenizer.json or a llama2.c tokenizer.bin,
 * told apart by content. A tokenizer.json in the layout qkd writes (byte
 * level, or qkd's byte-level BPE) loads as qkd's own tokenizer; any other
 * (the Hugging Face tokenizers of Llama, Qwen, Gemma, Mistral, …) through
 * `@huggingface/tokenizers` (tokenizer-hf.ts), with the
 * tokenizer_config.json beside it when there is one.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { writeBytesAtomic } from '../io/atomic.js';
import { dirname, join } from 'node:path';
import { QkdError } from '../errors.js';
import { readFileHead } from '../io/file-head.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';
import { BpeTokenizer } from './bpe.js';
import { llama2cTokenizerSize, readLlama2cTokenizer } from './llama2c-tokenizer.js';
import { tokenizerFromGguf } from './tokenizer-gguf.js';
import { openGguf } from '../io/gguf-reader.js';
import { HfTokenizer, readJsonObject } from './tokenizer-hf.js';

/**
 * True when a tokenizer.json has the shape qkd writes (no added tokens, no
 * normalizer, a plain ByteLevel pre-tokenizer, a BPE without byte
 * fallback). Such a file is validated strictly as qkd's own, so a damaged
 * one is an error rather than a different tokenizer.
 */
function isQkdLayout(json: Record<string, unknown>): boolean {
  const model = json.model as Record<string, unknown> | undefined;
  const pre = json.pre_tokenizer as Record<string, unknown> | null | undefined;
  const added = json.added_tokens;
  return (added === undefined || added === null || (Array.isArray(added) && added.length === 0)) && (json.normalizer === undefined || json.normalizer === null) && pre?.type === 'ByteLevel' && model?.type === 'BPE' && model.byte_fallback !== true;
}

export function loadTokenizer(path: string): Tokenizer {
  const json = readJsonObject(path, 'tokenizer.json');
  if (!isQkdLayout(json)) {
    const config = join(dirname(path), 'tokenizer_config.json');
    return new HfTokenizer(json, existsSync(config) ? readJsonObject(config, 'tokenizer_config.json') : {}, path);
  }
  const bpe = BpeTokenizer.fromTokenizerJson(json, path);
  if (bpe.merges.length === 0) {
    if (bpe.vocabSize !== 256) throw new QkdError('IO', `tokenizer has no merges but ${bpe.vocabSize} tokens`, { path, field: 'model.vocab' });
    return new ByteTokenizer();
  }
  return bpe;
}

/**
 * The tokenizer at `path`, whatever it is: a directory holding a
 * tokenizer.json (a model directory), a tokenizer.json, a GGUF (its
 * tokenizer.ggml.* metadata), or a llama2.c tokenizer.bin (its size found
 * by walking the file). For `qkd tokenize` and anything else that has a
 * tokenizer but no model.
 */
export function loadTokenizerAt(path: string): Tokenizer {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    throw new QkdError('IO', 'tokenizer not found', { path, hint: 'a tokenizer.json, a model directory, a llama2.c tokenizer.bin or a .gguf' });
  }
  if (stat.isDirectory()) {
    const json = join(path, 'tokenizer.json');
    if (!existsSync(json)) throw new QkdError('IO', 'the directory holds no tokenizer.json', { path, hint: 'a model directory with its tokenizer.json, or the tokenizer file itself' });
    return loadTokenizer(json);
  }
  const head = readFileHead(path, 64, 'tokenizer');
  if (head.subarray(0, 4).toString('latin1') === 'GGUF') {
    const f = openGguf(path);
    try {
      return tokenizerFromGguf(f);
    } finally {
      f.close();
    }
  }
  if (looksJson(path, head.toString('latin1'))) return loadTokenizer(path);
  return readLlama2cTokenizer(path, llama2cTokenizerSize(path));
}

/** The files that describe a tokenizer, by name: tokenizer.json, plus tokenizer_config.json for a Hugging Face tokenizer (BOS rules, chat template). */
export function tokenizerFiles(tokenizer: Tokenizer): Record<string, string> {
  const files: Record<string, string> = { 'tokenizer.json': JSON.stringify(tokenizer.toTokenizerJson()) + '\n' };
  if (tokenizer instanceof HfTokenizer && Object.keys(tokenizer.tokenizerConfig()).length > 0) files['tokenizer_config.json'] = JSON.stringify(tokenizer.tokenizerConfig(), null, 2) + '\n';
  return files;
}

/** Writes tokenizerFiles into `dir` (each atomically), so loadTokenizer(dir/tokenizer.json) gives the same tokenizer back. */
export function saveTokenizerFiles(dir: string, tokenizer: Tokenizer): void {
  for (const [name, text] of Object.entries(tokenizerFiles(tokenizer))) writeBytesAtomic(join(dir, name), text);
}

/** Copies the tokenizer files of model directory `from` into `to` (those that exist). */
export function copyTokenizerFiles(from: string, to: string): void {
  for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
    if (existsSync(join(from, name))) writeBytesAtomic(join(to, name), readFileSync(join(from, name)));
  }
}

/**
 * Any tokenizer file (or a model directory, or a GGUF, as loadTokenizerAt):
 * a tokenizer.json (looksJson), or a llama2.c tokenizer.bin, which is binary
 * and needs the model's vocabulary size (its format does not store it).
 */
export function loadTokenizerFile(path: string, vocabSize: number): Tokenizer {
  // A model directory or a GGUF names its tokenizer as --tokenizer does everywhere (loadTokenizerAt).
  if (existsSync(path) && statSync(path).isDirectory()) return loadTokenizerAt(path);
  const head = readFileHead(path, 64, 'tokenizer').toString('latin1');
  if (head.startsWith('GGUF')) return loadTokenizerAt(path);
  return looksJson(path, head) ? loadTokenizer(path) : readLlama2cTokenizer(path, vocabSize);
}

/**
 * A tokenizer.json: a .json name whatever it holds (so the JSON reader says
 * what is wrong), or text starting with '{' (a tokenizer.bin starts with its
 * int32 max_token_length, whose low byte may be '[' or '"'). Everything else
 * is taken for a llama2.c tokenizer.bin.
 */
function looksJson(path: string, head: string): boolean {
  return path.toLowerCase().endsWith('.json') || /^\s*\{/.test(head);
}
