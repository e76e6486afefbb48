/**
 * qkd's tokenizers as llama.cpp's `tokenizer.ggml.*` metadata, and back.
 *
 * - byte-level (256 ids, no merges) and qkd's byte-level BPE become
 *   llama.cpp's "gpt2" vocabulary: tokens are the GPT-2 byte-to-unicode
 *   strings of each id's bytes, merges "left right" in rank order, and the
 *   GPT-2 pre-tokenizer ("gpt-2"), the split qkd's BPE also uses. These
 *   vocabularies have no special tokens, but llama.cpp always has an EOS
 *   (11 by default, a comma in GPT-2's alphabet) and warns when it is not an
 *   end-of-generation token. So id 0, the NUL byte, which never occurs in
 *   the UTF-8 text qkd trains on (binary corpora are refused), is written as
 *   the control token "<|endoftext|>" and made BOS and EOS: generation stops
 *   if the model ever emits it, and the vocabulary size is unchanged;
 * - the llama2.c (SentencePiece-style) tokenizer becomes "llama": pieces,
 *   scores, token types (unknown, control, byte, normal), BOS 1, EOS 2,
 *   UNK 0.
 *
 * Reading accepts exactly these shapes; other GGUF vocabularies (Llama-3,
 * Qwen, Gemma) are refused with a clear error until qkd loads Hugging Face
 * tokenizers.
 */
import { QkdError } from '../errors.js';
import type { GgufFile } from '../io/gguf-reader.js';
import type { GgufValue } from '../io/gguf-types.js';
import { ByteTokenizer, byteToUnicode, type Tokenizer } from './tokenizer.js';
import { BpeTokenizer } from './bpe.js';
import { Llama2cTokenizer } from './llama2c-tokenizer.js';

/** The control token NUL stands for in byte-level vocabularies (see the file comment). */
const END_OF_TEXT = '<|endoftext|>';

/** llama.cpp's token types (llama_token_type). */
const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, byte: 6 } as const;

const strings = (value: string[]): GgufValue => ({ type: 'array', itemType: 'string', value });

/** The bytes of every id of a byte-level tokenizer (byte or qkd BPE). */
function byteLevelPieces(t: Tokenizer): Uint8Array[] {
  if (t instanceof BpeTokenizer) return Array.from({ length: t.vocabSize }, (_, id) => t.tokenBytes(id));
  return Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));
}

function unicodeOf(bytes: Uint8Array, table: string[]): string {
  let s = '';
  for (const b of bytes) s += table[b]!;
  return s;
}

/** `tokenizer.ggml.*` metadata describing `t` to llama.cpp. */
export function tokenizerGgufMetadata(t: Tokenizer): Record<string, GgufValue> {
  if (t instanceof Llama2cTokenizer) {
    const types = t.pieces.map((p, id) => {
      if (id === 0) return TOKEN_TYPE.unknown;
      if (id === t.bosId || id === t.eosId) return TOKEN_TYPE.control;
      return /^<0x[0-9A-F]{2}>$/.test(Buffer.from(p).toString('latin1')) ? TOKEN_TYPE.byte : TOKEN_TYPE.normal;
    });
    return {
      'tokenizer.ggml.model': { type: 'string', value: 'llama' },
      'tokenizer.ggml.pre': { type: 'string', value: 'default' },
      // llama2.c stores SentencePiece's word-boundary mark ▁ as a space; llama.cpp's "llama" vocabulary expects ▁.
      'tokenizer.ggml.tokens': strings(t.pieces.map((p) => Buffer.from(p).toString('utf8').replaceAll(' ', '\u2581'))),
      'tokenizer.ggml.scores': { type: 'array', itemType: 'f32', value: Array.from(t.scores) },
      'tokenizer.ggml.token_type': { type: 'array', itemType: 'i32', value: types },
      'tokenizer.ggml.bos_token_id': { type: 'u32', value: t.bosId },
      'tokenizer.ggml.eos_token_id': { type: 'u32', value: t.eosId },
      'tokenizer.ggml.unknown_token_id': { type: 'u32', value: 0 },
      'tokenizer.ggml.add_bos_token': { type: 'bool', value: true },
      'tokenizer.ggml.add_eos_token': { type: 'bool', value: false },
    };
  }
  if (t.kind !== 'byte' && !(t instanceof BpeTokenizer)) {
    throw new QkdError('ARGUMENT', `cannot describe a ${t.kind} tokenizer in GGUF`, { field: 'tokenizer' });
  }
  const table = byteToUnicode();
  const pieces = byteLevelPieces(t);
  const merges = t instanceof BpeTokenizer ? t.merges.map(([a, b]) => `${unicodeOf(pieces[a]!, table)} ${unicodeOf(pieces[b]!, table)}`) : [];
  const tokens = pieces.map((p) => unicodeOf(p, table));
  const types: number[] = pieces.map(() => TOKEN_TYPE.normal);
  // NUL as the end-of-text control token, unless a merge uses it (then llama.cpp's default EOS stays, with its warning).
  const nulFree = !(t instanceof BpeTokenizer) || t.merges.every(([a, b]) => a !== 0 && b !== 0);
  if (nulFree) {
    tokens[0] = END_OF_TEXT;
    types[0] = TOKEN_TYPE.control;
  }
  return {
    'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
    'tokenizer.ggml.pre': { type: 'string', value: 'gpt-2' },
    'tokenizer.ggml.tokens': strings(tokens),
    'tokenizer.ggml.token_type': { type: 'array', itemType: 'i32', value: types },
    'tokenizer.ggml.merges': strings(merges),
    ...(nulFree ? { 'tokenizer.ggml.bos_token_id': { type: 'u32', value: 0 } as GgufValue, 'tokenizer.ggml.eos_token_id': { type: 'u32', value: 0 } as GgufValue } : {}),
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: false },
    'tokenizer.ggml.add_eos_token': { type: 'bool', value: false },
  };
}

function stringArray(f: GgufFile, key: string): string[] {
  const v = f.metadata.get(key);
  if (v?.type !== 'array' || v.itemType !== 'string') throw new QkdError('IO', `GGUF tokenizer metadata ${key} is missing or not a string array`, { path: f.path, field: key });
  return v.value as string[];
}

function numberArray(f: GgufFile, key: string): number[] {
  const v = f.metadata.get(key);
  if (v?.type !== 'array' || v.itemType === 'string' || v.itemType === 'array') throw new QkdError('IO', `GGUF tokenizer metadata ${key} is missing or not a number array`, { path: f.path, field: key });
  return (v.value as (number | bigint)[]).map(Number);
}

/** The tokenizer stored in a GGUF's metadata (the shapes tokenizerGgufMetadata writes). */
export function tokenizerFromGguf(f: GgufFile): Tokenizer {
  const model = f.metadata.get('tokenizer.ggml.model');
  const kind = model?.type === 'string' ? model.value : undefined;
  if (kind === 'llama') {
    const tokens = stringArray(f, 'tokenizer.ggml.tokens');
    const scores = numberArray(f, 'tokenizer.ggml.scores');
    const pieces = tokens.map((s) => Buffer.from(s.replaceAll('\u2581', ' '), 'utf8'));
    return new Llama2cTokenizer(pieces, scores, pieces.reduce((m, p) => Math.max(m, p.length), 1));
  }
  if (kind === 'gpt2') {
    const tokens = stringArray(f, 'tokenizer.ggml.tokens');
    const table = byteToUnicode();
    const byteLevel = tokens.length >= 256 && table.every((ch, b) => tokens[b] === ch || (b === 0 && tokens[b] === END_OF_TEXT));
    if (!byteLevel) throw unsupported(f, 'a byte-level vocabulary whose first 256 tokens are not the bytes in order');
    if (tokens.length === 256) return new ByteTokenizer();
    const merges = f.metadata.has('tokenizer.ggml.merges') ? stringArray(f, 'tokenizer.ggml.merges') : [];
    const id = new Map(table.map((ch, b) => [ch, b]));
    tokens.forEach((t, i) => i >= 256 && id.set(t, i));
    const pairs = merges.map((m, k) => {
      const [a, b] = m.split(' ');
      const left = id.get(a ?? '');
      const right = id.get(b ?? '');
      if (left === undefined || right === undefined || id.get(`${a}${b}`) !== 256 + k) throw unsupported(f, `merge ${k} ('${m}') that does not create token ${256 + k}`);
      return [left, right] as const;
    });
    if (pairs.length !== tokens.length - 256) throw unsupported(f, `${tokens.length - 256} tokens beyond the bytes but ${pairs.length} merges`);
    return new BpeTokenizer(pairs);
  }
  throw unsupported(f, `tokenizer.ggml.model ${kind === undefined ? 'missing' : `'${kind}'`}`);
}

function unsupported(f: GgufFile, what: string): QkdError {
  return new QkdError('IO', `the GGUF's tokenizer has ${what}; qkd reads the byte-level, qkd BPE and SentencePiece (llama2.c-style) vocabularies it writes, not yet those of other models`, { path: f.path, field: 'tokenizer.ggml', hint: 'a GGUF written by qkd export, or --tokenizer with the model\'s tokenizer file' });
}
