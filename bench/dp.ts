/**
 * npm run bench -- dp [--steps N]: data-parallel training on this machine
 * and a cost model for clusters (docs/parallel.md).
 *
 * 1. Tokens/s of `qkd train --preset reference`: 1 rank × 2 threads against
 *    `mpirun -np 2` × 1 thread each (the same two cores, the same global
 *    batch and data).
 * 2. The all-reduce qkd uses for gradients: latency and bus bandwidth on
 *    2 ranks here (shared memory).
 * 3. A cost model of one data-parallel step, t = t_compute + t_allreduce,
 *    with a ring all-reduce t_allreduce = 2(N−1)·α + 2(N−1)/N · 4P / β (P
 *    parameters, float32 gradients, no overlap with the backward pass, as
 *    qkd runs today). It is checked first against the 2-rank run here
 *    (measured α and β), then predicts the scaling efficiency
 *    t_compute / t for 8 and 64 nodes, for the reference model and a
 *    Llama-3.2-1B-shaped model, on a stated network.
 * Last stdout line: JSON with tokens_per_s_1rank, tokens_per_s_2ranks and
 * the rest.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PRESETS } from '../src/train/config.js';

const args = process.argv.slice(2);
const stepsAt = args.indexOf('--steps');
const steps = stepsAt >= 0 ? Number(args[stepsAt + 1]) : 30;
const MPI_ENV = { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1', CI: 'true' };

if (spawnSync('mpirun', ['--version']).status !== 0) {
  console.error('bench dp: mpirun is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev, then npm run build:mpi)');
  process.exit(1);
}

function lastJson(stdout: string, what: string): Record<string, unknown> {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`${what}: no JSON result (${line})`);
  }
}

function trainRun(ranks: number, batchSize?: number, threadCount?: number): { tokens_per_s: number; params: number } {
  const out = mkdtempSync(join(tmpdir(), 'qkd-bench-dp-'));
  const qkd = [process.execPath, 'bin/qkd.js', 'train', '--preset', 'reference', '--steps', String(steps), '--out', join(out, 'run')];
  if (batchSize !== undefined) {
    writeFileSync(join(out, 'batch.yaml'), `batch_size: ${batchSize}\n`);
    qkd.push('--config', join(out, 'batch.yaml'));
  }
  const threads = String(threadCount ?? Math.max(1, Math.floor(availableParallelism() / ranks)));
  const r = ranks === 1 ? spawnSync(qkd[0]!, qkd.slice(1), { encoding: 'utf8', env: { ...process.env, CI: 'true', QKD_THREADS: threads } }) : spawnSync('mpirun', ['-np', String(ranks), '-x', `QKD_THREADS=${threads}`, ...qkd], { encoding: 'utf8', env: { ...process.env, ...MPI_ENV } });
  rmSync(out, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`train on ${ranks} rank(s) failed: ${r.stderr}`);
  const j = lastJson(r.stdout, `train on ${ranks} rank(s)`);
  return { tokens_per_s: j.tokens_per_s as number, params: j.params as number };
}

const cores = availableParallelism();
console.log(`qkd train --preset reference, ${steps} steps, global batch ${PRESETS.reference!.batch_size} × ${PRESETS.reference!.seq_len} tokens, ${cores} cores`);
const one = trainRun(1);
console.log(`1 rank × ${cores} threads: ${Math.round(one.tokens_per_s)} tokens/s (${one.params} parameters)`);
const two = trainRun(2);
const ratio = two.tokens_per_s / one.tokens_per_s;
console.log(`2 ranks × ${Math.max(1, Math.floor(cores / 2))} thread(s): ${Math.round(two.tokens_per_s)} tokens/s → ${ratio.toFixed(2)}× the 1-rank rate`);

const ar = spawnSync('mpirun', ['-np', '2', process.execPath, 'dist/bench/_dp-allreduce-rank.js'], { encoding: 'utf8', env: { ...process.env, ...MPI_ENV } });
if (ar.status !== 0) throw new Error(`all-reduce timing failed: ${ar.stderr}`);
const allreduce = lastJson(ar.stdout, 'all-reduce timing') as { library: string; rows: { elements: number; bytes: number; seconds: number; bus_gb_per_s: number }[] };
for (const row of allreduce.rows) console.log(`all-reduce ${row.elements} floats (${(row.bytes / 2 ** 20).toFixed(2)} MiB): ${(row.seconds * 1e6).toFixed(1)} µs, bus ${row.bus_gb_per_s.toFixed(2)} GB/s`);
const alpha = allreduce.rows[0]!.seconds / 2; // 2(N−1) = 2 latency terms at N = 2
const beta = Math.max(...allreduce.rows.map((r) => r.bus_gb_per_s)) * 1e9;

/** Seconds of one ring all-reduce of P float32 values over N ranks. */
function allreduceSeconds(P: number, N: number, a: number, b: number): number {
  return N === 1 ? 0 : 2 * (N - 1) * a + ((2 * (N - 1)) / N) * (4 * P) / b;
}

// Check the model on this machine: a rank of the 2-rank run computes half the batch on one thread
// (measured alone: 1 rank, batch B/2, 1 thread), then all-reduces the gradients.
const B = PRESETS.reference!.batch_size;
const T = PRESETS.reference!.seq_len;
const tokensPerStep = B * T;
const half = trainRun(1, B / 2, Math.max(1, Math.floor(cores / 2)));
const halfStep = (tokensPerStep / 2) / half.tokens_per_s;
const predictedStep = halfStep + allreduceSeconds(one.params, 2, alpha, beta);
const predictedTokensPerS = tokensPerStep / predictedStep;
console.log(`model check, this machine: one rank's share alone (batch ${B / 2}, 1 thread) ${(halfStep * 1e3).toFixed(1)} ms + all-reduce of ${one.params} floats ${(allreduceSeconds(one.params, 2, alpha, beta) * 1e3).toFixed(2)} ms → predicted ${Math.round(predictedTokensPerS)} tokens/s on 2 ranks, measured ${Math.round(two.tokens_per_s)} (${(100 * (two.tokens_per_s / predictedTokensPerS - 1)).toFixed(1)}%)`);

// Clusters: one node = this machine's measured compute rate (6·P FLOP per token, from the 1-rank run); stated networks.
const networks = [
  { name: '100 Gb/s (InfiniBand-class)', alpha_s: 5e-6, beta_bytes_per_s: 12.5e9 },
  { name: '10 Gb/s Ethernet', alpha_s: 50e-6, beta_bytes_per_s: 1.25e9 },
];
const flopsPerNode = 6 * one.params * one.tokens_per_s;
const models = [
  { name: 'reference preset', params: one.params, tokens_per_rank_step: tokensPerStep },
  { name: 'Llama-3.2-1B shape', params: 1_235_814_400, tokens_per_rank_step: 8 * 2048 },
];
const predictions = models.flatMap((m) =>
  networks.map((network) => {
    const compute = (6 * m.params * m.tokens_per_rank_step) / flopsPerNode;
    const at = (N: number) => {
      const comm = allreduceSeconds(m.params, N, network.alpha_s, network.beta_bytes_per_s);
      // The node speed at which the all-reduce would cost 10% of the step (efficiency 90%).
      const flops90 = (9 * 6 * m.params * m.tokens_per_rank_step) / comm;
      return { nodes: N, step_s: compute + comm, allreduce_s: comm, efficiency: compute / (compute + comm), node_flops_for_90pct: flops90 };
    };
    return { model: m.name, network: network.name, params: m.params, tokens_per_rank_step: m.tokens_per_rank_step, compute_s: compute, scaling: [at(8), at(64)] };
  }),
);
for (const p of predictions) {
  for (const s of p.scaling) {
    console.log(`${p.model} (${(p.params / 1e6).toFixed(1)}M), ${p.network}, ${s.nodes} nodes: compute ${p.compute_s.toFixed(3)} s + all-reduce ${(s.allreduce_s * 1e3).toFixed(2)} ms per step → efficiency ${(100 * s.efficiency).toFixed(2)}% (90% at ${(s.node_flops_for_90pct / 1e12).toFixed(1)} TFLOP/s per node)`);
  }
}
console.log(
  JSON.stringify({
    name: 'dp',
    steps,
    tokens_per_s_1rank: one.tokens_per_s,
    tokens_per_s_2ranks: two.tokens_per_s,
    ratio,
    params: one.params,
    allreduce: { library: allreduce.library, alpha_s: alpha, bus_bytes_per_s: beta, rows: allreduce.rows },
    model_check: { half_batch_1thread_step_s: halfStep, predicted_tokens_per_s_2ranks: predictedTokensPerS, measured_tokens_per_s_2ranks: two.tokens_per_s },
    cost_model: { flops_per_node: flopsPerNode, networks, predictions },
  }),
);
