import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, add, backward, matmul, mul, noGrad, sumAll, tapeLength, tensor, reshape, scale } from '../../src/tensor/index.js';
import { Linear } from '../../src/nn/layers.js';

describe('tape autograd', () => {
  it('accumulates gradients over several backward passes', () => {
    const x = tensor([1, 2, 3], [3], true);
    backward(sumAll(mul(x, x)));
    backward(sumAll(mul(x, x)));
    assert.deepEqual(Array.from(x.grad!), [4, 8, 12]);
  });
  it('sums gradients of a tensor used on several paths', () => {
    const x = tensor([2], [1], true);
    const y = add(mul(x, x), scale(x, 3)); // x² + 3x → 2x + 3
    backward(sumAll(y));
    assert.deepEqual(Array.from(x.grad!), [7]);
  });
  it('records nothing under noGrad', () => {
    const before = tapeLength();
    const x = tensor([1, 2], [2], true);
    const y = noGrad(() => mul(x, x));
    assert.equal(y.node, null);
    assert.equal(y.requiresGrad, false);
    assert.equal(tapeLength(), before);
    assert.throws(() => backward(sumAll(y)), /not produced by a recorded op/);
  });
  it('clears the tape and intermediate gradients after backward', () => {
    const x = tensor([1, 2, 3, 4], [2, 2], true);
    const h = matmul(x, x);
    const loss = sumAll(h);
    backward(loss);
    assert.equal(tapeLength(), 0);
    assert.equal(h.grad, null);
    assert.ok(x.grad !== null);
  });
  it('reshape shares storage with its input', () => {
    const x = tensor([1, 2, 3, 4], [4]);
    const v = reshape(x, [2, 2]);
    assert.equal(v.data, x.data);
  });
  it('requires a scalar loss or a seed of matching size', () => {
    const x = tensor([1, 2], [2], true);
    assert.throws(() => backward(mul(x, x)), /loss has 2 elements/);
  });
});

describe('forward hooks', () => {
  it('see the module name and output, and can be removed', () => {
    const w = new Tensor([3, 2], undefined, true);
    w.data.set([1, 0, 0, 1, 1, 1]);
    const layer = new Linear('model.layers.0.mlp.up_proj', w);
    const seen: string[] = [];
    const remove = layer.registerForwardHook(({ name, output }) => seen.push(`${name}:${output.shape.join('x')}`));
    layer.forward(tensor([1, 2], [1, 2]));
    remove();
    layer.forward(tensor([1, 2], [1, 2]));
    assert.deepEqual(seen, ['model.layers.0.mlp.up_proj:1x3']);
  });
});
