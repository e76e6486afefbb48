// Run by test/parallel/mpirun.test.ts on every rank of `mpirun -np 2`: calls
// each collective of the MPI world and prints one JSON line of what it saw.
import { allreduceInBuckets, batchShard, joinWorld, leaveWorld, requireAgreement } from '../../src/parallel/world.js';
import { QkdError } from '../../src/errors.js';
import { detectLaunch, loadMpiAddon } from '../../src/parallel/mpi.js';

const world = joinWorld();
const r = world.rank;
const out: Record<string, unknown> = { rank: r, size: world.size, describe: world.describe() };

const sum = Float32Array.of(r + 1, 10 * (r + 1), -r);
world.allreduceSum(sum);
out.sum = Array.from(sum);

const max = Float64Array.of(r, -r, r === 0 ? Infinity : 1);
world.allreduceMax(max);
out.max = Array.from(max);

const bytes = new Uint8Array(5);
if (r === 1) bytes.set([9, 8, 7, 6, 5]);
world.broadcast(bytes, 1);
out.broadcast = Array.from(bytes);

const gathered = world.gatherToRoot(Uint8Array.of(r, r, r));
out.gathered = Array.from(gathered);

// Ten elements in buckets of three: four calls, every element summed once.
const bucketed = Float32Array.from({ length: 10 }, (_, i) => i * (r + 1));
allreduceInBuckets(world, bucketed, 3);
out.bucketed = Array.from(bucketed);

// The binding's chunking (used past 2^31 elements) on a small array: calls of 3 elements.
const mpi = loadMpiAddon(detectLaunch()!);
const chunked = Float64Array.from({ length: 10 }, (_, i) => i + r);
mpi.allreduce(chunked, 0, 3);
out.chunked = Array.from(chunked);
try {
  mpi.allreduce(chunked, 0, 0);
} catch (err) {
  out.badChunk = (err as Error).message;
}

out.shard = batchShard(world, 8);
try {
  batchShard(world, 5);
} catch (err) {
  out.oddBatch = (err as QkdError).message;
}

requireAgreement(world, { same: 'x' }, 'a test item');
try {
  requireAgreement(world, { same: 'x', mine: `rank ${r}` }, 'the test items');
} catch (err) {
  out.disagreement = (err as QkdError).message;
}
world.barrier();
console.log(JSON.stringify(out));
leaveWorld();
