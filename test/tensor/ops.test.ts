// Every op: float64 finite-difference gradient check and native-vs-reference
// agreement, on odd shapes (1, primes, sizes that are not SIMD multiples).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { checkOp, type InputSpec } from '../helpers/check-op.js';

const s = (...shape: number[]): InputSpec => ({ shape });
const positive = (...shape: number[]): InputSpec => ({ shape, lo: 0.5, hi: 2 });

describe('matmul', () => {
  const cases: [string, InputSpec[], T.MatmulOptions][] = [
    ['plain 3x5·5x4', [s(3, 5), s(5, 4)], {}],
    ['transA', [s(5, 3), s(5, 4)], { transA: true }],
    ['transB', [s(3, 5), s(4, 5)], { transB: true }],
    ['transA transB', [s(5, 3), s(4, 5)], { transA: true, transB: true }],
    ['1x1·1x1', [s(1, 1), s(1, 1)], {}],
    ['odd 17x33·33x19', [s(17, 33), s(33, 19)], {}],
    ['batched', [s(2, 3, 5), s(2, 5, 4)], {}],
    ['batched both transposed', [s(2, 5, 3), s(2, 4, 7 - 2)], { transA: true, transB: true }],
    ['shared b', [s(3, 2, 5), s(5, 4)], {}],
    ['shared b transposed', [s(3, 2, 5), s(4, 5)], { transB: true }],
    ['shared b, transA', [s(3, 5, 2), s(5, 4)], { transA: true }],
    ['shared a', [s(3, 5), s(2, 5, 4)], {}],
    ['shared a transposed', [s(5, 3), s(2, 4, 5)], { transA: true, transB: true }],
  ];
  for (const [name, specs, opts] of cases) {
    it(name, () => checkOp(`matmul ${name}`, ([a, b]) => T.matmul(a!, b!, opts), specs));
  }
  it('linear with bias over [2,3,7]', () => checkOp('linear', ([x, w, b]) => T.linear(x!, w!, b!), [s(2, 3, 7), s(5, 7), s(5)]));
});

describe('elementwise', () => {
  const binaries = { add: T.add, sub: T.sub, mul: T.mul, div: T.div } as const;
  for (const [name, f] of Object.entries(binaries)) {
    const b = name === 'div' ? positive : s;
    it(`${name} same shape`, () => checkOp(name, ([x, y]) => f(x!, y!), [s(3, 7), b(3, 7)]));
    it(`${name} broadcast trailing [2,3,5] ∘ [5]`, () => checkOp(name, ([x, y]) => f(x!, y!), [s(2, 3, 5), b(5)]));
    it(`${name} broadcast both [2,1,5] ∘ [3,1]`, () => checkOp(name, ([x, y]) => f(x!, y!), [s(2, 1, 5), b(3, 1)]));
    it(`${name} with a scalar tensor`, () => checkOp(name, ([x, y]) => f(x!, y!), [s(4, 3), b()]));
  }
  it('same tensor on both sides (x·x, x+x)', () => {
    checkOp('mul self', ([x]) => T.mul(x!, x!), [s(11)]);
    checkOp('add self', ([x]) => T.add(x!, x!), [s(11)]);
  });
  it('gradient adoption through reshape and add chains', () =>
    checkOp('reshape/add chain', ([x, y]) => T.mul(T.add(T.reshape(x!, [3, 4]), T.reshape(y!, [3, 4])), T.reshape(x!, [3, 4])), [s(12), s(2, 6)]));
  it('swiglu (fused silu(gate)·up)', () => checkOp('swiglu', ([g, u]) => T.swiglu(g!, u!), [{ shape: [3, 37], lo: -8, hi: 8 }, s(3, 37)]));
  it('scale and addScalar', () => {
    checkOp('scale', ([x]) => T.scale(x!, -2.5), [s(2, 3)]);
    checkOp('addScalar', ([x]) => T.addScalar(x!, 0.75), [s(2, 3)]);
    checkOp('softcap', ([x]) => T.softcap(x!, 1.3), [{ shape: [3, 5], lo: -4, hi: 4 }]);
  });
  const unaries: [T.UnaryName, InputSpec][] = [
    ['exp', s(3, 5)],
    ['log', positive(3, 5)],
    ['tanh', s(3, 5)],
    ['sigmoid', { shape: [3, 5], lo: -6, hi: 6 }],
    ['silu', { shape: [3, 5], lo: -6, hi: 6 }],
    ['gelu', { shape: [3, 5], lo: -4, hi: 4 }],
    ['gelu_tanh', { shape: [3, 5], lo: -4, hi: 4 }],
    ['relu', s(3, 5)],
    ['square', s(3, 5)],
    ['sqrt', positive(3, 5)],
    ['neg', s(3, 5)],
    ['abs', s(3, 5)],
  ];
  for (const [name, spec] of unaries) {
    // Looser absolute tolerance: the float32 transcendental results differ in the last ulp.
    it(name, () => checkOp(name, ([x]) => T.unary(name, x!), [spec], { gradAtol: 1e-6 }));
  }
});

describe('reductions and softmax', () => {
  for (const axis of [0, 1, -1]) {
    for (const keep of [false, true]) {
      it(`sum axis ${axis} keepDim ${keep}`, () => checkOp('sum', ([x]) => T.sum(x!, axis, keep), [s(3, 4, 5)]));
      it(`mean axis ${axis} keepDim ${keep}`, () => checkOp('mean', ([x]) => T.mean(x!, axis, keep), [s(3, 4, 5)]));
      it(`max axis ${axis} keepDim ${keep}`, () => checkOp('max', ([x]) => T.max(x!, axis, keep), [s(3, 4, 5)]));
    }
  }
  it('sumAll / meanAll', () => {
    checkOp('sumAll', ([x]) => T.sumAll(x!), [s(3, 7)]);
    checkOp('meanAll', ([x]) => T.meanAll(x!), [s(3, 7)]);
  });
  for (const shape of [[1, 1], [3, 7], [2, 3, 17], [2, 33]]) {
    it(`softmax ${JSON.stringify(shape)}`, () => checkOp('softmax', ([x]) => T.softmax(x!), [{ shape, lo: -3, hi: 3 }]));
    it(`logSoftmax ${JSON.stringify(shape)}`, () => checkOp('logSoftmax', ([x]) => T.logSoftmax(x!), [{ shape, lo: -3, hi: 3 }]));
  }
});

describe('normalisation, embedding, rope', () => {
  it('rmsNorm C=13', () => checkOp('rmsNorm', ([x, w]) => T.rmsNorm(x!, w!, 1e-5), [s(2, 3, 13), s(13)]));
  it('rmsNorm C=1', () => checkOp('rmsNorm', ([x, w]) => T.rmsNorm(x!, w!, 1e-5), [s(4, 1), s(1)]));
  it('addRmsNorm: gradients through the sum and the norm (sum + normed checked together)', () =>
    checkOp('addRmsNorm', ([x, d, w]) => {
      const r = T.addRmsNorm(x!, d!, w!, 1e-5);
      return T.add(T.mul(r.sum, r.sum), r.normed);
    }, [s(2, 3, 13), s(2, 3, 13), s(13)]));
  it('addRmsNorm gives add(x, δ) and rmsNorm of it, bit for bit', () => {
    const rng = new T.Rng(4);
    const mk = (...shape: number[]) => new T.Tensor(shape, Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()));
    const [x, d, w] = [mk(3, 5, 24), mk(3, 5, 24), mk(24)];
    const r = T.addRmsNorm(x, d, w, 1e-6);
    const sum = T.add(x, d);
    assert.deepEqual(Array.from(r.sum.data), Array.from(sum.data));
    assert.deepEqual(Array.from(r.normed.data), Array.from(T.rmsNorm(sum, w, 1e-6).data));
    assert.throws(() => T.addRmsNorm(x, mk(3, 5, 23), w), /addRmsNorm/);
  });
  it('layerNorm C=13', () => checkOp('layerNorm', ([x, w, b]) => T.layerNorm(x!, w!, b!, 1e-5), [s(2, 3, 13), s(13), s(13)]));
  it('embedding with repeated ids', () => {
    const ids = Int32Array.from([3, 0, 3, 6, 1, 3]);
    checkOp('embedding', ([table]) => T.embedding(ids, [2, 3], table!), [s(7, 5)]);
  });
  for (const style of ['half', 'interleaved'] as const) {
    it(`rope ${style}`, () => checkOp(`rope ${style}`, ([x]) => T.rope(x!, { style, theta: 10000 }), [s(2, 5, 3, 6)]));
    it(`rope ${style} from position 7`, () => checkOp(`rope ${style}`, ([x]) => T.rope(x!, { style, startPos: 7, theta: 500 }), [s(1, 3, 2, 4)]));
  }
});

describe('attention', () => {
  const B = 2, Tq = 5, H = 4, G = 2, D = 6;
  it('attentionProbs causal GQA', () => checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!), [s(B, Tq, H, D), s(B, Tq, G, D)]));
  it('attentionProbs non-causal, custom scale', () => checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!, { causal: false, scale: 0.3 }), [s(B, Tq, H, D), s(B, 7, G, D)]));
  it('attentionProbs with S > T (cached keys)', () => checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!), [s(1, 3, 2, 4), s(1, 7, 1, 4)]));
  it('attentionProbs with a sliding window (W=2), also with cached keys', () => {
    checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!, { window: 2 }), [s(B, Tq, H, D), s(B, Tq, G, D)]);
    checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!, { window: 3 }), [s(1, 3, 2, 4), s(1, 7, 1, 4)]);
  });
  it('attentionProbs with soft-capped scores (cap 0.7), with and without a window', () => {
    checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!, { softcap: 0.7 }), [s(B, Tq, H, D), s(B, Tq, G, D)]);
    checkOp('attentionProbs', ([q, k]) => T.attentionProbs(q!, k!, { softcap: 0.7, window: 2, scale: 0.9 }), [s(B, Tq, H, D), s(B, Tq, G, D)]);
  });
  it('a sliding window masks exactly the keys W or more positions back', () => {
    const q = T.tensor(Array.from({ length: 10 }, (_, i) => Math.sin(i)), [1, 5, 1, 2]);
    const k = T.tensor(Array.from({ length: 10 }, (_, i) => Math.cos(i)), [1, 5, 1, 2]);
    const P = T.attentionProbs(q, k, { window: 2 }).data;
    for (let t = 0; t < 5; t++) {
      for (let j = 0; j < 5; j++) {
        const visible = j <= t && t - j < 2;
        assert.equal(P[t * 5 + j]! > 0, visible, `query ${t}, key ${j}`);
      }
    }
  });
  it('attentionApply', () => checkOp('attentionApply', ([p, v]) => T.attentionApply(p!, v!), [s(B, H, Tq, Tq), s(B, Tq, G, D)]));
  it('attention end to end, odd sizes (H=3, G=1, D=2, T=7)', () =>
    checkOp('attention', ([q, k, v]) => T.attention(q!, k!, v!).out, [s(1, 7, 3, 2), s(1, 7, 1, 2), s(1, 7, 1, 2)]));
  it('attention MHA (G=H)', () => checkOp('attention', ([q, k, v]) => T.attention(q!, k!, v!).out, [s(2, 4, 2, 4), s(2, 4, 2, 4), s(2, 4, 2, 4)]));
});

describe('losses', () => {
  const targets = Int32Array.from([2, 0, 6, -100, 1, 6]);
  it('crossEntropy with ignored rows', () => checkOp('crossEntropy', ([z]) => T.crossEntropy(z!, targets), [{ shape: [6, 7], lo: -3, hi: 3 }]));
  it('crossEntropy over [2,3,7] logits', () => checkOp('crossEntropy', ([z]) => T.crossEntropy(z!, Int32Array.from([1, 2, 3, 4, 5, 6])), [s(2, 3, 7)]));
  for (const temperature of [1, 4]) {
    it(`klDivergence τ=${temperature}, both gradients`, () =>
      checkOp('klDivergence', ([zt, zs]) => T.klDivergence(zt!, zs!, { temperature }), [{ shape: [5, 7], lo: -4, hi: 4 }, { shape: [5, 7], lo: -4, hi: 4 }]));
  }
  it('mse', () => checkOp('mse', ([a, b]) => T.mse(a!, b!), [s(3, 5), s(3, 5)]));
});

describe('shape ops', () => {
  it('reshape with -1', () => checkOp('reshape', ([x]) => T.mul(T.reshape(x!, [3, -1]), T.reshape(x!, [3, 4])), [s(2, 6)]));
  it('permute [2,3,4] → (2,0,1)', () => checkOp('permute', ([x]) => T.permute(x!, [2, 0, 1]), [s(2, 3, 4)]));
  it('transpose last two', () => checkOp('transpose', ([x]) => T.transpose(x!), [s(2, 3, 5)]));
  it('slice middle axis', () => checkOp('slice', ([x]) => T.slice(x!, 1, 1, 3), [s(2, 4, 3)]));
  it('selectRows picks, repeats and skips rows', () => checkOp('selectRows', ([x]) => T.selectRows(x!, Int32Array.of(3, 0, 3, 1)), [s(5, 4)]));
  it('selectRows refuses an index outside the rows', () => assert.throws(() => T.selectRows(new T.Tensor([2, 3]), Int32Array.of(2)), /selectRows: row 2 at position 0 is outside \[0, 2\)/));
  it('concat along axis 1', () => checkOp('concat', ([a, b]) => T.concat([a!, b!], 1), [s(2, 3, 2), s(2, 1, 2)]));
  it('clone', () => checkOp('clone', ([x]) => T.clone(x!), [s(5)]));
});

describe('uninitialised outputs (allocUninitialized)', () => {
  it('gives float32 buffers of the size asked, zeroed float64 ones in float64 mode, and matmul results that do not depend on what the memory held', async () => {
    const { allocUninitialized, withFloat64 } = await import('../../src/tensor/tensor.js');
    for (const n of [0, 10, 16384, 100_000]) {
      const b = allocUninitialized(n);
      assert.ok(b instanceof Float32Array);
      assert.equal(b.length, n);
    }
    const f64 = withFloat64(() => allocUninitialized(20000));
    assert.ok((f64 as unknown) instanceof Float64Array);
    assert.ok(f64.every((v) => v === 0));
    // Large products (outputs above the threshold) twice in a row: the second lands on memory the first freed.
    const rng = new T.Rng(3);
    const a = T.randn([300, 70], rng);
    const w = T.randn([200, 70], rng);
    const first = T.matmul(a, w, { transB: true }).toArray();
    for (let i = 0; i < 3; i++) assert.deepEqual(T.matmul(a, w, { transB: true }).toArray(), first);
  });
});
