// Run on every rank by bench/dp.ts under `mpirun -np 2`: times the in-place
// float32 all-reduce qkd uses for gradients, over message sizes. Rank 0
// prints one JSON line.
import { joinWorld, leaveWorld } from '../src/parallel/world.js';

const world = joinWorld();
const sizes = [2, 1 << 12, 1 << 16, 1 << 20, 1 << 22, 1 << 24];
const rows: { elements: number; bytes: number; seconds: number; bus_gb_per_s: number }[] = [];
for (const n of sizes) {
  const values = new Float32Array(n).fill(world.rank + 1);
  const repeats = n <= 1 << 16 ? 200 : n <= 1 << 22 ? 10 : 4;
  world.allreduceSum(values); // warm-up (connection set-up)
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    world.barrier();
    const t0 = performance.now();
    world.allreduceSum(values);
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  const seconds = times[Math.floor(times.length / 2)]!;
  const bytes = 4 * n;
  // Bus bandwidth: what a ring all-reduce moves per rank, 2(N−1)/N × bytes, per second.
  rows.push({ elements: n, bytes, seconds, bus_gb_per_s: ((2 * (world.size - 1)) / world.size) * bytes / seconds / 1e9 });
}
if (world.isRoot) console.log(JSON.stringify({ ranks: world.size, library: world.describe(), rows }));
leaveWorld();
