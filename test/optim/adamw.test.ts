import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW, clipGradNorm, gradNorm } from '../../src/optim/adamw.js';
import { ParameterArena } from '../../src/tensor/index.js';

describe('AdamW', () => {
  it('matches a hand computation over two steps, decaying matrices only', () => {
    const arena = new ParameterArena([{ name: 'w', shape: [1, 2] }, { name: 'norm', shape: [1] }]);
    arena.data.set([1, -2, 3]);
    const opt = new AdamW(arena, { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.5 });
    const grads = [[0.5, -1, 2], [0.25, 0.5, -1]];
    const w = [1, -2, 3];
    const m = [0, 0, 0];
    const v = [0, 0, 0];
    grads.forEach((g, t) => {
      arena.grad.set(g);
      opt.update();
      for (let i = 0; i < 3; i++) {
        m[i] = 0.9 * m[i]! + 0.1 * g[i]!;
        v[i] = 0.99 * v[i]! + 0.01 * g[i]! ** 2;
        const mhat = m[i]! / (1 - 0.9 ** (t + 1));
        const vhat = v[i]! / (1 - 0.99 ** (t + 1));
        const decay = i < 2 ? 1 - 0.1 * 0.5 : 1;
        w[i] = w[i]! * decay - (0.1 * mhat) / (Math.sqrt(vhat) + 1e-8);
      }
    });
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(arena.data[i]! - w[i]!) < 1e-6, `param ${i}: ${arena.data[i]} vs ${w[i]}`);
    assert.equal(opt.step, 2);
  });
  it('restores its state exactly', () => {
    const arena = new ParameterArena([{ name: 'w', shape: [3, 3] }]);
    const opt = new AdamW(arena);
    arena.grad.fill(0.3);
    opt.update();
    const copy = new AdamW(arena);
    copy.setState({ step: opt.step, m: opt.m.slice(), v: opt.v.slice() });
    assert.deepEqual(copy.m, opt.m);
    assert.equal(copy.step, 1);
  });
  it('a tensor-by-tensor pass (moments: false, the caller keeps m and v) equals one whole-arena update bit for bit', () => {
    const specs = [{ name: 'a', shape: [4, 3] }, { name: 'n', shape: [3] }, { name: 'b', shape: [2, 5] }];
    const whole = new ParameterArena(specs);
    const sliced = new ParameterArena(specs);
    for (let i = 0; i < whole.size; i++) whole.data[i] = sliced.data[i] = Math.sin(i + 1);
    const optWhole = new AdamW(whole, { lr: 0.05 });
    const optSliced = new AdamW(sliced, { lr: 0.05, moments: false });
    assert.equal(optSliced.m.length, 0);
    assert.equal(optSliced.ownsMoments, false);
    assert.throws(() => optSliced.update(), /moments: false/);
    const m = new Map(sliced.entries.map((e) => [e.name, new Float32Array(e.size)]));
    const v = new Map(sliced.entries.map((e) => [e.name, new Float32Array(e.size)]));
    for (let t = 0; t < 3; t++) {
      for (let i = 0; i < whole.size; i++) whole.grad[i] = sliced.grad[i] = Math.cos(3 * i + t);
      optWhole.update();
      const { c1, c2 } = optSliced.beginUpdate();
      for (const e of sliced.entries) optSliced.updateSlice(e, e.tensor.data, e.tensor.grad!, m.get(e.name)!, v.get(e.name)!, 0.05, c1, c2);
    }
    assert.deepEqual(sliced.data, whole.data);
    assert.equal(optSliced.step, 3);
    const e = sliced.entries[0]!;
    assert.throws(() => optSliced.updateSlice(e, e.tensor.data, e.tensor.grad!, new Float32Array(2), v.get(e.name)!, 0.05, 1, 1), /'a' has 12 values/);
  });
  it('rejects bad hyperparameters naming the field', () => {
    const arena = new ParameterArena([{ name: 'w', shape: [2] }]);
    assert.throws(() => new AdamW(arena, { lr: -1 }), /lr = -1.*field: lr/);
    assert.throws(() => new AdamW(arena, { beta2: 1 }), /beta2/);
  });
});

describe('gradient clipping', () => {
  it('scales to the max norm and reports the norm before clipping', () => {
    const g = Float32Array.from([3, 4]);
    assert.equal(clipGradNorm(g, 1), 5);
    assert.ok(Math.abs(gradNorm(g) - 1) < 1e-5);
    const small = Float32Array.from([0.3, 0.4]);
    clipGradNorm(small, 1);
    assert.deepEqual(Array.from(small), [0.30000001192092896, 0.4000000059604645]);
  });
});
