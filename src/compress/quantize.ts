/**
 * `qkd quantize` as one API call: profile the model (streaming, data-free),
 * plan bits per tensor (uniform, or mixed under an average-bits budget, plus
 * a user's plan file), quantize with RTN or GPTQ, and write a packed
 * checkpoint that `qkd eval` loads.
 */
import { existsSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { modelFileFormat, openTensorSource } from '../io/tensor-source.js';
import { join } from 'node:path';
import { prepareOutputDirectory } from '../io/output-dir.js';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { loadCorpus, splitTokens } from '../data/corpus.js';
import { copyTokenizerFiles, saveTokenizerFiles } from '../data/tokenizer-io.js';
import { loadModelAny, loadModelTokenizer, modelHome } from '../models/load-any.js';
import { quantizeLlama, type QuantMethod, type QuantizeProgress } from './quantize-model.js';
import { saveQuantizedLlama } from './quantized-io.js';
import { refuseOutputOverModel } from './output-guard.js';
import type { LlamaModel } from '../models/llama.js';
import type { PlanBits, QuantPlan } from '../quant/scheme.js';
import { parsePlanJson } from '../swan/allocate.js';
import { auditAndPlan } from '../swan/plan.js';
import type { ProfileProgress } from '../swan/profile.js';
import type { AuditReport } from '../swan/types.js';

export interface QuantizeFileOptions {
  /** Output directory (config.json, model.safetensors, tokenizer.json, quantization.json). */
  out: string;
  /** Replace the files in a non-empty output directory (refused without it). */
  force?: boolean;
  /** Uniform width (default 4 when no budget is given). */
  bits?: PlanBits;
  /** Average bits per quantized weight (scales included): mixed precision. */
  budgetBits?: number;
  /** Input columns per group; 0 = per output channel (default 128). */
  groupSize?: number;
  symmetric?: boolean;
  method?: QuantMethod;
  /** JSON plan file (name → bits) overriding the computed plan. */
  planFile?: string;
  /** GPTQ calibration text: a file, a directory or 'default' (training split of the embedded corpus). */
  calibration?: string;
  calibrationBatches?: number;
  calibrationSeqLen?: number;
  /**
   * Seed of the sensitivity profile (--budget; default 1234, as `qkd audit`, so both plan alike) and of
   * GPTQ's calibration batches (default 0).
   */
  seed?: number;
  onProfile?: (p: ProfileProgress) => void;
  onQuantize?: (p: QuantizeProgress) => void;
}

export interface QuantizeFileResult {
  out: string;
  plan: QuantPlan;
  avgBits: number;
  bytes: number;
  params: number;
  method: QuantMethod;
  report: AuditReport;
}

/** Calibration token ids from text, with the model's tokenizer (the one every command loads for it). */
function calibrationTokens(model: LlamaModel, modelPath: string, data: string): Int32Array {
  const tokenizer = loadModelTokenizer(model, modelPath);
  const ids = Int32Array.from(tokenizer.encode(loadCorpus(data)));
  // Calibrate on the training split only, so the held-out tail stays unseen.
  return data === 'default' ? splitTokens(ids).train : ids;
}

/** A packed checkpoint (qkd quantize's output) cannot be quantized again: say so, in the user's terms. */
function refusePackedInput(modelPath: string): void {
  let configPath: string;
  try {
    // A safetensors file is read with the config.json beside it (a GGUF carries its own).
    const file = existsSync(modelPath) && statSync(modelPath).isFile();
    if (file && modelFileFormat(modelPath) !== 'safetensors') return;
    configPath = join(modelHome(modelPath), 'config.json');
  } catch {
    return; // the loader reports what is wrong with the path
  }
  if (!existsSync(configPath)) return;
  let config: { quantization_config?: { avg_bits?: unknown } };
  try {
    config = JSON.parse(readFileSync(configPath, 'utf8')) as typeof config;
  } catch {
    return;
  }
  if (config.quantization_config !== undefined) {
    const bits = typeof config.quantization_config.avg_bits === 'number' ? ` (${config.quantization_config.avg_bits.toFixed(2)} bits per weight)` : '';
    throw new QkdError('ARGUMENT', `this model is already quantized${bits}: quantizing its rounded weights again only adds error`, { path: modelPath, hint: 'the float model it was made from (quantization.json names the source)' });
  }
}

export function quantizeModelFile(modelPath: string, options: QuantizeFileOptions): QuantizeFileResult {
  const scheme = { groupSize: options.groupSize ?? 128, symmetric: options.symmetric ?? false };
  const method = options.method ?? 'rtn';
  if (options.bits !== undefined && options.budgetBits !== undefined) {
    throw new QkdError('ARGUMENT', 'give either a uniform width (bits) or a budget (average bits), not both', { field: 'bits/budget' });
  }
  refusePackedInput(modelPath);
  refuseOutputOverModel(modelPath, options.out, 'quantizing');
  let overrides: Record<string, PlanBits> | undefined;
  // Load first: a model qkd cannot run (e.g. GGUF) fails before the profile pass.
  const model: LlamaModel = loadModelAny(modelPath);
  // The plan file too: a bad one fails before the profile pass. Its names are the 2-D weights the
  // profile measures (auditAndPlan's tensors).
  if (options.planFile) {
    let text: string;
    try {
      text = readFileSync(options.planFile, 'utf8');
    } catch (err) {
      throw new QkdError('IO', `cannot read plan file: ${(err as Error).message}`, { path: options.planFile });
    }
    // A tensor of the file the model does not use (a tied lm_head saved beside the embedding, which a
    // qkd audit report's plan lists) has nothing to quantize.
    const given = parsePlanJson(text, planNames(modelPath), scheme, options.planFile).bits;
    overrides = Object.fromEntries(Object.entries(given).filter(([name]) => model.arena.has(name)));
  }
  // Before any work: a bad output path fails now, not after profiling and quantizing.
  const created = !existsSync(options.out);
  prepareOutputDirectory(options.out, { force: options.force });
  try {
    // The calibration text too, before the profile pass.
    const calibration =
      method === 'gptq'
        ? { tokens: calibrationTokens(model, modelPath, options.calibration ?? 'default'), batch: 4, seqLen: Math.min(options.calibrationSeqLen ?? 256, model.config.max_position_embeddings), batches: options.calibrationBatches ?? 16, seed: options.seed ?? 0 }
        : undefined;
    // A calibration text too short for one window is named by its flag and file.
    if (calibration !== undefined && calibration.tokens.length < calibration.seqLen) {
      const path = options.calibration === undefined || options.calibration === 'default' ? undefined : options.calibration;
      throw new QkdError('ARGUMENT', `the calibration text has ${calibration.tokens.length} tokens, fewer than one window of ${calibration.seqLen}`, { path, field: '--calibration', hint: 'a longer calibration text' });
    }
    const planned = auditAndPlan(
      modelPath,
      { scheme, bits: options.bits, budgetBits: options.budgetBits },
      // Only the tensors the model uses: a budget is spent on what gets quantized.
      { seed: options.seed, onTensor: options.onProfile, filter: (name) => model.arena.has(name) },
    );
    const plan: QuantPlan = overrides ? { scheme, bits: { ...planned.plan.bits, ...overrides } } : planned.plan;
    const quantized = quantizeLlama(model, plan, { method, calibration, onProgress: options.onQuantize });
    const storage = saveQuantizedLlama(options.out, quantized, { qkd_source: modelPath });
    const format = statSync(modelPath).isFile() ? modelFileFormat(modelPath) : null;
    // The tokenizer beside the model, also when the model was given as its safetensors file.
    if ((format === null || format === 'safetensors') && existsSync(join(modelHome(modelPath), 'tokenizer.json'))) copyTokenizerFiles(modelHome(modelPath), options.out);
    else if (format === 'gguf') {
      // A GGUF carries its tokenizer in its metadata: the packed checkpoint gets it as tokenizer.json.
      const t = loadModelTokenizer(model, modelPath);
      if (t.kind !== 'llama2c') saveTokenizerFiles(options.out, t);
    }
    writeBytesAtomic(join(options.out, 'quantization.json'), JSON.stringify({ source: modelPath, method, scheme, budget_bits: options.budgetBits ?? null, avg_bits: storage.avgBits, bytes: storage.bytes, params: storage.params, bits: plan.bits, profile: planned.report }, null, 2) + '\n');
    return { out: options.out, plan, avgBits: storage.avgBits, bytes: storage.bytes, params: storage.params, method, report: planned.report };
  } catch (error) {
    // A failed run leaves no empty directory behind that it created (a directory the user made stays).
    if (created && existsSync(options.out) && readdirSync(options.out).length === 0) rmdirSync(options.out);
    throw error;
  }
}

/** The weights a plan may name: the model file's 2-D tensors with values (those auditAndPlan measures). */
function planNames(modelPath: string): Set<string> {
  const source = openTensorSource(modelPath);
  try {
    return new Set(source.tensors.filter((t) => t.shape.length === 2 && t.shape[0]! * t.shape[1]! > 0).map((t) => t.name));
  } finally {
    source.close();
  }
}
