/**
 * Reads the tokenizer.json that qkd writes next to a model: byte-level (a BPE
 * model over the 256 byte symbols with no merges) or byte-level BPE.
 */
import { QkdError } from '../errors.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';
import { loadTokenizerJson } from './bpe.js';

export function loadTokenizer(path: string): Tokenizer {
  const bpe = loadTokenizerJson(path);
  if (bpe.merges.length === 0) {
    if (bpe.vocabSize !== 256) throw new QkdError('IO', `tokenizer has no merges but ${bpe.vocabSize} tokens`, { path, field: 'model.vocab' });
    return new ByteTokenizer();
  }
  return bpe;
}
