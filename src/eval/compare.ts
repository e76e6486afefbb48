/**
 * `qkd eval --model A --reference B`: how far model A's next-token
 * distributions are from a reference B's on the same tokens, in the figures
 * llama.cpp's perplexity tool reports in its KL-divergence mode: both
 * perplexities, the per-token KL(B ‖ A) (mean and percentiles), the change
 * Δp = p_A(correct) − p_B(correct) (mean and RMS), and how often both put
 * the same token first. Both models see the same windows as `qkd eval`.
 * For a student and its teacher as the reference, it also states what the
 * student keeps and what it saves: retention = reference ppl / model ppl,
 * and the compression in parameters and in the bytes of the weight files.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { loadModelAny, modelDirectory } from '../models/load-any.js';
import type { LlamaModel } from '../models/llama.js';
import { IGNORED_TARGET, sequentialBatches } from '../data/corpus.js';
import { noGrad } from '../tensor/tape.js';
import { evalTokens, type EvaluateModelOptions } from './perplexity.js';

export interface ModelComparison {
  tokens: number;
  ppl: number;
  reference_ppl: number;
  /** KL(reference ‖ model) per token (nats). */
  kld: { mean: number; median: number; p90: number; p95: number; p99: number; p999: number; max: number };
  /** p_model(correct) − p_reference(correct). */
  delta_p: { mean: number; rms: number };
  /** Share of positions whose most likely token is the same in both. */
  same_top: number;
  /** reference_ppl / ppl: the share of the reference's perplexity the model keeps (1: all of it). */
  retention: number;
  params: number;
  reference_params: number;
  /** Weight-file bytes on disk (safetensors, GGUF or llama2.c files of the model). */
  bytes: number;
  reference_bytes: number;
  /** reference / model, in parameters and in weight-file bytes. */
  compression: { params: number; bytes: number };
  split: 'validation' | 'all';
  seq_len: number;
}

/** Bytes of a model's weight files: the file itself, or the safetensors / GGUF / .bin files of its model directory. */
export function weightFileBytes(path: string): number {
  if (statSync(path).isFile()) return statSync(path).size;
  const dir = modelDirectory(path);
  return readdirSync(dir)
    .filter((f) => /\.(safetensors|gguf|bin)$/i.test(f))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

/** log-softmax of one row into `out` (float64). */
function logSoftmax(row: Float32Array, out: Float64Array): void {
  let max = -Infinity;
  for (const v of row) if (v > max) max = v;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < row.length; i++) out[i] = row[i]! - lse;
}

function argmax(a: Float64Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** The q-quantile (0..1) of sorted values, by linear interpolation. */
function quantile(sorted: Float64Array, q: number): number {
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

export function compareModels(modelPath: string, referencePath: string, options: EvaluateModelOptions = {}): ModelComparison {
  const model = loadModelAny(modelPath);
  const reference: LlamaModel = loadModelAny(referencePath);
  const V = model.config.vocab_size;
  if (reference.config.vocab_size !== V) {
    throw new QkdError('ARGUMENT', `the reference has a ${reference.config.vocab_size}-token vocabulary, the model ${V}: their distributions cannot be compared token by token`, { path: referencePath, field: '--reference', hint: 'a reference with the same tokenizer (the FP32 model a quantized one came from)' });
  }
  const { tokens, mask, split, seqLen } = evalTokens(model, modelPath, options);
  if (seqLen > reference.config.max_position_embeddings) {
    throw new QkdError('ARGUMENT', `sequence length ${seqLen} exceeds the reference's context ${reference.config.max_position_embeddings}`, { path: referencePath, field: '--seq-len' });
  }
  const kls: number[] = [];
  let nll = 0;
  let nllRef = 0;
  let dp = 0;
  let dp2 = 0;
  let same = 0;
  const a = new Float64Array(V);
  const b = new Float64Array(V);
  noGrad(() => {
    for (const batch of sequentialBatches(tokens, 1, seqLen, Infinity, mask)) {
      const za = model.forward(batch.inputs, 1, seqLen).data as Float32Array;
      const zb = reference.forward(batch.inputs, 1, seqLen).data as Float32Array;
      for (let p = 0; p < seqLen; p++) {
        const t = batch.targets[p]!;
        if (t === IGNORED_TARGET) continue; // a position a chat loss mask leaves out
        logSoftmax(za.subarray(p * V, (p + 1) * V), a);
        logSoftmax(zb.subarray(p * V, (p + 1) * V), b);
        let kl = 0;
        for (let i = 0; i < V; i++) kl += Math.exp(b[i]!) * (b[i]! - a[i]!);
        kls.push(Math.max(0, kl));
        nll -= a[t]!;
        nllRef -= b[t]!;
        const d = Math.exp(a[t]!) - Math.exp(b[t]!);
        dp += d;
        dp2 += d * d;
        if (argmax(a) === argmax(b)) same++;
      }
    }
  });
  const n = kls.length;
  if (n === 0) throw new QkdError('ARGUMENT', `text has ${tokens.length} tokens, fewer than one window of ${seqLen + 1}`, { field: 'data', hint: options.wholeText ? 'a longer text' : 'a longer text or --whole-file' });
  const sorted = Float64Array.from(kls).sort();
  const bytes = weightFileBytes(modelPath);
  const referenceBytes = weightFileBytes(referencePath);
  return {
    tokens: n,
    ppl: Math.exp(nll / n),
    reference_ppl: Math.exp(nllRef / n),
    retention: Math.exp(nllRef / n) / Math.exp(nll / n),
    params: model.parameterCount,
    reference_params: reference.parameterCount,
    bytes,
    reference_bytes: referenceBytes,
    compression: { params: reference.parameterCount / model.parameterCount, bytes: bytes > 0 ? referenceBytes / bytes : NaN },
    kld: { mean: kls.reduce((s, v) => s + v, 0) / n, median: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), p95: quantile(sorted, 0.95), p99: quantile(sorted, 0.99), p999: quantile(sorted, 0.999), max: sorted[n - 1]! },
    delta_p: { mean: dp / n, rms: Math.sqrt(dp2 / n) },
    same_top: same / n,
    split,
    seq_len: seqLen,
  };
}
