/**
 * `qkd audit` throughput on a generated LLaMA-shaped model of ≥ 100M
 * parameters stored as BF16 safetensors (the usual Hugging Face layout):
 * qkd's streaming profiler against the same metrics computed by PyTorch
 * (when python3 with torch is installed) in the same run.
 *
 * PyTorch computes the four metrics two ways, both reading the same file:
 * with a randomised SVD (torch.svd_lowrank, sketch 2k, 2 power iterations:
 * the estimator qkd used before its block-Krylov method, of similar
 * accuracy) and the same noise estimator; and with an exact SVD
 * (torch.linalg.svdvals), what a plain implementation would do.
 *
 * Usage: npm run bench -- audit [LAYERS=8]. Last stdout line: JSON.
 * `npm run bench -- audit --grid` runs the shape × dtype grid instead
 * (bench/_audit-grid.ts: whole processes, start-up included).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Rng, nativeStatus } from '../src/tensor/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { writeBytesAtomic } from '../src/io/atomic.js';
import { toBf16 } from '../src/tensor/dtype.js';
import { openTensorSource } from '../src/io/tensor-source.js';
import { profileModel } from '../src/swan/profile.js';
import { llamaConfigJson } from '../src/models/llama-io.js';
import { llamaParameterSpecs } from '../src/models/llama-config.js';
import { runTorch, benchLlamaConfig, trainedLookingWeights } from './_util.js';
import { runAuditGrid } from './_audit-grid.js';

if (process.argv.includes('--grid')) {
  const cells = runAuditGrid(process.argv.slice(2));
  const ratios = cells.map((c) => c.ratio).filter((r): r is number => r !== null);
  if (ratios.length > 0) console.log(`grid: qkd / PyTorch from ${Math.min(...ratios).toFixed(2)}x to ${Math.max(...ratios).toFixed(2)}x over ${ratios.length} cells`);
  console.log(JSON.stringify({ cells }));
  process.exit(0);
}

const layers = Number(process.argv[2] ?? 8);
const config = benchLlamaConfig(layers);
const dir = join(tmpdir(), `qkd-bench-audit-${layers}`);
const specs = llamaParameterSpecs(config);
const totalParams = specs.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);

if (!existsSync(join(dir, 'model.safetensors'))) {
  mkdirSync(dir, { recursive: true });
  console.log(`generating a ${(totalParams / 1e6).toFixed(1)}M-parameter BF16 model in ${dir} ...`);
  const rng = new Rng(7);
  writeSafetensors(
    join(dir, 'model.safetensors'),
    specs.map((s, i) => ({ name: s.name, dtype: 'bf16' as const, shape: [...s.shape], data: () => toBf16(trainedLookingWeights(s.shape, rng, i)) })),
    { format: 'pt' },
  );
  writeBytesAtomic(join(dir, 'config.json'), JSON.stringify({ ...llamaConfigJson(config), torch_dtype: 'bfloat16' }, null, 2));
}

const status = nativeStatus();
if (!status.loaded) console.warn(`native addon not loaded (${status.reason}); timing the reference backend`);

const source = openTensorSource(dir);
const t0 = performance.now();
const report = profileModel(source);
const seconds = (performance.now() - t0) / 1000;
source.close();
const qkdRate = report.params / seconds;
console.log(`qkd: ${(report.params / 1e6).toFixed(1)}M params in ${seconds.toFixed(2)} s = ${(qkdRate / 1e6).toFixed(1)}M params/s (2 threads)`);

const s = report.settings;
const torchScript = String.raw`
import json, math, struct, time, torch, numpy as np
torch.set_num_threads(2)
torch.manual_seed(0)
path = ${JSON.stringify(join(dir, 'model.safetensors'))}
def tensors():
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        for name, e in header.items():
            if name == '__metadata__': continue
            b, end = e['data_offsets']
            f.seek(base + b)
            raw = np.frombuffer(f.read(end - b), dtype=np.uint16)
            w = torch.from_numpy((raw.astype(np.uint32) << 16).view(np.float32)).reshape(e['shape'])
            yield name, w

def metrics(w, exact):
    wd = w.double().flatten()
    d = wd - wd.mean()
    m2 = (d * d).mean(); m4 = (d ** 4).mean()
    kurt = (m4 / (m2 * m2) - 3).item()
    if w.dim() < 2: return
    rows, cols = w.shape
    fro2 = (wd * wd).sum().item()
    p = min(rows, cols); r = max(1, math.ceil(0.1 * p)); k = min(r, ${s.maxRank})
    if exact:
        sv = torch.linalg.svdvals(w)
    else:
        sv = torch.svd_lowrank(w, q=min(p, k + max(8, k)), niter=2)[1]
    top = (sv[:k].double() ** 2).sum().item()
    lo = w.min(dim=1).values; hi = w.max(dim=1).values
    steps = (hi - lo) / (2 ** ${s.bits} - 1)
    x = torch.randn(cols, ${s.probes})
    wx = (w @ x).double().pow(2).sum(0)
    ex = ((steps.double()[:, None] * x.double().pow(2).sum(0).div(12).sqrt()[None, :]) * torch.randn(rows, ${s.probes}, dtype=torch.float64)).pow(2).sum(0)
    noise = (ex / wx).sqrt().mean().item()
    scale = (hi - lo) / (2 ** ${s.bits} - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(w / scale[:, None]) + zero[:, None], 0, 2 ** ${s.bits} - 1)
    err = ((q - zero[:, None]) * scale[:, None] - w).double().pow(2).sum().item()
    return kurt, top / fro2, noise, math.sqrt(err / fro2)

out = {}
for exact in (False, True):
    t0 = time.perf_counter(); params = 0
    for name, w in tensors():
        params += w.numel(); metrics(w, exact)
    out['exact' if exact else 'same_algorithm'] = {'seconds': time.perf_counter() - t0, 'params': params}
print(json.dumps(out))
`;
const torch = runTorch(torchScript) as { same_algorithm: { seconds: number; params: number }; exact: { seconds: number; params: number } } | null;
const result: Record<string, unknown> = {
  bench: 'audit',
  params: report.params,
  layers,
  qkd_seconds: seconds,
  qkd_params_per_second: qkdRate,
  settings: { bits: s.bits, probes: s.probes, maxRank: s.maxRank, krylovDepth: s.krylovDepth },
};
if (torch) {
  const same = torch.same_algorithm.params / torch.same_algorithm.seconds;
  const exact = torch.exact.params / torch.exact.seconds;
  console.log(`torch (randomised SVD):  ${(same / 1e6).toFixed(1)}M params/s -> qkd ${(qkdRate / same).toFixed(2)}x`);
  console.log(`torch (exact SVD):       ${(exact / 1e6).toFixed(2)}M params/s -> qkd ${(qkdRate / exact).toFixed(1)}x`);
  Object.assign(result, { torch_same_params_per_second: same, torch_exact_params_per_second: exact, ratio_vs_torch_same: qkdRate / same, ratio_vs_torch_exact: qkdRate / exact });
} else {
  console.log('torch not installed: no reference column (apt-get install python3-torch libopenblas0-pthread)');
}
console.log(JSON.stringify(result));
