/**
 * SGEMM throughput (C = A·B, square, all threads): the native kernel against
 * the TypeScript reference and, when python3 with torch is installed, against
 * torch.mm (OpenBLAS) in the same run. Each kernel is validated against the
 * reference before it is timed. Last stdout line: one JSON object.
 */
import { Rng, kernels, withBackend, type GemmArgs } from '../src/tensor/index.js';
import { runTorch, timeMedian, requireNative } from './_util.js';

const sizes = [256, 512, 1024, 2048];

function args(n: number, rng: Rng): GemmArgs {
  const a = new Float32Array(n * n).map(() => rng.uniform() - 0.5);
  const b = new Float32Array(n * n).map(() => rng.uniform() - 0.5);
  return { batch: 1, transA: false, transB: false, M: n, N: n, K: n, alpha: 1, a, lda: n, strideA: 0, b, ldb: n, strideB: 0, beta: 0, c: new Float32Array(n * n), ldc: n, strideC: 0 };
}

function validate(n: number): void {
  const rng = new Rng(n);
  const p = args(n, rng);
  const q = { ...p, c: new Float32Array(n * n) };
  withBackend('reference', () => kernels().sgemm(p));
  withBackend('native', () => kernels().sgemm(q));
  let worst = 0;
  for (let i = 0; i < p.c.length; i++) worst = Math.max(worst, Math.abs(p.c[i]! - q.c[i]!));
  if (worst > 1e-3) throw new Error(`native sgemm disagrees with reference at n=${n}: max |Δ| = ${worst}`);
}

const status = requireNative();
validate(128);
validate(257);

const gflops: Record<string, number> = {};
const rng = new Rng(1);
for (const n of sizes) {
  const p = args(n, rng);
  const seconds = withBackend('native', () => timeMedian(() => kernels().sgemm(p), n >= 2048 ? 3 : 7));
  gflops[n] = (2 * n ** 3) / seconds / 1e9;
}
// The reference is slow: time it at 256 only, for the ratio.
const ref = args(256, rng);
const refSeconds = withBackend('reference', () => timeMedian(() => kernels().sgemm(ref), 3));
const referenceGflops = (2 * 256 ** 3) / refSeconds / 1e9;

const torch = runTorch(`
import torch, time, json, os
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
out = {}
for n in ${JSON.stringify(sizes)}:
    a = torch.rand(n, n) - 0.5; b = torch.rand(n, n) - 0.5
    for _ in range(3): torch.mm(a, b)
    ts = []
    for _ in range(3 if n >= 2048 else 7):
        t0 = time.perf_counter(); torch.mm(a, b); ts.append(time.perf_counter() - t0)
    ts.sort(); out[str(n)] = 2 * n**3 / ts[len(ts)//2] / 1e9
print(json.dumps({"threads": torch.get_num_threads(), "gflops": out}))
`);

console.log(`native sgemm (${status.isa}, ${status.threads} threads) vs reference TypeScript${torch ? ' vs torch.mm' : ' (torch not installed: no PyTorch column)'}`);
console.log('   n   native GFLOPS' + (torch ? '   torch GFLOPS   native/torch' : ''));
for (const n of sizes) {
  const t = torch ? (torch.gflops as Record<string, number>)[n] : undefined;
  console.log(`${String(n).padStart(5)}  ${gflops[n]!.toFixed(1).padStart(13)}` + (t ? `  ${t.toFixed(1).padStart(13)}  ${(gflops[n]! / t).toFixed(2).padStart(13)}` : ''));
}
console.log(`reference TypeScript at 256: ${referenceGflops.toFixed(2)} GFLOPS (native is ${(gflops[256]! / referenceGflops).toFixed(0)}x faster)`);
console.log(
  JSON.stringify({
    name: 'gemm',
    isa: status.isa,
    threads: status.threads,
    gflops,
    reference_gflops_256: referenceGflops,
    torch_gflops: torch ? torch.gflops : null,
  }),
);
