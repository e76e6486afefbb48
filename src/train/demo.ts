/**
 * The demo job's teacher: train a small LLaMA-style model on the embedded
 * corpus and show the training and validation loss falling. `qkd demo`
 * caches it (cachedDemoTeacher), so a second run goes straight to the
 * deployment half (train/deploy-demo.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveLlama, loadLlama } from '../models/llama-io.js';
import { saveTokenizerJson } from '../data/bpe.js';
import { ByteTokenizer } from '../data/tokenizer.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { VERSION } from '../version.js';
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
/** The demo's training settings when not given. */
export const DEMO_DEFAULTS = { steps: 60, seed: 1337, batchSize: 8, seqLen: 64, lr: 3e-3 } as const;

export function trainDemoModel(options: DemoOptions = {}, onProgress?: (p: DemoProgress) => void): { result: DemoResult; model: LlamaModel } {
  const steps = options.steps ?? DEMO_DEFAULTS.steps;
  const B = options.batchSize ?? DEMO_DEFAULTS.batchSize;
  const T = options.seqLen ?? DEMO_DEFAULTS.seqLen;
  const seed = options.seed ?? DEMO_DEFAULTS.seed;
  const peakLr = options.lr ?? DEMO_DEFAULTS.lr;
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

export interface CachedTeacher {
  /** The model directory (config.json, model.safetensors, tokenizer.json). */
  dir: string;
  model: LlamaModel;
  result: DemoResult;
  /** True when it was read from the cache instead of trained. */
  cached: boolean;
  /** Why a freshly trained teacher could not be cached (it then lives in a temporary directory). */
  note?: string;
}

/**
 * trainDemoModel, or its result from `cacheDir` when the same training
 * (model shape, every option, text and qkd version) ran before: the cache
 * key hashes all of them. A teacher is written to a staging directory and
 * renamed, so an interrupted run never leaves half of one; when another run
 * finished the same teacher first, its copy is kept. When the cache cannot
 * be written (cacheDir null, read-only, full), the teacher goes to a
 * temporary directory and `note` says why. `refresh` trains even when cached.
 */
export function cachedDemoTeacher(options: DemoOptions & { cacheDir: string | null; refresh?: boolean }, onProgress?: (p: DemoProgress) => void): CachedTeacher {
  const text = options.text ?? loadDefaultCorpus();
  const settings = { ...DEMO_DEFAULTS, ...definedOnly({ steps: options.steps, seed: options.seed, batchSize: options.batchSize, seqLen: options.seqLen, lr: options.lr }) };
  const key = createHash('sha256').update(JSON.stringify({ version: VERSION, config: DEMO_CONFIG, ...settings })).update(text).digest('hex').slice(0, 16);
  const dir = options.cacheDir === null ? null : join(options.cacheDir, `demo-teacher-${key}`);
  const readCached = (at: string): CachedTeacher | null => {
    try {
      return { dir: at, model: loadLlama(at), result: JSON.parse(readFileSync(join(at, 'demo-result.json'), 'utf8')) as DemoResult, cached: true };
    } catch {
      return null; // absent or unreadable: trained (again) below
    }
  };
  if (dir !== null && !options.refresh && existsSync(join(dir, 'demo-result.json'))) {
    const hit = readCached(dir);
    if (hit !== null) return hit;
  }
  const { result, model } = trainDemoModel({ ...settings, text }, onProgress);
  const write = (at: string): void => {
    mkdirSync(at, { recursive: true });
    saveLlama(at, model);
    saveTokenizerJson(join(at, 'tokenizer.json'), new ByteTokenizer());
    writeBytesAtomic(join(at, 'demo-result.json'), JSON.stringify(result, null, 2) + '\n');
  };
  let note: string | undefined;
  if (dir !== null) {
    const staging = `${dir}.tmp-${process.pid}`;
    try {
      rmSync(staging, { recursive: true, force: true });
      write(staging);
      if (options.refresh) rmSync(dir, { recursive: true, force: true });
      try {
        renameSync(staging, dir);
      } catch (err) {
        // Another run finished the same teacher first: keep its copy.
        removeQuietly(staging);
        if (readCached(dir) === null) throw err;
      }
      return { dir, model, result, cached: false };
    } catch (err) {
      removeQuietly(staging);
      note = `could not cache the teacher in ${options.cacheDir}: ${(err as Error).message}`;
    }
  }
  const temporary = mkdtempSync(join(tmpdir(), 'qkd-demo-teacher-'));
  write(temporary);
  return { dir: temporary, model, result, cached: false, ...(note !== undefined ? { note } : {}) };
}

/** Best-effort removal of a staging directory (the path may not even be creatable). */
function removeQuietly(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    // nothing to clean up, or nothing we can clean up
  }
}

function definedOnly<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
