/**
 * `qkd export` as one API call: any model qkd loads → a GGUF file that
 * llama.cpp runs, its weights encoded by the ggml format table
 * (quant/ggml-formats.ts), byte for byte what llama.cpp's own quantizer
 * would write from the same float weights.
 *
 * How each tensor's type is chosen:
 * - a llama.cpp file type (Q4_K_M, Q5_K_S, Q4_0, Q8_0, Q6_K, F16, …):
 *   llama.cpp's per-tensor rules (compress/ggml-mixtures.ts), exactly the
 *   types llama-quantize picks; with `pure`, every 2-D weight in the base
 *   format (llama-quantize --pure);
 * - a ggml format that is no file type (Q3_K, Q4_K, Q5_K): every 2-D weight
 *   in it; norms stay F32 always;
 * - a budget in bits per weight (block scales counted): the data-free
 *   sensitivity profile's composite scores weight the measured error of each
 *   candidate format, and a greedy spends the bytes where they cut the most
 *   weighted error (swan/allocate.ts's greedyUpgrade);
 * - a plan file: {"tensor name": "Q6_K", …} over the formats.
 * A row length that is not a multiple of the chosen format's block falls
 * back as llama.cpp does, and the result lists every fallback.
 *
 * With `imatrix` (calibration text), the K-quant encoders weight their
 * sub-block fits by each input feature's measured importance
 * (compress/imatrix.ts, docs/ggml-formats.md).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { QkdError, attributed } from '../errors.js';
import { writeGguf, type GgufWriteType } from '../io/gguf-writer.js';
import type { GgufValue } from '../io/gguf-types.js';
import { ggufToHfName } from '../io/gguf-names.js';
import { ensureWritableFile } from '../io/output-dir.js';
import { GGML_WRITABLE, fallbackFormat, formatBytes, ggmlFormat, roundTrip, writableFormat } from '../quant/ggml-formats.js';
import { loadModelAny, loadModelTokenizer } from '../models/load-any.js';
import { llamaGgufMetadata, llamaGgufTensors } from '../models/llama-gguf.js';
import { familyTraits, llamaParameterSpecs } from '../models/llama-config.js';
import { loadCorpus, splitTokens } from '../data/corpus.js';
import { collectImportance } from './imatrix.js';
import type { LlamaModel } from '../models/llama.js';
import { relativeError } from './quantize-model.js';
import { tokenizerGgufMetadata } from '../data/tokenizer-gguf.js';
import { greedyUpgrade } from '../swan/allocate.js';
import { profileModel } from '../swan/profile.js';
import { FILE_TYPES, PURE_FILE_TYPE, baseType, mixtureType, type MixtureName } from './ggml-mixtures.js';

export interface ExportGgufOptions {
  /** The .gguf file to write (atomically; an existing file only with `force`). */
  out: string;
  /** A ggml format (every 2-D weight) or a llama.cpp file type such as Q4_K_M. */
  type?: string;
  /** Every 2-D weight in the file type's base format, without llama.cpp's per-tensor rules (llama-quantize --pure). */
  pure?: boolean;
  /** Bits per weight over the 2-D weights, block scales included: a sensitivity-guided mix of ggml formats. */
  budgetBits?: number;
  /** JSON file of tensor name → ggml format, overriding the chosen types. */
  planFile?: string;
  /** Tokenizer file (default: the model's own). */
  tokenizer?: string;
  /** general.name in the file (default: the model path's last part). */
  name?: string;
  force?: boolean;
  seed?: number;
  /** Calibration text for importance-weighted K-quant fitting: a file, a directory, or 'default' (training split of the embedded corpus). */
  imatrix?: string;
  /** Forward passes over calibration windows for `imatrix` (default 8, of 4 windows × 128 tokens). */
  imatrixBatches?: number;
}

export interface ExportGgufResult {
  out: string;
  /** The file's size in bytes. */
  bytes: number;
  /** Parameters of the model (every tensor written). */
  params: number;
  /** 8 · (bytes of all tensor data) / params. */
  bitsPerWeight: number;
  /** The same over the 2-D weights only (what --budget counts). */
  weightBitsPerWeight: number;
  /** llama.cpp tensor name → ggml type. */
  types: Record<string, GgufWriteType>;
  /** Tensors that could not take the requested type (row length), with what they got instead. */
  fallbacks: string[];
  /** The general.file_type written. */
  fileType: number;
  /** With `imatrix`: calibration tokens seen per weight, and the tensors whose type has no fit to weight (Q4_0 … Q8_0, F16: written as without). */
  imatrix?: { tokens: number; weighted: string[]; unweighted: string[] };
}



/** Candidate formats of a budget plan, by increasing size. */
const BUDGET_CHOICES: readonly GgufWriteType[] = ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_0', 'F16'];

type TypeRule = (hfName: string, shape: readonly number[]) => GgufWriteType;

function isWeight(shape: readonly number[]): boolean {
  return shape.length === 2;
}

/**
 * The type rule of a --type value. A llama.cpp file type (Q4_K_M, Q4_0,
 * Q8_0, …) gets llama.cpp's per-tensor rules, unless `pure`; a ggml format
 * that is no file type (Q3_K, Q4_K, Q5_K) goes to every 2-D weight.
 */
function ruleOfType(type: string, model: LlamaModel, pure: boolean): { rule: TypeRule; fileType: number } {
  const file = FILE_TYPES[type as MixtureName];
  if (file !== undefined && !pure) return { rule: (name, shape) => (isWeight(shape) ? mixtureType(type as MixtureName, name, model.config) : 'F32'), fileType: file };
  if (file !== undefined) return { rule: (_name, shape) => (isWeight(shape) ? baseType(type as MixtureName) : 'F32'), fileType: file };
  if (!(GGML_WRITABLE as readonly string[]).includes(type)) {
    throw new QkdError('ARGUMENT', `unknown GGUF type '${type}'`, { field: 'type', hint: `a ggml format (${GGML_WRITABLE.join(', ')}) or a llama.cpp file type (${Object.keys(FILE_TYPES).join(', ')})` });
  }
  const format = type as GgufWriteType;
  return { rule: (_name, shape) => (isWeight(shape) ? format : 'F32'), fileType: PURE_FILE_TYPE[format] ?? FILE_TYPES.Q8_0 };
}

/** Measured relative error ‖decode(encode(W)) − W‖/‖W‖ of a tensor in a format (0 for F16 and wider: below the noise). */
function formatError(w: Float32Array, type: GgufWriteType): number {
  if (type === 'F16' || type === 'BF16' || type === 'F32') return 0;
  return relativeError(roundTrip(type, w), w);
}

/**
 * A budget plan over ggml formats: damage of format f on tensor t is
 * S_t⁴ · e_t(f)² (S the composite sensitivity, floored at 0.02, as the
 * packed-checkpoint allocator weighs it), cost its bytes.
 */
function budgetRule(model: LlamaModel, budgetBits: number, seed: number): TypeRule {
  const weights = model.arena.entries.filter((e) => isWeight(e.shape));
  const report = profileModel({ path: 'model', tensors: weights.map((e) => ({ name: e.name, shape: e.shape })), readFloat32: (name) => model.arena.get(name).data as Float32Array }, { seed });
  const composite = new Map(report.tensors.map((t) => [t.name, t.composite ?? 0]));
  const costs: number[][] = [];
  const damages: number[][] = [];
  const choices = weights.map((e) => BUDGET_CHOICES.filter((t) => e.shape[1]! % writableFormat(t).blockSize === 0));
  weights.forEach((e, i) => {
    const w = e.tensor.data as Float32Array;
    const s = Math.max(0.02, composite.get(e.name) ?? 0) ** 4;
    costs.push(choices[i]!.map((t) => formatBytes(writableFormat(t), w.length)));
    damages.push(choices[i]!.map((t) => s * formatError(w, t) ** 2));
  });
  const params = weights.reduce((n, e) => n + e.tensor.size, 0);
  const budgetBytes = (budgetBits * params) / 8;
  const minBytes = costs.reduce((n, c) => n + c[0]!, 0);
  if (minBytes > budgetBytes * (1 + 1e-12)) {
    throw new QkdError('ARGUMENT', `a budget of ${budgetBits} bits per weight is below the smallest GGUF plan (${((8 * minBytes) / params).toFixed(3)} bits: ${choices[0]![0]} everywhere)`, { field: 'budget', hint: `at least ${((8 * minBytes) / params).toFixed(3)}` });
  }
  const { level } = greedyUpgrade(costs, damages, budgetBytes);
  const chosen = new Map(weights.map((e, i) => [e.name, choices[i]![level[i]!]!]));
  return (name, shape) => chosen.get(name) ?? (isWeight(shape) ? 'F16' : 'F32');
}

/** A plan file: { "name": "TYPE" } by Hugging Face or llama.cpp tensor names. */
function planRule(path: string, model: LlamaModel, base: TypeRule): TypeRule {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new QkdError('IO', `cannot read the plan: ${(err as Error).message}`, { path, hint: '{"model.layers.0.mlp.down_proj.weight": "Q6_K", ...}' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new QkdError('IO', 'a GGUF plan must be a JSON object of tensor name → ggml type', { path });
  const weights = new Set(model.arena.entries.filter((e) => isWeight(e.shape)).map((e) => e.name));
  const table = new Map<string, GgufWriteType>();
  for (const [given, type] of Object.entries(value)) {
    const name = weights.has(given) ? given : ggufToHfName(given, familyTraits(model.config.model_type).ggufArch);
    if (!weights.has(name)) throw new QkdError('IO', `the plan names a tensor that is not a 2-D weight of the model: '${given}'`, { path, field: given, hint: 'Hugging Face or llama.cpp names of weight matrices (norms stay F32)' });
    if (typeof type !== 'string' || ggmlFormat(type)?.encode === undefined) throw new QkdError('IO', `the plan gives '${String(type)}' for '${name}'`, { path, field: name, hint: GGML_WRITABLE.join(', ') });
    table.set(name, type as GgufWriteType);
  }
  return (name, shape) => table.get(name) ?? base(name, shape);
}

/** The requested type, or llama.cpp's fallback when the row length does not fit its block. */
function withFallback(rule: TypeRule, fallbacks: string[]): TypeRule {
  return (name, shape) => {
    const type = rule(name, shape);
    const cols = shape[shape.length - 1]!;
    if (cols % writableFormat(type).blockSize === 0) return type;
    const instead = fallbackFormat(type, cols);
    fallbacks.push(`${name}: ${type} needs rows of a multiple of ${writableFormat(type).blockSize}, the row has ${cols}; ${instead} instead (as llama.cpp)`);
    return instead;
  };
}

export type GgufTypeRequest = Pick<ExportGgufOptions, 'type' | 'budgetBits' | 'planFile' | 'pure' | 'seed'>;

/**
 * The ggml type of every tensor of `model` (by llama.cpp name) under a
 * request, with the fallbacks taken and the file type to record.
 */
export function ggufTensorTypes(model: LlamaModel, request: GgufTypeRequest): { typeOf: TypeRule; types: Record<string, GgufWriteType>; fallbacks: string[]; fileType: number } {
  if (request.type !== undefined && request.budgetBits !== undefined) throw new QkdError('ARGUMENT', 'give either a type or a budget, not both', { field: 'type' });
  let rule: TypeRule;
  let fileType: number;
  if (request.budgetBits !== undefined) {
    rule = budgetRule(model, request.budgetBits, request.seed ?? 1234);
    fileType = FILE_TYPES.Q4_K_M;
  } else ({ rule, fileType } = ruleOfType(request.type ?? 'Q8_0', model, request.pure ?? false));
  if (request.planFile) rule = planRule(request.planFile, model, rule);
  const fallbacks: string[] = [];
  const resolved = new Map<string, GgufWriteType>();
  const withFallbacks = withFallback(rule, fallbacks);
  // Each tensor is resolved once, so every fallback is listed once however often the rule is asked.
  const typeOf: TypeRule = (name, shape) => {
    let t = resolved.get(name);
    if (t === undefined) resolved.set(name, (t = withFallbacks(name, shape)));
    return t;
  };
  const types = Object.fromEntries(llamaGgufTensors(model, typeOf).map((t) => [t.name, t.type]));
  return { typeOf, types, fallbacks, fileType };
}

/** The largest half-precision value: F16 values and the block scales of the ggml quantized types stop there. */
const F16_MAX = 65504;

/**
 * A NaN or infinite weight has no encoding. Nor has a weight whose F16
 * value, or whose block's half-precision scale or minimum, overflows: the
 * scale became infinite and llama.cpp's perplexity NaN. How large a weight
 * a type holds depends on the type (F16 and Q4_1's minimum stop at ±65504,
 * Q8_0's scale at 127 times that), so a tensor with a weight beyond ±65504
 * is encoded and decoded here, and refused only when that gives a value
 * that is not finite, naming the largest weight of the first such block.
 */
function refuseUnencodable(model: LlamaModel, modelPath: string, typeOf: TypeRule, importanceOf?: (name: string) => Float32Array | undefined): void {
  if (importanceOf === undefined) {
    for (const e of model.arena.entries) {
      const w = e.tensor.data;
      for (let i = 0; i < w.length; i++) {
        if (!Number.isFinite(w[i]!)) throw new QkdError('IO', `weight ${e.name} holds ${w[i]} at element ${i}: a non-finite weight has no GGUF encoding`, { path: modelPath, field: e.name, hint: 'a model with finite weights (a diverged training run?)' });
      }
    }
  }
  for (const spec of llamaParameterSpecs(model.config)) {
    if (spec.shape.length < 2 || (model.config.tie_word_embeddings && spec.name === 'lm_head.weight')) continue;
    const type = typeOf(spec.name, spec.shape);
    if (type === 'F32' || type === 'BF16') continue;
    // With importance, only the weighted fits are checked again (they may pick other block scales).
    const importance = importanceOf?.(spec.name);
    if (importanceOf !== undefined && (importance === undefined || !writableFormat(type).weighted)) continue;
    const data = model.arena.get(spec.name).data;
    const w = data instanceof Float32Array ? data : Float32Array.from(data);
    let large = false;
    for (let i = 0; i < w.length && !large; i++) large = Math.abs(w[i]!) > F16_MAX;
    if (!large) continue;
    const format = writableFormat(type);
    const decoded = importance === undefined ? roundTrip(type, w) : format.decode(format.encode!(w, importance), w.length);
    const bad = decoded.findIndex((v) => !Number.isFinite(v));
    if (bad < 0) continue;
    const size = writableFormat(type).blockSize;
    const start = bad - (bad % size);
    const end = Math.min(w.length, start + size);
    let at = start;
    for (let i = start; i < end; i++) if (Math.abs(w[i]!) > Math.abs(w[at]!)) at = i;
    // Q4_1 and Q5_1 store the block's minimum in half precision: when it is what overflows, name it.
    let low = start;
    for (let i = start; i < end; i++) if (w[i]! < w[low]!) low = i;
    if ((type === 'Q4_1' || type === 'Q5_1') && w[low]! < -F16_MAX) at = low;
    const what = type === 'F16' ? 'its half-precision value' : `the half-precision scale or minimum of its ${size}-weight block`;
    throw new QkdError('IO', `weight ${spec.name} holds ${w[at]} at element ${at}, beyond what ${type} encodes: ${what} overflows (±${F16_MAX} at most)`, { path: modelPath, field: spec.name, hint: 'a wider type for this tensor (F32 or BF16, e.g. with --plan), or a model with smaller weights' });
  }
}

export function exportGguf(modelPath: string, options: ExportGgufOptions): ExportGgufResult {
  if (!options.out.toLowerCase().endsWith('.gguf')) throw new QkdError('ARGUMENT', `the output file should end in .gguf: ${options.out}`, { path: options.out, field: '--out', hint: 'model-Q4_K_M.gguf' });
  ensureWritableFile(options.out, '--out');
  if (existsSync(options.out) && !options.force) throw new QkdError('IO', `${options.out} exists; refusing to overwrite it`, { path: options.out, field: '--out', hint: '--force to replace it, or another file name' });
  const model = loadModelAny(modelPath);
  if (model.config.ssm !== null) {
    throw new QkdError('ARGUMENT', "a state-space (MOHAWK) student has mixers llama.cpp's LLaMA-family graphs do not compute", { path: modelPath, field: 'ssm', hint: 'keep the qkd checkpoint (qkd quantize packs it at 4 bits), see docs/mohawk.md' });
  }
  const tokenizer = loadModelTokenizer(model, modelPath, options.tokenizer);
  const { typeOf, types, fallbacks, fileType } = ggufTensorTypes(model, options);
  refuseUnencodable(model, modelPath, typeOf);
  let importance: Map<string, Float32Array> | undefined;
  let imatrixTokens = 0;
  // The calibration text is read (and a bad path refused) either way; without a K-quant tensor there is no fit to weight, so no passes run.
  const calibrationText = options.imatrix === undefined ? undefined : loadCorpus(options.imatrix);
  if (calibrationText !== undefined && Object.values(types).some((t) => writableFormat(t).weighted)) {
    const ids = Int32Array.from(tokenizer.encode(calibrationText));
    // The default corpus calibrates on its training split, so its held-out tail stays unseen.
    const tokens = options.imatrix === 'default' ? splitTokens(ids).train : ids;
    const measured = attributed({ path: options.imatrix === 'default' ? undefined : options.imatrix, field: '--imatrix' }, ['calibration'], () => collectImportance(model, { tokens, batches: options.imatrixBatches, seed: options.seed }));
    importance = new Map([...measured].map(([name, m]) => [name, m.values]));
    imatrixTokens = Math.max(0, ...[...measured.values()].map((m) => m.tokens));
    // The check above ran the unweighted fits; a weighted fit may choose other block scales.
    const weights = importance;
    refuseUnencodable(model, modelPath, typeOf, (name) => weights.get(name));
  }
  const tensors = llamaGgufTensors(model, typeOf, importance === undefined ? undefined : (name) => importance.get(name));
  const metadata: Record<string, GgufValue> = {
    ...llamaGgufMetadata(model.config, options.name ?? modelPath.replace(/\/+$/, '').split('/').pop() ?? 'qkd'),
    'general.file_type': { type: 'u32', value: fileType },
    ...tokenizerGgufMetadata(tokenizer, model.config.vocab_size),
  };
  writeGguf(options.out, { metadata, tensors });
  const sizes = tensors.map((t) => ({ twoD: t.shape.length === 2, elements: t.shape.reduce((a, d) => a * d, 1), bytes: formatBytes(writableFormat(t.type), t.shape.reduce((a, d) => a * d, 1)) }));
  const sum = (list: typeof sizes, key: 'elements' | 'bytes') => list.reduce((n, s) => n + s[key], 0);
  const weights = sizes.filter((s) => s.twoD);
  const params = model.parameterCount;
  const withImportance = importance === undefined ? tensors.filter((t) => t.shape.length === 2) : tensors.filter((t) => t.importance !== undefined);
  const imatrix = options.imatrix === undefined ? undefined : { tokens: imatrixTokens, weighted: withImportance.filter((t) => writableFormat(t.type).weighted).map((t) => t.name), unweighted: withImportance.filter((t) => !writableFormat(t.type).weighted).map((t) => t.name) };
  return { out: options.out, bytes: statSync(options.out).size, params, bitsPerWeight: (8 * sum(sizes, 'bytes')) / params, weightBitsPerWeight: (8 * sum(weights, 'bytes')) / sum(weights, 'elements'), types, fallbacks, fileType, ...(imatrix ? { imatrix } : {}) };
}
