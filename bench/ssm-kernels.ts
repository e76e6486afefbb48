/**
 * The state-space mixer's kernels (docs/mohawk.md) at the experiment's
 * training size: B = 8, T = 128, H = 4 heads of P = N = 16 (the mohawk
 * experiment's students), conv over 8·128 rows of 64 channels, K = 4.
 * Kernel versions: v0 = TypeScript reference, v1 = native. Every v1 is
 * validated against v0 on the same inputs before either is timed. Last
 * stdout line: one JSON object with ms per call for each version.
 *
 *   npm run bench -- ssm-kernels
 */
import { Rng, nativeKernelNames, type Kernels } from '../src/tensor/index.js';
import { referenceAgainstNative, requireNative } from './_util.js';

const rng = new Rng(1);
const rand = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.uniform());
const B = 8, T = 128, H = 4, P = 16, N = 16, L = 64, C = H * P, K = 4;
const chunks = Math.ceil(T / L);

interface Case {
  name: string;
  /** The kernels the case calls (all must be native for a v1 timing). */
  uses: string[];
  setup(): { run(k: Kernels): void; outputs: Float32Array[] };
}

const scanInputs = () => ({ x: rand(B * T * H * P), b: rand(B * T * H * N), c: rand(B * T * H * N), l: rand(B * T * H, -3, 2) });

const cases: Case[] = [
  {
    name: 'ssmScanForward', uses: ['ssmScanForward'],
    setup() { const { x, b, c, l } = scanInputs(), y = new Float32Array(B * T * H * P), s = new Float32Array(B * H * chunks * N * P); return { run: (k) => k.ssmScanForward(x, b, c, l, y, s, B, T, H, P, N, L), outputs: [y, s] }; },
  },
  {
    name: 'ssmScanBackward', uses: ['ssmScanForward', 'ssmScanBackward'],
    setup() {
      const { x, b, c, l } = scanInputs(), y = new Float32Array(B * T * H * P), s = new Float32Array(B * H * chunks * N * P), dy = rand(B * T * H * P);
      const dx = new Float32Array(x.length), db = new Float32Array(b.length), dc = new Float32Array(c.length), dl = new Float32Array(l.length);
      // The states come from the same backend's forward, outside the timing of interest but inside run (a backward never runs alone).
      return { run: (k) => { k.ssmScanForward(x, b, c, l, y, s, B, T, H, P, N, L); k.ssmScanBackward(x, b, c, l, s, dy, dx, db, dc, dl, B, T, H, P, N, L); }, outputs: [dx, db, dc, dl] };
    },
  },
  {
    name: 'ssmMatrixForward', uses: ['ssmMatrixForward'],
    setup() { const { b, c, l } = scanInputs(), m = new Float32Array(B * H * T * T); return { run: (k) => k.ssmMatrixForward(b, c, l, m, B, T, H, N), outputs: [m] }; },
  },
  {
    name: 'ssmMatrixBackward', uses: ['ssmMatrixForward', 'ssmMatrixBackward'],
    setup() {
      const { b, c, l } = scanInputs(), m = new Float32Array(B * H * T * T), dm = rand(B * H * T * T);
      const db = new Float32Array(b.length), dc = new Float32Array(c.length), dl = new Float32Array(l.length);
      return { run: (k) => { k.ssmMatrixForward(b, c, l, m, B, T, H, N); k.ssmMatrixBackward(b, c, l, m, dm, db, dc, dl, B, T, H, N); }, outputs: [db, dc, dl] };
    },
  },
  {
    name: 'causalConvForward', uses: ['causalConvForward'],
    setup() { const x = rand(B * T * C), w = rand(C * K), bias = rand(C), y = new Float32Array(B * T * C); return { run: (k) => k.causalConvForward(x, w, bias, y, B, T, C, K), outputs: [y] }; },
  },
  {
    name: 'causalConvBackward', uses: ['causalConvBackward'],
    setup() { const x = rand(B * T * C), w = rand(C * K), dy = rand(B * T * C), dx = new Float32Array(x.length), dw = new Float32Array(w.length), db = new Float32Array(C); return { run: (k) => k.causalConvBackward(x, w, dy, dx, dw, db, B, T, C, K), outputs: [dx, dw, db] }; },
  },
];

const status = requireNative();
const nativeNames = new Set(nativeKernelNames());
const results: Record<string, { v0_ms: number; v1_ms: number | null; max_rel_diff: number | null }> = {};
console.log(`kernel                v0 ref ms   v1 native ms   speed-up   max |Δ|/max|ref|`);
for (const c of cases) {
  const isNative = c.uses.every((n) => nativeNames.has(n));
  const r = referenceAgainstNative(c, rng, isNative);
  const { v0_ms: v0, v1_ms: v1, max_rel_diff: maxRel } = r;
  results[c.name] = r;
  console.log(`${c.name.padEnd(20)} ${v0.toFixed(2).padStart(10)}   ${v1 === null ? '(not native)'.padStart(12) : v1.toFixed(3).padStart(12)}   ${v1 === null ? '' : (v0 / v1).toFixed(1).padStart(7) + 'x'}   ${maxRel === null ? '' : (maxRel as number).toExponential(1)}`);
}
console.log(JSON.stringify({ name: 'ssm-kernels', isa: status.isa, threads: status.threads, shape: { B, T, H, P, N, L, C, K }, kernels: results }));
