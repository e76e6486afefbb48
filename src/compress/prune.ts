/**
 * `qkd prune` as one API call: a model pruned Minitron-style
 * (distill/minitron.ts, docs/minitron.md) to a given shape or parameter
 * budget, with importance measured on calibration text, written as a model
 * directory every command loads (config.json, model.safetensors, the
 * tokenizer files, and prune.json saying what was kept).
 */
import { existsSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError, attributed } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { prepareOutputDirectory } from '../io/output-dir.js';
import { loadCorpus, splitTokens } from '../data/corpus.js';
import { copyTokenizerFiles, saveTokenizerFiles } from '../data/tokenizer-io.js';
import { loadModelAny, loadModelTokenizer, modelDirectory } from '../models/load-any.js';
import { saveLlama } from '../models/llama-io.js';
import { calibrationWindows } from '../distill/student-init.js';
import { keepLayers, measureImportance, pruneModel, shapeForParameters, DEFAULT_AGGREGATION, type Aggregation, type PruneReport, type PruneShape } from '../distill/minitron.js';
import { noGrad } from '../tensor/tape.js';
import { refuseOutputOverModel } from './output-guard.js';
import type { LlamaModel } from '../models/llama.js';

export interface PruneFileOptions {
  out: string;
  /** The target shape (fields left out keep the teacher's), or … */
  shape?: PruneShape;
  /** … a parameter budget: the widest shape of the same depth within it. */
  targetParams?: number;
  /** Calibration text: a corpus path or 'default' (its training split). */
  calibration?: string;
  /** Calibration sequences (default 32). */
  samples?: number;
  /** Tokens per calibration sequence (default 128, at most the model's context). */
  seqLen?: number;
  aggregation?: Aggregation;
  depth?: 'block-influence' | 'ppl';
  force?: boolean;
}

export interface PruneFileResult {
  out: string;
  params: number;
  sourceParams: number;
  shape: Required<PruneShape>;
  report: PruneReport;
}

export function pruneModelFile(modelPath: string, options: PruneFileOptions): PruneFileResult {
  if ((options.shape === undefined) === (options.targetParams === undefined)) {
    throw new QkdError('ARGUMENT', 'give either a target shape or a parameter budget, not both and not neither', { field: '--target-params', hint: '--target-params N, or --hidden/--ffn/--heads/--kv-heads/--layers' });
  }
  refuseOutputOverModel(modelPath, options.out, 'pruning');
  const teacher = loadModelAny(modelPath);
  if (teacher.arena.released) throw new QkdError('CONFIG', 'pruning reads the model in float32', { path: modelPath });
  const created = !existsSync(options.out);
  prepareOutputDirectory(options.out, { force: options.force });
  try {
    return pruneInto(teacher, modelPath, options);
  } catch (error) {
    // A failed run leaves no empty directory behind that it created (a directory the user made stays).
    if (created && existsSync(options.out) && readdirSync(options.out).length === 0) rmdirSync(options.out);
    throw error;
  }
}

function pruneInto(teacher: LlamaModel, modelPath: string, options: PruneFileOptions): PruneFileResult {
  const tokenizer = loadModelTokenizer(teacher, modelPath);
  const data = options.calibration ?? 'default';
  const ids = Int32Array.from(tokenizer.encode(loadCorpus(data)));
  // Calibrate on the training split of the embedded corpus, so its held-out tail stays unseen.
  const tokens = data === 'default' ? splitTokens(ids).train : ids;
  const seqLen = Math.min(options.seqLen ?? 128, teacher.config.max_position_embeddings);
  const samples = options.samples ?? 32;
  const batch = Math.min(8, samples);
  const windows = attributed({ path: data === 'default' ? undefined : data, field: '--calibration' }, ['calibration'], () => calibrationWindows({ tokens, batch, seqLen, batches: Math.ceil(samples / batch) }));
  const importance = measureImportance(teacher, windows.map((w) => w.inputs), batch, seqLen, options.aggregation ?? DEFAULT_AGGREGATION);
  const shape = options.shape ?? shapeForParameters(teacher.config, options.targetParams!);
  const blockLoss = (kept: number[]): number => {
    const m = keepLayers(teacher, kept);
    let total = 0;
    noGrad(() => {
      for (const w of windows) total += m.loss(m.forward(w.inputs, batch, seqLen), w.targets).item();
    });
    return total / windows.length;
  };
  const { model, report } = pruneModel(teacher, importance, shape, { depth: options.depth, blockLoss });
  saveLlama(options.out, model);
  const dir = modelDirectory(modelPath);
  if (existsSync(join(dir, 'tokenizer.json'))) copyTokenizerFiles(dir, options.out);
  else saveTokenizerFiles(options.out, tokenizer);
  const c = model.config;
  const result: PruneFileResult = {
    out: options.out,
    params: model.parameterCount,
    sourceParams: teacher.parameterCount,
    shape: { hidden_size: c.hidden_size, intermediate_size: c.intermediate_size, num_attention_heads: c.num_attention_heads, num_key_value_heads: c.num_key_value_heads, num_hidden_layers: c.num_hidden_layers },
    report,
  };
  writeBytesAtomic(join(options.out, 'prune.json'), JSON.stringify({ source: modelPath, calibration: data, samples, seq_len: seqLen, aggregation: options.aggregation ?? DEFAULT_AGGREGATION, depth: options.depth ?? 'block-influence', ...result, block_influence: Array.from(importance.blockInfluence) }, null, 2) + '\n');
  return result;
}
