/**
 * The MPI binding (native/mpi/mpi.cc), typed and loaded, and how qkd knows
 * that an MPI launcher started it. docs/parallel.md explains the design.
 *
 * The binding is optional: it is built only where MPI's development files
 * are installed. Every other feature works without it; a process that an
 * MPI launcher started (mpirun, srun) but cannot load it stops with an error
 * that says how to build it, rather than training alone N times over.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { packageRoot } from '../package-root.js';

/** MPI's thread levels, in the binding's numbering. qkd calls MPI from the main thread only (FUNNELED). */
export const THREAD_LEVELS = ['single', 'funneled', 'serialized', 'multiple'] as const;
export type ThreadLevel = (typeof THREAD_LEVELS)[number];

export interface MpiAddon {
  init(threadLevel: number): { rank: number; size: number; provided: number; library: string };
  /** In place on every rank; op 0 sum, 1 max, 2 min; in calls of at most `chunk` elements (default 2^30). */
  allreduce(values: Float32Array | Float64Array, op: number, chunk?: number): void;
  /** The root's bytes into `values` on every rank. */
  broadcast(values: ArrayBufferView, root: number): void;
  /** Every rank's `send` (equal lengths) into the root's `receive`, in rank order. */
  gather(send: Uint8Array, receive: Uint8Array, root: number): void;
  barrier(): void;
  abort(code: number): never;
  finalize(): void;
  wtime(): number;
}

/** What started this process, when it was an MPI launcher. */
export interface Launch {
  /** The environment variable that told (e.g. OMPI_COMM_WORLD_SIZE). */
  variable: string;
  /** Processes in the job, when the launcher says. */
  size: number | null;
  /** Processes of the job on this machine, when the launcher says (to share its cores). */
  localSize: number | null;
}

function positive(text: string | undefined): number | null {
  if (text === undefined || !/^[0-9]+$/.test(text)) return null;
  const n = Number(text);
  return n > 0 ? n : null;
}

/**
 * The MPI launcher that started this process, or null. Open MPI's mpirun
 * sets OMPI_COMM_WORLD_*, MPICH's and Slurm's PMI set PMI_*, PMIx sets
 * PMIX_RANK, and `srun` sets SLURM_NTASKS. QKD_MPI=0 turns detection off
 * (a single process even under a launcher); QKD_MPI=1 forces MPI.
 */
export function detectLaunch(env: NodeJS.ProcessEnv = process.env): Launch | null {
  if (env.QKD_MPI !== undefined && env.QKD_MPI !== '0' && env.QKD_MPI !== '1') {
    throw new QkdError('CONFIG', `QKD_MPI='${env.QKD_MPI}' is not 0 or 1`, { field: 'QKD_MPI', hint: '1 to start MPI, 0 to run as one process, or unset to follow the launcher' });
  }
  if (env.QKD_MPI === '0') return null;
  const localSize = positive(env.OMPI_COMM_WORLD_LOCAL_SIZE) ?? positive(env.MPI_LOCALNRANKS) ?? positive(env.SLURM_NTASKS_PER_NODE);
  if (env.OMPI_COMM_WORLD_SIZE !== undefined) return { variable: 'OMPI_COMM_WORLD_SIZE', size: positive(env.OMPI_COMM_WORLD_SIZE), localSize };
  if (env.PMI_SIZE !== undefined) return { variable: 'PMI_SIZE', size: positive(env.PMI_SIZE), localSize };
  if (env.PMIX_RANK !== undefined) return { variable: 'PMIX_RANK', size: null, localSize };
  const slurmTasks = positive(env.SLURM_NTASKS);
  if (slurmTasks !== null && slurmTasks > 1 && env.SLURM_PROCID !== undefined) return { variable: 'SLURM_NTASKS', size: slurmTasks, localSize };
  if (env.QKD_MPI === '1') return { variable: 'QKD_MPI', size: null, localSize };
  return null;
}


/** Where the binding is built (QKD_MPI_PATH overrides). */
export function mpiAddonPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.QKD_MPI_PATH ?? join(packageRoot(), 'native', 'mpi', 'build', 'Release', 'qkd_mpi.node');
}

/** Loads the binding; a missing or broken build is a QkdError that says how to build it. */
export function loadMpiAddon(launch: Launch, env: NodeJS.ProcessEnv = process.env): MpiAddon {
  const path = mpiAddonPath(env);
  const how = 'install MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), then `npm run build:mpi` in the qkd directory (or `npm install` again)';
  const launched = `this process was started by an MPI launcher (${launch.variable} is set)`;
  if (!existsSync(path)) {
    throw new QkdError('NATIVE', `${launched}, but qkd's MPI binding is not built: ${path} does not exist`, { path, field: launch.variable, hint: `${how}; or run without mpirun / with QKD_MPI=0 for one process` });
  }
  let addon: MpiAddon;
  try {
    addon = createRequire(import.meta.url)(path) as MpiAddon;
  } catch (err) {
    throw new QkdError('NATIVE', `${launched}, but qkd's MPI binding does not load: ${(err as Error).message}`, { path, hint: how });
  }
  for (const fn of ['init', 'allreduce', 'broadcast', 'gather', 'barrier', 'abort', 'finalize', 'wtime'] as const) {
    if (typeof addon[fn] !== 'function') throw new QkdError('NATIVE', `qkd's MPI binding lacks '${fn}' (a stale build)`, { path, hint: '`npm run build:mpi`' });
  }
  return addon;
}
