/**
 * Perplexity of a GGUF in llama.cpp itself, through node-llama-cpp (its
 * prebuilt CPU build, never compiled or downloaded here): the same windows
 * and targets as evaluatePerplexity, so the two engines' figures compare
 * one to one. node-llama-cpp is optional: qkd declares it as a development
 * dependency, and a user installs it (`npm install node-llama-cpp`) to
 * check an export in the runtime people deploy with.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { QkdError } from '../errors.js';

export interface LlamaCppEvalResult {
  ppl: number;
  /** Predicted tokens. */
  tokens: number;
  /** Mean negative log-likelihood (nats). */
  loss: number;
  /** What llama.cpp logged at warning level or above while loading the file (a clean file logs nothing). */
  warnings: string[];
}

interface NodeLlamaCpp {
  getLlama(options: Record<string, unknown>): Promise<{
    loadModel(o: { modelPath: string }): Promise<{
      createContext(o: Record<string, unknown>): Promise<{
        getSequence(): {
          clearHistory(): Promise<void>;
          controlledEvaluate(input: unknown[]): Promise<({ next?: { logits?: Map<number, number>; totalLogitWeight?: number } } | undefined)[]>;
        };
        dispose(): Promise<void>;
      }>;
      dispose(): Promise<void>;
    }>;
  }>;
}

/**
 * The node-llama-cpp module: installed beside qkd (`npm install
 * node-llama-cpp`), or at the directory QKD_NODE_LLAMA_CPP names (the test
 * runner installs it into .cache/ there).
 */
export async function loadNodeLlamaCpp<T = NodeLlamaCpp>(): Promise<T> {
  try {
    return (await import('node-llama-cpp' as string)) as T;
  } catch (err) {
    const dir = process.env.QKD_NODE_LLAMA_CPP;
    if (dir && existsSync(join(dir, 'dist', 'index.js'))) return (await import(pathToFileURL(join(dir, 'dist', 'index.js')).href)) as T;
    throw new QkdError('IO', `evaluating in llama.cpp needs the npm package node-llama-cpp: ${(err as Error).message.split('\n')[0]}`, { field: '--engine', hint: 'npm install node-llama-cpp (its prebuilt CPU binaries are used; nothing is compiled)' });
  }
}

/** log p(target) from one position's raw logits (log-softmax in float64). */
function logProbability(logits: Map<number, number> | undefined, target: number, position: number, path: string): number {
  if (logits === undefined) throw new QkdError('STATE', `llama.cpp returned no logits at position ${position}`, { path });
  const t = logits.get(target);
  if (t === undefined) throw new QkdError('STATE', `llama.cpp returned no logit for token ${target}`, { path });
  let max = -Infinity;
  for (const v of logits.values()) if (v > max) max = v;
  let sum = 0;
  for (const v of logits.values()) sum += Math.exp(v - max);
  return t - max - Math.log(sum);
}

type Llama = Awaited<ReturnType<NodeLlamaCpp['getLlama']>>;
let llamaInstance: Promise<Llama> | null = null;
/** Where llama.cpp's log messages go while a model loads (null: dropped). Evaluations are expected one at a time; concurrent loads would share it. */
let logSink: string[] | null = null;

/**
 * One llama.cpp instance per process: each getLlama call registers its own
 * exit handlers, so a new one per evaluation piles them up.
 */
function sharedLlama(): Promise<Llama> {
  llamaInstance ??= loadNodeLlamaCpp()
    .then(({ getLlama }) => getLlama({ gpu: false, build: 'never', logLevel: 'warn', logger: (level: string, message: string) => logSink?.push(`${level}: ${message.trim()}`) }))
    .catch((err: unknown) => {
      // Not cached: a later call (after installing node-llama-cpp, say) tries again.
      llamaInstance = null;
      throw err;
    });
  return llamaInstance;
}

/**
 * Loads a GGUF in llama.cpp and returns what it logged at warning level or
 * above while loading. Only the load's messages describe the file; a
 * context's (e.g. node-llama-cpp's 256-token minimum context exceeding a
 * small model's training context) describe an evaluation.
 */
async function loadLogged(path: string) {
  const llama = await sharedLlama();
  const warnings: string[] = [];
  logSink = warnings;
  try {
    const model = await llama.loadModel({ modelPath: path });
    // llama.cpp's log lines reach JavaScript through a queue of their own: on a busy machine the
    // load can resolve first. Let the queued lines arrive before the sink closes.
    await new Promise((resolve) => setTimeout(resolve, 50));
    return { model, loadWarnings: [...warnings] };
  } finally {
    logSink = null;
  }
}

/**
 * Mean next-token NLL of `tokens` under the GGUF at `path` in llama.cpp, over
 * non-overlapping windows of seqLen + 1 tokens (each scored from an empty
 * context), as evaluatePerplexity does in qkd.
 */
export async function llamaCppPerplexity(path: string, tokens: Int32Array, seqLen: number, options: { threads?: number; mask?: Uint8Array } = {}): Promise<LlamaCppEvalResult> {
  // One thread by default: on the small models qkd makes, node-llama-cpp's default thread count was 50–200x slower here (thread hand-offs dominate a 64-token batch).
  const { model, loadWarnings } = await loadLogged(path);
  let nll = 0;
  let count = 0;
  try {
    const context = await model.createContext({ contextSize: seqLen, batchSize: seqLen, sequences: 1, threads: options.threads ?? 1 });
    try {
      const sequence = context.getSequence();
      const windows = Math.floor((tokens.length - 1) / seqLen);
      for (let w = 0; w < windows; w++) {
        const window = Array.from(tokens.subarray(w * seqLen, w * seqLen + seqLen + 1));
        await sequence.clearHistory();
        // Per position: every raw logit, so log p(target) is computed here (node-llama-cpp's
        // totalLogitWeight is taken after its sampling options and is not the full softmax sum).
        // A loss mask (chat data: the assistant's tokens) scores only the targets it keeps.
        const scored = (p: number): boolean => options.mask === undefined || options.mask[w * seqLen + p + 1] === 1;
        const out = await sequence.controlledEvaluate(window.slice(0, seqLen).map((t, p) => (scored(p) ? [t, { generateNext: { logits: true } }] : t)));
        for (let p = 0; p < seqLen; p++) {
          if (!scored(p)) continue;
          nll -= logProbability(out[p]?.next?.logits, window[p + 1]!, p, path);
          count++;
        }
      }
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
  if (count === 0) throw new QkdError('ARGUMENT', `text has ${tokens.length} tokens, fewer than one window of ${seqLen + 1}`, { field: 'data' });
  return { ppl: Math.exp(nll / count), tokens: count, loss: nll / count, warnings: loadWarnings };
}

/**
 * llama.cpp's raw logits at every position of one sequence (a fresh
 * context; one Float32Array of the model's vocabulary per token), and what
 * it logged at warning level while loading: the check that llama.cpp
 * computes the same function as qkd for an exported model.
 */
export async function llamaCppLogits(path: string, tokens: readonly number[], vocab: number, options: { threads?: number } = {}): Promise<{ logits: Float32Array[]; warnings: string[] }> {
  const { model, loadWarnings } = await loadLogged(path);
  try {
    // F32 keys and values and no flash attention (llama.cpp's CPU flash attention rounds queries to F16): its defaults move logits by ~1e-3. Room for one more token than evaluated.
    const size = tokens.length + 1;
    const context = await model.createContext({ contextSize: size, batchSize: size, sequences: 1, threads: options.threads ?? 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false });
    try {
      const out = await context.getSequence().controlledEvaluate(tokens.map((t) => [t, { generateNext: { logits: true } }]));
      const logits = tokens.map((_, p) => {
        const m = out[p]?.next?.logits;
        if (m === undefined) throw new QkdError('STATE', `llama.cpp returned no logits at position ${p}`, { path });
        const row = new Float32Array(vocab);
        for (const [id, v] of m) if (id < vocab) row[id] = v;
        return row;
      });
      return { logits, warnings: loadWarnings };
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** A GGUF held open in llama.cpp for scoring windows one after another (a teacher: llamaCppScorer). */
export interface LlamaCppScorer {
  /** Raw logits [tokens.length × vocab] of every position of `tokens`, each window from an empty context. */
  logits(tokens: ArrayLike<number>): Promise<Float32Array>;
  /**
   * The top-k next-token log-probs and the tail's log-mass at every position
   * of `tokens` (a soft-target window), without the full rows: llama.cpp
   * returns its k largest logits and Σ exp(logit − max) over the vocabulary,
   * which is 10–20× faster than the full logits through node-llama-cpp's
   * per-token maps. The tail is 1 − Σ top-k, floored at 1e-7 (float32
   * cancellation: a smaller tail is not resolved).
   */
  topK(tokens: ArrayLike<number>, k: number): Promise<{ ids: Int32Array; logp: Float32Array; tailLogp: Float32Array }>;
  /**
   * Generation one token at a time from an empty context: the `length` ids
   * after `start`, each chosen by `choose` from the full logits of the
   * sequence so far (data-free generation: the caller samples, seeded).
   */
  continue(start: number, length: number, choose: (logits: Float32Array, position: number) => number): Promise<Int32Array>;
  /** What llama.cpp logged at warning level or above while loading. */
  warnings: string[];
  close(): Promise<void>;
}

/**
 * Opens the GGUF at `path` in llama.cpp for windows of up to `maxTokens`
 * tokens: F32 keys and values and no flash attention (as llamaCppLogits),
 * `threads` threads (default 1). Rows are cut or zero-filled to `vocab`.
 */
export async function llamaCppScorer(path: string, options: { maxTokens: number; vocab: number; threads?: number }): Promise<LlamaCppScorer> {
  const { model, loadWarnings } = await loadLogged(path);
  const V = options.vocab;
  let context: Awaited<ReturnType<typeof model.createContext>>;
  try {
    const size = options.maxTokens + 1;
    context = await model.createContext({ contextSize: size, batchSize: size, sequences: 1, threads: options.threads ?? 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false });
  } catch (err) {
    await model.dispose();
    throw err;
  }
  const sequence = context.getSequence();
  // One window at a time: the context holds one sequence.
  let queue: Promise<unknown> = Promise.resolve();
  const score = async (tokens: ArrayLike<number>): Promise<Float32Array> => {
    const ids = Array.from(tokens);
    if (ids.length > options.maxTokens) throw new QkdError('ARGUMENT', `llama.cpp scorer: ${ids.length} tokens, more than the ${options.maxTokens} it was opened for`, { path });
    await sequence.clearHistory();
    const out = await sequence.controlledEvaluate(ids.map((t) => [t, { generateNext: { logits: true } }]));
    const rows = new Float32Array(ids.length * V);
    for (let p = 0; p < ids.length; p++) {
      const m = out[p]?.next?.logits;
      if (m === undefined) throw new QkdError('STATE', `llama.cpp returned no logits at position ${p}`, { path });
      for (const [id, v] of m) if (id < V) rows[p * V + id] = v;
    }
    return rows;
  };
  const top = async (tokens: ArrayLike<number>, k: number) => {
    const ids = Array.from(tokens);
    if (ids.length > options.maxTokens) throw new QkdError('ARGUMENT', `llama.cpp scorer: ${ids.length} tokens, more than the ${options.maxTokens} it was opened for`, { path });
    await sequence.clearHistory();
    const out = await sequence.controlledEvaluate(ids.map((t) => [t, { generateNext: { logits: { filter: { tokens: [], includeTop: k } }, totalLogitWeight: true } }]));
    const rows = { ids: new Int32Array(ids.length * k), logp: new Float32Array(ids.length * k), tailLogp: new Float32Array(ids.length) };
    for (let p = 0; p < ids.length; p++) {
      const next = out[p]?.next;
      const weight = next?.totalLogitWeight;
      if (next?.logits === undefined || next.logits.size !== k || weight === undefined || !(weight >= 1)) {
        throw new QkdError('STATE', `llama.cpp returned ${next?.logits?.size ?? 'no'} top logits and total weight ${weight} at position ${p}, not ${k} and ≥ 1`, { path });
      }
      let max = -Infinity;
      for (const v of next.logits.values()) max = Math.max(max, v);
      const lse = max + Math.log(weight);
      let kept = 0;
      let i = p * k;
      for (const [id, v] of next.logits) {
        if (id >= V) throw new QkdError('STATE', `llama.cpp returned token id ${id}, outside the vocabulary of ${V}`, { path });
        rows.ids[i] = id;
        rows.logp[i++] = v - lse;
        kept += Math.exp(v - max);
      }
      rows.tailLogp[p] = Math.log(Math.max(1e-7, (weight - kept) / weight));
    }
    return rows;
  };
  const generate = async (start: number, length: number, choose: (logits: Float32Array, position: number) => number): Promise<Int32Array> => {
    if (length + 1 > options.maxTokens) throw new QkdError('ARGUMENT', `llama.cpp scorer: ${length + 1} tokens, more than the ${options.maxTokens} it was opened for`, { path });
    await sequence.clearHistory();
    const out = new Int32Array(length);
    const row = new Float32Array(V);
    let next = start;
    for (let p = 0; p < length; p++) {
      const r = await sequence.controlledEvaluate([[next, { generateNext: { logits: true } }]]);
      const m = r[0]?.next?.logits;
      if (m === undefined) throw new QkdError('STATE', `llama.cpp returned no logits at position ${p}`, { path });
      row.fill(-Infinity);
      for (const [id, v] of m) if (id < V) row[id] = v;
      next = choose(row, p);
      out[p] = next;
    }
    return out;
  };
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const run = queue.then(f);
    queue = run.catch(() => undefined);
    return run;
  };
  return {
    warnings: loadWarnings,
    logits: (tokens) => serial(() => score(tokens)),
    topK: (tokens, k) => serial(() => top(tokens, k)),
    continue: (start, length, choose) => serial(() => generate(start, length, choose)),
    async close() {
      await queue;
      await context.dispose();
      await model.dispose();
    },
  };
}
