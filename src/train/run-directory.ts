/**
 * The output directory of a training or distillation run, checked before
 * any work: a finished run is never replaced by accident.
 *
 * - a new run needs an empty (or missing) directory;
 * - `resume` needs a directory holding a run (latest.json);
 * - `force` starts over in a directory that holds a run (latest.json or
 *   metrics.jsonl), but never in a directory of other files (a model folder,
 *   a home directory), and the old run's files are deleted only by
 *   `clear()`, which callers run after every other check has passed, so a
 *   refused run loses nothing.
 */
import { existsSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { ensureWritableDirectory, listSome } from '../io/output-dir.js';
import { currentWorld } from '../parallel/world.js';

/** Files a run writes (trainer.ts, distill.ts); `force` deletes these. */
const RUN_ENTRIES = /^(latest\.json|checkpoint-\d+|metrics\.jsonl|model\.safetensors|config\.json|tokenizer\.json|quantized|model-\w+\.gguf|sakd-report\.json|sakd-teacher\.html|sakd-student\.html)$/;
/** Present in every run directory from its first step on. */
const RUN_MARKERS = ['latest.json', 'metrics.jsonl'];

export interface RunDirectoryOptions {
  /** Continue the run in the directory (it must hold one). */
  resume?: boolean;
  /** Start a new run in a directory that holds an earlier run. */
  force?: boolean;
  /** Entries that do not make a directory "used" (a distillation's validated soft-target cache). */
  ignore?: readonly string[];
  /** How the caller names the directory in messages. */
  flag?: string;
}

export interface RunDirectory {
  /** Deletes the earlier run's files when `force` replaces one (a no-op otherwise). */
  clear(): void;
}

export function prepareRunDirectory(path: string, options: RunDirectoryOptions = {}): RunDirectory {
  const flag = options.flag ?? '--out';
  const nothing: RunDirectory = { clear() {} };
  if (options.resume && options.force) {
    throw new QkdError('ARGUMENT', 'resume continues the run in the directory and force replaces it: give one of them', { path, field: '--force' });
  }
  const latest = join(path, 'latest.json');
  if (options.resume) {
    // Checked first: a mistyped path must not be created just to be refused.
    if (!existsSync(latest)) throw new QkdError('IO', `nothing to resume: ${path} holds no checkpoint (latest.json)`, { path: latest, field: flag, hint: 'the output directory of an earlier qkd train / qkd distill run' });
    ensureWritableDirectory(path, flag);
    removeStaleTemporaries(path);
    return nothing;
  }
  ensureWritableDirectory(path, flag);
  const ignored = new Set(options.ignore ?? []);
  const used = readdirSync(path).filter((name) => !ignored.has(name) && !name.startsWith('.qkd-write-test-'));
  if (used.length === 0) return nothing;
  const holdsRun = RUN_MARKERS.some((m) => used.includes(m));
  if (!holdsRun) {
    throw new QkdError('IO', `${flag} ${path} is not empty (${listSome(used)}) and holds no qkd run; refusing to write into it`, { path, field: flag, hint: 'an empty or new directory' });
  }
  if (!options.force) {
    throw new QkdError('IO', `${flag} ${path} holds a run; refusing to overwrite it`, { path, field: flag, hint: '--resume to continue that run, --force to replace it, or a new directory' });
  }
  return {
    clear() {
      // latest.json first: from here on the directory no longer looks resumable.
      rmSync(latest, { force: true });
      for (const name of used) if (RUN_ENTRIES.test(name)) rmSync(join(path, name), { recursive: true, force: true });
      removeStaleTemporaries(path);
    },
  };
}

/**
 * The temporary files of writes that never finished (io/atomic.ts names
 * them `.NAME.tmp-PID-TIME`): a run killed while writing (kill -9, power
 * loss) leaves them, and nothing reads them. Those of a process that is
 * still alive are kept. Only rank 0 looks: a pid is alive or not on its own
 * host, and under a multi-host mpirun another rank would take rank 0's
 * write in flight for a dead one.
 */
function removeStaleTemporaries(path: string): void {
  if (!currentWorld().isRoot) return;
  for (const name of readdirSync(path)) {
    const m = /^\..+\.tmp-(\d+)-[0-9a-z]+$/.exec(name);
    if (m === null || processAlive(Number(m[1]))) continue;
    rmSync(join(path, name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, owned by someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A model the run reads (`role`) that lies inside the output directory,
 * which --force clears and checkpoints overwrite; one inside an entry the
 * run keeps (`kept`, e.g. MOHAWK's stages, whose last one stage 3 starts
 * from) is safe.
 */
export function refuseInsideOutput(path: string, outDir: string, role: string, flag: string, kept: readonly string[] = []): void {
  if (!existsSync(path) || !existsSync(outDir)) return;
  const m = realpathSync(path);
  const o = realpathSync(outDir);
  if (kept.some((entry) => m === join(o, entry) || m.startsWith(join(o, entry) + '/'))) return;
  if (m === o || m.startsWith(o + '/')) {
    throw new QkdError('ARGUMENT', `the ${role} lies inside the output directory, where the run would overwrite it`, { path, field: flag, hint: `an output directory outside the ${role}` });
  }
}
