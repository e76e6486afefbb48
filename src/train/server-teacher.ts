/**
 * Distillation from a teacher qkd does not run itself (docs/server-teachers.md):
 * a model on an inference server (vLLM, SGLang) or a GGUF in llama.cpp
 * (node-llama-cpp, in process). The teacher's weights are not in qkd, so
 * everything distillation needs from it comes from soft-target caches that
 * teacher fills: the training windows the run reads (offline KD) and the
 * windows validation scores (KL(teacher ‖ student) over the cached top-k
 * and tail).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { QkdError } from '../errors.js';
import type { LlamaModel } from '../models/llama.js';
import { sequentialBatches } from '../data/corpus.js';
import { noGrad } from '../tensor/tape.js';
import { reshape, selectRows } from '../tensor/ops/shape.js';
import { cachedKd, softTargetWindowCount, type SoftTargetCache } from '../distill/soft-targets.js';
import { checkServerVocabulary, fillCacheFromServer, serverTeacherId, type ServerTeacher } from '../distill/teacher-server.js';
import { fillSoftTargetCache, openFilledCache, windowsToFill, type FillProgress } from '../distill/cache-job.js';
import { llamaCppScorer } from '../eval/llama-cpp.js';
import { loadModelTokenizer, peekConfig } from '../models/load-any.js';
import { countedRows } from './trainer.js';
import type { ResolvedDistillConfig } from './distill-config.js';

/** A teacher served over HTTP, as DistillOptions.teacher. */
export interface TeacherServerSpec {
  server: ServerTeacher;
  /** Requests in flight (default 4). */
  concurrency?: number;
  /** Per request, ms (default 120 000). */
  timeoutMs?: number;
}

/** A GGUF teacher run by llama.cpp in process (node-llama-cpp), as DistillOptions.teacher. */
export interface LlamaCppTeacherSpec {
  engine: 'llama.cpp';
  gguf: string;
  /** llama.cpp threads (default 1). */
  threads?: number;
}

/** A teacher distillation reads through caches only. */
export type CacheTeacher = TeacherServerSpec | LlamaCppTeacherSpec;

export function isTeacherServer(x: unknown): x is TeacherServerSpec {
  return typeof x === 'object' && x !== null && 'server' in x;
}

export function isCacheTeacher(x: unknown): x is CacheTeacher {
  return isTeacherServer(x) || (typeof x === 'object' && x !== null && (x as { engine?: unknown }).engine === 'llama.cpp');
}

/** How notes and errors name the teacher ('a teacher on a server', 'a teacher in llama.cpp'). */
function teacherPlace(t: CacheTeacher): string {
  return isTeacherServer(t) ? 'a teacher on a server' : 'a teacher in llama.cpp';
}

/** The top-k a server teacher's cache keeps when the config sets none: vLLM's default --max-logprobs. */
export const SERVER_DEFAULT_TOP_K = 20;
/** The top-k a llama.cpp teacher's cache keeps when the config sets none (the soft-target cache's default). */
export const LLAMA_CPP_DEFAULT_TOP_K = 32;

/**
 * What a server teacher cannot do, refused by field before anything runs:
 * whatever reads the teacher's weights or hidden states (student init other
 * than student.from, feature and attention KD, SAKD, teacher correction) or
 * its full distribution (reverse and confidence-aware KL).
 */
export function refuseForCacheTeacher(c: ResolvedDistillConfig, teacher: CacheTeacher): void {
  const refuse = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `${teacherPlace(teacher)} gives top-k log-probs only; ${what}`, { field, hint });
  };
  if (c.recipe === 'qat') refuse('recipe', 'recipe qat uses no teacher at all', 'recipe kd or kd-qat');
  if (c.recipe === 'sakd') refuse('recipe', "recipe sakd scores the teacher's layers, whose weights are not here", 'recipe kd or kd-qat');
  if (c.student.from === null) refuse('student.from', `student init '${c.student.init}' builds the student from the teacher's weights, which are not here`, 'an existing student: --student PATH (student.from)');
  if (c.distillation.kl !== 'forward') refuse('distillation.kl', `distillation.kl '${c.distillation.kl}' needs the full distribution`, 'kl: forward');
  const featureKdOn = c.distillation.feature_weight > 0 && (c.distillation.feature_layers === 'all' || c.distillation.feature_layers.length > 0);
  if (featureKdOn) refuse('distillation.feature_layers', "feature KD needs the teacher's hidden states", 'feature_layers: []');
  if (c.distillation.attention_weight > 0) refuse('distillation.attention_weight', "attention KD needs the teacher's attention maps", 'attention_weight: 0');
  if (c.distillation.teacher_correction.steps > 0) refuse('distillation.teacher_correction.steps', "teacher correction fine-tunes the teacher's weights", 'steps: 0');
}

export interface ServerCaches {
  train: SoftTargetCache;
  /** null when no validation window was asked for (across tokenizers: no validation KL). */
  validation: SoftTargetCache | null;
}

/**
 * Fills (or finishes, after an interruption) the training cache (the
 * windows settings.trainWindows lists, by default all) and the validation
 * cache (the windows validation KL reads: its first batches; none when
 * settings.validationWindows is 0) from the teacher, then opens both.
 * Across tokenizers the splits are in the teacher's tokens and V is its
 * vocabulary. Returns null when shouldStop
 * ended the job (the partial files stay for the next run).
 */
export async function prepareCaches(
  spec: CacheTeacher,
  paths: { train: string; validation: string },
  split: { train: Int32Array; validation: Int32Array },
  settings: { seqLen: number; topK: number; V: number; temperature: number; validationWindows: number; decode: (id: number) => string; trainWindows?: ArrayLike<number>; ggufTokenizer?: 'check' | 'own' },
  hooks: { onNote?: (s: string) => void; onProgress?: (what: string, p: FillProgress) => void; shouldStop?: () => boolean },
): Promise<ServerCaches | null> {
  const { seqLen, topK, V, temperature } = settings;
  const windows = Math.min(settings.validationWindows, softTargetWindowCount(split.validation.length, seqLen));
  const validationTokens = split.validation.slice(0, windows * seqLen + 1);
  const withValidation = windows > 0;
  const common = { topK, seqLen, V, temperature, onNote: hooks.onNote, shouldStop: hooks.shouldStop };
  const trainJob = { ...common, tokens: split.train, windows: settings.trainWindows, onProgress: (p: FillProgress) => hooks.onProgress?.('training targets', p) };
  const validationJob = { ...common, tokens: validationTokens, onProgress: (p: FillProgress) => hooks.onProgress?.('validation targets', p) };
  if (isTeacherServer(spec)) {
    hooks.onNote?.(`teacher server: ${spec.server.api} at ${spec.server.url}, model ${spec.server.model}`);
    const net = { concurrency: spec.concurrency, timeoutMs: spec.timeoutMs };
    const train = await fillCacheFromServer(paths.train, spec.server, { ...trainJob, ...net, decode: settings.decode });
    if (!train.complete) return null;
    if (withValidation) {
      const validation = await fillCacheFromServer(paths.validation, spec.server, { ...validationJob, ...net });
      if (!validation.complete) return null;
    }
  } else {
    const teacher = llamaCppTeacherId(spec);
    const pending = windowsToFill(paths.train, { ...trainJob, teacher }) + (withValidation ? windowsToFill(paths.validation, { ...validationJob, teacher }) : 0);
    // Nothing left to compute (a resumed run): llama.cpp is not even loaded.
    if (pending > 0) {
      // 'own': the ids are the GGUF tokenizer's own (across tokenizers), nothing to check.
      if (settings.ggufTokenizer !== 'own') checkGgufVocabulary(spec.gguf, V, settings.decode, hooks.onNote);
      hooks.onNote?.(`teacher in llama.cpp: ${spec.gguf}, ${spec.threads ?? 1} thread(s)`);
      const scorer = await llamaCppScorer(spec.gguf, { maxTokens: seqLen, vocab: V, threads: spec.threads });
      try {
        for (const w of scorer.warnings) hooks.onNote?.(`llama.cpp: ${w}`);
        const fetchWindow = async (_w: number, tokens: Int32Array) => ({ k: topK, ...(await scorer.topK(tokens.subarray(0, seqLen), topK)) });
        // A failure in process is not a flaky network: no retries.
        const job = { teacher, fetchWindow, concurrency: 1, retryable: () => false };
        const train = await fillSoftTargetCache(paths.train, { ...trainJob, ...job });
        if (!train.complete) return null;
        if (withValidation) {
          const validation = await fillSoftTargetCache(paths.validation, { ...validationJob, ...job });
          if (!validation.complete) return null;
        }
      } finally {
        await scorer.close();
      }
    }
  }
  return { train: openFilledCache(paths.train, { tokens: split.train }), validation: withValidation ? openFilledCache(paths.validation, { tokens: validationTokens }) : null };
}

/**
 * The GGUF's own tokenizer against the student's: the same vocabulary size,
 * and the same text for every id (checkServerVocabulary's rule), before
 * llama.cpp computes anything.
 */
function checkGgufVocabulary(path: string, V: number, decode: (id: number) => string, onNote?: (s: string) => void): void {
  const config = peekConfig(path);
  if (config.vocab_size !== V) {
    throw new QkdError('CONFIG', `the GGUF teacher has ${config.vocab_size} tokens in its vocabulary and the student ${V}`, { path, field: 'vocab_size', hint: "a student with the teacher's tokenizer, or distillation across tokenizers (--student-tokenizer)" });
  }
  const theirs = loadModelTokenizer({ config }, path);
  const strings = new Map<number, string>();
  for (let id = 0; id < V; id++) strings.set(id, theirs.decode([id]));
  const { checked, differing } = checkServerVocabulary(strings, decode, path, 'the GGUF teacher');
  onNote?.(`teacher in llama.cpp: its tokenizer's ${checked} tokens checked against the student tokenizer (${differing} differ)`);
}

/** A llama.cpp teacher's identity: the engine and the SHA-256 of the GGUF file (hex). */
export function llamaCppTeacherId(spec: LlamaCppTeacherSpec): string {
  const hash = createHash('sha256').update('llama.cpp\n');
  const fd = openSync(spec.gguf, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 22);
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hash.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

/** The identity of a teacher read through caches (resume and the cache headers check it). */
export function cacheTeacherFingerprint(spec: CacheTeacher): string {
  return isTeacherServer(spec) ? serverTeacherId(spec.server) : llamaCppTeacherId(spec);
}

/**
 * Mean per-token KL(teacher ‖ student) at τ = 1 over the validation batches
 * whose windows the cache holds (counted targets only), from the cached
 * top-k and tail: the teacher's distribution is known only in those k + 1
 * buckets, so this is the KL between the two bucketed distributions (a
 * lower bound of the full KL).
 */
export function cachedValidationKl(student: LlamaModel, cache: SoftTargetCache, validation: Int32Array, B: number, T: number, maxBatches: number, mask?: Uint8Array): number {
  if (cache.seqLen !== T) throw new QkdError('STATE', `the validation cache holds windows of ${cache.seqLen} tokens, not ${T}`, { path: cache.path, field: 'seq_len' });
  const k = cache.k;
  let total = 0;
  let n = 0;
  let batch = 0;
  noGrad(() => {
    for (const b of sequentialBatches(validation, B, T, maxBatches, mask)) {
      if ((batch + 1) * B > cache.count) break;
      const keep = countedRows(b.targets);
      const rows = keep === null ? Array.from({ length: B * T }, (_, r) => r) : Array.from(keep);
      if (rows.length > 0) {
        const ids = new Int32Array(rows.length * k);
        const logp = new Float32Array(rows.length * k);
        const tailLogp = new Float32Array(rows.length);
        rows.forEach((r, i) => {
          const w = cache.window(batch * B + Math.floor(r / T));
          const o = r % T;
          ids.set(w.ids.subarray(o * k, (o + 1) * k), i * k);
          logp.set(w.logp.subarray(o * k, (o + 1) * k), i * k);
          tailLogp[i] = w.tailLogp[o]!;
        });
        const V = student.config.vocab_size;
        const flat = reshape(student.forward(b.inputs, B, T), [B * T, V]);
        const z = keep === null ? flat : selectRows(flat, keep);
        total += cachedKd(z, { ids, logp, tailLogp }, 1).item() * rows.length;
        n += rows.length;
      }
      batch++;
    }
  });
  return n > 0 ? total / n : NaN;
}

/**
 * The cache windows (of seqLen tokens, tiling the training split) that the
 * sequences starting at `starts` touch, sorted: a sequence of T tokens from
 * s spans windows ⌊s/N⌋ … ⌊(s+T−1)/N⌋. Windows past the last whole one
 * (count) are left out: a batch that reaches there trains by the task loss.
 */
export function windowsTouched(starts: Int32Array, T: number, N: number, count: number): Int32Array {
  const seen = new Uint8Array(count);
  for (const s of starts) for (let w = Math.floor(s / N); w <= Math.floor((s + T - 1) / N) && w < count; w++) seen[w] = 1;
  const out: number[] = [];
  for (let w = 0; w < count; w++) if (seen[w]) out.push(w);
  return Int32Array.from(out);
}
