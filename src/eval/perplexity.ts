/**
 * Perplexity and bits per byte of a model on a text: the text is tokenized,
 * cut into non-overlapping windows of seq_len + 1 tokens (the last partial
 * window is dropped), and the mean next-token cross-entropy is taken over
 * every predicted token. bits/byte = total nats / ln 2 / UTF-8 bytes of the
 * predicted tokens, which makes tokenizers comparable.
 */
import { QkdError } from '../errors.js';
import type { LlamaModel } from '../models/llama.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { loadCorpus, sequentialBatches, splitText, type CorpusOptions } from '../data/corpus.js';
import { loadModelAny, loadModelTokenizer } from '../models/load-any.js';
import { modelFileFormat } from '../io/tensor-source.js';
import { llamaCppPerplexity } from './llama-cpp.js';
import { openGguf } from '../io/gguf-reader.js';
import { llamaConfigFromGguf } from '../models/llama-gguf.js';
import { tokenizerFromGguf } from '../data/tokenizer-gguf.js';
import type { LlamaConfig } from '../models/llama-config.js';
import { noGrad } from '../tensor/tape.js';

export interface EvalResult {
  ppl: number;
  bits_per_byte: number;
  tokens: number;
  loss: number;
}

export function evaluatePerplexity(model: LlamaModel, tokenizer: Tokenizer, text: string, seqLen: number, batchSize = 8): EvalResult {
  const tokens = tokenizer.encode(text);
  // Bytes each token stands for (byte-level: 1).
  const byteCache = new Map<number, number>();
  const bytesOf = (id: number): number => {
    let n = byteCache.get(id);
    if (n === undefined) byteCache.set(id, (n = tokenizer.kind === 'byte' ? 1 : tokenByteLength(tokenizer, id)));
    return n;
  };
  let nats = 0;
  let count = 0;
  let bytes = 0;
  noGrad(() => {
    const windows = Math.floor((tokens.length - 1) / seqLen);
    // Full batches first, then the remaining windows one by one.
    const full = Math.floor(windows / batchSize) * batchSize;
    const run = (inputs: Int32Array, targets: Int32Array, B: number): void => {
      const loss = model.loss(model.forward(inputs, B, seqLen), targets).item();
      nats += loss * targets.length;
      count += targets.length;
      for (const t of targets) bytes += bytesOf(t);
    };
    for (const b of sequentialBatches(tokens.subarray(0, full * seqLen + 1), batchSize, seqLen)) run(b.inputs, b.targets, batchSize);
    for (const b of sequentialBatches(tokens.subarray(full * seqLen), 1, seqLen)) run(b.inputs, b.targets, 1);
  });
  if (count === 0) throw new QkdError('ARGUMENT', `text has ${tokens.length} tokens, fewer than one window of ${seqLen + 1}`, { field: 'data' });
  const loss = nats / count;
  return { ppl: Math.exp(loss), bits_per_byte: nats / Math.LN2 / bytes, tokens: count, loss };
}

/** UTF-8 bytes a token stands for (exact for byte-level BPE, decoded length otherwise). */
function tokenByteLength(tokenizer: Tokenizer, id: number): number {
  const withBytes = tokenizer as Tokenizer & { tokenBytes?: (id: number) => Uint8Array };
  return withBytes.tokenBytes ? withBytes.tokenBytes(id).length : Buffer.byteLength(tokenizer.decode([id]), 'utf8');
}

export interface EvaluateModelOptions {
  /** A text file, a directory of .txt/.md files, or 'default' (the embedded corpus). */
  data?: string;
  /** Tokenizer file (default: tokenizer.json beside the model). */
  tokenizer?: string;
  /** Window length (default and maximum: the model's context). */
  seqLen?: number;
  /**
   * Score the whole text. Default: only its held-out tail (the last 10% of
   * its bytes), the part `qkd train` validates on and never trains on, so a
   * model is not scored on its own training text.
   */
  wholeText?: boolean;
  /** Malformed-row handling and text column of JSON Lines / Parquet corpora. */
  corpus?: CorpusOptions;
}

export interface ModelEvalResult extends EvalResult {
  split: 'validation' | 'all';
  seq_len: number;
}

/** The tokens `qkd eval` scores: the held-out tail (or the whole text) of a corpus, in the model's tokenizer. */
export function evalTokens(model: Pick<LlamaModel, 'config'>, modelPath: string, options: EvaluateModelOptions, tokenizer = loadModelTokenizer(model, modelPath, options.tokenizer)): { tokenizer: Tokenizer; text: string; split: 'validation' | 'all'; seqLen: number } {
  const context = model.config.max_position_embeddings;
  const seqLen = options.seqLen ?? context;
  if (!Number.isInteger(seqLen) || seqLen < 1 || seqLen > context) {
    throw new QkdError('ARGUMENT', `sequence length ${seqLen} is outside the model's context`, { path: modelPath, field: '--seq-len', hint: `1 to ${context} (max_position_embeddings)` });
  }
  const text = loadCorpus(options.data ?? 'default', options.corpus);
  const split = options.wholeText ? 'all' : 'validation';
  return { tokenizer, text: split === 'all' ? text : splitText(text).validation, split, seqLen };
}

/** Names --whole-file when the held-out part is what is too short. */
function explainShort(err: unknown, split: 'validation' | 'all', data: string | undefined): unknown {
  if (split === 'validation' && err instanceof QkdError && err.field === 'data') {
    return new QkdError('ARGUMENT', `the held-out last 10% of the text is too short to score: ${err.message}`, { path: data, field: 'data', hint: 'a longer text, a smaller --seq-len, or --whole-file to score all of it' });
  }
  return err;
}

/** `qkd eval` as one call: load any model and its tokenizer, score a corpus. */
export function evaluateModel(modelPath: string, options: EvaluateModelOptions = {}): ModelEvalResult {
  const model = loadModelAny(modelPath);
  const { tokenizer, text, split, seqLen } = evalTokens(model, modelPath, options);
  try {
    return { ...evaluatePerplexity(model, tokenizer, text, seqLen), split, seq_len: seqLen };
  } catch (err) {
    throw explainShort(err, split, options.data);
  }
}

/**
 * `qkd eval --engine llama.cpp`: the same tokens and windows, scored by
 * llama.cpp itself (node-llama-cpp) on a GGUF file. bits_per_byte counts the
 * UTF-8 bytes of the predicted tokens, as evaluatePerplexity does.
 */
export async function evaluateModelInLlamaCpp(modelPath: string, options: EvaluateModelOptions = {}): Promise<ModelEvalResult & { warnings: string[] }> {
  if (modelFileFormat(modelPath) !== 'gguf') throw new QkdError('ARGUMENT', 'the llama.cpp engine runs GGUF files', { path: modelPath, field: '--engine', hint: 'a .gguf file (qkd export writes one)' });
  // Only the shape and the tokenizer are needed here: llama.cpp reads the weights itself.
  const f = openGguf(modelPath);
  let config: LlamaConfig;
  let own: Tokenizer | undefined;
  try {
    config = llamaConfigFromGguf(f);
    own = options.tokenizer === undefined ? tokenizerFromGguf(f) : undefined;
  } finally {
    f.close();
  }
  const { tokenizer, text, split, seqLen } = evalTokens({ config }, modelPath, options, own ?? loadModelTokenizer({ config }, modelPath, options.tokenizer));
  const tokens = tokenizer.encode(text);
  try {
    const r = await llamaCppPerplexity(modelPath, tokens, seqLen);
    let bytes = 0;
    const windows = Math.floor((tokens.length - 1) / seqLen);
    for (let i = 1; i <= windows * seqLen; i++) bytes += tokenizer.kind === 'byte' ? 1 : tokenByteLength(tokenizer, tokens[i]!);
    return { ppl: r.ppl, loss: r.loss, tokens: r.tokens, bits_per_byte: (r.loss * r.tokens) / Math.LN2 / bytes, split, seq_len: seqLen, warnings: r.warnings };
  } catch (err) {
    throw explainShort(err, split, options.data);
  }
}
