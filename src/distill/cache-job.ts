/**
 * Filling a soft-target cache from a slow or remote teacher as a long job
 * (docs/server-teachers.md): windows are asked for with N requests in
 * flight, failed requests are retried with backoff, and the job survives
 * kill -9: a restart continues where it stopped, with no window lost or
 * written twice.
 *
 * On disk, beside the cache path P:
 *   P.partial   the cache file being filled: its header, then every window
 *               at its fixed offset (written in any order);
 *   P.progress  JSON {header, done}: the header the job fills and a bitmap
 *               (base64) of the windows whose bytes are on disk. It is
 *               replaced atomically, and only after the windows it lists
 *               were flushed (fsync), so it never claims a window that a
 *               crash could lose. A window written but not yet listed is
 *               asked for again after a crash and written to the same place.
 * When every window is done, P.partial is renamed to P and P.progress
 * removed. A job asked for some windows only (options.windows: the ones a
 * training run reads) ends with those on disk and P.partial, P.progress in
 * place: a sparse cache, opened by openFilledCache, which a later job for
 * more windows completes. A partial job for other tokens, teacher, k or window length is
 * not resumed: it is discarded (the note says so).
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { HEADER_BYTES, encodeHeader, encodeWindow, openSoftTargetCache, softTargetCacheHeader, softTargetWindow, windowBytes, type SoftTargetCache, type SoftTargetCacheHeader, type SoftTargetCacheOptions, type SoftTargets } from './soft-targets.js';

export interface FillProgress {
  /** Windows asked for that are on disk, of `total` asked for. */
  done: number;
  total: number;
  /** Of those, windows that were already done when this run started (a resumed job). */
  resumed: number;
  /** Requests asked again after a failure, so far. */
  retries: number;
  /** Prompt tokens per window (one request each): seqLen + 1. */
  windowTokens: number;
  elapsedSeconds: number;
}

export interface FillOptions extends SoftTargetCacheOptions {
  /** The teacher's soft targets of window w, given its seqLen + 1 tokens (inputs, then the last target). */
  fetchWindow: (w: number, tokens: Int32Array) => Promise<SoftTargets>;
  /** The windows to ask for (default: every window); others stay unfilled (a sparse cache). */
  windows?: ArrayLike<number>;
  /** Requests in flight (default 4). */
  concurrency?: number;
  /** Attempts per window before the job stops (default 8). */
  attempts?: number;
  /** First backoff in ms, doubled per attempt up to 30 s, with jitter (default 500). */
  backoffMs?: number;
  /** Whether a failure is worth asking again (default: every error). */
  retryable?: (err: unknown) => boolean;
  /** Seconds a failure asks to wait (HTTP Retry-After), if any. */
  retryAfter?: (err: unknown) => number | undefined;
  onProgress?: (p: FillProgress) => void;
  onNote?: (message: string) => void;
  /** Polled between windows: true stops the job (resumable). */
  shouldStop?: () => boolean;
  /** Waits (tests replace it). */
  sleep?: (ms: number) => Promise<void>;
}

export interface FillResult {
  header: SoftTargetCacheHeader;
  /** False when shouldStop ended the job before every window asked for was done (the partial files stay for a resume). */
  complete: boolean;
  /** True when the cache holds some windows only (options.windows): it stays as P.partial + P.progress. */
  sparse: boolean;
  fetched: number;
  retries: number;
}

interface ProgressFile {
  header: SoftTargetCacheHeader;
  done: string;
}

const HEADER_FIELDS = ['version', 'V', 'k', 'seqLen', 'count', 'temperature', 'tokensHash', 'teacher'] as const satisfies readonly (keyof SoftTargetCacheHeader)[];
const sameHeader = (a: SoftTargetCacheHeader, b: SoftTargetCacheHeader): boolean => HEADER_FIELDS.every((f) => a[f] === b[f]);

/** Reads the done-bitmap of a partial job for `header`, or null when there is none to resume. */
function resumable(path: string, header: SoftTargetCacheHeader, note?: (s: string) => void): Uint8Array | null {
  const partial = `${path}.partial`;
  const progress = `${path}.progress`;
  if (!existsSync(partial) || !existsSync(progress)) return null;
  try {
    const saved = JSON.parse(readFileSync(progress, 'utf8')) as ProgressFile;
    const done = new Uint8Array(Buffer.from(saved.done, 'base64'));
    if (sameHeader(saved.header, header) && done.length === Math.ceil(header.count / 8)) return done;
    note?.(`soft-target cache: discarding a partial job for other data or settings (${progress})`);
  } catch {
    note?.(`soft-target cache: discarding an unreadable partial job (${progress})`);
  }
  return null;
}

/** A finished cache for `header` is at `path`. */
function completeCacheHere(path: string, header: SoftTargetCacheHeader): boolean {
  if (!existsSync(path)) return false;
  try {
    const cache = openSoftTargetCache(path);
    try {
      return sameHeader(cache, header);
    } finally {
      cache.close();
    }
  } catch {
    return false;
  }
}

/** How many of the windows a fill job for `options` would ask for that are not on disk yet (0: nothing to do). */
export function windowsToFill(path: string, options: SoftTargetCacheOptions & { windows?: ArrayLike<number> }): number {
  const header = softTargetCacheHeader(options);
  if (completeCacheHere(path, header)) return 0;
  const wanted = wantedWindows(options.windows, header.count, path);
  const bits = resumable(path, header);
  return bits === null ? wanted.length : wanted.filter((w) => !isDone(bits, w)).length;
}

const isDone = (bits: Uint8Array, w: number): boolean => (bits[w >> 3]! & (1 << (w & 7))) !== 0;

/**
 * Fills (or finishes) the cache at `path` for options.tokens with
 * fetchWindow, resumably. Returns when every window is on disk (the cache
 * then opens with openSoftTargetCache), or when shouldStop asked to stop.
 * A window that fails `attempts` times stops the job with an error naming
 * it; the windows done so far stay for the next run.
 */
export async function fillSoftTargetCache(path: string, options: FillOptions): Promise<FillResult> {
  const header = softTargetCacheHeader(options);
  const { count, seqLen, V, k } = header;
  const concurrency = options.concurrency ?? 4;
  const attempts = options.attempts ?? 8;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new QkdError('ARGUMENT', `soft-target cache: concurrency ${concurrency} is invalid`, { field: 'concurrency', hint: 'a positive integer' });
  if (!Number.isInteger(attempts) || attempts < 1) throw new QkdError('ARGUMENT', `soft-target cache: attempts ${attempts} is invalid`, { field: 'attempts', hint: 'a positive integer' });
  const partial = `${path}.partial`;
  const progressPath = `${path}.progress`;
  if (completeCacheHere(path, header)) {
    options.onNote?.(`soft-target cache: reusing ${path} (same data, teacher and settings)`);
    return { header, complete: true, sparse: false, fetched: 0, retries: 0 };
  }
  let done = resumable(path, header, options.onNote);
  const fresh = done === null;
  if (done === null) {
    rmSync(partial, { force: true });
    rmSync(progressPath, { force: true });
    done = new Uint8Array(Math.ceil(count / 8));
  }
  const bits = done;
  const fd = openSync(partial, fresh ? 'w+' : 'r+');
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const started = performance.now();
  const wanted = wantedWindows(options.windows, count, path);
  let doneCount = 0;
  for (const w of wanted) if (isDone(bits, w)) doneCount++;
  const resumed = doneCount;
  const total = wanted.length;
  let fetched = 0;
  let retries = 0;
  let failure: unknown = null;
  let lastSaved = 0;
  const saveProgress = (): void => {
    fsyncSync(fd);
    writeBytesAtomic(progressPath, JSON.stringify({ header, done: Buffer.from(bits).toString('base64') } satisfies ProgressFile));
    lastSaved = performance.now();
  };
  const report = (): void => options.onProgress?.({ done: doneCount, total, resumed, retries, windowTokens: seqLen + 1, elapsedSeconds: (performance.now() - started) / 1000 });
  try {
    if (fresh) {
      ftruncateSync(fd, HEADER_BYTES + count * windowBytes(header));
      writeSync(fd, encodeHeader(header), 0, HEADER_BYTES, 0);
      saveProgress();
    }
    const todo = wanted.filter((w) => !isDone(bits, w));
    const of = total === count ? `${count} windows` : `${total} windows the run reads (of ${count} in the split)`;
    options.onNote?.(
      `soft-target cache: ${todo.length} of ${of} to ask for (${todo.length} requests of ${seqLen + 1} tokens, ${todo.length * (seqLen + 1)} prompt tokens, top-${k}), ${Math.min(concurrency, Math.max(todo.length, 1))} in flight${resumed > 0 ? `; ${resumed} done before` : ''}`,
    );
    report();
    let next = 0;
    const fetchWithRetries = async (w: number): Promise<SoftTargets> => {
      const { inputs, targets } = softTargetWindow(options.tokens, seqLen, w);
      const tokens = new Int32Array(seqLen + 1);
      tokens.set(inputs);
      tokens[seqLen] = targets[seqLen - 1]!;
      for (let attempt = 1; ; attempt++) {
        try {
          const t = await options.fetchWindow(w, tokens);
          if (t.k !== k || t.ids.length !== seqLen * k || t.logp.length !== seqLen * k || t.tailLogp.length !== seqLen) {
            throw new QkdError('SHAPE', `soft-target cache: window ${w} came back with ${t.tailLogp.length} rows of top-${t.k}, not ${seqLen} rows of top-${k}`, { field: 'window' });
          }
          return t;
        } catch (err) {
          const retry = err instanceof QkdError ? false : (options.retryable?.(err) ?? true);
          if (!retry || attempt >= attempts || failure !== null) {
            throw new QkdError('IO', `soft-target cache: window ${w} failed${retry ? ` ${attempt} times` : ''}: ${(err as Error).message}`, {
              path,
              field: `window ${w}`,
              hint: `a teacher that answers; the ${doneCount} windows done are kept, and the same command continues from there`,
            });
          }
          retries++;
          const after = options.retryAfter?.(err);
          const backoff = Math.min(30_000, (options.backoffMs ?? 500) * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
          await sleep(after !== undefined ? Math.max(after * 1000, backoff) : backoff);
        }
      }
    };
    const worker = async (): Promise<void> => {
      while (failure === null && next < todo.length && !(options.shouldStop?.() ?? false)) {
        const w = todo[next++]!;
        let t: SoftTargets;
        try {
          t = await fetchWithRetries(w);
        } catch (err) {
          failure ??= err;
          return;
        }
        const bytes = encodeWindow(t, seqLen, V);
        writeSync(fd, bytes, 0, bytes.length, HEADER_BYTES + w * bytes.length);
        bits[w >> 3]! |= 1 << (w & 7);
        doneCount++;
        fetched++;
        if (performance.now() - lastSaved > 250) saveProgress();
        report();
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(todo.length, 1)) }, worker));
    saveProgress();
    if (failure !== null) throw failure;
    if (doneCount < total) return { header, complete: false, sparse: false, fetched, retries };
    let all = true;
    for (let w = 0; w < count && all; w++) all = isDone(bits, w);
    if (!all) {
      report();
      return { header, complete: true, sparse: true, fetched, retries };
    }
  } finally {
    closeSync(fd);
  }
  renameSync(partial, path);
  rmSync(progressPath, { force: true });
  report();
  return { header, complete: true, sparse: false, fetched, retries };
}

/** The windows a job asks for: every window, or the given ones (deduplicated, in order, each checked). */
function wantedWindows(windows: ArrayLike<number> | undefined, count: number, path: string): number[] {
  if (windows === undefined) return Array.from({ length: count }, (_, w) => w);
  const seen = new Uint8Array(count);
  for (let i = 0; i < windows.length; i++) {
    const w = windows[i]!;
    if (!Number.isInteger(w) || w < 0 || w >= count) throw new QkdError('ARGUMENT', `soft-target cache: window ${w} is outside 0..${count - 1}`, { path, field: 'windows' });
    seen[w] = 1;
  }
  const out: number[] = [];
  for (let w = 0; w < count; w++) if (seen[w]) out.push(w);
  return out;
}

/**
 * Opens what a fill job left at `path`: the complete cache P, or a sparse
 * one (P.partial with the windows P.progress lists; reading another is an
 * error). options.tokens is checked as by openSoftTargetCache.
 */
export function openFilledCache(path: string, options: { tokens?: Int32Array } = {}): SoftTargetCache {
  if (existsSync(path)) return openSoftTargetCache(path, options);
  const progress = `${path}.progress`;
  let saved: ProgressFile;
  try {
    saved = JSON.parse(readFileSync(progress, 'utf8')) as ProgressFile;
  } catch (err) {
    throw new QkdError('IO', `soft-target cache: neither the cache nor a readable fill job is here (${(err as Error).message})`, { path: progress, field: 'done', hint: 'fill the cache first' });
  }
  const present = new Uint8Array(Buffer.from(saved.done, 'base64'));
  const cache = openSoftTargetCache(`${path}.partial`, { ...options, present });
  if (!sameHeader(cache, saved.header) || present.length !== Math.ceil(cache.count / 8)) {
    cache.close();
    throw new QkdError('IO', 'soft-target cache: the fill job\'s progress file belongs to another cache', { path: progress, field: 'header', hint: 'fill the cache again' });
  }
  return cache;
}
