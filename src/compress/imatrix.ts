/**
 * The importance of every weight matrix's input features, from calibration
 * text: for each Linear, the mean over calibration tokens of the square of
 * each input feature, E[x_j²]. A weight W[i, j] meets feature j on every
 * token, so the output error of a rounding error e[i, j] grows with
 * E[x_j²]·e[i, j]²: this is the diagonal of the layer's input second-moment
 * matrix, the same statistic as llama.cpp's importance matrix (imatrix).
 * The K-quant encoders weight their sub-block fits by it
 * (docs/ggml-formats.md, "Importance-weighted fitting").
 */
import { QkdError } from '../errors.js';
import { Linear } from '../nn/layers.js';
import type { LlamaModel } from '../models/llama.js';
import { Rng, noGrad } from '../tensor/index.js';

export interface ImportanceOptions {
  /** Calibration token ids. */
  tokens: Int32Array;
  /** Tokens per window (default 128, capped by the model's context). */
  seqLen?: number;
  /** Windows per forward pass (default 4). */
  batch?: number;
  /** Forward passes (default 8): batches · batch · seqLen calibration tokens. */
  batches?: number;
  seed?: number;
}

/**
 * Importance of one weight: one value per input column, relative (mean 1)
 * and floored at IMPORTANCE_FLOOR so that no sub-block's fit is weightless
 * (a feature the calibration text never excites still has weights worth
 * keeping); and the tokens it was measured on.
 */
export interface WeightImportance {
  values: Float32Array;
  tokens: number;
}

/** The smallest relative importance a column keeps. */
export const IMPORTANCE_FLOOR = 1e-3;

/**
 * Mean square input feature of every Linear of `model`, by the Hugging Face
 * name of its weight (for tied embeddings the head's importance is stored
 * under the shared weight's name). Windows are drawn at seeded random
 * offsets; sums accumulate in float64.
 */
export function collectImportance(model: LlamaModel, options: ImportanceOptions): Map<string, WeightImportance> {
  const seqLen = Math.min(options.seqLen ?? 128, model.config.max_position_embeddings);
  const batch = options.batch ?? 4;
  const batches = options.batches ?? 8;
  for (const [field, v] of [['seqLen', seqLen], ['batch', batch], ['batches', batches]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new QkdError('ARGUMENT', `importance ${field} must be a positive integer, got ${v}`, { field });
  }
  const tokens = options.tokens;
  if (tokens.length < seqLen) throw new QkdError('ARGUMENT', `the calibration text has ${tokens.length} tokens, fewer than one window of ${seqLen}`, { field: 'calibration', hint: 'more calibration text' });
  const vocab = model.config.vocab_size;
  const bad = tokens.findIndex((t) => t < 0 || t >= vocab);
  if (bad >= 0) throw new QkdError('ARGUMENT', `calibration token ${tokens[bad]} at position ${bad} is outside the vocabulary [0, ${vocab})`, { field: 'calibration' });

  const nameOf = new Map(model.arena.entries.map((e) => [e.tensor, e.name]));
  const sums = new Map<string, { sum: Float64Array; count: number }>();
  const removers: (() => void)[] = [];
  for (const m of model.namedModules().values()) {
    if (!(m instanceof Linear)) continue;
    const name = nameOf.get(m.weight);
    if (name === undefined) continue;
    const cols = m.weight.shape[1]!;
    const acc = { sum: new Float64Array(cols), count: 0 };
    sums.set(name, acc);
    removers.push(
      m.registerForwardHook((event) => {
        const x = event.input?.data;
        if (x === undefined) return;
        const rows = x.length / cols;
        for (let r = 0; r < rows; r++) {
          const at = r * cols;
          for (let j = 0; j < cols; j++) acc.sum[j]! += x[at + j]! * x[at + j]!;
        }
        acc.count += rows;
      }),
    );
  }
  const rng = new Rng(options.seed ?? 1234);
  try {
    for (let b = 0; b < batches; b++) {
      const ids = new Int32Array(batch * seqLen);
      for (let s = 0; s < batch; s++) {
        const start = rng.int(tokens.length - seqLen + 1);
        ids.set(tokens.subarray(start, start + seqLen), s * seqLen);
      }
      noGrad(() => model.forward(ids, batch, seqLen));
    }
  } finally {
    for (const remove of removers) remove();
  }
  const out = new Map<string, WeightImportance>();
  for (const [name, { sum, count }] of sums) {
    if (count === 0) continue;
    let total = 0;
    for (const s of sum) total += s;
    const mean = total / sum.length;
    const values = mean > 0 ? Float32Array.from(sum, (s) => Math.max(IMPORTANCE_FLOOR, s / mean)) : new Float32Array(sum.length).fill(1);
    out.set(name, { values, tokens: count });
  }
  return out;
}
