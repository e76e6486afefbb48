/**
 * Autoregressive sampling (like llama2.c's run.c): start from BOS (when the
 * tokenizer has one) followed by the prompt, then repeatedly run the model
 * and sample the next token. temperature 0 is greedy (argmax, first index on
 * ties); otherwise softmax(logits / temperature), optionally restricted to
 * the k most likely tokens (top-k), then to the smallest set of tokens whose
 * probability reaches top_p (nucleus). Generation stops early at the
 * tokenizer's end-of-sequence id when one is given.
 * The prompt runs once into a key/value cache (KvCache in llama.ts) and
 * each new token runs alone against it, while the sequence fits
 * max_position_embeddings; past that, each step re-runs the last
 * max_position_embeddings tokens without the cache. A state-space model
 * (config.ssm without attention layers) keeps its cache for any length.
 */
import { QkdError } from '../errors.js';
import { KvCache, type LlamaModel } from './llama.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tape.js';

export interface GenerateOptions {
  /** New tokens to produce. */
  steps: number;
  temperature?: number;
  topP?: number;
  /** Sample only among the k most likely tokens (0 = all). */
  topK?: number;
  seed?: number;
  /** Stop after producing this id (the tokenizer's EOS); it is included in the output. */
  eosId?: number | null;
}

/** Samples a token id from logits. */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, rng: Rng, topK = 0): number {
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp((logits[i]! - max) / temperature);
  for (let i = 0; i < probs.length; i++) probs[i]! /= sum;
  let order: number[] = Array.from(probs.keys());
  const restrictK = topK > 0 && topK < order.length;
  sum = 1;
  if (topP < 1 || restrictK) {
    order.sort((a, b) => probs[b]! - probs[a]! || a - b);
    if (restrictK) order = order.slice(0, topK);
    // The nucleus is taken within the top-k tokens, renormalised.
    const target = restrictK ? topP * order.reduce((m, i) => m + probs[i]!, 0) : topP;
    let mass = 0;
    let cut = order.length;
    for (let k = 0; k < order.length; k++) {
      mass += probs[order[k]!]!;
      if (mass >= target) {
        cut = k + 1;
        break;
      }
    }
    order = order.slice(0, cut);
    sum = order.reduce((m, i) => m + probs[i]!, 0);
  }
  let r = rng.uniform() * sum;
  for (const i of order) {
    r -= probs[i]!;
    if (r <= 0) return i;
  }
  return order[order.length - 1]!;
}

/**
 * Yields generated ids one at a time (not including the prompt), so callers
 * can show each token as it comes and stop whenever they like.
 */
export function* generateStream(model: LlamaModel, promptIds: Int32Array, options: GenerateOptions): Generator<number, void, undefined> {
  const temperature = options.temperature ?? 1;
  const topP = options.topP ?? 1;
  const topK = options.topK ?? 0;
  if (!(temperature >= 0)) throw new QkdError('ARGUMENT', `temperature must be ≥ 0, got ${temperature}`, { field: 'temperature' });
  if (!(topP > 0 && topP <= 1)) throw new QkdError('ARGUMENT', `top-p must be in (0, 1], got ${topP}`, { field: 'top-p' });
  if (!Number.isInteger(topK) || topK < 0) throw new QkdError('ARGUMENT', `top-k must be a whole number ≥ 0, got ${topK}`, { field: 'top-k' });
  if (promptIds.length === 0) throw new QkdError('ARGUMENT', 'generation needs at least one starting token (a BOS or a prompt)', { field: 'prompt' });
  const V = model.config.vocab_size;
  const bad = promptIds.findIndex((id) => id < 0 || id >= V);
  if (bad >= 0) throw new QkdError('ARGUMENT', `prompt token ${promptIds[bad]} at position ${bad} is outside the model's vocabulary [0, ${V})`, { field: 'prompt' });
  const rng = new Rng(options.seed ?? 0);
  // A model of state-space layers only carries a fixed-size state: no context bound for the cache (docs/mohawk.md).
  const ssm = model.config.ssm;
  const window = ssm !== null && ssm.attention_layers.length === 0 ? Infinity : model.config.max_position_embeddings;
  const ids = Array.from(promptIds);
  // The cache holds the sequence while it fits the context; past that, each step re-runs the last `window` tokens.
  // Sized for the tokens this call can hold (the prompt and the steps), not the whole context: a model with a
  // context of a million tokens asked for 5 steps would have allocated its full cache.
  const cache = ids.length < window ? new KvCache(model.config, Math.max(1, Math.min(model.config.max_position_embeddings, ids.length + options.steps))) : null;
  for (let s = 0; s < options.steps; s++) {
    const useCache = cache !== null && ids.length <= window;
    const ctx = useCache ? Int32Array.from(ids.slice(cache.position)) : Int32Array.from(ids.slice(-window));
    const next = noGrad(() => {
      const logits = model.forward(ctx, 1, ctx.length, useCache ? { cache } : {}).data;
      return sampleToken(logits.subarray((ctx.length - 1) * V, ctx.length * V), temperature, topP, rng, topK);
    });
    ids.push(next);
    yield next;
    if (options.eosId !== undefined && options.eosId !== null && next === options.eosId) return;
  }
}

/** Returns the generated ids (not including the prompt). */
export function generate(model: LlamaModel, promptIds: Int32Array, options: GenerateOptions): Int32Array {
  return Int32Array.from(generateStream(model, promptIds, options));
}
