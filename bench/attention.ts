/**
 * Fused attention (docs/attention.md) against the two-op path it replaces
 * when nobody needs the maps: attentionFused(q, k, v) vs
 * attentionApply(attentionProbs(q, k), v), both on the native backend,
 * causal, grouped-query, at the mohawk experiment's training shape, a
 * mid-size one, a long sequence and one sequence with a single kv head.
 * Versions: v0 = the two ops (SGEMM + causal softmax over the materialised
 * [B,H,T,S] maps), v1 = the fused op.
 * Before timing, each shape's fused output and q/k/v gradients are checked
 * against the two-op path (largest difference relative to each tensor's
 * largest magnitude, ≤ 1e-4). Times are medians of whole op calls through
 * the autograd (forward alone under noGrad; forward + backward with inputs
 * that require gradients). "map bytes" is what the two-op path holds that
 * the fused one does not: P [B,H,T,S] float32 from the forward to the
 * backward, and its gradient dP during the backward (the fused op keeps
 * the row log-sum-exp [B,H,T] instead).
 * Last stdout line: one JSON object.
 *
 *   npm run bench -- attention [--shapes 0,1]
 */
import { Rng, Tensor, attentionApply, attentionFused, attentionProbs, backward, floatFrom, noGrad, useBackend } from '../src/tensor/index.js';
import { timeMedian, requireNative } from './_util.js';

interface Shape { B: number; T: number; H: number; G: number; D: number }
const SHAPES: Shape[] = [
  { B: 8, T: 128, H: 4, G: 2, D: 16 },
  { B: 4, T: 512, H: 8, G: 2, D: 64 },
  { B: 1, T: 2048, H: 16, G: 4, D: 64 },
  // One sequence, one kv head (multi-query): the backward's key-tile chunks are its only parallelism.
  { B: 1, T: 1024, H: 8, G: 1, D: 64 },
];

const status = requireNative();
useBackend('native');
const only = process.argv.indexOf('--shapes');
const chosen = only < 0 ? SHAPES : process.argv[only + 1]!.split(',').map((i) => SHAPES[Number(i)]!);

type Path = (q: Tensor, k: Tensor, v: Tensor) => Tensor;
const twoOps: Path = (q, k, v) => attentionApply(attentionProbs(q, k), v);
const fused: Path = (q, k, v) => attentionFused(q, k, v);

function inputs(s: Shape, rng: Rng, grad: boolean): { q: Tensor; k: Tensor; v: Tensor; seed: Float32Array } {
  const r = (n: number) => floatFrom(Array.from({ length: n }, () => rng.normal()));
  return {
    q: new Tensor([s.B, s.T, s.H, s.D], r(s.B * s.T * s.H * s.D), grad),
    k: new Tensor([s.B, s.T, s.G, s.D], r(s.B * s.T * s.G * s.D), grad),
    v: new Tensor([s.B, s.T, s.G, s.D], r(s.B * s.T * s.G * s.D), grad),
    seed: r(s.B * s.T * s.H * s.D),
  };
}

/** Output and q, k, v gradients of one path on fresh seeded inputs. */
function results(s: Shape, path: Path): Float32Array[] {
  const x = inputs(s, new Rng(1), true);
  const y = path(x.q, x.k, x.v);
  backward(y, x.seed);
  return [y.data, x.q.grad!, x.k.grad!, x.v.grad!];
}

function worstRelative(a: Float32Array[], b: Float32Array[]): number {
  let worst = 0;
  a.forEach((want, i) => {
    let scale = 1e-30;
    for (let j = 0; j < want.length; j++) scale = Math.max(scale, Math.abs(want[j]!));
    for (let j = 0; j < want.length; j++) worst = Math.max(worst, Math.abs(want[j]! - b[i]![j]!) / scale);
  });
  return worst;
}

function time(s: Shape, path: Path, withBackward: boolean, repeats: number): number {
  const x = inputs(s, new Rng(2), withBackward);
  const once = () => {
    if (!withBackward) {
      noGrad(() => path(x.q, x.k, x.v));
      return;
    }
    const y = path(x.q, x.k, x.v);
    backward(y, x.seed);
    for (const t of [x.q, x.k, x.v]) t.grad!.fill(0);
  };
  return timeMedian(once, repeats, 1) * 1000;
}

const rows: Record<string, unknown>[] = [];
console.log('shape (B,T,H/G,D)        check        fwd two-op ms  fused ms  ratio    fwd+bwd two-op ms  fused ms  ratio    map bytes avoided');
for (const s of chosen) {
  const label = `${s.B},${s.T},${s.H}/${s.G},${s.D}`;
  const maxRel = worstRelative(results(s, twoOps), results(s, fused));
  if (!(maxRel <= 1e-4)) throw new Error(`${label}: fused disagrees with the two ops (max relative difference ${maxRel})`);
  const repeats = s.T >= 2048 ? 3 : 7;
  const fwd0 = time(s, twoOps, false, repeats), fwd1 = time(s, fused, false, repeats);
  const both0 = time(s, twoOps, true, repeats), both1 = time(s, fused, true, repeats);
  const mapBytes = s.B * s.H * s.T * s.T * 4;
  const lseBytes = s.B * s.H * s.T * 4;
  // P lives from the forward to the backward, dP joins it in the backward; the fused op keeps lse.
  const avoided = 2 * mapBytes - lseBytes;
  rows.push({ ...s, max_rel_diff: maxRel, forward_ms: { two_op: fwd0, fused: fwd1 }, forward_backward_ms: { two_op: both0, fused: both1 }, forward_ratio: fwd0 / fwd1, forward_backward_ratio: both0 / both1, map_bytes: mapBytes, peak_bytes_avoided: avoided });
  console.log(`${label.padEnd(24)} ${maxRel.toExponential(1).padEnd(12)} ${fwd0.toFixed(2).padStart(13)} ${fwd1.toFixed(2).padStart(9)} ${(fwd0 / fwd1).toFixed(2).padStart(6)}x ${both0.toFixed(2).padStart(18)} ${both1.toFixed(2).padStart(9)} ${(both0 / both1).toFixed(2).padStart(6)}x    ${(avoided / 2 ** 20).toFixed(1)} MiB`);
}
console.log(JSON.stringify({ name: 'attention', isa: status.isa, threads: status.threads, causal: true, shapes: rows }));
