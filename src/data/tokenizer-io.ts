/**
 * Reads the tokenizer.json that qkd writes next to a model: byte-level (a BPE
 * model over the 256 byte symbols with no merges) or byte-level BPE.
 */
import { existsSync, readFileSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';

export function loadTokenizer(path: string): Tokenizer {
  if (!existsSync(path)) throw new QkdError('IO', 'tokenizer file not found', { path, hint: 'a tokenizer.json written by qkd' });
  let json: { model?: { merges?: unknown[]; vocab?: Record<string, number> } };
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new QkdError('IO', `tokenizer is not valid JSON: ${(err as Error).message}`, { path });
  }
  const merges = json.model?.merges;
  if (Array.isArray(merges) && merges.length === 0 && Object.keys(json.model?.vocab ?? {}).length === 256) return new ByteTokenizer();
  throw new QkdError('IO', 'unsupported tokenizer.json', { path, field: 'model', hint: 'the byte-level tokenizer (BPE tokenizers: see issue notes)' });
}
