// Cross-tokenizer distillation math: token byte ends and alignment, ULD's
// closed-form Wasserstein-1 against a brute force and its gradient by finite
// differences, and the vocabulary map and mapped targets of aligned KD.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { trainBpe } from '../../src/data/bpe.js';
import { loadDefaultCorpus } from '../../src/data/corpus.js';
import { Tensor } from '../../src/tensor/index.js';
import { lowerBound, mappedTargets, prefixTargets, tokenEnds, uldLoss, vocabularyMap } from '../../src/distill/xtok.js';
import { checkOp } from '../helpers/check-op.js';

const text = loadDefaultCorpus().slice(0, 20_000);
const bpe = trainBpe(text, 600);
const bytes = new ByteTokenizer();

describe('cross-tokenizer alignment', () => {
  it('token ends are byte offsets of the text, and both tokenizations share the text boundaries', () => {
    const sample = 'Call me Ishmael. Some years ago — never mind how long precisely';
    const t = bpe.encode(sample);
    const ends = tokenEnds(bpe, t);
    assert.equal(ends[ends.length - 1], Buffer.byteLength(sample, 'utf8'));
    for (let i = 1; i < t.length; i++) assert.equal(ends[i]! - ends[i - 1]!, Buffer.byteLength(bpe.decode([t[i]!]), 'utf8'));
    const s = tokenEnds(bytes, bytes.encode(sample));
    // Every BPE boundary is a byte boundary: the byte-level student aligns with each teacher position.
    for (const e of ends) assert.equal(s[lowerBound(s, e)], e);
    assert.equal(lowerBound(Float64Array.of(1, 3, 3, 7), 3), 1);
    assert.equal(lowerBound(Float64Array.of(1, 3, 3, 7), 8), 4);
  });
});

describe('ULD loss', () => {
  it('is the sorted-L1 (Wasserstein-1) distance, padded with zeros', () => {
    const z = [0.3, -1, 2, 0.5];
    const teacher = Float32Array.of(0.5, 0.2, 0.1, 0.1, 0.05, 0.05);
    const loss = uldLoss(new Tensor([1, 4], Float32Array.from(z)), teacher, 6).item();
    const e = z.map(Math.exp);
    const sum = e.reduce((a, b) => a + b, 0);
    const a = e.map((v) => v / sum).sort((x, y) => y - x);
    let want = 0;
    for (let i = 0; i < 6; i++) want += Math.abs((a[i] ?? 0) - teacher[i]!);
    assert.ok(Math.abs(loss - want) < 1e-6, `${loss} vs ${want}`);
    // Permuting the student's vocabulary does not change it: tokens are forgotten.
    const permuted = uldLoss(new Tensor([1, 4], Float32Array.from([z[2]!, z[0]!, z[3]!, z[1]!])), teacher, 6).item();
    assert.ok(Math.abs(permuted - loss) < 1e-7);
  });

  it('gradient matches finite differences', () => {
    // Distinct probabilities, away from ties of the sort and zeros of |a − b|.
    const teacher = Float32Array.of(0.41, 0.27, 0.13, 0.09, 0.06, 0.04, 0.37, 0.3, 0.17, 0.08, 0.05, 0.03);
    checkOp('uldLoss', ([z]) => uldLoss(z!, teacher, 6), [{ shape: [2, 5], values: [0.9, -0.4, 0.2, 1.7, -1.3, 0.1, 1.1, -0.7, 0.6, -2] }], { maxProbes: 10 });
  });
});

describe('aligned KD targets', () => {
  it('identity keeps tokens of the same bytes; first-token sends each teacher token to its first student token', () => {
    const identity = vocabularyMap(bpe, bytes, 'identity');
    const first = vocabularyMap(bpe, bytes, 'first-token');
    let multi = 0;
    for (let id = 0; id < bpe.vocabSize; id++) {
      const b = Buffer.from(bpe.decode([id]), 'latin1');
      const raw = (bpe as unknown as { tokenBytes(i: number): Uint8Array }).tokenBytes(id);
      if (raw.length === 1) assert.equal(identity[id], raw[0]);
      else {
        multi++;
        assert.equal(identity[id], -1, `multi-byte token ${JSON.stringify(b.toString())} has no byte-level twin`);
        assert.equal(first[id], raw[0]);
      }
    }
    assert.ok(multi > 100);
  });

  it('prefix: the teacher tokens that continue the prefix, renormalised, by the student token after it', () => {
    // Teacher tokens: "a", "ab", "ac", "b", "abd"; the student is byte-level.
    const tb = ['a', 'ab', 'ac', 'b', 'abd'].map((t) => new Uint8Array(Buffer.from(t)));
    const p = [0.1, 0.3, 0.2, 0.25, 0.15];
    const logp = Float32Array.from(p.map(Math.log));
    const out = { ids: new Int32Array(2), logp: new Float32Array(2), tailLogp: new Float32Array(1) };
    // After "a": "ab", "ac", "abd" go on; "a" itself and "b" do not. Next bytes: b (0.3 + 0.15), c (0.2).
    assert.ok(prefixTargets(logp, tb, Uint8Array.from(Buffer.from('a')), (t) => tb[t]![1]!, 2, 256, out, 0));
    assert.deepEqual(Array.from(out.ids), [98, 99]);
    assert.ok(Math.abs(Math.exp(out.logp[0]!) - 0.45 / 0.65) < 1e-6 && Math.abs(Math.exp(out.logp[1]!) - 0.2 / 0.65) < 1e-6);
    assert.ok(Math.exp(out.tailLogp[0]!) < 1e-6);
    // Empty prefix: every token, by its first byte.
    assert.ok(prefixTargets(logp, tb, new Uint8Array(0), (t) => tb[t]![0]!, 2, 256, out, 0));
    assert.deepEqual(Array.from(out.ids), [97, 98]);
    assert.ok(Math.abs(Math.exp(out.logp[0]!) - 0.75) < 1e-6 && Math.abs(Math.exp(out.tailLogp[0]!)) < 1e-6);
    // Nothing continues "abd": no row.
    assert.equal(prefixTargets(logp, tb, Uint8Array.from(Buffer.from('abd')), () => 0, 2, 256, out, 0), false);
  });

  it('a cached row (its top-k known, the rest −∞) maps as the full row restricted to those ids', () => {
    const tb = ['a', 'ab', 'ac', 'b', 'abd', 'ba'].map((t) => new Uint8Array(Buffer.from(t)));
    const full = Float32Array.from([0.1, 0.3, 0.2, 0.2, 0.15, 0.05].map(Math.log));
    const known = Int32Array.of(1, 2, 3); // as a cache lists them: by probability, ties by id
    const sparse = new Float32Array(full.length).fill(-Infinity);
    for (const t of known) sparse[t] = full[t]!;
    const a = { ids: new Int32Array(3), logp: new Float32Array(3), tailLogp: new Float32Array(1) };
    const b = { ids: new Int32Array(3), logp: new Float32Array(3), tailLogp: new Float32Array(1) };
    const next = (t: number) => tb[t]![0]!;
    assert.ok(prefixTargets(sparse, tb, new Uint8Array(0), next, 3, 256, a, 0));
    assert.ok(prefixTargets(sparse, tb, new Uint8Array(0), next, 3, 256, b, 0, known));
    assert.deepEqual([Array.from(a.ids), Array.from(a.logp), Array.from(a.tailLogp)], [Array.from(b.ids), Array.from(b.logp), Array.from(b.tailLogp)]);
    // By first byte over the known tokens only: a ("ab" 0.3 + "ac" 0.2) and b ("b" 0.2), of 0.7.
    assert.deepEqual(Array.from(a.ids.slice(0, 2)), [97, 98]);
    assert.ok(Math.abs(Math.exp(a.logp[0]!) - 0.5 / 0.7) < 1e-6 && Math.abs(Math.exp(a.logp[1]!) - 0.2 / 0.7) < 1e-6);
    const map = Int32Array.of(0, 1, 2, 3, 4, 5);
    const m1 = mappedTargets(sparse, map, 2, 3, 8, a, 0);
    const m2 = mappedTargets(sparse, map, 2, 3, 8, b, 0, known);
    assert.ok(Math.abs(m1 - m2) < 1e-9 && Math.abs(m2 - 0.5) < 1e-6);
    assert.deepEqual(Array.from(a.ids), Array.from(b.ids));
  });

  it('sums teacher tokens sharing a student id, keeps the rest as the tail, and pads without changing the targets', () => {
    // Teacher vocabulary of 5: tokens 0 and 1 map to student 2, token 2 to student 0, tokens 3, 4 unmapped.
    const map = Int32Array.of(2, 2, 0, -1, -1);
    const p = [0.4, 0.25, 0.2, 0.1, 0.05];
    const logp = Float32Array.from(p.map(Math.log));
    const width = 4;
    const out = { ids: new Int32Array(width), logp: new Float32Array(width), tailLogp: new Float32Array(1) };
    const mapped = mappedTargets(logp, map, 4, width, 10, out, 0);
    assert.ok(Math.abs(mapped - 0.85) < 1e-6);
    assert.deepEqual(Array.from(out.ids.slice(0, 2)), [2, 0]);
    assert.ok(Math.abs(Math.exp(out.logp[0]!) - 0.65) < 1e-6 && Math.abs(Math.exp(out.logp[1]!) - 0.2) < 1e-6);
    assert.equal(new Set(out.ids).size, width, 'pads are distinct unused ids');
    // The rest (0.15) is spread over the 8 student tokens outside the row: 2 pads and a tail of 6.
    assert.ok(Math.abs(Math.exp(out.logp[2]!) - 0.15 / 8) < 1e-6);
    assert.ok(Math.abs(Math.exp(out.tailLogp[0]!) - (0.15 * 6) / 8) < 1e-6);
    let total = Math.exp(out.tailLogp[0]!);
    for (const v of out.logp) total += Math.exp(v);
    assert.ok(Math.abs(total - 1) < 1e-6);
  });
});
