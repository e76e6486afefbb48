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
 * - a Hugging Face byte-level BPE (Llama-3, Qwen2/3, GPT-2 style) becomes
 *   "gpt2" with the file's own vocabulary strings, merges and added tokens
 *   (special ones as control tokens, the others as user-defined), the
 *   pre-tokenizer llama.cpp knows by name for its split pattern ("llama-bpe"
 *   for Llama-3's, "qwen2" for Qwen's, "gpt-2"), BOS/EOS from
 *   tokenizer_config.json, add_bos as the model's post-processor does, and
 *   the chat template. Other Hugging Face tokenizers (SentencePiece-style
 *   BPE, Unigram, WordPiece) are refused by name for now.
 *
 * Reading accepts all of these back: qkd's own shapes as qkd tokenizers, a
 * "gpt2" vocabulary of another shape whose pre-tokenizer is llama-bpe,
 * qwen2 or gpt-2 as a Hugging Face tokenizer rebuilt from the metadata (so
 * a Llama-3 or Qwen GGUF works as a teacher). Other vocabularies are
 * refused with a clear error (give their tokenizer.json with --tokenizer).
 */
import { QkdError } from '../errors.js';
import type { GgufFile } from '../io/gguf-reader.js';
import type { GgufValue } from '../io/gguf-types.js';
import { ByteTokenizer, byteToUnicode, type Tokenizer } from './tokenizer.js';
import { BpeTokenizer } from './bpe.js';
import { Llama2cTokenizer } from './llama2c-tokenizer.js';
import { HfTokenizer } from './tokenizer-hf.js';

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

/** llama.cpp's token type for unused ids (gaps in a vocabulary). */
const TOKEN_TYPE_UNUSED = 5;
const TOKEN_TYPE_USER_DEFINED = 4;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The Split regexes of a pre_tokenizer (Sequence or single). */
function splitPatterns(pre: unknown): string[] {
  if (!isObject(pre)) return [];
  if (pre.type === 'Sequence' && Array.isArray(pre.pretokenizers)) return pre.pretokenizers.flatMap(splitPatterns);
  if (pre.type === 'Split' && isObject(pre.pattern) && typeof pre.pattern.Regex === 'string') return [pre.pattern.Regex];
  return [];
}

/**
 * llama.cpp's name for a byte-level BPE's pre-tokenizer, recognised by its
 * whole shape: exactly a Split (isolated, not inverted) with Llama-3's or
 * Qwen's pattern followed by a ByteLevel that adds no prefix space and does
 * not split again (with the normalizer and ignore_merges llama.cpp assumes
 * for that name), or GPT-2's plain ByteLevel. Null for anything else.
 */
function byteLevelPreName(json: Json): string | null {
  const pre = json.pre_tokenizer;
  const model = json.model as Json;
  const normalizer = json.normalizer;
  const noNormalizer = normalizer === null || normalizer === undefined;
  if (isObject(pre) && pre.type === 'ByteLevel') return pre.add_prefix_space !== true && pre.use_regex !== false && noNormalizer ? 'gpt-2' : null;
  if (!isObject(pre) || pre.type !== 'Sequence' || !Array.isArray(pre.pretokenizers) || pre.pretokenizers.length !== 2) return null;
  const [split, byteLevel] = pre.pretokenizers as unknown[];
  if (!isObject(split) || split.type !== 'Split' || split.behavior !== 'Isolated' || split.invert === true) return null;
  if (!isObject(byteLevel) || byteLevel.type !== 'ByteLevel' || byteLevel.add_prefix_space === true || byteLevel.use_regex !== false) return null;
  const [pattern] = splitPatterns(split);
  if (pattern === PRE_PATTERNS['llama-bpe'] && noNormalizer && model.ignore_merges === true) return 'llama-bpe';
  if (pattern === PRE_PATTERNS.qwen2 && (noNormalizer || (isObject(normalizer) && normalizer.type === 'NFC')) && model.ignore_merges !== true) return 'qwen2';
  return null;
}

/** A Hugging Face byte-level BPE as llama.cpp's "gpt2" vocabulary (see the file comment). */
function hfByteLevelMetadata(t: HfTokenizer, vocabSize: number): Record<string, GgufValue> {
  const json = t.toTokenizerJson() as Json;
  const model = json.model as Json;
  const byteLevel = (p: unknown): boolean => isObject(p) && (p.type === 'ByteLevel' || (p.type === 'Sequence' && Array.isArray(p.pretokenizers) && p.pretokenizers.some(byteLevel)));
  if (model.type !== 'BPE' || model.byte_fallback === true || !byteLevel(json.pre_tokenizer)) {
    throw new QkdError('ARGUMENT', `qkd cannot yet write this Hugging Face tokenizer into a GGUF (model ${String(model.type)}${model.byte_fallback === true ? ' with byte fallback' : ''}); byte-level BPE tokenizers (Llama-3, Qwen) are supported`, { path: t.source, field: 'tokenizer' });
  }
  const pre = byteLevelPreName(json);
  if (pre === null) throw new QkdError('ARGUMENT', "the tokenizer's pre-tokenizer is not one qkd can name for llama.cpp (Llama-3's, Qwen's or GPT-2's, with their normalizer and ignore_merges)", { path: t.source, field: 'pre_tokenizer' });
  const tokens: string[] = [];
  const types: number[] = [];
  const added = new Map<number, boolean>();
  for (const a of Array.isArray(json.added_tokens) ? json.added_tokens : []) if (isObject(a) && typeof a.id === 'number') added.set(a.id, a.special === true);
  // The model's embedding may be padded past the tokenizer (Qwen): llama.cpp needs one token per row, so the rest are unused [PAD] tokens.
  for (let id = 0; id < vocabSize; id++) {
    const s = t.tokenString(id);
    tokens.push(s ?? `[PAD${id}]`);
    types.push(s === undefined ? TOKEN_TYPE_UNUSED : added.has(id) ? (added.get(id) ? TOKEN_TYPE.control : TOKEN_TYPE_USER_DEFINED) : TOKEN_TYPE.normal);
  }
  const merges = (Array.isArray(model.merges) ? model.merges : []).map((m: unknown) => (Array.isArray(m) ? m.join(' ') : String(m)));
  const out: Record<string, GgufValue> = {
    'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
    'tokenizer.ggml.pre': { type: 'string', value: pre },
    'tokenizer.ggml.tokens': strings(tokens),
    'tokenizer.ggml.token_type': { type: 'array', itemType: 'i32', value: types },
    'tokenizer.ggml.merges': strings(merges),
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: t.addsBos },
    'tokenizer.ggml.add_eos_token': { type: 'bool', value: t.addsEos },
  };
  if (t.bosId !== null) out['tokenizer.ggml.bos_token_id'] = { type: 'u32', value: t.bosId };
  if (t.eosId !== null) out['tokenizer.ggml.eos_token_id'] = { type: 'u32', value: t.eosId };
  if (t.chatTemplate !== null) out['tokenizer.chat_template'] = { type: 'string', value: t.chatTemplate };
  return out;
}

/**
 * A Hugging Face SentencePiece-style BPE (byte fallback, "▁" for spaces:
 * Llama-2, Mistral, Gemma) as llama.cpp's "llama" vocabulary. llama.cpp
 * merges the adjacent pair whose result has the highest score, so each
 * token's score is minus the rank of the first merge that makes it (the
 * merges were ordered by the SentencePiece scores they came from); tokens
 * no merge makes score below every merged one. Byte tokens <0xXX> get the
 * byte type, special added tokens the control type. The space prefix
 * follows the normalizer (Llama-2 prepends "▁", Gemma does not).
 */
function hfSentencePieceMetadata(t: HfTokenizer, vocabSize: number): Record<string, GgufValue> {
  const json = t.toTokenizerJson() as Json;
  const model = json.model as Json;
  const vocabJson = isObject(model.vocab) ? model.vocab : {};
  const rank = new Map<string, number>();
  (Array.isArray(model.merges) ? model.merges : []).forEach((m: unknown, k: number) => {
    const [a, b] = Array.isArray(m) ? (m as string[]) : String(m).split(' ');
    const merged = `${a}${b}`;
    if (!rank.has(merged)) rank.set(merged, k);
  });
  const added = new Map<number, boolean>();
  for (const a of Array.isArray(json.added_tokens) ? json.added_tokens : []) if (isObject(a) && typeof a.id === 'number') added.set(a.id, a.special === true);
  const unk = typeof model.unk_token === 'string' ? (vocabJson[model.unk_token] as number | undefined) : undefined;
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  const floor = -(rank.size + 1);
  // The model's embedding may be padded past the tokenizer (Qwen): llama.cpp needs one token per row, so the rest are unused [PAD] tokens.
  for (let id = 0; id < vocabSize; id++) {
    const s = t.tokenString(id);
    tokens.push(s ?? `[PAD${id}]`);
    const r = s === undefined ? undefined : rank.get(s);
    scores.push(r === undefined ? floor : -r);
    if (s === undefined) types.push(TOKEN_TYPE_UNUSED);
    else if (id === unk) types.push(TOKEN_TYPE.unknown);
    else if (added.has(id)) types.push(added.get(id) ? TOKEN_TYPE.control : TOKEN_TYPE_USER_DEFINED);
    else if (/^<0x[0-9A-F]{2}>$/.test(s)) types.push(TOKEN_TYPE.byte);
    else types.push(TOKEN_TYPE.normal);
  }
  const prefix = spacePrefix(json, t.source);
  const out: Record<string, GgufValue> = {
    'tokenizer.ggml.model': { type: 'string', value: 'llama' },
    'tokenizer.ggml.pre': { type: 'string', value: 'default' },
    'tokenizer.ggml.tokens': strings(tokens),
    'tokenizer.ggml.scores': { type: 'array', itemType: 'f32', value: scores },
    'tokenizer.ggml.token_type': { type: 'array', itemType: 'i32', value: types },
    'tokenizer.ggml.add_bos_token': { type: 'bool', value: t.addsBos },
    'tokenizer.ggml.add_eos_token': { type: 'bool', value: t.addsEos },
    'tokenizer.ggml.add_space_prefix': { type: 'bool', value: prefix },
  };
  if (t.bosId !== null) out['tokenizer.ggml.bos_token_id'] = { type: 'u32', value: t.bosId };
  if (t.eosId !== null) out['tokenizer.ggml.eos_token_id'] = { type: 'u32', value: t.eosId };
  if (unk !== undefined) out['tokenizer.ggml.unknown_token_id'] = { type: 'u32', value: unk };
  if (t.chatTemplate !== null) out['tokenizer.chat_template'] = { type: 'string', value: t.chatTemplate };
  return out;
}

/**
 * Whether a SentencePiece-style tokenizer puts "▁" before the text, which
 * llama.cpp calls add_space_prefix: from a normalizer that replaces spaces
 * by "▁" (and prepends one, or not: Llama-2 and Gemma), or from a Metaspace
 * pre-tokenizer with prepend_scheme "first" or "never" (newer files).
 * Other shapes are refused rather than guessed.
 */
function spacePrefix(json: Json, source: string): boolean {
  const normalizers = (n: unknown): Json[] => (!isObject(n) ? [] : n.type === 'Sequence' && Array.isArray(n.normalizers) ? n.normalizers.flatMap(normalizers) : [n]);
  const norm = normalizers(json.normalizer);
  const pre = json.pre_tokenizer;
  const metaspace = isObject(pre) && pre.type === 'Metaspace' ? pre : null;
  const replacesSpaces = norm.some((n) => n.type === 'Replace' && isObject(n.pattern) && n.pattern.String === ' ' && n.content === '\u2581');
  if (metaspace === null && replacesSpaces && norm.every((n) => n.type === 'Replace' || (n.type === 'Prepend' && n.prepend === '\u2581'))) return norm.some((n) => n.type === 'Prepend');
  if (metaspace !== null && norm.length === 0 && metaspace.replacement === '\u2581' && (metaspace.prepend_scheme === 'first' || metaspace.prepend_scheme === 'never')) return metaspace.prepend_scheme === 'first';
  throw new QkdError('ARGUMENT', 'the tokenizer marks spaces in a way qkd cannot describe to llama.cpp (a " "→"▁" normalizer, or a Metaspace pre-tokenizer with prepend_scheme first or never)', { path: source, field: 'normalizer' });
}

/**
 * `tokenizer.ggml.*` metadata describing `t` to llama.cpp, for a model with
 * `vocabSize` embedding rows (default: the tokenizer's size; a Hugging Face
 * tokenizer may be smaller than its model's padded vocabulary).
 */
export function tokenizerGgufMetadata(t: Tokenizer, vocabSize = t.vocabSize): Record<string, GgufValue> {
  if (t instanceof HfTokenizer) {
    if (vocabSize < t.vocabSize) throw new QkdError('ARGUMENT', `the model has ${vocabSize} vocabulary rows, fewer than the tokenizer's ${t.vocabSize} tokens`, { path: t.source, field: 'vocab_size' });
    const model = (t.toTokenizerJson() as Json).model as Json;
    return model.type === 'BPE' && model.byte_fallback === true ? hfSentencePieceMetadata(t, vocabSize) : hfByteLevelMetadata(t, vocabSize);
  }
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
/** The split pattern of each pre-tokenizer name hfByteLevelMetadata writes (the inverse of byteLevelPreName). */
const PRE_PATTERNS: Record<string, string> = {
  'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

/**
 * A llama.cpp "gpt2" vocabulary with a pre-tokenizer it names (llama-bpe,
 * qwen2, gpt-2) as a Hugging Face tokenizer: normal tokens form the BPE
 * vocabulary, control and user-defined tokens the added tokens, merges in
 * their order, and the split pattern of the named pre-tokenizer (Qwen's NFC
 * normalizer too); BOS/EOS, add_bos and the chat template from the metadata.
 */
function hfByteLevelFromGguf(f: GgufFile, tokens: string[]): HfTokenizer {
  const named = f.stringValue('tokenizer.ggml.pre') ?? 'default';
  // llama.cpp's other names for the Llama-3 pre-tokenizer.
  const pre = named === 'llama3' || named === 'llama-v3' ? 'llama-bpe' : named;
  if (pre !== 'gpt-2' && PRE_PATTERNS[pre] === undefined) throw unsupported(f, `a byte-level vocabulary with the pre-tokenizer '${pre}' (qkd reads llama-bpe, qwen2 and gpt-2)`);
  // Without token types, special tokens could not be told from text: refused.
  const types = numberArray(f, 'tokenizer.ggml.token_type');
  if (types.length !== tokens.length) throw unsupported(f, `${types.length} token types for ${tokens.length} tokens`, 'tokenizer.ggml.token_type');
  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  tokens.forEach((content, id) => {
    const type = types[id] ?? TOKEN_TYPE.normal;
    if (type === TOKEN_TYPE.control || type === TOKEN_TYPE_USER_DEFINED) added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: type === TOKEN_TYPE_USER_DEFINED, special: type === TOKEN_TYPE.control });
    else if (type !== TOKEN_TYPE_UNUSED) vocab[content] = id;
  });
  const merges = f.metadata.has('tokenizer.ggml.merges') ? stringArray(f, 'tokenizer.ggml.merges') : [];
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: pre === 'gpt-2' };
  const bos = f.numberValue('tokenizer.ggml.bos_token_id');
  const eos = f.numberValue('tokenizer.ggml.eos_token_id');
  for (const [key, id] of [['tokenizer.ggml.bos_token_id', bos], ['tokenizer.ggml.eos_token_id', eos]] as const) {
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < tokens.length)) throw unsupported(f, `${key} ${id} outside the ${tokens.length} tokens`, key);
  }
  const addBos = f.metadata.get('tokenizer.ggml.add_bos_token');
  const addsBos = bos !== undefined && (addBos?.type === 'bool' ? addBos.value : pre === 'llama-bpe');
  const json: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: pre === 'qwen2' ? { type: 'NFC' } : null,
    pre_tokenizer: pre === 'gpt-2' ? byteLevel : { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: PRE_PATTERNS[pre] }, behavior: 'Isolated', invert: false }, byteLevel] },
    post_processor: addsBos
      ? { type: 'TemplateProcessing', single: [{ SpecialToken: { id: tokens[bos!], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ SpecialToken: { id: tokens[bos!], type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: tokens[bos!], type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { [tokens[bos!]!]: { id: tokens[bos!], ids: [bos], tokens: [tokens[bos!]] } } }
      : null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe', vocab, merges },
  };
  const template = f.stringValue('tokenizer.chat_template');
  const config: Json = {
    ...(bos !== undefined ? { bos_token: tokens[bos] } : {}),
    ...(eos !== undefined ? { eos_token: tokens[eos] } : {}),
    add_bos_token: addsBos,
    ...(template !== undefined ? { chat_template: template } : {}),
  };
  return new HfTokenizer(json, config, f.path);
}

/**
 * qkd reads a "llama" (SentencePiece) vocabulary with its llama2.c
 * tokenizer, which is right only for the llama2.c layout: <unk> <s> </s> at
 * 0..2 as BOS 1 and EOS 2, the 256 byte tokens at 3..258, no other control
 * or user-defined tokens, and the space prefix on. Anything else (Gemma,
 * Mistral v0.3, …) is refused naming what differs, rather than tokenized
 * wrongly.
 */
function refuseNonLlama2cShape(f: GgufFile, tokens: string[]): void {
  const types = f.metadata.has('tokenizer.ggml.token_type') ? numberArray(f, 'tokenizer.ggml.token_type') : null;
  const fail = (field: string, what: string): never => {
    throw unsupported(f, `a SentencePiece vocabulary that is not in the llama2.c layout (${what})`, field);
  };
  const bos = f.numberValue('tokenizer.ggml.bos_token_id');
  const eos = f.numberValue('tokenizer.ggml.eos_token_id');
  if (bos !== undefined && bos !== 1) fail('tokenizer.ggml.bos_token_id', `BOS is ${bos}, not 1`);
  if (eos !== undefined && eos !== 2) fail('tokenizer.ggml.eos_token_id', `EOS is ${eos}, not 2`);
  const prefix = f.metadata.get('tokenizer.ggml.add_space_prefix');
  if (prefix?.type === 'bool' && !prefix.value) fail('tokenizer.ggml.add_space_prefix', 'no space prefix');
  for (let b = 0; b < 256; b++) {
    if (tokens[3 + b] !== `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`) fail('tokenizer.ggml.tokens', `token ${3 + b} is not the byte <0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  }
  if (types !== null) {
    const extra = types.findIndex((t, id) => id > 2 && (t === TOKEN_TYPE.control || t === TOKEN_TYPE_USER_DEFINED));
    if (extra >= 0) fail('tokenizer.ggml.token_type', `token ${extra} '${tokens[extra]}' is a control or user-defined token`);
  }
}

/**
 * A llama.cpp "llama" (SentencePiece) vocabulary of any layout (Gemma,
 * Mistral, Llama-2 as converted from Hugging Face) as a Hugging Face
 * tokenizer that splits text as llama.cpp does (docs/tokenizers.md):
 *
 * llama.cpp starts from the UTF-8 characters of the text (spaces as "▁",
 * one "▁" in front when add_space_prefix) and repeatedly joins the adjacent
 * pair whose concatenation is a token with the highest score, leftmost on
 * ties; symbols that are not tokens become their <0xXX> byte tokens. A BPE
 * with byte fallback does the same when its merges are every split (a, b)
 * of every normal or user-defined token t into two tokens, ranked by t's
 * score, highest first. (It differs only where llama.cpp would join a character that is
 * not itself a token: neither Gemma-3's nor Llama-2's vocabulary has one.)
 * Control, unknown and user-defined tokens are the added tokens (special,
 * special, not), matched in the text before splitting, as llama.cpp does.
 */
function hfSentencePieceFromGguf(f: GgufFile, tokens: string[], scores: number[]): HfTokenizer {
  const types = numberArray(f, 'tokenizer.ggml.token_type');
  if (types.length !== tokens.length) throw unsupported(f, `${types.length} token types for ${tokens.length} tokens`, 'tokenizer.ggml.token_type');
  if (scores.length !== tokens.length) throw unsupported(f, `${scores.length} scores for ${tokens.length} tokens`, 'tokenizer.ggml.scores');
  const vocab: Record<string, number> = {};
  const ids = new Map<string, number>();
  const added: Json[] = [];
  tokens.forEach((content, id) => {
    const type = types[id]!;
    // Control and unknown tokens are special (llama.cpp matches them in text only when told to parse specials), user-defined ones are not.
    if (type === TOKEN_TYPE.control || type === TOKEN_TYPE.unknown || type === TOKEN_TYPE_USER_DEFINED) added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type !== TOKEN_TYPE_USER_DEFINED });
    vocab[content] = id;
    // llama.cpp's text-to-token map keeps the first id of a duplicated string.
    if (!ids.has(content)) ids.set(content, id);
  });
  // Every split of every normal or user-defined token (llama.cpp merges into any token; Gemma's "▁▁" is user-defined) into two tokens, by the token's score.
  const candidates: { score: number; id: number; left: string; right: string }[] = [];
  tokens.forEach((t, id) => {
    if (types[id] !== TOKEN_TYPE.normal && types[id] !== TOKEN_TYPE_USER_DEFINED) return;
    const chars = Array.from(t);
    let left = '';
    for (let k = 1; k < chars.length; k++) {
      left += chars[k - 1]!;
      const right = chars.slice(k).join('');
      if (ids.has(left) && ids.has(right)) candidates.push({ score: Math.fround(scores[id]!), id, left, right });
    }
  });
  candidates.sort((a, b) => b.score - a.score || a.id - b.id || a.left.length - b.left.length);
  const unk = f.numberValue('tokenizer.ggml.unknown_token_id') ?? types.indexOf(TOKEN_TYPE.unknown);
  const bos = f.numberValue('tokenizer.ggml.bos_token_id');
  const eos = f.numberValue('tokenizer.ggml.eos_token_id');
  for (const [key, id] of [['tokenizer.ggml.bos_token_id', bos], ['tokenizer.ggml.eos_token_id', eos], ['tokenizer.ggml.unknown_token_id', unk >= 0 ? unk : undefined]] as const) {
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < tokens.length)) throw unsupported(f, `${key} ${id} outside the ${tokens.length} tokens`, key);
  }
  const flag = (key: string, fallback: boolean): boolean => {
    const v = f.metadata.get(key);
    return v?.type === 'bool' ? v.value : fallback;
  };
  // llama.cpp's defaults for a "llama" vocabulary: BOS added, EOS not, a space prefix.
  const addsBos = bos !== undefined && flag('tokenizer.ggml.add_bos_token', true);
  const addsEos = eos !== undefined && flag('tokenizer.ggml.add_eos_token', false);
  const prefix = flag('tokenizer.ggml.add_space_prefix', true);
  const special = (id: number) => ({ SpecialToken: { id: tokens[id], type_id: 0 } });
  const single = [...(addsBos ? [special(bos!)] : []), { Sequence: { id: 'A', type_id: 0 } }, ...(addsEos ? [special(eos!)] : [])];
  const specials = [...(addsBos ? [bos!] : []), ...(addsEos ? [eos!] : [])];
  const json: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Sequence', normalizers: [...(prefix ? [{ type: 'Prepend', prepend: '\u2581' }] : []), { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    pre_tokenizer: null,
    post_processor: specials.length > 0 ? { type: 'TemplateProcessing', single, pair: [...single, ...single.map((x) => ('Sequence' in x ? { Sequence: { id: 'B', type_id: 1 } } : x))], special_tokens: Object.fromEntries(specials.map((id) => [tokens[id]!, { id: tokens[id], ids: [id], tokens: [tokens[id]] }])) } : null,
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : [])] },
    model: { type: 'BPE', dropout: null, unk_token: unk >= 0 ? tokens[unk] : null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: candidates.map((c) => [c.left, c.right]) },
  };
  const template = f.stringValue('tokenizer.chat_template');
  const config: Json = {
    ...(bos !== undefined ? { bos_token: tokens[bos] } : {}),
    ...(eos !== undefined ? { eos_token: tokens[eos] } : {}),
    add_bos_token: addsBos,
    add_eos_token: addsEos,
    ...(template !== undefined ? { chat_template: template } : {}),
  };
  return new HfTokenizer(json, config, f.path);
}

/** Whether a "llama" vocabulary has the llama2.c layout refuseNonLlama2cShape checks (then qkd's llama2.c tokenizer reads it). */
function isLlama2cShape(f: GgufFile, tokens: string[]): boolean {
  try {
    refuseNonLlama2cShape(f, tokens);
    return true;
  } catch {
    return false;
  }
}

export function tokenizerFromGguf(f: GgufFile): Tokenizer {
  const model = f.metadata.get('tokenizer.ggml.model');
  const kind = model?.type === 'string' ? model.value : undefined;
  if (kind === 'llama') {
    const tokens = stringArray(f, 'tokenizer.ggml.tokens');
    const scores = numberArray(f, 'tokenizer.ggml.scores');
    // Other layouts (Gemma, Mistral v0.3, …) as a Hugging Face tokenizer with llama.cpp's splitting.
    if (!isLlama2cShape(f, tokens)) return hfSentencePieceFromGguf(f, tokens, scores);
    const pieces = tokens.map((s) => Buffer.from(s.replaceAll('\u2581', ' '), 'utf8'));
    return new Llama2cTokenizer(pieces, scores, pieces.reduce((m, p) => Math.max(m, p.length), 1));
  }
  if (kind === 'gpt2') {
    const tokens = stringArray(f, 'tokenizer.ggml.tokens');
    const table = byteToUnicode();
    const byteLevel = tokens.length >= 256 && table.every((ch, b) => tokens[b] === ch || (b === 0 && tokens[b] === END_OF_TEXT));
    // Not qkd's own shape: a Hugging Face byte-level BPE (Llama-3, Qwen, GPT-2 style), rebuilt as its tokenizer.json.
    if (!byteLevel) return hfByteLevelFromGguf(f, tokens);
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

function unsupported(f: GgufFile, what: string, field = 'tokenizer.ggml'): QkdError {
  return new QkdError('IO', `the GGUF's tokenizer has ${what}; qkd reads byte-level vocabularies (qkd's, Llama-3's, Qwen's) and llama2.c-style SentencePiece ones, not yet others`, { path: f.path, field, hint: "--tokenizer with the model's tokenizer.json" });
}
