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
 * removed. A partial job for other tokens, teacher, k or window length is
 * not resumed: it is discarded (the note says so).
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { HEADER_BYTES, encodeHeader, encodeWindow, softTargetCacheHeader, softTargetWindow, windowBytes, type SoftTargetCacheHeader, type SoftTargetCacheOptions, type SoftTargets } from './soft-targets.js';

export interface FillProgress {
  /** Windows on disk, of `total`. */
  done: number;
  total: number;
  /** Windows that were already done when this run started (a resumed job). */
  resumed: number;
  /** Requests asked again after a failure, so far. */
  retries: number;
  elapsedSeconds: number;
}

export interface FillOptions extends SoftTargetCacheOptions {
  /** The teacher's soft targets of window w, given its seqLen + 1 tokens (inputs, then the last target). */
  fetchWindow: (w: number, tokens: Int32Array) => Promise<SoftTargets>;
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
  /** False when shouldStop ended the job before every window was done (the partial files stay for a resume). */
  complete: boolean;
  fetched: number;
  retries: number;
}

interface ProgressFile {
  header: SoftTargetCacheHeader;
  done: string;
}

const sameHeader = (a: SoftTargetCacheHeader, b: SoftTargetCacheHeader): boolean => JSON.stringify(a) === JSON.stringify(b);

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
  let doneCount = 0;
  for (let w = 0; w < count; w++) if (isDone(bits, w)) doneCount++;
  const resumed = doneCount;
  let fetched = 0;
  let retries = 0;
  let failure: unknown = null;
  let lastSaved = 0;
  const saveProgress = (): void => {
    fsyncSync(fd);
    writeBytesAtomic(progressPath, JSON.stringify({ header, done: Buffer.from(bits).toString('base64') } satisfies ProgressFile));
    lastSaved = performance.now();
  };
  const report = (): void => options.onProgress?.({ done: doneCount, total: count, resumed, retries, elapsedSeconds: (performance.now() - started) / 1000 });
  try {
    if (fresh) {
      ftruncateSync(fd, HEADER_BYTES + count * windowBytes(header));
      writeSync(fd, encodeHeader(header), 0, HEADER_BYTES, 0);
      saveProgress();
    }
    const todo: number[] = [];
    for (let w = 0; w < count; w++) if (!isDone(bits, w)) todo.push(w);
    options.onNote?.(
      `soft-target cache: ${todo.length} of ${count} windows to ask for (${todo.length} requests of ${seqLen + 1} tokens, ${todo.length * (seqLen + 1)} prompt tokens, top-${k}), ${Math.min(concurrency, Math.max(todo.length, 1))} in flight${resumed > 0 ? `; ${resumed} done before` : ''}`,
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
    if (doneCount < count) return { header, complete: false, fetched, retries };
  } finally {
    closeSync(fd);
  }
  renameSync(partial, path);
  rmSync(progressPath, { force: true });
  report();
  return { header, complete: true, fetched, retries };
}
