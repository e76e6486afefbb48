// Fused attention (docs/attention.md): float64 finite-difference gradient
// checks of attentionFused with every option, the native kernels against the
// reference on shapes that cut the native tiles (64 query rows × 64 keys)
// unevenly, equality with attentionApply(attentionProbs(...)) for the
// output and all three input gradients on both backends, rows that see no
// key, and the addon's argument errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { backendsAgree, checkOp, type InputSpec } from '../helpers/check-op.js';
import { loadNativeAddon } from '../../src/tensor/native/binding.js';
import { referenceKernels } from '../../src/tensor/reference/kernels.js';

const s = (...shape: number[]): InputSpec => ({ shape });
const fused = (options: T.AttentionOptions = {}) => ([q, k, v]: T.Tensor[]) => T.attentionFused(q!, k!, v!, options);
const twoOps = (options: T.AttentionOptions = {}) => ([q, k, v]: T.Tensor[]) => T.attentionApply(T.attentionProbs(q!, k!, options), v!);

describe('attentionFused gradients (float64 finite differences, then native = reference)', () => {
  const B = 2, Tq = 5, H = 4, G = 2, D = 6;
  it('causal, GQA (H=4, G=2)', () => checkOp('attentionFused causal GQA', fused(), [s(B, Tq, H, D), s(B, Tq, G, D), s(B, Tq, G, D)]));
  it('not causal, custom scale, S > T', () => checkOp('attentionFused non-causal', fused({ causal: false, scale: 0.3 }), [s(B, Tq, H, D), s(B, 7, G, D), s(B, 7, G, D)]));
  it('causal with S > T (queries are the last T positions)', () => checkOp('attentionFused offset', fused(), [s(1, 3, 2, 4), s(1, 7, 1, 4), s(1, 7, 1, 4)]));
  it('a sliding window (W=2; W=3 with cached keys; W=2.5 as attentionProbs reads it)', () => {
    checkOp('attentionFused window 2', fused({ window: 2 }), [s(B, Tq, H, D), s(B, Tq, G, D), s(B, Tq, G, D)]);
    checkOp('attentionFused window 3 offset', fused({ window: 3 }), [s(1, 3, 2, 4), s(1, 7, 1, 4), s(1, 7, 1, 4)]);
    checkOp('attentionFused window 2.5', fused({ window: 2.5 }), [s(1, 6, 2, 3), s(1, 6, 1, 3), s(1, 6, 1, 3)]);
  });
  it('soft-capped scores (cap 0.7), alone and with a window and a scale', () => {
    checkOp('attentionFused softcap', fused({ softcap: 0.7 }), [s(B, Tq, H, D), s(B, Tq, G, D), s(B, Tq, G, D)]);
    checkOp('attentionFused softcap window', fused({ softcap: 0.7, window: 2, scale: 0.9 }), [s(B, Tq, H, D), s(B, 8, G, D), s(B, 8, G, D)]);
  });
  it('odd sizes (H=3, G=1, D=2, T=7) and MHA (G=H)', () => {
    checkOp('attentionFused odd', fused(), [s(1, 7, 3, 2), s(1, 7, 1, 2), s(1, 7, 1, 2)]);
    checkOp('attentionFused MHA', fused(), [s(2, 4, 2, 4), s(2, 4, 2, 4), s(2, 4, 2, 4)]);
  });
  it('T and S not multiples of the native tile (T=67, S=72), GQA, with a window', () =>
    checkOp('attentionFused tiles', fused({ window: 40 }), [s(1, 67, 2, 3), s(1, 72, 1, 3), s(1, 72, 1, 3)], { maxProbes: 24 }));
  it('k and v the same tensor (both gradients summed)', () =>
    checkOp('attentionFused k = v', ([q, kv]) => T.attentionFused(q!, kv!, kv!), [s(1, 4, 2, 3), s(1, 4, 1, 3)]));
});

describe('attentionFused = attentionApply(attentionProbs(...)), output and the gradients of q, k, v', () => {
  const cases: { name: string; options: T.AttentionOptions; shapes: InputSpec[] }[] = [
    { name: 'causal GQA', options: {}, shapes: [s(2, 9, 4, 8), s(2, 9, 2, 8), s(2, 9, 2, 8)] },
    { name: 'not causal, S > T', options: { causal: false, scale: 0.25 }, shapes: [s(2, 6, 4, 5), s(2, 11, 2, 5), s(2, 11, 2, 5)] },
    { name: 'cached keys, window, softcap', options: { window: 5, softcap: 2 }, shapes: [s(1, 20, 4, 16), s(1, 90, 1, 16), s(1, 90, 1, 16)] },
    { name: 'several tiles (T=S=150, D=40)', options: { scale: 0.4 }, shapes: [s(1, 150, 2, 40), s(1, 150, 2, 40), s(1, 150, 2, 40)] },
  ];
  for (const backend of ['reference', 'native'] as const) {
    for (const c of cases) {
      it(`${c.name} [${backend}]`, (t) => {
        if (backend === 'native' && !T.nativeStatus().loaded) return t.skip('native addon not loaded');
        T.withBackend(backend, () => {
          const run = (fn: (xs: T.Tensor[]) => T.Tensor) => {
            const rng = new T.Rng(3);
            const xs = c.shapes.map((spec) => new T.Tensor(spec.shape, T.floatFrom(Array.from({ length: spec.shape.reduce((a, d) => a * d, 1) }, () => rng.uniform() * 4 - 2)), true));
            const y = fn(xs);
            const seed = T.floatFrom(Array.from({ length: y.size }, () => rng.uniform() * 2 - 1));
            T.backward(y, seed);
            return [y.toArray(), ...xs.map((x) => Array.from(x.grad!))];
          };
          const want = run(twoOps(c.options));
          const got = run(fused(c.options));
          ['output', 'dq', 'dk', 'dv'].forEach((what, i) => {
            const a = got[i]!, b = want[i]!;
            const largest = Math.max(...b.map(Math.abs));
            for (let j = 0; j < a.length; j++) {
              assert.ok(Math.abs(a[j]! - b[j]!) <= 1e-5 * largest + 1e-4 * Math.abs(b[j]!), `${what}[${j}]: fused ${a[j]} vs two ops ${b[j]} (largest ${largest})`);
            }
          });
        });
      });
    }
  }
});

describe('native fused attention', () => {
  const skip = T.nativeStatus().loaded ? false : 'native addon not loaded';
  it('agrees with the reference on larger cases (tiles cut unevenly, D with a vector tail)', { skip }, () => {
    const tol = { atol: 1e-4, rtol: 1e-3 };
    backendsAgree('attentionFused large causal', fused(), [s(2, 130, 4, 40), s(2, 130, 2, 40), s(2, 130, 2, 40)], tol);
    backendsAgree('attentionFused large cached window softcap', fused({ window: 70, softcap: 3, scale: 0.3 }), [s(1, 65, 6, 17), s(1, 200, 3, 17), s(1, 200, 3, 17)], tol);
    backendsAgree('attentionFused large non-causal', fused({ causal: false }), [s(3, 33, 2, 64), s(3, 129, 1, 64), s(3, 129, 1, 64)], tol);
    backendsAgree('attentionFused decode step (T=1)', fused(), [s(1, 1, 8, 32), s(1, 300, 2, 32), s(1, 300, 2, 32)], tol);
  });

  it('rows that see no key (S < T, which the op refuses) give o = 0, lse = −∞ and no gradient, on both backends', () => {
    // Causal with S = 2 < T = 4: queries 0 and 1 sit before key 0.
    const [B, Tq, S, H, G, D] = [1, 4, 2, 2, 1, 3];
    const rng = new T.Rng(7);
    const r = (n: number) => Float32Array.from({ length: n }, () => rng.uniform() - 0.5);
    const q = r(B * Tq * H * D), k = r(B * S * G * D), v = r(B * S * G * D), dO = r(B * Tq * H * D);
    const backends: T.Kernels[] = [referenceKernels];
    if (T.nativeStatus().loaded) backends.push(T.withBackend('native', () => T.kernels()));
    for (const kern of backends) {
      const o = new Float32Array(q.length).fill(9), lse = new Float32Array(B * H * Tq);
      kern.attentionFusedForward(q, k, v, o, lse, B, Tq, S, H, G, D, true, 0.5, 0, 0);
      const dq = new Float32Array(q.length), dk = new Float32Array(k.length), dv = new Float32Array(v.length);
      kern.attentionFusedBackward(q, k, v, o, lse, dO, dq, dk, dv, B, Tq, S, H, G, D, true, 0.5, 0, 0);
      for (const x of [o, dq, dk, dv]) assert.ok(x.every(Number.isFinite), `${kern.name}: finite`);
      for (let h = 0; h < H; h++) {
        for (let t = 0; t < 2; t++) {
          assert.equal(lse[h * Tq + t], -Infinity, `${kern.name}: lse of head ${h} row ${t}`);
          for (let d = 0; d < D; d++) {
            assert.equal(o[(t * H + h) * D + d], 0, `${kern.name}: o of head ${h} row ${t}`);
            assert.equal(dq[(t * H + h) * D + d], 0, `${kern.name}: dq of head ${h} row ${t}`);
          }
        }
        assert.ok(Number.isFinite(lse[h * Tq + 2]!) && o[(2 * H + h) * D] !== 0, `${kern.name}: row 2 sees key 0`);
      }
    }
  });

  it('refuses short buffers, overlapping outputs and inconsistent options', (t) => {
    const { addon } = loadNativeAddon();
    if (addon === null) return t.skip('native addon not built');
    const k = addon as unknown as Record<string, (...a: unknown[]) => void>;
    const f = (n: number) => new Float32Array(n);
    // B=1, T=2, S=3, H=2, G=1, D=2: q, o 8; k, v 6; lse 4.
    const fwd = (q: Float32Array, kk: Float32Array, v: Float32Array, o: Float32Array, lse: Float32Array, ...rest: unknown[]) => k.attentionFusedForward!(q, kk, v, o, lse, 1, 2, 3, 2, 1, 2, ...rest);
    assert.throws(() => fwd(f(7), f(6), f(6), f(8), f(4), true, 0.5, 0, 0), /attentionFusedForward: argument q .* needs at least 8/);
    assert.throws(() => fwd(f(8), f(6), f(5), f(8), f(4), true, 0.5, 0, 0), /argument v .* needs at least 6/);
    assert.throws(() => fwd(f(8), f(6), f(6), f(8), f(3), true, 0.5, 0, 0), /argument lse .* needs at least 4/);
    const shared = f(12);
    assert.throws(() => fwd(f(8), f(6), f(6), shared, shared.subarray(6), true, 0.5, 0, 0), /must not overlap/);
    const q = f(8);
    assert.throws(() => fwd(q, f(6), f(6), q, f(4), true, 0.5, 0, 0), /must not overlap/);
    assert.throws(() => fwd(f(8), f(6), f(6), f(8), f(4), false, 0.5, 2, 0), /window .* causal/);
    assert.throws(() => fwd(f(8), f(6), f(6), f(8), f(4), true, 0.5, 0, -1), /softcap/);
    assert.throws(() => k.attentionFusedForward!(f(12), f(6), f(6), f(12), f(6), 1, 2, 3, 3, 2, 2, true, 0.5, 0, 0), /H .* multiple of G|heads/);
    const dq = f(8);
    assert.throws(() => k.attentionFusedBackward!(f(8), f(6), f(6), f(8), f(4), f(8), dq, dq.subarray(0, 6), f(0), 1, 2, 3, 2, 1, 2, true, 0.5, 0, 0), /must not overlap/);
    assert.throws(() => k.attentionFusedBackward!(f(8), f(6), f(6), f(8), f(4), f(7), f(8), f(0), f(0), 1, 2, 3, 2, 1, 2, true, 0.5, 0, 0), /argument dO .* needs at least 8/);
    // EMPTY skips a gradient; all three EMPTY is a no-op.
    k.attentionFusedBackward!(f(8), f(6), f(6), f(8), f(4), f(8), f(0), f(0), f(0), 1, 2, 3, 2, 1, 2, true, 0.5, 0, 0);
  });
});

describe('attentionFused shape and option errors', () => {
  it('names the op and both shapes, and refuses bad options', () => {
    const z = (...shape: number[]) => new T.Tensor(shape);
    assert.throws(() => T.attentionFused(z(1, 4, 3, 2), z(1, 4, 2, 2), z(1, 4, 2, 2)), /attentionFused.*\[1,4,3,2\].*\[1,4,2,2\]/);
    assert.throws(() => T.attentionFused(z(1, 4, 2, 2), z(1, 4, 2, 2), z(1, 5, 2, 2)), /attentionFused: k .* and v .* differ/);
    assert.throws(() => T.attentionFused(z(1, 4, 2, 2), z(1, 3, 2, 2), z(1, 3, 2, 2)), /S ≥ T/);
    assert.throws(() => T.attentionFused(z(1, 4, 2, 2), z(1, 4, 2, 2), z(1, 4, 2, 2), { causal: false, window: 2 }), /window/);
    assert.throws(() => T.attentionFused(z(1, 4, 2, 2), z(1, 4, 2, 2), z(1, 4, 2, 2), { softcap: 0 }), /softcap/);
  });
});
