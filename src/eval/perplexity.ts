/**
 * Perplexity and bits per byte of a model on a text: the text is tokenized,
 * cut into non-overlapping windows of seq_len + 1 tokens (the last partial
 * window is dropped), and the mean next-token cross-entropy is taken over
 * every predicted token. bits/byte = total nats / ln 2 / UTF-8 bytes of the
 * predicted tokens, which makes tokenizers comparable. Chat data (JSON
 * Lines {"messages"} rows) is rendered with the model tokenizer's chat
 * template and only the assistant's tokens are scored (data/chat.ts); the
 * held-out part is then the last 10% of the conversations.
 */
import { existsSync, statSync } from 'node:fs';
import { QkdError } from '../errors.js';
import type { LlamaModel } from '../models/llama.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { IGNORED_TARGET, loadCorpusData, sequentialBatches, splitText, type CorpusOptions } from '../data/corpus.js';
import { isChatCorpus, tokenizeChatEval } from '../data/chat.js';
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
  return evaluateTokens(model, tokenizer, tokenizer.encode(text), seqLen, batchSize);
}

/** evaluatePerplexity on tokens; a loss mask (1: scored) leaves the other targets out of the loss and the byte count. */
export function evaluateTokens(model: LlamaModel, tokenizer: Tokenizer, tokens: Int32Array, seqLen: number, batchSize = 8, mask?: Uint8Array): EvalResult {
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
      let scored = 0;
      for (const t of targets) {
        if (t === IGNORED_TARGET) continue;
        scored++;
        bytes += bytesOf(t);
      }
      if (scored === 0) return;
      nats += model.loss(model.forward(inputs, B, seqLen), targets).item() * scored;
      count += scored;
    };
    for (const b of sequentialBatches(tokens.subarray(0, full * seqLen + 1), batchSize, seqLen, Infinity, mask)) run(b.inputs, b.targets, batchSize);
    for (const b of sequentialBatches(tokens.subarray(full * seqLen), 1, seqLen, Infinity, mask?.subarray(full * seqLen))) run(b.inputs, b.targets, 1);
  });
  if (count === 0) throw new QkdError('ARGUMENT', mask ? `the conversations' ${tokens.length} tokens hold no scored assistant token in a full window of ${seqLen + 1}` : `text has ${tokens.length} tokens, fewer than one window of ${seqLen + 1}`, { field: 'data' });
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

/**
 * The tokens `qkd eval` scores: the held-out tail (or the whole text) of a
 * corpus, in the model's tokenizer; for chat data, the held-out
 * conversations (or all) and their loss mask.
 */
export function evalTokens(model: Pick<LlamaModel, 'config'>, modelPath: string, options: EvaluateModelOptions, tokenizer = loadModelTokenizer(model, modelPath, options.tokenizer)): { tokenizer: Tokenizer; tokens: Int32Array; mask?: Uint8Array; split: 'validation' | 'all'; seqLen: number } {
  const context = model.config.max_position_embeddings;
  const seqLen = options.seqLen ?? context;
  if (!Number.isInteger(seqLen) || seqLen < 1 || seqLen > context) {
    throw new QkdError('ARGUMENT', `sequence length ${seqLen} is outside the model's context`, { path: modelPath, field: '--seq-len', hint: `1 to ${context} (max_position_embeddings)` });
  }
  const data = loadCorpusData(options.data ?? 'default', options.corpus);
  const split = options.wholeText ? 'all' : 'validation';
  if (isChatCorpus(data)) return { tokenizer, ...tokenizeChatEval(tokenizer, data, split), split, seqLen };
  return { tokenizer, tokens: tokenizer.encode(split === 'all' ? data : splitText(data).validation), split, seqLen };
}

/** Names --whole-file when the held-out part is what is too short. */
function explainShort(err: unknown, split: 'validation' | 'all', data: string | undefined): unknown {
  if (!(err instanceof QkdError) || err.field !== 'data') return err;
  if (split === 'validation') {
    return new QkdError('ARGUMENT', `the held-out last 10% of the text is too short to score: ${err.bare}`, { path: data, field: 'data', hint: 'a longer text, a smaller --seq-len, or --whole-file to score all of it' });
  }
  // The whole text is too short: say which file.
  return new QkdError(err.code, err.bare, { path: data ?? err.path, field: 'data', hint: err.hint ?? 'a longer text or a smaller --seq-len' });
}

/** `qkd eval` as one call: load any model and its tokenizer, score a corpus. */
export function evaluateModel(modelPath: string, options: EvaluateModelOptions = {}): ModelEvalResult {
  const model = loadModelAny(modelPath);
  const { tokenizer, tokens, mask, split, seqLen } = evalTokens(model, modelPath, options);
  try {
    return { ...evaluateTokens(model, tokenizer, tokens, seqLen, 8, mask), split, seq_len: seqLen };
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
  // A directory (a qkd or Hugging Face model) is no GGUF file either.
  const directory = existsSync(modelPath) && statSync(modelPath).isDirectory();
  if (directory || modelFileFormat(modelPath) !== 'gguf') throw new QkdError('ARGUMENT', `the llama.cpp engine runs GGUF files${directory ? ', and this is a directory' : ''}`, { path: modelPath, field: '--engine', hint: 'a .gguf file (qkd export writes one)' });
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
  const { tokenizer, tokens, mask, split, seqLen } = evalTokens({ config }, modelPath, options, own ?? loadModelTokenizer({ config }, modelPath, options.tokenizer));
  try {
    const r = await llamaCppPerplexity(modelPath, tokens, seqLen, mask ? { mask } : {});
    let bytes = 0;
    const windows = Math.floor((tokens.length - 1) / seqLen);
    for (let i = 1; i <= windows * seqLen; i++) if (!mask || mask[i] === 1) bytes += tokenizer.kind === 'byte' ? 1 : tokenByteLength(tokenizer, tokens[i]!);
    return { ppl: r.ppl, loss: r.loss, tokens: r.tokens, bits_per_byte: (r.loss * r.tokens) / Math.LN2 / bytes, split, seq_len: seqLen, warnings: r.warnings };
  } catch (err) {
    throw explainShort(err, split, options.data);
  }
}
