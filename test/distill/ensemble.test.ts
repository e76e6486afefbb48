// Several teachers as one: the mixture's log-probabilities against a direct
// float64 computation, one member (or identical members) giving that
// member's distribution, confidence weights, and turns drawn by the weights.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TeacherEnsemble, ensembleWeights, mixtureLogits } from '../../src/distill/ensemble.js';
import { createLlama } from '../../src/models/llama.js';
import { Rng } from '../../src/tensor/random.js';
import { QkdError } from '../../src/errors.js';

function randomLogits(rows: number, V: number, seed: number, scale = 3): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: rows * V }, () => rng.normal() * scale);
}

function softmax(z: Float32Array, o: number, V: number): number[] {
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, z[o + v]!);
  const e = Array.from({ length: V }, (_, v) => Math.exp(z[o + v]! - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

describe('teacher ensembles', () => {
  const rows = 5;
  const V = 11;
  const a = randomLogits(rows, V, 1);
  const b = randomLogits(rows, V, 2, 6);

  it('mean: log Σ w_i p_i, a normalised distribution', () => {
    const w = [0.7, 0.3];
    const m = mixtureLogits([a, b], rows, V, w, 'mean');
    for (let r = 0; r < rows; r++) {
      const pa = softmax(a, r * V, V);
      const pb = softmax(b, r * V, V);
      let total = 0;
      for (let v = 0; v < V; v++) {
        const want = Math.log(w[0]! * pa[v]! + w[1]! * pb[v]!);
        assert.ok(Math.abs(m[r * V + v]! - want) < 1e-5, `row ${r} token ${v}: ${m[r * V + v]} vs ${want}`);
        total += Math.exp(m[r * V + v]!);
      }
      assert.ok(Math.abs(total - 1) < 1e-5);
    }
  });

  it('confidence: weights × each member’s top probability, per position', () => {
    const w = [0.5, 0.5];
    const m = mixtureLogits([a, b], rows, V, w, 'confidence');
    for (let r = 0; r < rows; r++) {
      const pa = softmax(a, r * V, V);
      const pb = softmax(b, r * V, V);
      const ca = 0.5 * Math.max(...pa);
      const cb = 0.5 * Math.max(...pb);
      for (let v = 0; v < V; v++) {
        const want = Math.log((ca * pa[v]! + cb * pb[v]!) / (ca + cb));
        assert.ok(Math.abs(m[r * V + v]! - want) < 1e-5);
      }
    }
  });

  it('identical members give the member’s own distribution, for either mix', () => {
    for (const mix of ['mean', 'confidence'] as const) {
      const m = mixtureLogits([a, a, a], rows, V, ensembleWeights(3, [1, 2, 3]), mix);
      for (let r = 0; r < rows; r++) {
        const p = softmax(a, r * V, V);
        for (let v = 0; v < V; v++) assert.ok(Math.abs(m[r * V + v]! - Math.log(p[v]!)) < 1e-5);
      }
    }
  });

  it('a model ensemble: forward mixes the members; alternate draws members in proportion to the weights, the same on every call', () => {
    const config = { vocab_size: 16, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 8 };
    const m1 = createLlama(config, 1);
    const m2 = createLlama(config, 2);
    const ids = Int32Array.from([1, 2, 3, 4]);
    const e = new TeacherEnsemble([m1, m2], 'alternate', [3, 1], 7);
    const mixed = e.forward(ids, 1, 4).data as Float32Array;
    const direct = mixtureLogits([m1.forward(ids, 1, 4).data as Float32Array, m2.forward(ids, 1, 4).data as Float32Array], 4, 16, [0.75, 0.25], 'mean');
    assert.deepEqual(Array.from(mixed), Array.from(direct));
    const picks = Array.from({ length: 4000 }, (_, s) => e.select(s + 1));
    const share = picks.filter((i) => i === 0).length / picks.length;
    assert.ok(Math.abs(share - 0.75) < 0.03, `member 1 drawn ${share}`);
    assert.deepEqual(picks.slice(0, 50), Array.from({ length: 50 }, (_, s) => e.select(s + 1)));
    e.active = 1;
    assert.deepEqual(Array.from(e.forward(ids, 1, 4).data), Array.from(m2.forward(ids, 1, 4).data));
  });

  it('refuses teachers of different vocabularies and weights of the wrong count', () => {
    const m1 = createLlama({ vocab_size: 16, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 8 }, 1);
    const m2 = createLlama({ vocab_size: 17, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 8 }, 1);
    assert.throws(() => new TeacherEnsemble([m1, m2], 'mean', null), (e: unknown) => e instanceof QkdError && /share one tokenizer/.test(e.message));
    assert.throws(() => ensembleWeights(2, [1, 2, 3]), (e: unknown) => e instanceof QkdError && e.field === 'distillation.teachers.weights');
  });
});
