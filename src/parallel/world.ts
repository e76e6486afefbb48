/**
 * The processes a run spans: one (the default) or the ranks of an MPI job.
 * The training loop talks to a World only; it never sees MPI itself, so a
 * one-process run and a rank of a job run the same code (docs/parallel.md).
 *
 * Every collective is called by every rank in the same order with arrays
 * of the same length; the single-process world makes each one a no-op.
 */
import { availableParallelism } from 'node:os';
import { createHash } from 'node:crypto';
import { QkdError } from '../errors.js';
import { detectLaunch, loadMpiAddon, THREAD_LEVELS, type Launch, type MpiAddon } from './mpi.js';

export interface World {
  readonly rank: number;
  readonly size: number;
  /** Rank 0: the one that writes files, metrics and progress. */
  readonly isRoot: boolean;
  /** Element-wise sum over the ranks, in place on every rank. */
  allreduceSum(values: Float32Array | Float64Array): void;
  /** Element-wise maximum over the ranks, in place on every rank. */
  allreduceMax(values: Float64Array): void;
  /** The root's bytes into `values` on every rank. */
  broadcast(values: ArrayBufferView, root?: number): void;
  /**
   * Every rank's `send` (the same length on each) into rank 0's result, in
   * rank order (size × send.length bytes); other ranks get an empty array.
   */
  gatherToRoot(send: Uint8Array): Uint8Array;
  barrier(): void;
  /** Ends every rank of the job with `code` (a rank that fails alone must not leave the others waiting). */
  abort(code: number): never;
  /** For messages: "rank 1 of 4 (Open MPI v4.1.4)". */
  describe(): string;
}

/** One process: every collective is the identity. */
export const SINGLE_PROCESS: World = Object.freeze({
  rank: 0,
  size: 1,
  isRoot: true,
  allreduceSum() {},
  allreduceMax() {},
  broadcast() {},
  gatherToRoot: (send: Uint8Array) => send.slice(),
  barrier() {},
  abort(code: number): never {
    process.exit(code);
  },
  describe: () => 'one process',
});

class MpiWorld implements World {
  readonly isRoot: boolean;
  constructor(
    private readonly mpi: MpiAddon,
    readonly rank: number,
    readonly size: number,
    private readonly library: string,
  ) {
    this.isRoot = rank === 0;
  }
  allreduceSum(values: Float32Array | Float64Array): void {
    this.mpi.allreduce(values, 0);
  }
  allreduceMax(values: Float64Array): void {
    this.mpi.allreduce(values, 1);
  }
  broadcast(values: ArrayBufferView, root = 0): void {
    this.mpi.broadcast(values, root);
  }
  gatherToRoot(send: Uint8Array): Uint8Array {
    const receive = new Uint8Array(this.isRoot ? send.length * this.size : 0);
    this.mpi.gather(send, receive, 0);
    return receive;
  }
  barrier(): void {
    this.mpi.barrier();
  }
  abort(code: number): never {
    return this.mpi.abort(code);
  }
  describe(): string {
    return `rank ${this.rank} of ${this.size} (${this.library})`;
  }
  finalize(): void {
    this.mpi.finalize();
  }
}

let joined: World | null = null;

/**
 * The world of this process: the MPI job when an MPI launcher started it
 * (MPI is initialised here, once, at thread level FUNNELED: only the main
 * thread calls MPI), else SINGLE_PROCESS. When several ranks share a
 * machine and QKD_THREADS is unset, each gets an equal share of its cores
 * (set before the kernels' thread pool starts).
 */
export function joinWorld(env: NodeJS.ProcessEnv = process.env): World {
  if (joined !== null) return joined;
  const launch = detectLaunch(env);
  if (launch === null) return (joined = SINGLE_PROCESS);
  shareCores(launch, env);
  const mpi = loadMpiAddon(launch, env);
  const info = mpi.init(THREAD_LEVELS.indexOf('funneled'));
  if (info.provided < THREAD_LEVELS.indexOf('funneled')) {
    // Every rank gets the same answer, so every rank stops with this error.
    throw new QkdError('NATIVE', `MPI (${info.library}) provides thread level '${THREAD_LEVELS[info.provided]}', below the 'funneled' qkd needs (its kernels run on threads of their own)`, { hint: 'an MPI library built with thread support' });
  }
  joined = info.size === 1 ? SINGLE_PROCESS : new MpiWorld(mpi, info.rank, info.size, info.library);
  if (info.size === 1) mpi.finalize();
  return joined;
}

/** The world joined so far (SINGLE_PROCESS before joinWorld). */
export function currentWorld(): World {
  return joined ?? SINGLE_PROCESS;
}

/** Ends MPI at a clean exit (a no-op for one process). */
export function leaveWorld(): void {
  if (joined instanceof MpiWorld) joined.finalize();
  joined = null;
}

function shareCores(launch: Launch, env: NodeJS.ProcessEnv): void {
  if (env.QKD_THREADS !== undefined || launch.localSize === null || launch.localSize <= 1) return;
  env.QKD_THREADS = String(Math.max(1, Math.floor(availableParallelism() / launch.localSize)));
}

/** SHA-256 of a float array's bytes (hex). */
export function digest(values: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest('hex');
}

/**
 * Checks that every rank holds the same value of each named item (a
 * digest, a config, a corpus fingerprint): rank 0's SHA-256 of each is
 * broadcast, every rank compares, and a max-reduce tells every rank which
 * items differ somewhere, so all ranks throw the same error naming them.
 */
export function requireAgreement(world: World, items: Record<string, string>, what: string): void {
  if (world.size === 1) return;
  const names = Object.keys(items).sort();
  const hashes = new Uint8Array(32 * names.length);
  names.forEach((n, i) => hashes.set(createHash('sha256').update(items[n]!).digest(), 32 * i));
  const root = hashes.slice();
  world.broadcast(root, 0);
  const differs = new Float64Array(names.length);
  names.forEach((_, i) => {
    for (let b = 32 * i; b < 32 * (i + 1); b++) if (root[b] !== hashes[b]) differs[i] = 1;
  });
  world.allreduceMax(differs);
  const bad = names.filter((_, i) => differs[i] !== 0);
  if (bad.length === 0) return;
  throw new QkdError('STATE', `data-parallel run: the ranks disagree on ${what}: ${bad.join(', ')} differ${bad.length === 1 ? 's' : ''} from rank 0's`, {
    field: bad[0],
    hint: 'every rank started with the same command, data and --out on a filesystem all ranks see (see README "Running on several machines")',
  });
}

/**
 * Sums `values` over the ranks in buckets of at most `bucket` elements, so
 * MPI's temporary buffers stay small and a very large model never meets
 * MPI's int-sized counts in one call.
 */
export function allreduceInBuckets(world: World, values: Float32Array | Float64Array, bucket: number): void {
  if (world.size === 1) return;
  for (let start = 0; start < values.length; start += bucket) world.allreduceSum(values.subarray(start, Math.min(values.length, start + bucket)));
}

/** The rows of each global batch this rank trains on. */
export interface BatchShard {
  first: number;
  rows: number;
}

/**
 * Splits a global batch of `batchSize` rows into equal, contiguous shares:
 * rank r takes rows [r·b, (r+1)·b), b = batchSize / size. A batch that does
 * not divide is refused (unequal shares would weight ranks unequally).
 */
export function batchShard(world: World, batchSize: number): BatchShard {
  if (batchSize % world.size !== 0) {
    throw new QkdError('CONFIG', `batch_size ${batchSize} does not divide among ${world.size} ranks`, { field: 'training.batch_size', hint: `a multiple of ${world.size} (batch_size is the global batch; each rank trains on batch_size / ranks rows)` });
  }
  const rows = batchSize / world.size;
  return { first: world.rank * rows, rows };
}
