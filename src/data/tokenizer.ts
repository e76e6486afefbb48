/**
 * Tokenizers share one interface. The default is byte-level: ids 0..255 are
 * the UTF-8 bytes of the text (no special tokens), so any text encodes.
 */
export interface EncodeOptions {
  /** Prepend the BOS id (when the tokenizer has one). */
  bos?: boolean;
  /** Append the EOS id (when the tokenizer has one). */
  eos?: boolean;
}

export interface Tokenizer {
  readonly kind: 'byte' | 'bpe' | 'llama2c' | 'hf';
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  encode(text: string, options?: EncodeOptions): Int32Array;
  /** Text of a sequence of ids; bytes that do not form valid UTF-8 become U+FFFD. */
  decode(ids: ArrayLike<number>): string;
  /** Contents of a Hugging Face tokenizer.json describing this tokenizer. */
  toTokenizerJson(): Record<string, unknown>;
}

export class ByteTokenizer implements Tokenizer {
  readonly kind = 'byte' as const;
  readonly vocabSize = 256;
  readonly bosId = null;
  readonly eosId = null;

  encode(text: string): Int32Array {
    return Int32Array.from(Buffer.from(text, 'utf8'));
  }

  decode(ids: ArrayLike<number>): string {
    return Buffer.from(Uint8Array.from(ids as ArrayLike<number>)).toString('utf8');
  }

  /** A BPE model with no merges over the 256 byte-level symbols (GPT-2 byte↔unicode map). */
  toTokenizerJson(): Record<string, unknown> {
    const vocab: Record<string, number> = {};
    const map = byteToUnicode();
    for (let b = 0; b < 256; b++) vocab[map[b]!] = b;
    return byteLevelTokenizerJson(vocab, [], false);
  }
}

/**
 * The GPT-2 / Hugging Face ByteLevel byte → printable character map: bytes
 * that are printable Latin-1 map to themselves, the others to U+0100 upwards.
 */
export function byteToUnicode(): string[] {
  const out = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCharCode(printable ? b : next++);
  }
  return out;
}

/**
 * A Hugging Face tokenizer.json for a byte-level BPE: ByteLevel
 * pre-tokenizer and decoder (with the GPT-2 split regex when useRegex),
 * vocab keyed by byte-level strings, merges as "a b" in rank order.
 */
export function byteLevelTokenizerJson(vocab: Record<string, number>, merges: string[], useRegex: boolean): Record<string, unknown> {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: { ...byteLevel },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}
