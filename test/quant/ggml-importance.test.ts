// Importance-weighted K-quant fitting (encode(x, importance)): one weight
// per column scales each element's weight in the sub-block fits. All-ones
// importance must give exactly the plain encoder's bytes; a skewed
// importance must lower the importance-weighted error it is meant to lower;
// and the native codec must give the TypeScript definition's bytes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writableFormat } from '../../src/quant/ggml-formats.js';
import { Rng } from '../../src/tensor/index.js';
import { nativeStatus, withBackend } from '../../src/tensor/backend.js';

const K_QUANTS = ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'];
const ROWS = 64;
const COLS = 512;

function weightsAndImportance(seed: number): { w: Float32Array; imp: Float32Array } {
  const rng = new Rng(seed);
  const w = new Float32Array(ROWS * COLS);
  for (let i = 0; i < w.length; i++) w[i] = 0.02 * rng.normal();
  // Activations' mean squares are heavy-tailed across input features: a few columns dominate.
  const imp = new Float32Array(COLS);
  for (let j = 0; j < COLS; j++) imp[j] = Math.exp(2 * rng.normal());
  return { w, imp };
}

function weightedError(w: Float32Array, q: Float32Array, imp: Float32Array): number {
  let e = 0;
  let n = 0;
  for (let i = 0; i < w.length; i++) {
    const d = w[i]! - q[i]!;
    e += imp[i % COLS]! * d * d;
    n += imp[i % COLS]! * w[i]! * w[i]!;
  }
  return e / n;
}

describe('importance-weighted K-quant fitting', () => {
  const { w, imp } = weightsAndImportance(5);

  for (const name of K_QUANTS) {
    it(`${name}: all-ones importance is the plain encoder; skewed importance lowers the weighted error`, () => {
      const t = writableFormat(name).reference!;
      const plain = t.encode(w);
      assert.deepEqual(t.encode(w, new Float32Array(COLS).fill(1)), plain);
      const weighted = t.encode(w, imp);
      const ePlain = weightedError(w, t.decode(plain, w.length), imp);
      const eWeighted = weightedError(w, t.decode(weighted, w.length), imp);
      assert.ok(eWeighted < ePlain, `${name}: weighted error ${eWeighted} with importance, ${ePlain} without`);
    });

    it(`${name}: the native codec gives the TypeScript bytes with importance`, { skip: nativeStatus().loaded ? false : 'no native addon' }, () => {
      const t = writableFormat(name);
      assert.deepEqual(withBackend('native', () => t.encode(w, imp)), t.reference!.encode(w, imp));
    });
  }

  it('refuses an importance vector that does not fit the rows', () => {
    const t = writableFormat('Q4_K');
    assert.throws(() => t.reference!.encode(w, new Float32Array(300)), /importance vector of 300 values does not fit/);
    for (const v of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const bad = new Float32Array(COLS).fill(1);
      bad[5] = v;
      assert.throws(() => t.encode(w, bad), /importance\[5\] is .*must be positive and finite/, String(v));
    }
    if (nativeStatus().loaded) assert.throws(() => withBackend('native', () => t.encode(w, new Float32Array(300))), /importance vector of 300 values does not fit/);
  });
});
