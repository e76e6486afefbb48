/**
 * Autoregressive sampling (like llama2.c's run.c): start from BOS (when the
 * tokenizer has one) followed by the prompt, then repeatedly run the model
 * and sample the next token. temperature 0 is greedy (argmax, first index on
 * ties); otherwise softmax(logits / temperature), optionally restricted to
 * the smallest set of tokens whose probability reaches top_p (nucleus).
 * Without a KV cache each step re-runs the window (at most
 * max_position_embeddings tokens) — fine for the small models qkd trains.
 */
import { QkdError } from '../errors.js';
import type { LlamaModel } from './llama.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tape.js';

export interface GenerateOptions {
  /** New tokens to produce. */
  steps: number;
  temperature?: number;
  topP?: number;
  seed?: number;
}

/** Samples a token id from logits. */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, rng: Rng): number {
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
  if (topP < 1) {
    order.sort((a, b) => probs[b]! - probs[a]! || a - b);
    let mass = 0;
    let cut = order.length;
    for (let k = 0; k < order.length; k++) {
      mass += probs[order[k]!]!;
      if (mass >= topP) {
        cut = k + 1;
        break;
      }
    }
    order = order.slice(0, cut);
    sum = mass;
  } else sum = 1;
  let r = rng.uniform() * sum;
  for (const i of order) {
    r -= probs[i]!;
    if (r <= 0) return i;
  }
  return order[order.length - 1]!;
}

/** Returns the generated ids (not including the prompt). */
export function generate(model: LlamaModel, promptIds: Int32Array, options: GenerateOptions): Int32Array {
  const temperature = options.temperature ?? 1;
  const topP = options.topP ?? 1;
  if (!(temperature >= 0)) throw new QkdError('ARGUMENT', `temperature must be ≥ 0, got ${temperature}`, { field: 'temperature' });
  if (!(topP > 0 && topP <= 1)) throw new QkdError('ARGUMENT', `top-p must be in (0, 1], got ${topP}`, { field: 'top-p' });
  if (promptIds.length === 0) throw new QkdError('ARGUMENT', 'generation needs at least one starting token (a BOS or a prompt)', { field: 'prompt' });
  const rng = new Rng(options.seed ?? 0);
  const V = model.config.vocab_size;
  const window = model.config.max_position_embeddings;
  const ids = Array.from(promptIds);
  const out: number[] = [];
  noGrad(() => {
    for (let s = 0; s < options.steps; s++) {
      const ctx = Int32Array.from(ids.slice(-window));
      const logits = model.forward(ctx, 1, ctx.length).data;
      const next = sampleToken(logits.subarray((ctx.length - 1) * V, ctx.length * V), temperature, topP, rng);
      ids.push(next);
      out.push(next);
    }
  });
  return Int32Array.from(out);
}
