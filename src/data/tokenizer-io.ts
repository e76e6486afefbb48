/**
 * The one tokenizer loader: a tokenizer.json (qkd's byte-level or byte-level
 * BPE, as qkd writes next to a model) or a llama2.c tokenizer.bin, told apart
 * by content.
 */
import { QkdError } from '../errors.js';
import { readFileHead } from '../io/file-head.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';
import { loadTokenizerJson } from './bpe.js';
import { readLlama2cTokenizer } from './llama2c-tokenizer.js';

export function loadTokenizer(path: string): Tokenizer {
  const bpe = loadTokenizerJson(path);
  if (bpe.merges.length === 0) {
    if (bpe.vocabSize !== 256) throw new QkdError('IO', `tokenizer has no merges but ${bpe.vocabSize} tokens`, { path, field: 'model.vocab' });
    return new ByteTokenizer();
  }
  return bpe;
}

/**
 * Any tokenizer file: tokenizer.json starts with '{' (after whitespace), a
 * llama2.c tokenizer.bin is binary and needs the model's vocabulary size
 * (its format does not store it).
 */
export function loadTokenizerFile(path: string, vocabSize: number): Tokenizer {
  const head = readFileHead(path, 64, 'tokenizer').toString('latin1');
  return /^\s*\{/.test(head) ? loadTokenizer(path) : readLlama2cTokenizer(path, vocabSize);
}
