/**
 * Hugging Face tokenizers as the models ship them: a tokenizer.json (with its
 * normalizer, pre-tokenizer, BPE / Unigram / WordPiece model, added and
 * special tokens, post-processor and decoder) and, when present, the
 * tokenizer_config.json beside it (BOS/EOS names, add_bos_token, the chat
 * template). The work is done by the official `@huggingface/tokenizers`
 * (pure JavaScript, the port of the Rust library Transformers uses); this
 * class maps it onto qkd's Tokenizer interface and states the BOS/EOS rules.
 *
 * qkd's encode() returns the text's tokens only; BOS and EOS are added when
 * asked for ({ bos, eos }), as for every qkd tokenizer, so a corpus becomes
 * one stream without a BOS in every chunk. `addsBos` / `addsEos` say what the
 * model's own post-processor does (encodeForModel applies it), which is what
 * generation and chat need.
 */
import { readFileSync } from 'node:fs';
import { Tokenizer as HfLibraryTokenizer } from '@huggingface/tokenizers';
import { QkdError } from '../errors.js';
import { byteToUnicode, type EncodeOptions, type Tokenizer } from './tokenizer.js';

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A special token named in tokenizer_config.json: a string or an AddedToken-like object. */
function tokenName(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return null;
}

export class HfTokenizer implements Tokenizer {
  readonly kind = 'hf' as const;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** True when the model's post-processor puts BOS before a text (Llama-2, Gemma). */
  readonly addsBos: boolean;
  /** True when it puts EOS after one. */
  readonly addsEos: boolean;
  /** The chat template of tokenizer_config.json (Jinja), when there is one. */
  readonly chatTemplate: string | null;
  /** Ids of the added tokens marked special (never produced from plain text unless written out). */
  readonly specialIds: ReadonlySet<number>;
  private readonly library: HfLibraryTokenizer;
  /** True when tokenizer_config.json states add_bos_token / add_eos_token (they then decide encodeForModel). */
  private readonly configFlags: boolean;

  constructor(
    private readonly json: Json,
    private readonly config: Json,
    readonly source = 'tokenizer.json',
  ) {
    const model = json.model;
    if (!isObject(model) || typeof model.type !== 'string') {
      throw new QkdError('IO', 'tokenizer.json has no model object with a type', { path: source, field: 'model.type', hint: 'a Hugging Face tokenizer.json (BPE, Unigram or WordPiece)' });
    }
    // The library's own message for another type ("text is not iterable") would not say what is wrong.
    if (!['BPE', 'Unigram', 'WordPiece', 'WordLevel'].includes(model.type)) {
      throw new QkdError('IO', `tokenizer.json's model.type is ${JSON.stringify(model.type)}, which Hugging Face tokenizers do not define`, { path: source, field: 'model.type', hint: 'BPE, Unigram, WordPiece or WordLevel' });
    }
    try {
      this.library = new HfLibraryTokenizer(json, config);
    } catch (err) {
      throw new QkdError('IO', `@huggingface/tokenizers cannot build this tokenizer: ${(err as Error).message}`, { path: source, hint: 'a tokenizer.json the Transformers library loads' });
    }
    let maxId = -1;
    for (const id of this.library.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    const special = new Set<number>();
    for (const [id, token] of this.library.get_added_tokens_decoder()) if (token.special) special.add(id);
    this.specialIds = special;
    const idOf = (key: string): number | null => {
      const name = tokenName(config[key]);
      if (name === null) return null;
      const id = this.library.token_to_id(name);
      if (id === undefined) throw new QkdError('IO', `tokenizer_config.json names ${key} '${name}', which is not a token of tokenizer.json`, { path: source, field: key });
      return id;
    };
    this.bosId = idOf('bos_token');
    this.eosId = idOf('eos_token');
    // add_bos_token / add_eos_token in tokenizer_config.json decide, as Transformers' Llama and Gemma
    // tokenizers rebuild their post-processor from them; without them, what the post-processor adds,
    // observed rather than re-derived from its many forms.
    const probe = this.library.encode('a', { add_special_tokens: true }).ids;
    const bare = this.library.encode('a', { add_special_tokens: false }).ids;
    this.configFlags = typeof config.add_bos_token === 'boolean' || typeof config.add_eos_token === 'boolean';
    this.addsBos = this.bosId !== null && (typeof config.add_bos_token === 'boolean' ? config.add_bos_token : probe.length > bare.length && probe[0] === this.bosId);
    this.addsEos = this.eosId !== null && (typeof config.add_eos_token === 'boolean' ? config.add_eos_token : probe.length > bare.length && probe[probe.length - 1] === this.eosId);
    const template = config.chat_template;
    this.chatTemplate = typeof template === 'string' ? template : null;
  }

  /** The text's tokens; BOS/EOS only when asked for. Special-token strings in the text become those tokens, as in Transformers. */
  encode(text: string, options: EncodeOptions = {}): Int32Array {
    const ids = this.library.encode(text, { add_special_tokens: false }).ids;
    const bos = options.bos === true && this.bosId !== null;
    const eos = options.eos === true && this.eosId !== null;
    const out = new Int32Array(ids.length + (bos ? 1 : 0) + (eos ? 1 : 0));
    if (bos) out[0] = this.bosId!;
    out.set(ids, bos ? 1 : 0);
    if (eos) out[out.length - 1] = this.eosId!;
    return out;
  }

  /** The text as the model's own tokenizer encodes it (BOS for Llama-2 and Gemma), by addsBos / addsEos. */
  encodeForModel(text: string): Int32Array {
    if (!this.configFlags) return Int32Array.from(this.library.encode(text, { add_special_tokens: true }).ids);
    return this.encode(text, { bos: this.addsBos, eos: this.addsEos });
  }

  /**
   * The text of `ids`, the exact inverse of encode: no clean-up of spaces
   * before punctuation (Transformers does it when clean_up_tokenization_spaces
   * is set, which would make decode(encode(x)) differ from x).
   */
  decode(ids: ArrayLike<number>): string {
    const list = Array.from(ids);
    const bad = list.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= this.vocabSize);
    if (bad >= 0) throw new QkdError('ARGUMENT', `token id ${list[bad]} at position ${bad} is out of range`, { field: 'ids', hint: `ids from 0 to ${this.vocabSize - 1}` });
    // A leading BOS and a trailing EOS decode to nothing, as for qkd's other tokenizers; special tokens elsewhere are kept as text.
    const first = list.length > 0 && list[0] === this.bosId ? 1 : 0;
    const last = list.length > first && list[list.length - 1] === this.eosId ? list.length - 1 : list.length;
    const kept = list.slice(first, last);
    return kept.length === 0 ? '' : this.library.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /**
   * The bytes of text one token stands for, from its vocabulary spelling:
   * byte-level BPE (GPT-2, Llama-3, Qwen) maps each character back to its
   * byte; SentencePiece-style vocabularies (Llama-2, Gemma) spell a space
   * as ▁ and a fallback byte as <0xAB>. Special tokens stand for no text.
   * (Decoding one token alone is not this: SentencePiece decoders drop the
   * leading space of a text, so "▁the" alone decodes to "the".) Bits per
   * byte sum these over the scored tokens.
   */
  tokenBytes(id: number): Uint8Array {
    if (this.specialIds.has(id)) return new Uint8Array(0);
    const piece = this.library.id_to_token(id);
    if (piece === undefined) return new Uint8Array(0);
    if (this.byteLevel) {
      this.unicodeToByte ??= new Map(byteToUnicode().map((ch, b) => [ch, b]));
      const out: number[] = [];
      for (const ch of piece) {
        const b = this.unicodeToByte.get(ch);
        if (b === undefined) return Buffer.from(piece, 'utf8'); // an added token written as plain text
        out.push(b);
      }
      return Uint8Array.from(out);
    }
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byte !== null) return Uint8Array.of(parseInt(byte[1]!, 16));
    return Buffer.from(piece.replace(/\u2581/g, ' '), 'utf8');
  }

  /** True when the vocabulary is spelled byte-level (GPT-2's byte-to-character map). */
  private get byteLevel(): boolean {
    const has = (p: unknown): boolean => isObject(p) && (p.type === 'ByteLevel' || (Array.isArray(p.pretokenizers) && p.pretokenizers.some(has)) || (Array.isArray(p.decoders) && p.decoders.some(has)));
    return has(this.json.pre_tokenizer) || has(this.json.decoder);
  }

  private unicodeToByte: Map<string, number> | undefined;

  /** The token's string in the vocabulary (its tokenizer.json spelling), or undefined. */
  tokenString(id: number): string | undefined {
    return this.library.id_to_token(id);
  }

  toTokenizerJson(): Record<string, unknown> {
    return this.json;
  }

  /** The tokenizer_config.json object (empty when the model had none). */
  tokenizerConfig(): Record<string, unknown> {
    return this.config;
  }
}

/** A JSON file that must hold an object; errors name the file. */
export function readJsonObject(path: string, what: string): Json {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new QkdError('IO', `cannot read ${what}: ${(err as Error).message}`, { path });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new QkdError('IO', `${what} is not valid JSON: ${(err as Error).message}`, { path });
  }
  if (!isObject(value)) throw new QkdError('IO', `${what} is not a JSON object`, { path });
  return value;
}

/** A tokenizer.json and the tokenizer_config.json at `configPath` (omitted: none). */
export function loadHfTokenizer(tokenizerPath: string, configPath?: string): HfTokenizer {
  const json = readJsonObject(tokenizerPath, 'tokenizer.json');
  const config = configPath === undefined ? {} : readJsonObject(configPath, 'tokenizer_config.json');
  return new HfTokenizer(json, config, tokenizerPath);
}
