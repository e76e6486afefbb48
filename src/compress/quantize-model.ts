/**
 * Post-training quantization of a whole LLaMA model by a bit plan: every
 * 2-D weight the plan names is quantized (RTN or GPTQ) at its width, or
 * stored as F16 at 16 bits; everything else (1-D norms, weights left out of
 * the plan) stays float32. The result holds the stored form of each weight
 * (what quantized-io.ts writes) and can rebuild a float model from it.
 *
 * GPTQ is sequential, as in the paper's LLaMA script with --true-sequential:
 * calibration windows are embedded once (with the quantized embedding), then
 * decoder layer by decoder layer the inputs of the layer are the outputs of
 * the already-quantized earlier layers. Inside a layer the Linears are
 * quantized in four stages, {q,k,v} → {o} → {gate,up} → {down}, each stage
 * calibrated on activations that pass through the stages quantized before
 * it (the layer is re-run per stage; the Linears of a stage share one input
 * and so one Hessian). lm_head (untied) gets GPTQ on the final-norm outputs.
 * The embedding is a lookup, not a product with activations, so it (and a
 * tied lm_head, which is the same tensor) is always RTN. 16-bit weights are
 * rounded to f16 in the working copy too, so later layers calibrate on
 * exactly what will be deployed. The input model is never modified.
 */
import { QkdError, fmtShape } from '../errors.js';
import { noGrad } from '../tensor/tape.js';
import { Rng } from '../tensor/random.js';
import { fromF16, toF16 } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Linear } from '../nn/layers.js';
import { checkScheme, dequantize, rtnQuantize, type QuantizedTensor } from '../quant/rtn.js';
import { HessianAccumulator, gptqQuantize, type GptqOptions } from '../quant/gptq.js';
import { learnedQuantize, type LearnedScales } from '../quant/lsq.js';
import { PLAN_BITS, packedBytes, type PlanBits, type QuantPlan, type QuantScheme } from '../quant/scheme.js';
import { LlamaModel, type LlamaDecoderLayer } from '../models/llama.js';
import type { LlamaConfig } from '../models/llama-config.js';

/** rtn, gptq, or lsq: codes from step sizes (and zero points) learned in QAT (quant/lsq.ts). */
export type QuantMethod = 'rtn' | 'gptq' | 'lsq';

export interface CalibrationOptions {
  /** Token ids to draw calibration windows from. */
  tokens: Int32Array | number[];
  /** Sequences per forward batch. */
  batch: number;
  /** Tokens per sequence. */
  seqLen: number;
  /** Number of batches (calibration tokens = batches · batch · seqLen). */
  batches: number;
  /** Seed of the random window starts (default 0). */
  seed?: number;
}

export interface QuantizeProgress {
  tensor: string;
  /** Tensors done so far, including this one. */
  done: number;
  total: number;
  /** Parameters of the tensors done so far. */
  params: number;
  bits: PlanBits;
  /** How this tensor was quantized. */
  method: QuantMethod | 'f16';
  /** ‖Ŵ − W‖_F / ‖W‖_F. */
  weightError: number;
}

export interface QuantizeLlamaOptions {
  method: QuantMethod;
  /** Required for GPTQ. */
  calibration?: CalibrationOptions;
  /** GPTQ settings (block size, dampening, act-order). */
  gptq?: GptqOptions;
  onProgress?: (progress: QuantizeProgress) => void;
}

/** The stored form of one weight of the plan. */
export interface QuantizedWeight {
  name: string;
  rows: number;
  cols: number;
  bits: PlanBits;
  method: QuantMethod | 'f16';
  /** Codes, scales and zeros (bits < 16). */
  quantized: QuantizedTensor | null;
  /** Raw f16 bits [rows·cols] (bits 16). */
  f16: Uint16Array | null;
  /** ‖Ŵ − W‖_F / ‖W‖_F. */
  weightError: number;
}

export interface QuantizedStorage {
  /** Bytes of the plan's weights as stored (codes + scales + zeros, or F16). */
  bytes: number;
  /** Parameters of the plan's weights. */
  params: number;
  /** 8 · bytes / params. */
  avgBits: number;
}

/** A quantized LLaMA: the plan's weights in stored form, the rest float32. */
export class QuantizedLlama {
  readonly config: LlamaConfig;
  readonly scheme: QuantScheme;
  readonly method: QuantMethod;
  /** The plan's weights, in checkpoint (arena) order. */
  readonly weights: ReadonlyMap<string, QuantizedWeight>;
  /** Tensors kept as float32 (copies), in checkpoint order. */
  readonly floats: ReadonlyMap<string, Float32Array>;

  constructor(config: LlamaConfig, scheme: QuantScheme, method: QuantMethod, weights: Map<string, QuantizedWeight>, floats: Map<string, Float32Array>) {
    this.config = config;
    this.scheme = { ...scheme };
    this.method = method;
    this.weights = weights;
    this.floats = floats;
  }

  /** The float32 values a tensor loads as (dequantized, widened from f16, or as kept). */
  floatValues(name: string): Float32Array {
    const w = this.weights.get(name);
    if (w === undefined) {
      const f = this.floats.get(name);
      if (f === undefined) throw new QkdError('ARGUMENT', `no tensor named '${name}' in the quantized model`, { field: name });
      return f;
    }
    return w.quantized ? dequantize(w.quantized) : fromF16(w.f16!);
  }

  /** A float model with the dequantized weights (what loading the saved checkpoint gives). */
  toFloatModel(): LlamaModel {
    const model = new LlamaModel(this.config);
    for (const e of model.arena.entries) model.arena.set(e.name, e.shape, this.floatValues(e.name));
    return model;
  }

  /** Size of the quantized (and 16-bit) weights as stored. */
  storage(): QuantizedStorage {
    let bytes = 0;
    let params = 0;
    for (const w of this.weights.values()) {
      bytes += packedBytes(w.rows, w.cols, w.bits, w.quantized?.scheme ?? this.scheme);
      params += w.rows * w.cols;
    }
    return { bytes, params, avgBits: params > 0 ? (8 * bytes) / params : 0 };
  }
}

/** Checks the plan against the model: known 2-D tensors, allowed widths, a valid scheme. */
function checkPlan(model: LlamaModel, plan: QuantPlan): void {
  checkScheme('quantizeLlama', plan.scheme);
  for (const [name, bits] of Object.entries(plan.bits)) {
    if (!model.arena.has(name)) throw new QkdError('ARGUMENT', `plan names '${name}', which the model does not have`, { field: `bits.${name}`, hint: 'a 2-D weight name such as model.layers.0.mlp.up_proj.weight' });
    const shape = model.arena.entry(name).shape;
    if (shape.length !== 2) throw new QkdError('ARGUMENT', `plan names '${name}' of shape ${fmtShape(shape)}; only 2-D weights are quantized`, { field: `bits.${name}` });
    if (!(PLAN_BITS as readonly number[]).includes(bits)) throw new QkdError('ARGUMENT', `plan gives '${name}' ${bits} bits`, { field: `bits.${name}`, hint: PLAN_BITS.join(', ') });
  }
}

/** ‖a − b‖ / ‖b‖ (0 for a zero b): the relative error of an approximation a of b. */
export function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return den > 0 ? Math.sqrt(num / den) : 0;
}

/** Quantizes W in the working model (RTN, GPTQ given a Hessian, or F16) and writes Ŵ back into it. */
function quantizeInPlace(work: LlamaModel, name: string, bits: PlanBits, scheme: QuantScheme, hessian: Float64Array | null, gptq: GptqOptions): QuantizedWeight {
  const t = work.arena.get(name);
  const [rows, cols] = t.shape as [number, number];
  const original = Float32Array.from(t.data);
  let weight: QuantizedWeight;
  let values: Float32Array;
  if (bits === 16) {
    const f16 = toF16(original);
    values = fromF16(f16);
    weight = { name, rows, cols, bits, method: 'f16', quantized: null, f16, weightError: 0 };
  } else {
    const quantized = hessian ? gptqQuantize(original, rows, cols, hessian, bits, scheme, gptq) : rtnQuantize(original, rows, cols, bits, scheme);
    values = dequantize(quantized);
    weight = { name, rows, cols, bits, method: hessian ? 'gptq' : 'rtn', quantized, f16: null, weightError: 0 };
  }
  weight.weightError = relativeError(values, original);
  t.data.set(values);
  return weight;
}

/** Calibration windows as id batches [batch·seqLen], validated against the vocabulary. */
function calibrationBatches(c: CalibrationOptions, vocab: number): Int32Array[] {
  for (const field of ['batch', 'seqLen', 'batches'] as const) {
    if (!Number.isInteger(c[field]) || c[field] < 1) throw new QkdError('ARGUMENT', `calibration.${field} must be a positive integer, got ${c[field]}`, { field: `calibration.${field}` });
  }
  const tokens = Int32Array.from(c.tokens);
  if (tokens.length < c.seqLen) throw new QkdError('ARGUMENT', `calibration has ${tokens.length} tokens, fewer than one window of ${c.seqLen}`, { field: 'calibration.tokens' });
  const bad = tokens.findIndex((id) => id < 0 || id >= vocab);
  if (bad >= 0) throw new QkdError('ARGUMENT', `calibration token ${tokens[bad]} at position ${bad} is outside the vocabulary [0, ${vocab})`, { field: 'calibration.tokens' });
  const rng = new Rng(c.seed ?? 0);
  const out: Int32Array[] = [];
  for (let b = 0; b < c.batches; b++) {
    const ids = new Int32Array(c.batch * c.seqLen);
    for (let s = 0; s < c.batch; s++) {
      const start = rng.int(tokens.length - c.seqLen + 1);
      ids.set(tokens.subarray(start, start + c.seqLen), s * c.seqLen);
    }
    out.push(ids);
  }
  return out;
}

/** Hessian of the common input of `linear` over all calibration batches, from running `run` on each. */
function collectHessian(linear: Linear, batches: number, run: (b: number) => void): Float64Array {
  const acc = new HessianAccumulator(linear.weight.shape[1]!);
  const remove = linear.registerForwardHook((event) => {
    if (event.input) acc.add(event.input.data);
  });
  try {
    for (let b = 0; b < batches; b++) noGrad(() => run(b));
  } finally {
    remove();
  }
  return acc.hessian();
}

/** The stages of a decoder layer: Linears that share one input, in data-flow order. */
function layerStages(layer: LlamaDecoderLayer): Linear[][] {
  return [layer.attn.inputProjections, [layer.attn.o], layer.mlp.inputProjections, [layer.mlp.down]];
}

/** Quantizes `model` by `plan`; see the file comment for the GPTQ order. */
export function quantizeLlama(model: LlamaModel, plan: QuantPlan, options: QuantizeLlamaOptions): QuantizedLlama {
  if (options.method !== 'rtn' && options.method !== 'gptq') {
    throw new QkdError('ARGUMENT', `unknown quantization method '${String(options.method)}'`, { field: 'method', hint: "'rtn' or 'gptq'" });
  }
  checkPlan(model, plan);
  const work = new LlamaModel(model.config);
  work.arena.data.set(model.arena.data);
  const planned = Object.keys(plan.bits);
  const results = new Map<string, QuantizedWeight>();
  const gptqOptions = options.gptq ?? {};
  let paramsDone = 0;
  const quantize = (name: string, hessian: Float64Array | null): void => {
    const w = quantizeInPlace(work, name, plan.bits[name]!, plan.scheme, hessian, gptqOptions);
    results.set(name, w);
    paramsDone += work.arena.get(name).size;
    options.onProgress?.({ tensor: name, done: results.size, total: planned.length, params: paramsDone, bits: w.bits, method: w.method, weightError: w.weightError });
  };
  /** In the plan and not quantized yet. */
  const pending = (name: string): boolean => plan.bits[name] !== undefined && !results.has(name);

  if (options.method === 'gptq') {
    if (options.calibration === undefined) throw new QkdError('ARGUMENT', 'GPTQ needs calibration tokens', { field: 'calibration', hint: '{ tokens, batch, seqLen, batches }' });
    gptqSequential(work, plan, calibrationBatches(options.calibration, model.config.vocab_size), options.calibration, pending, quantize);
  }
  for (const name of planned) if (pending(name)) quantize(name, null);

  const weights = new Map<string, QuantizedWeight>();
  const floats = new Map<string, Float32Array>();
  for (const e of model.arena.entries) {
    const w = results.get(e.name);
    if (w) weights.set(e.name, w);
    else floats.set(e.name, Float32Array.from(e.tensor.data));
  }
  return new QuantizedLlama(model.config, plan.scheme, options.method, weights, floats);
}

/** Layer-by-layer GPTQ over the working model (see the file comment). */
function gptqSequential(work: LlamaModel, plan: QuantPlan, batches: Int32Array[], c: CalibrationOptions, pending: (name: string) => boolean, quantize: (name: string, hessian: Float64Array | null) => void): void {
  const packed = (name: string): boolean => plan.bits[name]! < 16;
  const embedName = 'model.embed_tokens.weight';
  if (pending(embedName)) quantize(embedName, null);
  let hidden: Tensor[] = batches.map((ids) => noGrad(() => work.embed.forward(ids, [c.batch, c.seqLen])));
  for (const layer of work.layers) {
    for (const stage of layerStages(layer)) {
      const names = stage.map((l) => `${l.name}.weight`).filter(pending);
      const hessian = names.some(packed) ? collectHessian(stage[0]!, hidden.length, (b) => layer.forward(hidden[b]!)) : null;
      for (const name of names) quantize(name, hessian);
    }
    hidden = hidden.map((x) => noGrad(() => layer.forward(x)));
  }
  const headName = 'lm_head.weight';
  if (!work.config.tie_word_embeddings && pending(headName) && packed(headName)) {
    const hessian = collectHessian(work.lmHead, hidden.length, (b) => work.lmHead.forward(work.norm.forward(hidden[b]!)));
    quantize(headName, hessian);
  }
}

/**
 * The model packed with step sizes learned in QAT (LSQ / LSQ+): every planned
 * weight that `learned` gives parameters for is encoded with them
 * (learnedQuantize, exactly the last training forward's ŵ); the others by RTN.
 */
export function packLearned(model: LlamaModel, plan: QuantPlan, learned: (name: string) => LearnedScales | null): QuantizedLlama {
  checkPlan(model, plan);
  const weights = new Map<string, QuantizedWeight>();
  const floats = new Map<string, Float32Array>();
  for (const e of model.arena.entries) {
    const bits = plan.bits[e.name];
    if (bits === undefined) {
      floats.set(e.name, Float32Array.from(e.tensor.data));
      continue;
    }
    const [rows, cols] = e.shape as [number, number];
    const data = e.tensor.data as Float32Array;
    const p = bits < 16 ? learned(e.name) : null;
    if (p === null) {
      if (bits === 16) {
        const f16 = toF16(data);
        weights.set(e.name, { name: e.name, rows, cols, bits, method: 'f16', quantized: null, f16, weightError: relativeError(fromF16(f16), data) });
      } else {
        const quantized = rtnQuantize(data, rows, cols, bits, plan.scheme);
        weights.set(e.name, { name: e.name, rows, cols, bits, method: 'rtn', quantized, f16: null, weightError: relativeError(dequantize(quantized), data) });
      }
      continue;
    }
    const quantized = learnedQuantize(data, rows, cols, bits, plan.scheme, p);
    weights.set(e.name, { name: e.name, rows, cols, bits, method: 'lsq', quantized, f16: null, weightError: relativeError(dequantize(quantized), data) });
  }
  return new QuantizedLlama(model.config, plan.scheme, 'lsq', weights, floats);
}
