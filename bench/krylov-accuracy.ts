/**
 * What `qkd audit --krylov-dims x` trades: the spectral concentration's
 * error against the exact route (the Gram matrix's eigenvalues) and the
 * Krylov pass's time, for x = 0.7 (the default), 1 and 2.75 (`--dims
 * a,b,…` for others), on 8192 × 2048 weights (the Llama-3.2-1B MLP shape):
 * the audit grid's synthetic weights (Gaussian, one in three with outlier
 * columns), two power-law spectra and a low-rank-plus-noise one. All in
 * bf16, on the products `qkd audit` takes by default. The estimate is
 * random (its start block), so each cell is the mean error over five
 * seeds and the largest absolute error among them.
 *
 * With `--audit FILE`, also the wall time of the whole `qkd audit FILE`
 * (process start included) at each x, in alternating rounds (`--rounds R`,
 * default 2): for example the 1B grid file that `npm run bench -- audit
 * --grid` writes (/tmp/qkd-bench-audit-grid/llama3.2-1b/model-bf16.safetensors).
 *
 * `--depth q` (default 8, as `qkd audit --krylov-depth`) sets the Krylov
 * depth at every x: deeper means thinner blocks for the same subspace.
 *
 * Usage: npm run bench -- krylov-accuracy [--dims a,b,…] [--depth q] [--audit FILE] [--rounds R].
 * Last stdout line: JSON.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, kernels } from '../src/tensor/index.js';
import { fromBf16, toBf16 } from '../src/tensor/dtype.js';
import { krylovShape, spectralSummary } from '../src/swan/spectrum.js';
import { frobeniusSquared } from '../src/swan/metrics.js';
import { requireNative, timeMedian, trainedLookingWeights } from './_util.js';

const ROWS = 8192, COLS = 2048;
const SEEDS = [1, 2, 3, 4, 5];

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const DIMS = (flag('--dims') ?? '0.7,1,2.75').split(',').map(Number);
if (!DIMS.every((d) => d >= 0.25 && d <= 16)) {
  console.error(`--dims: ${flag('--dims')} is not a list of numbers from 0.25 to 16`);
  process.exit(1);
}

function matmul(m: number, n: number, k: number, a: Float32Array, b: Float32Array): Float32Array {
  const c = new Float32Array(m * n);
  kernels().sgemm({ batch: 1, transA: false, transB: false, M: m, N: n, K: k, alpha: 1, a, lda: k, strideA: 0, b, ldb: n, strideB: 0, beta: 0, c, ldc: n, strideC: 0 });
  return c;
}

function gaussian(n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** W = Z·diag(j^-β)·R: a spectrum decaying like a power law. */
function powerLaw(beta: number, rng: Rng): Float32Array {
  const z = gaussian(ROWS * COLS, rng);
  for (let i = 0; i < ROWS; i++) for (let j = 0; j < COLS; j++) z[i * COLS + j]! *= Math.pow(j + 1, -beta);
  return matmul(ROWS, COLS, COLS, z, gaussian(COLS * COLS, rng));
}

function lowRankPlusNoise(rank: number, rng: Rng): Float32Array {
  const w = matmul(ROWS, COLS, rank, gaussian(ROWS * rank, rng), gaussian(rank * COLS, rng));
  const noise = gaussian(ROWS * COLS, rng);
  for (let i = 0; i < w.length; i++) w[i] = w[i]! * 0.05 + noise[i]!;
  return w;
}

requireNative();
const DEPTH = Number(flag('--depth') ?? 8);
if (!(Number.isInteger(DEPTH) && DEPTH >= 1 && DEPTH <= 64)) {
  console.error(`--depth: ${flag('--depth')} is not an integer from 1 to 64`);
  process.exit(1);
}
const rng = new Rng(5);
const families: { name: string; w: Float32Array }[] = [
  { name: 'grid weight (Gaussian)', w: trainedLookingWeights([ROWS, COLS], rng, 1) },
  { name: 'grid weight (outlier columns)', w: trainedLookingWeights([ROWS, COLS], rng, 3) },
  { name: 'power law β = 0.25', w: powerLaw(0.25, rng) },
  { name: 'power law β = 0.5', w: powerLaw(0.5, rng) },
  { name: 'rank 64 + noise', w: lowRankPlusNoise(64, rng) },
];

interface Row { family: string; exact: number; dims: number; subspace: number; error: number; spread: number; largest: number; sigma_max_error: number; ms: number }
const rows: Row[] = [];
console.log(`concentration error against the exact route, ${ROWS} × ${COLS} bf16, --depth ${DEPTH}: mean over seeds ${SEEDS.join(', ')} and |the largest| (ms: one spectrum, median of 3)`);
// The subspace's dimensions at each x: the block width rounds to whole GEMM panels.
const shapes = DIMS.map((d) => krylovShape(Math.ceil(0.1 * COLS), COLS, DEPTH, d));
const subspace = shapes.map((shape) => shape.blockSize * (shape.depth + 1));
console.log(`blocks: ${DIMS.map((d, i) => `dims ${d}: ${shapes[i]!.depth + 1} of ${shapes[i]!.blockSize}`).join(', ')}`);
console.log(`${'weight'.padEnd(30)} ${'exact'.padStart(7)} ${DIMS.map((d, i) => `dims ${d} (D ${subspace[i]})`.padStart(30)).join('')}`);
for (const f of families) {
  const w = { bf16: toBf16(f.w) };
  const fro2 = frobeniusSquared(fromBf16(w.bf16));
  const exact = spectralSummary(w, ROWS, COLS, fro2, { rng: new Rng(1), route: 'gram' });
  const cells: string[] = [];
  for (const dims of DIMS) {
    const runs = SEEDS.map((seed) => spectralSummary(w, ROWS, COLS, fro2, { rng: new Rng(seed), route: 'krylov', dimensionsPerRank: dims, depth: DEPTH }));
    const ms = 1000 * timeMedian(() => spectralSummary(w, ROWS, COLS, fro2, { rng: new Rng(1), route: 'krylov', dimensionsPerRank: dims, depth: DEPTH }), 3, 0);
    const errors = runs.map((got) => got.concentration - exact.concentration);
    const error = errors.reduce((a, b) => a + b, 0) / errors.length;
    const spread = Math.max(...errors) - Math.min(...errors);
    const largest = Math.max(...errors.map(Math.abs));
    const sigmaError = runs.reduce((a, got) => a + (got.sigmaMaxOverFro / exact.sigmaMaxOverFro - 1), 0) / runs.length;
    rows.push({ family: f.name, exact: exact.concentration, dims, subspace: subspace[DIMS.indexOf(dims)]!, error, spread, largest, sigma_max_error: sigmaError, ms });
    cells.push(`${error >= 0 ? '+' : ''}${error.toFixed(4)} |${largest.toFixed(4)}| (${ms.toFixed(0)} ms)`.padStart(30));
  }
  console.log(`${f.name.padEnd(30)} ${exact.concentration.toFixed(4).padStart(7)} ${cells.join('')}`);
}

const audit: { dims: number; seconds: number[] }[] = [];
const file = flag('--audit');
if (file !== undefined) {
  if (!existsSync(file)) {
    console.error(`--audit: ${file} does not exist (npm run bench -- audit --grid writes the grid's files)`);
    process.exit(1);
  }
  const rounds = Number(flag('--rounds') ?? 2);
  for (const dims of DIMS) audit.push({ dims, seconds: [] });
  const scratch = mkdtempSync(join(tmpdir(), 'qkd-krylov-'));
  for (let round = 0; round < rounds; round++) {
    for (const a of audit) {
      const start = process.hrtime.bigint();
      const r = spawnSync(process.execPath, ['bin/qkd.js', 'audit', file, '--krylov-dims', String(a.dims), '--krylov-depth', String(DEPTH), '--json', join(scratch, 'report.json')], { encoding: 'utf8', env: { ...process.env, CI: 'true' }, maxBuffer: 1 << 26 });
      if (r.status !== 0) {
        console.error(r.stderr);
        process.exit(1);
      }
      a.seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
    }
  }
  rmSync(scratch, { recursive: true, force: true });
  console.log(`\nqkd audit ${file}: wall seconds per round`);
  for (const a of audit) console.log(`  --krylov-dims ${String(a.dims).padEnd(5)} ${a.seconds.map((s) => s.toFixed(2)).join('  ')}`);
}
console.log(JSON.stringify({ depth: DEPTH, rows, audit }));
