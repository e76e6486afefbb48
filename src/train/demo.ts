/**
 * The demo job's teacher: train a small LLaMA-style model on the embedded
 * corpus and show the training and validation loss falling. `qkd demo`
 * caches it (cachedDemoTeacher), so a second run goes straight to the
 * deployment half (train/deploy-demo.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { saveLlama, loadLlama } from '../models/llama-io.js';
import { saveTokenizerJson } from '../data/bpe.js';
import { ByteTokenizer } from '../data/tokenizer.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { createLlama, type LlamaModel } from '../models/llama.js';
import type { LlamaConfig } from '../models/llama-config.js';
import { AdamW, clipGradNorm } from '../optim/adamw.js';
import { Rng } from '../tensor/random.js';
import { backward, noGrad } from '../tensor/tape.js';
import { currentBackend } from '../tensor/backend.js';
import { byteTokens, loadDefaultCorpus, sampleBatch, sequentialBatches, splitTokens } from '../data/corpus.js';

export interface DemoOptions {
  /** Training steps (default 60). */
  steps?: number;
  seed?: number;
  /** Sequences per step (default 8) and their length (default 64). */
  batchSize?: number;
  seqLen?: number;
  lr?: number;
  /** Text to train on instead of the embedded corpus. */
  text?: string;
}

export interface DemoProgress {
  step: number;
  steps: number;
  loss: number;
  tokensPerSecond: number;
}

export interface DemoResult {
  steps: number;
  params: number;
  backend: string;
  first_loss: number;
  last_loss: number;
  val_loss_before: number;
  val_loss_after: number;
  tokens_per_s: number;
}

/** The demo model (the teacher of the deployment half): byte vocabulary, 4 layers, width 128, grouped-query attention. */
export const DEMO_CONFIG: Partial<LlamaConfig> = {
  vocab_size: 256,
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
};

export function runDemo(options: DemoOptions = {}, onProgress?: (p: DemoProgress) => void): DemoResult {
  return trainDemoModel(options, onProgress).result;
}

/** The demo's training, also returning the trained model (for the deployment part of `qkd demo`). */
export function trainDemoModel(options: DemoOptions = {}, onProgress?: (p: DemoProgress) => void): { result: DemoResult; model: LlamaModel } {
  const steps = options.steps ?? 60;
  const B = options.batchSize ?? 8;
  const T = options.seqLen ?? 64;
  const seed = options.seed ?? 1337;
  const peakLr = options.lr ?? 3e-3;
  const tokens = byteTokens(options.text ?? loadDefaultCorpus());
  const { train, validation } = splitTokens(tokens);
  const model = createLlama(DEMO_CONFIG, seed);
  const opt = new AdamW(model.arena, { lr: peakLr, weightDecay: 0.01 });
  const rng = new Rng(seed + 1);

  // A fixed slice of validation text, so before/after are comparable.
  const valBatches = [...sequentialBatches(validation, B, T, 4)];
  const validate = (): number =>
    noGrad(() => valBatches.reduce((s, b) => s + model.loss(model.forward(b.inputs, B, T), b.targets).item(), 0) / valBatches.length);

  const valBefore = validate();
  let first = NaN;
  let last = NaN;
  const started = performance.now();
  for (let step = 1; step <= steps; step++) {
    const { inputs, targets } = sampleBatch(train, B, T, rng);
    model.arena.zeroGrad();
    const loss = model.loss(model.forward(inputs, B, T), targets);
    backward(loss);
    clipGradNorm(model.arena.grad, 1.0);
    // Short linear warm-up, then constant: enough for a demo.
    opt.update(peakLr * Math.min(1, step / 10));
    last = loss.item();
    if (step === 1) first = last;
    const seconds = (performance.now() - started) / 1000;
    onProgress?.({ step, steps, loss: last, tokensPerSecond: (step * B * T) / seconds });
  }
  const seconds = (performance.now() - started) / 1000;
  const result: DemoResult = {
    steps,
    params: model.parameterCount,
    backend: currentBackend(),
    first_loss: first,
    last_loss: last,
    val_loss_before: valBefore,
    val_loss_after: validate(),
    tokens_per_s: (steps * B * T) / seconds,
  };
  return { result, model };
}

/** Where `qkd demo` keeps its trained teachers: $QKD_CACHE, else $XDG_CACHE_HOME/qkd, else ~/.cache/qkd. */
export function qkdCacheDirectory(): string {
  return process.env.QKD_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'qkd');
}

export interface CachedTeacher {
  /** The model directory (config.json, model.safetensors, tokenizer.json). */
  dir: string;
  model: LlamaModel;
  result: DemoResult;
  /** True when it was read from the cache instead of trained. */
  cached: boolean;
}

/**
 * trainDemoModel, or its result from the cache when the same training (model
 * shape, steps, seed, batch, text) ran before. The cache key hashes all of
 * those, so a change of any of them trains anew. Written to a temporary
 * directory and renamed, so an interrupted run never leaves half a teacher.
 */
export function cachedDemoTeacher(options: DemoOptions & { cacheDir?: string; refresh?: boolean } = {}, onProgress?: (p: DemoProgress) => void): CachedTeacher {
  const text = options.text ?? loadDefaultCorpus();
  const key = createHash('sha256')
    .update(JSON.stringify({ config: DEMO_CONFIG, steps: options.steps ?? 60, seed: options.seed ?? 1337, batch: options.batchSize ?? 8, seqLen: options.seqLen ?? 64, lr: options.lr ?? 3e-3 }))
    .update(text)
    .digest('hex')
    .slice(0, 16);
  const dir = join(options.cacheDir ?? qkdCacheDirectory(), `demo-teacher-${key}`);
  const resultPath = join(dir, 'demo-result.json');
  if (!options.refresh && existsSync(resultPath)) {
    try {
      return { dir, model: loadLlama(dir), result: JSON.parse(readFileSync(resultPath, 'utf8')) as DemoResult, cached: true };
    } catch {
      // An unreadable cache entry is trained again below.
    }
  }
  const { result, model } = trainDemoModel({ ...options, text }, onProgress);
  const staging = `${dir}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  saveLlama(staging, model);
  saveTokenizerJson(join(staging, 'tokenizer.json'), new ByteTokenizer());
  writeBytesAtomic(join(staging, 'demo-result.json'), JSON.stringify(result, null, 2) + '\n');
  rmSync(dir, { recursive: true, force: true });
  renameSync(staging, dir);
  return { dir, model, result, cached: false };
}
