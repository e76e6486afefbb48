/**
 * The training loop: AdamW with warm-up + cosine schedule, gradient clipping
 * and accumulation, periodic validation, metrics.jsonl, and checkpoints that
 * can be resumed exactly. What a step computes beyond cross-entropy comes
 * from a recipe (recipe.ts): distillation, KD+QAT and SAKD (distill.ts), SAT
 * (sat.ts, chosen by `recipe: sat` in the config).
 *
 * Checkpoint layout in the output directory DIR:
 *   DIR/model.safetensors, DIR/config.json, DIR/tokenizer.json  — the model
 *       (Hugging Face layout; what `qkd eval` / `qkd generate` read)
 *   DIR/checkpoint-<step>/  — the same three files plus optimizer.safetensors
 *       (AdamW moments) and trainer_state.json (step, AdamW step, the batch
 *       sampler's RNG state, which is the data position, and the config)
 *       and, when a recipe trains extra parameters (feature projections),
 *       extra.safetensors + extra_optimizer.safetensors; the recipe's own
 *       state (λ, power-iteration vectors, RNG) and the parameter storage's
 *       (DBWA's tiers and rounding RNG) sit in trainer_state.json, and DBWA's
 *       packed weights and moments in storage.safetensors
 *   DIR/latest.json — {"step", "dir"}: the newest complete checkpoint
 * A checkpoint directory is written completely before latest.json is
 * atomically switched to it, so a crash (even kill -9) at any moment leaves
 * the previous checkpoint usable. Older checkpoint directories are removed.
 *
 * Resuming restores weights, moments, AdamW step and RNG state, so the loss
 * curve continues exactly as an uninterrupted run (the kernels are
 * deterministic for a given thread count).
 *
 * Where parameters, gradients and moments live is a strategy the loop owns
 * (optim/parameter-storage.ts): float32 in the model's arena, or DBWA's
 * packed tiers (sat.dbwa.enabled, under any recipe). Either is summed over
 * the ranks of a data-parallel run (TrainOptions.world).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { QkdError } from '../errors.js';
import { LlamaModel, createLlama } from '../models/llama.js';
import { loadLlama, saveLlama } from '../models/llama-io.js';
import { AdamW, gradNorm } from '../optim/adamw.js';
import { Float32Storage, GRADIENT_BUCKET, type ParameterStorage, type StorageBytes } from '../optim/parameter-storage.js';
import { DbwaStorage } from '../sat/dbwa-storage.js';
import { weightModules } from '../nn/layers.js';
import { Rng } from '../tensor/random.js';
import { backward, noGrad } from '../tensor/tape.js';
import { kernels } from '../tensor/backend.js';
import { openSafetensors, writeSafetensors } from '../io/safetensors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { IGNORED_TARGET, sampleBatch, sequentialBatches, splitText, splitTokens } from '../data/corpus.js';
import { isChatCorpus, isCompletionRow, tokenizeChatSplit, type ChatCorpus } from '../data/chat.js';
import { ByteTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { loadTokenizer, saveTokenizerFiles } from '../data/tokenizer-io.js';
import { trainBpe } from '../data/bpe.js';
import { learningRate, parseTrainConfig, type TrainConfig } from './config.js';
import type { TrainRecipe } from './recipe.js';
import { SatRecipe } from './sat.js';
import { ParameterArena } from '../tensor/arena.js';
import { prepareRunDirectory } from './run-directory.js';
import { SINGLE_PROCESS, allreduceInBuckets, batchShard, digest, requireAgreement, type BatchShard, type World } from '../parallel/world.js';

export interface TrainOptions {
  /**
   * Corpus text, or chat conversations (loadCorpusData reads both): those
   * are rendered with the tokenizer's chat template and only the assistant's
   * tokens count in the losses (data/chat.ts).
   */
  text: string | ChatCorpus;
  outDir: string;
  /**
   * The run's settings. When resuming it may be left out (the checkpoint's
   * config is used); when given, it must agree with the checkpoint except
   * for `steps`, which may grow (see resumeConfig).
   */
  config?: TrainConfig;
  /** Continue from DIR/latest.json. */
  resume?: boolean;
  /** Start a new run in an outDir that holds an earlier run, removing that run's files (without it, that is refused). */
  force?: boolean;
  /** Entries of outDir that belong to the caller and stay (a distillation's soft-target cache). */
  keepFiles?: readonly string[];
  /** Tokenizer to use (default byte-level; BPE is trained by the caller). */
  tokenizer?: Tokenizer;
  /** Called after every optimiser step. */
  onStep?: (p: StepProgress) => void;
  /** Polled after every step; when it returns true, a checkpoint is written and training stops. */
  shouldStop?: () => boolean;
  /**
   * Called on a rank whose own shouldStop was false when another rank asked to stop (the ranks stop
   * together): a launcher's signal can reach one rank a step before the other.
   */
  onStopAgreed?: () => void;
  /** What to compute per micro-batch beyond cross-entropy (distillation, QAT, ...). */
  recipe?: TrainRecipe;
  /** Builds the starting model of a new run (default: a seeded random model of config.model). */
  createModel?: (vocabSize: number) => LlamaModel;
  /** Human-readable notes from the recipe (e.g. the λ monitor acting). */
  onNote?: (note: string) => void;
  /**
   * The processes the run spans (default one). In an MPI job every rank
   * calls train() with the same options: each trains on its share of every
   * global batch (config batch_size), gradients are summed over the ranks
   * before one identical update, and only rank 0 writes files and calls
   * onStep / onNote (docs/parallel.md).
   */
  world?: World;
  /** Where parameters, gradients and moments live (default: from the config — DBWA when sat.dbwa.enabled, else float32). */
  storage?: ParameterStorage;
}

/** The storage a config asks for: DBWA's packed tiers when sat.dbwa.enabled (any recipe), else float32. */
export function storageFor(c: TrainConfig): ParameterStorage {
  if (!c.sat.dbwa.enabled) return new Float32Storage();
  return new DbwaStorage({ uniform_tier: c.sat.dbwa.uniform_tier, stochastic_rounding: c.sat.dbwa.stochastic_rounding, reprofile_every: c.sat.reprofile_every }, c.seed);
}

export interface StepProgress {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  tokensPerSecond: number;
  valLoss?: number;
  /** The recipe's loss components of this step. */
  components?: Record<string, number>;
}

/** The generator the loop samples its batches with: only sampleBatch draws from it. */
function samplerRng(seed: number): Rng {
  return new Rng(seed + 1);
}

/**
 * The start of every sequence a run samples over its steps, in the order
 * the loop draws them (a replay of its sampler): the windows an offline
 * teacher must cover for exactly this run (same tokens, seed, steps, batch
 * size, accumulation and sequence length).
 */
export function sampledStarts(tokens: Int32Array, c: Pick<TrainConfig, 'seed' | 'steps' | 'grad_accum' | 'batch_size' | 'seq_len'>): Int32Array {
  const rng = samplerRng(c.seed);
  const B = c.batch_size;
  const out = new Int32Array(c.steps * c.grad_accum * B);
  for (let i = 0; i < c.steps * c.grad_accum; i++) out.set(sampleBatch(tokens, B, c.seq_len, rng).starts, i * B);
  return out;
}

export interface TrainResult {
  steps: number;
  train_loss: number;
  val_loss: number;
  val_ppl: number;
  tokens_per_s: number;
  /** True when stopped early (shouldStop). */
  interrupted: boolean;
  /** Parameters of the trained model. */
  params: number;
  /** Peak resident set size of the process so far (bytes). */
  peak_rss_bytes: number;
  /** The recipe that ran ('standard': plain cross-entropy). */
  recipe: string;
  /** The training state's bytes (weights + gradients + AdamW moments) as the storage accounts and holds them. */
  state: StorageBytes & { storage: ParameterStorage['kind'] };
}

export interface TrainerState {
  step: number;
  adam_step: number;
  rng: { words: number[]; spareNormal: number | null };
  config: TrainConfig;
  last_loss: number;
  /** The corpus the run trains on (absent in checkpoints written before the corpus check existed). */
  corpus?: CorpusFingerprint;
  /** AdamW step of the recipe's extra parameters, and the recipe's own state. */
  extra_adam_step?: number;
  recipe?: unknown;
  /** The parameter storage's state (DBWA: tiers, rounding RNG, packed layout). */
  storage?: unknown;
}

/** Number of targets a loss counts (those not IGNORED_TARGET). */
export function countedTargets(targets: Int32Array): number {
  let n = 0;
  for (const t of targets) if (t !== IGNORED_TARGET) n++;
  return n;
}

/** The rows whose targets a loss counts, or null when it counts them all. */
export function countedRows(targets: Int32Array): Int32Array | null {
  const n = countedTargets(targets);
  if (n === targets.length) return null;
  const rows = new Int32Array(n);
  let k = 0;
  targets.forEach((t, r) => {
    if (t !== IGNORED_TARGET) rows[k++] = r;
  });
  return rows;
}

/**
 * Mean loss per counted target over the first `maxBatches` validation
 * batches (a loss mask leaves targets out). In a data-parallel run batch i
 * is scored by rank i mod size and the sums are all-reduced, so every rank
 * returns the same value.
 */
export function validationLoss(model: LlamaModel, tokens: Int32Array, batchSize: number, seqLen: number, maxBatches: number, mask?: Uint8Array, world: World = SINGLE_PROCESS): number {
  let total = 0;
  let counted = 0;
  let n = 0;
  noGrad(() => {
    for (const b of sequentialBatches(tokens, batchSize, seqLen, maxBatches, mask)) {
      const c = countedTargets(b.targets);
      if (n % world.size === world.rank) {
        if (c > 0) total += model.loss(model.forward(b.inputs, batchSize, seqLen), b.targets).item() * c;
      }
      counted += c;
      n++;
    }
  });
  if (world.size > 1) {
    const sums = Float64Array.of(total);
    world.allreduceSum(sums);
    total = sums[0]!;
  }
  if (n === 0) throw new QkdError('ARGUMENT', `validation split has ${tokens.length} tokens, fewer than one batch of ${batchSize}×${seqLen + 1}`, { field: 'validation_fraction' });
  if (counted === 0) throw new QkdError('ARGUMENT', `the ${n} validation batch${n === 1 ? '' : 'es'} hold no assistant tokens to score`, { field: 'training.eval_batches', hint: 'more eval_batches, or more held-out conversations (validation_fraction)' });
  return total / counted;
}

interface ExtraParameters {
  recipe: TrainRecipe;
  arena: ParameterArena | null;
  opt: AdamW | null;
}

function saveCheckpoint(dir: string, model: LlamaModel, opt: AdamW, rng: Rng, tokenizer: Tokenizer, config: TrainConfig, corpus: CorpusFingerprint, step: number, lastLoss: number, extra: ExtraParameters | null, storage: ParameterStorage): void {
  const ckpt = join(dir, `checkpoint-${step}`);
  rmSync(ckpt, { recursive: true, force: true });
  mkdirSync(ckpt, { recursive: true });
  saveLlama(ckpt, model, { step: String(step) });
  saveTokenizerFiles(ckpt, tokenizer);
  writeSafetensors(join(ckpt, 'optimizer.safetensors'), [
    { name: 'exp_avg', dtype: 'f32', shape: [opt.m.length], data: opt.m },
    { name: 'exp_avg_sq', dtype: 'f32', shape: [opt.v.length], data: opt.v },
  ], { step: String(step) });
  if (extra?.arena && extra.opt) {
    writeSafetensors(join(ckpt, 'extra.safetensors'), extra.arena.entries.map((e) => ({ name: e.name, dtype: 'f32' as const, shape: e.shape, data: e.tensor.data })), { step: String(step) });
    writeSafetensors(join(ckpt, 'extra_optimizer.safetensors'), [
      { name: 'exp_avg', dtype: 'f32', shape: [extra.opt.m.length], data: extra.opt.m },
      { name: 'exp_avg_sq', dtype: 'f32', shape: [extra.opt.v.length], data: extra.opt.v },
    ], { step: String(step) });
  }
  const storageTensors = storage.checkpointTensors();
  if (storageTensors.length > 0) writeSafetensors(join(ckpt, 'storage.safetensors'), storageTensors, { step: String(step) });
  const state: TrainerState = { step, adam_step: opt.step, rng: rng.getState(), config, corpus, last_loss: lastLoss, extra_adam_step: extra?.opt?.step, recipe: extra?.recipe.getState?.(), storage: storage.getState() ?? undefined };
  writeBytesAtomic(join(ckpt, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
  // The switch: from here on this checkpoint is the one resumed from.
  writeBytesAtomic(join(dir, 'latest.json'), JSON.stringify({ step, dir: `checkpoint-${step}` }) + '\n');
  saveLlama(dir, model, { step: String(step) });
  saveTokenizerFiles(dir, tokenizer);
  for (const name of readdirSync(dir)) {
    if (/^checkpoint-\d+$/.test(name) && name !== `checkpoint-${step}`) rmSync(join(dir, name), { recursive: true, force: true });
  }
}

/**
 * Clips the model's and the recipe's extra gradients to one joint global
 * norm and runs both updates; returns the norm before clipping.
 */
function clipAndUpdate(storage: ParameterStorage, opt: AdamW, extra: { grad: Float32Array; opt: AdamW } | null, lr: number, maxNorm: number): number {
  const norm = extra === null || extra.grad.length === 0 ? storage.gradNorm() : Math.hypot(storage.gradNorm(), gradNorm(extra.grad));
  const s = norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
  storage.update(opt, lr, s);
  if (extra !== null) {
    if (s !== 1) kernels().scaleInPlace(extra.grad, extra.grad.length, s);
    extra.opt.update(lr);
  }
  return norm;
}

function readJsonFile<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (err) {
    throw new QkdError('IO', `cannot read ${path}: ${(err as Error).message}`, { path });
  }
}

/** Drops metrics lines written after the checkpoint a run resumes from. */
function truncateMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const lines = readFileSync(path, 'utf8').split('\n');
  const kept: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let entry: { step?: unknown };
    try {
      entry = JSON.parse(line) as { step?: unknown };
    } catch {
      // A run that died while appending leaves its last line cut short (no newline after it): that step
      // is past the checkpoint, so the line goes like the other lines after it.
      if (i === lines.length - 1) return;
      throw new QkdError('IO', `line ${i + 1} of ${path} is not JSON; the metrics log cannot be truncated to the checkpoint`, { path, field: `line ${i + 1}`, hint: 'one JSON object per line, as qkd writes it (remove or fix the damaged line to resume)' });
    }
    if (typeof entry?.step === 'number' && entry.step <= step) kept.push(line);
  });
  writeBytesAtomic(path, kept.map((l) => l + '\n').join(''));
}

/**
 * Tokens of the training and validation parts. Byte-level: the split is on
 * tokens (= bytes). BPE: the two parts of the text are encoded separately,
 * so validation text never influences training tokens.
 */
export function tokenizeSplit(tokenizer: Tokenizer, text: string | ChatCorpus, fraction: number): TokenizedSplit {
  if (isChatCorpus(text)) {
    // Chat: whole conversations are held out, and each part carries its loss mask.
    const { train, validation } = tokenizeChatSplit(tokenizer, text, fraction);
    return { train: train.tokens, validation: validation.tokens, trainMask: train.mask, validationMask: validation.mask };
  }
  if (tokenizer.kind === 'byte') return splitTokens(tokenizer.encode(text), fraction);
  const parts = splitText(text, fraction);
  return { train: tokenizer.encode(parts.train), validation: tokenizer.encode(parts.validation) };
}

/** The tokens a run trains and validates on; chat data adds each part's loss mask (1: counted). */
export interface TokenizedSplit {
  train: Int32Array;
  validation: Int32Array;
  trainMask?: Uint8Array;
  validationMask?: Uint8Array;
}

/** A resumed run reuses its saved tokenizer; a new run trains BPE on the training part when asked. */
function chooseTokenizer(c: TrainConfig, resumePoint: ResumePoint | null, data: string | ChatCorpus): Tokenizer {
  if (resumePoint) return loadTokenizer(join(resumePoint.dir, 'tokenizer.json'));
  if (isChatCorpus(data) && isCompletionRow(data.conversations[0]!)) {
    // Prompt / completion rows need no template: qkd's own vocabularies read them (BPE learns from their text).
    // The held-out rows (tokenizeChatSplit's) do not shape the vocabulary.
    const trained = data.conversations.slice(0, data.conversations.length - Math.max(1, Math.ceil(data.conversations.length * c.validation_fraction)));
    if (c.tokenizer.kind === 'bpe') return trainBpe(trained.map((m) => m[0]!.content + m[1]!.content).join('\n\n'), c.tokenizer.vocab_size ?? 4096);
    return new ByteTokenizer();
  }
  if (isChatCorpus(data)) {
    throw new QkdError('CONFIG', `chat rows are rendered with a tokenizer's chat template, and the ${c.tokenizer.kind} tokenizer qkd train builds has none`, { path: data.source, field: 'tokenizer', hint: 'a Hugging Face tokenizer with a chat template (qkd train --tokenizer PATH), or {"text"} rows' });
  }
  const trainingText = splitText(data, c.validation_fraction).train;
  if (c.tokenizer.kind === 'bpe') return trainBpe(trainingText, c.tokenizer.vocab_size ?? 4096);
  return new ByteTokenizer();
}

/**
 * Fails before any training when the corpus is too small: one training
 * sequence, and one validation batch (the first eval would otherwise fail
 * after eval_every steps, with nothing saved).
 */
export function checkSplitFits(split: { train: Int32Array; validation: Int32Array }, B: number, T: number, validationFraction: number): void {
  if (split.train.length < T + 1) {
    throw new QkdError('ARGUMENT', `the training split has ${split.train.length} tokens, fewer than one sequence of ${T + 1}`, { field: 'seq_len', hint: 'a larger corpus or a smaller seq_len' });
  }
  const needs = B * T + 1;
  if (split.validation.length < needs) {
    throw new QkdError('ARGUMENT', `the held-out split (validation_fraction ${validationFraction}) has ${split.validation.length} tokens, fewer than one validation batch of ${B}×${T}+1 = ${needs}`, { field: 'validation_fraction', hint: 'a larger corpus, a larger validation_fraction, or a smaller batch_size / seq_len' });
  }
}

/** Size and SHA-256 of a corpus: a resumed run must train on the very text it started with. */
export interface CorpusFingerprint {
  bytes: number;
  sha256: string;
}

export function corpusFingerprint(text: string | ChatCorpus): CorpusFingerprint {
  // Chat: the conversations themselves (their rendering follows from them and the run's tokenizer).
  const bytes = Buffer.from(isChatCorpus(text) ? JSON.stringify(text.conversations) : text, 'utf8');
  return { bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** The checkpoint a resumed run continues from. */
export interface ResumePoint {
  /** The checkpoint directory. */
  dir: string;
  name: string;
  state: TrainerState;
}

export function readResumePoint(outDir: string): ResumePoint {
  const latestPath = join(outDir, 'latest.json');
  if (!existsSync(latestPath)) throw new QkdError('IO', 'no checkpoint to resume from', { path: latestPath, hint: 'a directory written by qkd train' });
  const latest = readJsonFile<{ dir?: unknown }>(latestPath);
  if (typeof latest.dir !== 'string') throw new QkdError('IO', 'latest.json has no "dir" string', { path: latestPath, field: 'dir' });
  const dir = join(outDir, latest.dir);
  const statePath = join(dir, 'trainer_state.json');
  const state = readJsonFile<TrainerState>(statePath);
  checkTrainerState(state, statePath);
  // Parsed like a config file: defaults fill keys an older checkpoint lacks.
  return { dir, name: latest.dir, state: { ...state, config: parseTrainConfig(state.config, statePath) } };
}

/** The fields of trainer_state.json a resume reads before anything else would notice them wrong. */
function checkTrainerState(state: TrainerState, path: string): void {
  const fail = (field: string, hint: string): never => {
    const value = JSON.stringify((state as unknown as Record<string, unknown>)[field] ?? null).slice(0, 80);
    throw new QkdError('IO', `${path} is damaged: ${field} is ${value}`, { path, field, hint });
  };
  if (state === null || typeof state !== 'object' || Array.isArray(state)) throw new QkdError('IO', `${path} is not a JSON object`, { path, hint: 'the trainer state qkd writes with each checkpoint' });
  const count = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
  if (!count(state.step)) fail('step', 'a non-negative integer');
  if (!count(state.adam_step)) fail('adam_step', 'a non-negative integer');
  if (state.extra_adam_step !== undefined && !count(state.extra_adam_step)) fail('extra_adam_step', 'a non-negative integer');
  const rng = state.rng as unknown as { words?: unknown; spareNormal?: unknown } | null;
  const words = rng?.words;
  if (rng === null || typeof rng !== 'object' || !Array.isArray(words) || words.length !== 4 || !words.every((w) => Number.isInteger(w) && w >= 0 && w < 2 ** 32) || !(rng.spareNormal === null || typeof rng.spareNormal === 'number')) {
    fail('rng', '{"words": [4 unsigned 32-bit integers], "spareNormal": a number or null}');
  }
  if (state.config === null || typeof state.config !== 'object') fail('config', 'the run\'s config object');
}

/** Leaves of a JSON-like value as dotted paths → JSON text. */
function flatten(value: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(value));
  return out;
}

/**
 * Refuses a resumed run whose given settings differ from the checkpoint's,
 * naming each differing field (dotted path) with both values.
 */
export function refuseConfigChanges(saved: unknown, given: unknown, ignored: readonly string[], source: string): void {
  const a = flatten(saved);
  const b = flatten(given);
  const differing = [...new Set([...a.keys(), ...b.keys()])].filter((k) => !ignored.includes(k) && a.get(k) !== b.get(k));
  if (differing.length === 0) return;
  const list = differing.slice(0, 6).map((k) => `${k} (checkpoint ${a.get(k) ?? 'unset'}, given ${b.get(k) ?? 'unset'})`).join(', ');
  throw new QkdError('CONFIG', `--resume: the settings differ from the run's checkpoint: ${list}${differing.length > 6 ? `, and ${differing.length - 6} more` : ''}`, { path: source, field: differing[0], hint: 'resume with the options the run was started with (or none: the checkpoint keeps them), or start a new run in another directory' });
}

/**
 * The settings a resumed run continues with. A resumed run is the saved run:
 * every setting comes from the checkpoint, and a given config that differs
 * is refused field by field — except `steps`, which may be raised to train
 * further (the cosine schedule is then stretched to the new end, which the
 * returned note states).
 */
export function resumeConfig<C extends { steps: number }>(saved: C, given: C | undefined, savedStep: number, source: string): { config: C; notes: string[] } {
  if (given === undefined) return { config: saved, notes: [] };
  refuseConfigChanges(saved, given, ['steps'], source);
  if (given.steps === saved.steps) return { config: saved, notes: [] };
  if (given.steps <= savedStep) {
    throw new QkdError('ARGUMENT', `--resume: steps ${given.steps} is not past the checkpoint's step ${savedStep}; the run has nothing left to do`, { path: source, field: 'steps', hint: `more than ${savedStep} steps, or no --steps (the run's own ${saved.steps})` });
  }
  return { config: { ...saved, steps: given.steps }, notes: [`steps overridden: ${saved.steps} → ${given.steps} (the learning-rate schedule now ends at step ${given.steps})`] };
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const { outDir } = options;
  const world = options.world ?? SINGLE_PROCESS;
  // Only rank 0 reports: the others would repeat its every line.
  const onNote = world.isRoot ? options.onNote : undefined;
  const onStep = world.isRoot ? options.onStep : undefined;
  const runDirectory = prepareRunDirectory(outDir, { resume: options.resume, force: options.force, ignore: options.keepFiles });
  const resumePoint = options.resume ? readResumePoint(outDir) : null;
  const corpus = corpusFingerprint(options.text);
  let c: TrainConfig;
  if (resumePoint) {
    const r = resumeConfig(resumePoint.state.config, options.config, resumePoint.state.step, 'the options given');
    c = r.config;
    for (const note of r.notes) onNote?.(note);
    const saved = resumePoint.state.corpus;
    if (saved && (saved.sha256 !== corpus.sha256 || saved.bytes !== corpus.bytes)) {
      throw new QkdError('CONFIG', `--resume: the corpus differs from the one the run trained on (${saved.bytes} bytes, sha256 ${saved.sha256.slice(0, 12)}…; given ${corpus.bytes} bytes, sha256 ${corpus.sha256.slice(0, 12)}…)`, { path: outDir, field: 'data', hint: 'the --data the run was started with' });
    }
    if (resumePoint.state.step >= c.steps) {
      throw new QkdError('ARGUMENT', `--resume: the run is finished (step ${resumePoint.state.step} of ${c.steps}); nothing to do`, { path: outDir, field: 'steps', hint: `--steps above ${resumePoint.state.step} to train further` });
    }
  } else {
    if (options.config === undefined) throw new QkdError('ARGUMENT', 'a new run needs a config', { field: 'config' });
    c = options.config;
  }
  const tokenizer = options.tokenizer ?? chooseTokenizer(c, resumePoint, options.text);
  const { train: trainTokens, validation, trainMask, validationMask } = tokenizeSplit(tokenizer, options.text, c.validation_fraction);
  checkSplitFits({ train: trainTokens, validation }, c.batch_size, c.seq_len, c.validation_fraction);
  const shard = batchShard(world, c.batch_size);
  requireAgreement(world, { config: JSON.stringify(c), corpus: corpus.sha256, tokenizer: tokenizerIdentity(tokenizer), checkpoint: resumePoint ? `${resumePoint.name}:${resumePoint.state.step}` : 'new run' }, "the run's settings");
  // Every check has passed (on every rank): only now may --force delete the earlier run.
  if (world.isRoot) runDirectory.clear();
  world.barrier();
  const metricsPath = join(outDir, 'metrics.jsonl');

  let model: LlamaModel;
  let opt: AdamW;
  const recipe: TrainRecipe | undefined = options.recipe ?? (c.recipe === 'sat' ? new SatRecipe(c.sat, c.seed) : undefined);
  const storage = options.storage ?? storageFor(c);
  let extraOpt: AdamW | null = null;
  const rng = samplerRng(c.seed);
  let step = 0;
  let lastLoss = NaN;
  const optimOptions = { lr: c.lr, beta1: c.beta1, beta2: c.beta2, weightDecay: c.weight_decay };
  if (resumePoint) {
    const ckpt = resumePoint.dir;
    const state = resumePoint.state;
    onNote?.(`resuming from ${join(outDir, resumePoint.name)} (step ${state.step} of ${c.steps})${world.size > 1 ? ` on ${world.size} ranks` : ''}`);
    model = loadLlama(ckpt);
    if (model.config.vocab_size !== tokenizer.vocabSize) {
      throw new QkdError('CONFIG', `checkpoint vocab_size ${model.config.vocab_size} differs from the tokenizer's ${tokenizer.vocabSize}`, { path: ckpt, field: 'vocab_size' });
    }
    opt = new AdamW(model.arena, { ...optimOptions, moments: storage.float32Moments });
    const moments = openSafetensors(join(ckpt, 'optimizer.safetensors'));
    try {
      const m = moments.readFloat32('exp_avg').data;
      if (opt.ownsMoments && m.length === 0 && model.arena.size > 0) {
        throw new QkdError('CONFIG', 'the checkpoint keeps its AdamW moments packed (a DBWA run), but this run expects float32 moments', { path: join(ckpt, 'optimizer.safetensors'), field: 'exp_avg', hint: 'resume with sat.dbwa.enabled: true, as the run was started' });
      }
      if (!opt.ownsMoments && m.length > 0) {
        throw new QkdError('CONFIG', 'the checkpoint holds float32 AdamW moments, but this run keeps them packed (DBWA)', { path: join(ckpt, 'optimizer.safetensors'), field: 'exp_avg', hint: 'resume with the sat.dbwa setting the run was started with' });
      }
      try {
        opt.setState({ step: state.adam_step, m, v: moments.readFloat32('exp_avg_sq').data });
      } catch (error) {
        if (!(error instanceof QkdError)) throw error;
        throw new QkdError('IO', `the optimizer state does not fit the model: ${error.message}`, { path: join(ckpt, 'optimizer.safetensors'), hint: "the checkpoint's own optimizer.safetensors" });
      }
    } finally {
      moments.close();
    }
    if (recipe?.extra) {
      extraOpt = new AdamW(recipe.extra, optimOptions);
      const saved = openSafetensors(join(ckpt, 'extra.safetensors'));
      const savedMoments = openSafetensors(join(ckpt, 'extra_optimizer.safetensors'));
      try {
        for (const e of recipe.extra.entries) recipe.extra.set(e.name, e.shape, saved.readFloat32(e.name).data);
        extraOpt.setState({ step: state.extra_adam_step ?? 0, m: savedMoments.readFloat32('exp_avg').data, v: savedMoments.readFloat32('exp_avg_sq').data });
      } finally {
        saved.close();
        savedMoments.close();
      }
    }
    if (state.recipe !== undefined) recipe?.setState?.(state.recipe);
    if (storage.kind !== 'float32') {
      const path = join(ckpt, 'storage.safetensors');
      const saved = existsSync(path) ? openSafetensors(path) : null;
      try {
        storage.restore(state.storage ?? null, saved);
      } finally {
        saved?.close();
      }
    }
    rng.setState(state.rng);
    step = state.step;
    lastLoss = state.last_loss;
    if (world.isRoot) truncateMetrics(metricsPath, step);
  } else {
    model = options.createModel ? options.createModel(tokenizer.vocabSize) : createLlama({ ...c.model, vocab_size: tokenizer.vocabSize, max_position_embeddings: c.seq_len }, c.seed);
    opt = new AdamW(model.arena, { ...optimOptions, moments: storage.float32Moments });
    if (recipe?.extra) extraOpt = new AdamW(recipe.extra, optimOptions);
    if (world.isRoot) rmSync(metricsPath, { force: true });
  }
  if (world.size > 1) startInLockstep(world, model, opt, extraOpt, recipe);
  // The Linear and Embedding weights, in module order: what DBWA profiles and tiers.
  const weights = weightModules(model, model.arena).map((w) => ({ name: w.name, tensor: w.tensor }));
  const extra: ExtraParameters | null = recipe ? { recipe, arena: recipe.extra ?? null, opt: extraOpt } : null;
  // Components averaged since the last eval, for the recipe's monitor.
  let sinceEval: Record<string, number> = {};
  let stepsSinceEval = 0;

  const B = c.batch_size;
  const T = c.seq_len;
  const started = performance.now();
  const startStep = step;
  let interrupted = false;
  let valLoss = NaN;
  while (step < c.steps) {
    const lr = learningRate(c, step + 1);
    recipe?.beginStep?.(step + 1, model);
    // Zeroes the gradients (DBWA: packs the model at the first step, re-tiers on schedule).
    storage.beginStep(step + 1, model.arena, weights);
    recipe?.extra?.zeroGrad();
    let loss = 0;
    const components: Record<string, number> = {};
    for (let micro = 0; micro < c.grad_accum; micro++) {
      // Every rank draws the whole global batch (the data position is global) and trains on its rows.
      const global = sampleBatch(trainTokens, B, T, rng, trainMask);
      const batch = world.size === 1 ? global : rowsOf(global, shard, T);
      // This rank's share of the global mean: its counted targets over all of them (1 for one process).
      const share = world.size === 1 ? 1 : shareOf(batch.targets, global.targets, world.size);
      const rows = shard.rows;
      let l;
      if (recipe) {
        const r = recipe.loss(model, { inputs: batch.inputs, targets: batch.targets, starts: batch.starts, B: rows, T }, step + 1);
        l = r.loss;
        for (const [k, v] of Object.entries(r.components)) components[k] = (components[k] ?? 0) + (v * share) / c.grad_accum;
      } else {
        l = model.loss(model.forward(batch.inputs, rows, T), batch.targets);
      }
      loss += (l.item() * share) / c.grad_accum;
      // Each micro-batch contributes 1/grad_accum of the mean gradient (and each rank its share of it).
      backward(l, Float32Array.of(share / c.grad_accum));
    }
    if (world.size > 1) {
      storage.reduceGradients(world);
      if (recipe?.extra) allreduceInBuckets(world, recipe.extra.grad as Float32Array, GRADIENT_BUCKET);
      loss = sumOverRanks(world, loss, components, step === startStep);
    }
    const gradNormBefore = clipAndUpdate(storage, opt, recipe?.extra && extraOpt ? { grad: recipe.extra.grad as Float32Array, opt: extraOpt } : null, lr, c.grad_clip);
    step++;
    for (const [k, v] of Object.entries(components)) sinceEval[k] = (sinceEval[k] ?? 0) + v;
    stepsSinceEval++;
    lastLoss = loss;
    const seconds = (performance.now() - started) / 1000;
    const tokensPerSecond = ((step - startStep) * B * T * c.grad_accum) / seconds;
    const record: Record<string, number> = { step, loss, ...components, lr, grad_norm: gradNormBefore, tokens_per_s: tokensPerSecond };
    const progress: StepProgress = { step, steps: c.steps, loss, lr, tokensPerSecond, components };
    if (step % c.eval_every === 0 || step === c.steps) {
      valLoss = validationLoss(model, validation, B, T, c.eval_batches, validationMask, world);
      record.val_loss = valLoss;
      progress.valLoss = valLoss;
      if (recipe?.afterEval) {
        const averages = Object.fromEntries(Object.entries(sinceEval).map(([k, v]) => [k, v / Math.max(1, stepsSinceEval)]));
        const r = recipe.afterEval(step, averages, model, validation, validationMask);
        Object.assign(record, r.metrics ?? {});
        for (const note of r.notes ?? []) {
          onNote?.(note);
          if (world.isRoot) appendFileSync(metricsPath, JSON.stringify({ step, note }) + '\n');
        }
      }
      sinceEval = {};
      stepsSinceEval = 0;
    }
    for (const note of [...storage.takeNotes(), ...(recipe?.takeNotes?.() ?? [])]) {
      onNote?.(note);
      if (world.isRoot) appendFileSync(metricsPath, JSON.stringify({ step, note }) + '\n');
    }
    if (world.isRoot) appendFileSync(metricsPath, JSON.stringify(record) + '\n');
    onStep?.(progress);
    await tick(); // lets signal handlers (Ctrl-C) run between steps
    const askedHere = options.shouldStop?.() ?? false;
    const stop = anyRank(world, askedHere);
    if (stop && !askedHere) options.onStopAgreed?.();
    if (step % c.checkpoint_every === 0 || step === c.steps || stop) {
      // The ranks must still hold one model; a checkpoint of a diverged job would be rank 0's alone.
      if (world.size > 1) requireAgreement(world, { weights: digest(storage.weightsForDigest(model.arena)), recipe: JSON.stringify(recipe?.getState?.() ?? null), storage: JSON.stringify(storage.getState()) }, `the state at step ${step}`);
      if (world.isRoot) saveCheckpoint(outDir, model, opt, rng, tokenizer, c, corpus, step, lastLoss, extra, storage);
      world.barrier();
    }
    if (stop && step < c.steps) {
      interrupted = true;
      break;
    }
  }
  if (Number.isNaN(valLoss)) valLoss = validationLoss(model, validation, B, T, c.eval_batches, validationMask, world);
  const seconds = (performance.now() - started) / 1000;
  return {
    steps: step,
    train_loss: lastLoss,
    val_loss: valLoss,
    val_ppl: Math.exp(valLoss),
    tokens_per_s: step > startStep ? ((step - startStep) * B * T * c.grad_accum) / seconds : 0,
    interrupted,
    params: model.parameterCount,
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
    recipe: recipe?.name ?? 'standard',
    state: { storage: storage.kind, ...storage.bytes(model.arena) },
  };
}

/** What identifies a tokenizer well enough to tell two ranks' apart: kind, size and a probe's ids. */
function tokenizerIdentity(tokenizer: Tokenizer): string {
  return `${tokenizer.kind}:${tokenizer.vocabSize}:${tokenizer.encode('The quick brown fox jumps over 13 lazy dogs.\n').join(',')}`;
}

/** Rows [first, first + rows) of a [B, T] batch. */
function rowsOf(batch: { inputs: Int32Array; targets: Int32Array; starts: Int32Array }, shard: BatchShard, T: number): { inputs: Int32Array; targets: Int32Array; starts: Int32Array } {
  const from = shard.first * T;
  const to = (shard.first + shard.rows) * T;
  return { inputs: batch.inputs.subarray(from, to), targets: batch.targets.subarray(from, to), starts: batch.starts.subarray(shard.first, shard.first + shard.rows) };
}

/**
 * A rank's weight in the global mean loss: its counted targets over the
 * global batch's (equal shares, 1/size, without a loss mask; when no
 * target of the batch counts, 1/size).
 */
function shareOf(local: Int32Array, global: Int32Array, size: number): number {
  const all = countedTargets(global);
  return all === 0 ? 1 / size : countedTargets(local) / all;
}

/**
 * Sums over the ranks the logged loss and components, which every rank
 * weighted by its share. Returns the global loss; `components` is updated in place.
 * On a run's first step the ranks also check they log the same components.
 */
function sumOverRanks(world: World, loss: number, components: Record<string, number>, first: boolean): number {
  const keys = Object.keys(components).sort();
  if (first) requireAgreement(world, { components: keys.join(',') }, 'the logged loss components');
  const sums = Float64Array.from([loss, ...keys.map((k) => components[k]!)]);
  world.allreduceSum(sums);
  keys.forEach((k, i) => (components[k] = sums[i + 1]!));
  return sums[0]!;
}

/** True on every rank when it is true on any (a Ctrl-C that reached some ranks stops all at the same step). */
function anyRank(world: World, flag: boolean): boolean {
  if (world.size === 1) return flag;
  const v = Float64Array.of(flag ? 1 : 0);
  world.allreduceMax(v);
  return v[0] !== 0;
}

/**
 * Puts every rank in rank 0's state before the first step: its weights and
 * AdamW moments (and the recipe's extra parameters) are broadcast, then the
 * weights' SHA-256 is compared across ranks.
 */
function startInLockstep(world: World, model: LlamaModel, opt: AdamW, extraOpt: AdamW | null, recipe: TrainRecipe | undefined): void {
  // Before the first step every storage still has the float32 arena (DBWA packs it at step 1, or restores its packed state from the checkpoint all ranks read).
  world.broadcast(model.arena.data);
  if (opt.ownsMoments) {
    world.broadcast(opt.m);
    world.broadcast(opt.v);
  }
  if (recipe?.extra) world.broadcast(recipe.extra.data);
  if (extraOpt) {
    world.broadcast(extraOpt.m);
    world.broadcast(extraOpt.v);
  }
  requireAgreement(world, { weights: digest(model.arena.data), ...(recipe?.extra ? { extra: digest(recipe.extra.data) } : {}) }, 'the starting weights');
}
