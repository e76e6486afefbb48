// The state-space mixer's ops (docs/mohawk.md): float64 finite-difference
// gradient checks of the scan (several chunk lengths), the materialised
// mixing matrix and the depthwise causal convolution; the scan against the
// matrix form (y = M·x) and against a step-by-step recurrence.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { backendsAgree, checkOp, type InputSpec } from '../helpers/check-op.js';
import { loadNativeAddon } from '../../src/tensor/native/binding.js';

const s = (...shape: number[]): InputSpec => ({ shape });
// Decay logits over a range that makes a_t between ~0.1 and ~0.95.
const logits = (...shape: number[]): InputSpec => ({ shape, lo: -3, hi: 2 });

describe('ssmScan', () => {
  for (const chunk of [1, 3, 64]) {
    it(`gradients, B=2 T=7 H=3 P=2 N=3, chunk ${chunk}`, () =>
      checkOp(`ssmScan chunk ${chunk}`, ([x, b, c, l]) => T.ssmScan(x!, b!, c!, l!, chunk), [s(2, 7, 3, 2), s(2, 7, 3, 3), s(2, 7, 3, 3), logits(2, 7, 3)]));
  }
  it('gradients with x and b shared by groups of heads (H=4, G=2: rows repeated by selectRows)', () => {
    // The mixer's grouped form: head h reads group ⌊h/2⌋'s x and b.
    const rows = Int32Array.from({ length: 2 * 5 * 4 }, (_, i) => Math.floor(i / 4) * 2 + Math.floor((i % 4) / 2));
    const perHead = (t: T.Tensor, w: number) => T.reshape(T.selectRows(T.reshape(t, [2 * 5 * 2, w]), rows), [2, 5, 4, w]);
    return checkOp('ssmScan grouped', ([x, b, c, l]) => T.ssmScan(perHead(x!, 2), perHead(b!, 3), c!, l!, 2), [s(2, 5, 2, 2), s(2, 5, 2, 3), s(2, 5, 4, 3), logits(2, 5, 4)]);
  });
  it('gradients with T=1', () => checkOp('ssmScan T=1', ([x, b, c, l]) => T.ssmScan(x!, b!, c!, l!), [s(1, 1, 2, 3), s(1, 1, 2, 2), s(1, 1, 2, 2), logits(1, 1, 2)]));

  it('equals the mixing matrix applied to x, for every chunk length', () => {
    const rng = new T.Rng(5);
    const [B, Tt, H, P, N] = [2, 9, 2, 3, 4];
    const rand = (shape: number[], lo = -1, hi = 1) => new T.Tensor(shape, T.floatFrom(Array.from({ length: shape.reduce((a, d) => a * d, 1) }, () => lo + (hi - lo) * rng.uniform())));
    const x = rand([B, Tt, H, P]);
    const b = rand([B, Tt, H, N]);
    const c = rand([B, Tt, H, N]);
    const l = rand([B, Tt, H], -3, 2);
    const m = T.ssmMixerMatrix(b, c, l);
    for (const chunk of [1, 2, 4, 9, 64]) {
      const y = T.ssmScan(x, b, c, l, chunk);
      for (let bi = 0; bi < B; bi++)
        for (let h = 0; h < H; h++)
          for (let t = 0; t < Tt; t++)
            for (let p = 0; p < P; p++) {
              let want = 0;
              for (let u = 0; u <= t; u++) want += m.data[((bi * H + h) * Tt + t) * Tt + u]! * x.data[((bi * Tt + u) * H + h) * P + p]!;
              const got = y.data[((bi * Tt + t) * H + h) * P + p]!;
              assert.ok(Math.abs(got - want) <= 1e-5 + 1e-4 * Math.abs(want), `chunk ${chunk}: y[${bi},${t},${h},${p}] ${got} vs M·x ${want}`);
            }
    }
  });

  it('has zeros above the diagonal and c_t·b_t on it', () => {
    const b = new T.Tensor([1, 3, 1, 2], T.floatFrom([1, 2, 3, 4, 5, 6]));
    const c = new T.Tensor([1, 3, 1, 2], T.floatFrom([1, 0, 0, 1, 1, 1]));
    const l = new T.Tensor([1, 3, 1], T.floatFrom([0, 0, 0])); // a = 1/2 each step
    const m = T.ssmMixerMatrix(b, c, l).toArray();
    assert.deepEqual([m[1], m[2], m[5]], [0, 0, 0]);
    assert.ok(Math.abs(m[0]! - 1) < 1e-6 && Math.abs(m[4]! - 4) < 1e-6 && Math.abs(m[8]! - 11) < 1e-6);
    // M[2,0] = (c_2·b_0)·a_1·a_2 = 3 · 1/4
    assert.ok(Math.abs(m[6]! - 0.75) < 1e-6);
  });
});

describe('ssmMixerMatrix', () => {
  it('gradients, B=2 T=6 H=2 N=3', () => checkOp('ssmMixerMatrix', ([b, c, l]) => T.ssmMixerMatrix(b!, c!, l!), [s(2, 6, 2, 3), s(2, 6, 2, 3), logits(2, 6, 2)]));
  it('gradients with large decay logits (a near 0 and near 1)', () =>
    checkOp('ssmMixerMatrix extreme', ([b, c, l]) => T.ssmMixerMatrix(b!, c!, l!), [s(1, 5, 1, 2), s(1, 5, 1, 2), { shape: [1, 5, 1], values: [-8, 6, -0.5, 9, -7] }]));
});

describe('causalConv1d', () => {
  it('gradients with bias, kernel 4 over T=6', () => checkOp('causalConv1d', ([x, w, b]) => T.causalConv1d(x!, w!, b!), [s(2, 6, 5), s(5, 4), s(5)]));
  it('gradients without bias, kernel longer than T', () => checkOp('causalConv1d short', ([x, w]) => T.causalConv1d(x!, w!), [s(1, 2, 3), s(3, 4)]));
  it('the identity kernel (last tap 1) returns its input', () => {
    const x = new T.Tensor([1, 4, 2], T.floatFrom([1, 2, 3, 4, 5, 6, 7, 8]));
    const w = new T.Tensor([2, 4], T.floatFrom([0, 0, 0, 1, 0, 0, 0, 1]));
    assert.deepEqual(T.causalConv1d(x, w).toArray(), [1, 2, 3, 4, 5, 6, 7, 8]);
  });
  it('refuses mismatched shapes with a QkdError', () => {
    assert.throws(() => T.causalConv1d(new T.Tensor([1, 2, 3]), new T.Tensor([4, 4])), /causalConv1d/);
  });
});

describe('native SSM kernels', () => {
  // Longer than one scan chunk, odd sizes, several threads' worth of slices.
  it('agree with the reference on a larger case (scan over 2 chunks, matrix, conv)', () => {
    backendsAgree('ssmScan large', ([x, b, c, l]) => T.ssmScan(x!, b!, c!, l!), [s(3, 70, 5, 7), s(3, 70, 5, 6), s(3, 70, 5, 6), logits(3, 70, 5)], { atol: 1e-4, rtol: 1e-3 });
    backendsAgree('ssmMixerMatrix large', ([b, c, l]) => T.ssmMixerMatrix(b!, c!, l!), [s(2, 33, 3, 5), s(2, 33, 3, 5), logits(2, 33, 3)], { atol: 1e-4, rtol: 1e-3 });
    backendsAgree('causalConv1d large', ([x, w, b]) => T.causalConv1d(x!, w!, b!), [s(3, 41, 17), s(17, 4), s(17)], { atol: 1e-4, rtol: 1e-3 });
  });
  it('refuse buffers shorter than the sizes say, and overlapping outputs', (t) => {
    const { addon } = loadNativeAddon();
    if (addon === null) return t.skip('native addon not built');
    const k = addon as unknown as Record<string, (...a: unknown[]) => void>;
    const f = (n: number) => new Float32Array(n);
    assert.throws(() => k.ssmScanForward!(f(7), f(8), f(8), f(4), f(8), f(16), 1, 4, 1, 2, 2, 4), /ssmScanForward: argument x .* needs at least/);
    const shared = f(16);
    assert.throws(() => k.causalConvForward!(shared, f(8), f(0), shared, 1, 4, 2, 4), /must not overlap/);
    assert.throws(() => k.ssmMatrixForward!(f(4), f(4), f(2), f(4), 1, 2, 1, 2, 9), /expected 8 arguments/);
  });
});
