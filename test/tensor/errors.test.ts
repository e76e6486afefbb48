// Bad shapes and arguments raise a QkdError naming the op and both shapes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as T from '../../src/tensor/index.js';
import { QkdError } from '../../src/errors.js';

const z = (...shape: number[]) => T.zeros(shape);

function throwsNaming(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof QkdError, `expected QkdError, got ${String(err)}`);
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(err.message.includes(p), `message "${err.message}" lacks "${p}"`);
      else assert.match(err.message, p);
    }
    return true;
  });
}

describe('shape errors', () => {
  it('matmul inner dimensions', () => throwsNaming(() => T.matmul(z(2, 3), z(4, 5)), 'matmul', '[2,3]', '[4,5]'));
  it('matmul batch dimensions', () => throwsNaming(() => T.matmul(z(2, 2, 3), z(3, 3, 4)), 'matmul', '[2,2,3]', '[3,3,4]'));
  it('matmul rank', () => throwsNaming(() => T.matmul(z(3), z(3, 4)), 'matmul', '[3]'));
  it('broadcast', () => throwsNaming(() => T.add(z(2, 3), z(4, 3)), 'add', '[2,3]', '[4,3]'));
  it('linear', () => throwsNaming(() => T.linear(z(2, 5), z(4, 3)), 'linear', '[2,5]', '[4,3]'));
  it('rmsNorm weight', () => throwsNaming(() => T.rmsNorm(z(2, 5), z(4)), 'rmsNorm', '[2,5]', '[4]'));
  it('reshape', () => throwsNaming(() => T.reshape(z(2, 3), [4, 2]), 'reshape', '[2,3]', '[4,2]'));
  it('attention heads', () => throwsNaming(() => T.attentionProbs(z(1, 4, 3, 2), z(1, 4, 2, 2)), 'attentionProbs', '[1,4,3,2]', '[1,4,2,2]'));
  it('concat', () => throwsNaming(() => T.concat([z(2, 3), z(3, 3)], 1), 'concat', '[3,3]', '[2,3]'));
  it('slice range', () => throwsNaming(() => T.slice(z(2, 3), 1, 2, 5), 'slice', '[2,3]'));
  it('klDivergence shapes', () => throwsNaming(() => T.klDivergence(z(2, 3), z(2, 4)), 'klDivergence', '[2,3]', '[2,4]'));
  it('crossEntropy target count', () => throwsNaming(() => T.crossEntropy(z(3, 5), new Int32Array(2)), 'crossEntropy', '[3,5]'));
  it('permute', () => throwsNaming(() => T.permute(z(2, 3), [0, 0]), 'permute', '[2,3]'));
  it('tensor data size', () => throwsNaming(() => new T.Tensor([2, 2], new Float32Array(3)), '[2,2]', '3 elements'));
});

describe('argument errors', () => {
  it('embedding id out of range names the position', () => throwsNaming(() => T.embedding(Int32Array.from([0, 9]), [2], z(5, 2)), 'embedding', 'token id 9', 'position 1'));
  it('crossEntropy target out of range', () => throwsNaming(() => T.crossEntropy(z(2, 5), Int32Array.from([1, 7])), 'target 7', 'row 1'));
  it('kl temperature', () => throwsNaming(() => T.klDivergence(z(2, 3), z(2, 3), { temperature: 0 }), 'temperature'));
  it('fakeQuantize bits', () => throwsNaming(() => T.fakeQuantize(z(2, 3), { bits: 1 }), 'fakeQuantize', 'bits'));
});
