import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { attentionKd, createProjection, entropyWarning, featureKd, layerMap, logitKd, softTargetEntropy, type FeatureLossKind } from '../../src/distill/losses.js';
import { QkdError } from '../../src/errors.js';
import { Rng, Tensor, attentionProbs, backward, klDivergence, matmul, randn, tensor, transpose } from '../../src/tensor/index.js';
import { checkOp, type InputSpec } from '../helpers/check-op.js';

const s = (...shape: number[]): InputSpec => ({ shape });
const frozen = (...shape: number[]): InputSpec => ({ shape, noGrad: true });

/** KL(p ‖ q) of two explicit distributions. */
function kl(p: number[], q: number[]): number {
  return p.reduce((acc, pi, i) => acc + (pi === 0 ? 0 : pi * Math.log(pi / q[i]!)), 0);
}

function softmaxOf(z: number[], tau = 1): number[] {
  const e = z.map((v) => Math.exp(v / tau));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected} (tol ${tol})`);
}

function isQkd(pattern: RegExp, field?: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof QkdError, `not a QkdError: ${String(err)}`);
    assert.match(err.message, pattern);
    if (field !== undefined) assert.equal(err.field, field);
    return true;
  };
}

describe('logitKd', () => {
  it('matches a hand-computed value at τ = 1 and τ = 2', () => {
    // teacher p = (1/4, 3/4), student q = (1/2, 1/2): KL = ¼ln½ + ¾ln(3/2) = 0.130812...
    const teacher = tensor([0, Math.log(3)], [1, 2]);
    const student = tensor([0, 0], [1, 2]);
    close(logitKd(teacher, student, 1).item(), 0.25 * Math.log(0.5) + 0.75 * Math.log(1.5), 1e-6, 'τ=1');
    close(logitKd(teacher, student, 1).item(), 0.1308120, 1e-6, 'τ=1 literal');
    // τ = 2: p ∝ (1, √3), scaled by τ² = 4.
    const p = [1 / (1 + Math.sqrt(3)), Math.sqrt(3) / (1 + Math.sqrt(3))];
    close(logitKd(teacher, student, 2).item(), 4 * kl(p, [0.5, 0.5]), 1e-6, 'τ=2');
  });

  it('is the mean over all token rows of [B, T, V]', () => {
    const rng = new Rng(3);
    const zt = randn([2, 3, 5], rng);
    const zs = randn([2, 3, 5], rng);
    let expected = 0;
    for (let r = 0; r < 6; r++) {
      const row = (t: Tensor): number[] => Array.from(t.data.subarray(r * 5, r * 5 + 5));
      expected += 9 * kl(softmaxOf(row(zt), 3), softmaxOf(row(zs), 3));
    }
    close(logitKd(zt, zs, 3).item(), expected / 6, 1e-5, 'mean over rows');
  });

  it('agrees with klDivergence used directly (sanity of the wrapper)', () => {
    const rng = new Rng(15);
    const a = randn([3, 4], rng);
    const b = randn([3, 4], rng);
    close(logitKd(a, b, 3).item(), klDivergence(a, b, { temperature: 3 }).item(), 0, 'wrapper');
  });

  it('passes the gradient check (student; teacher frozen)', () => {
    checkOp('logitKd τ=2', ([t, st]) => logitKd(t!, st!, 2), [{ shape: [2, 3, 7], lo: -3, hi: 3, noGrad: true }, { shape: [2, 3, 7], lo: -3, hi: 3 }]);
    checkOp('logitKd τ=0.7', ([t, st]) => logitKd(t!, st!, 0.7), [frozen(4, 5), s(4, 5)]);
  });

  it('gives zero loss and zero gradient for identical logits', () => {
    const z = randn([3, 11], new Rng(5), 2);
    const student = new Tensor(z.shape, z.data.slice(), true);
    const loss = logitKd(z, student, 4);
    close(loss.item(), 0, 1e-6, 'loss');
    backward(loss);
    for (const g of student.grad!) close(g, 0, 1e-7, 'gradient');
  });

  it('never sends a gradient to the teacher', () => {
    const teacher = randn([2, 4], new Rng(6), 1, true);
    const student = randn([2, 4], new Rng(7), 1, true);
    backward(logitKd(teacher, student, 2));
    assert.equal(teacher.grad, null);
    assert.ok(student.grad!.some((g) => g !== 0));
  });

  it('rejects a non-positive temperature, naming the field', () => {
    const z = tensor([0, 1], [1, 2]);
    assert.throws(() => logitKd(z, z, 0), isQkd(/temperature/, 'temperature'));
  });
});

describe('softTargetEntropy and entropyWarning', () => {
  it('computes hand-checked entropies in nats', () => {
    // rows: (1/4, 3/4) → 0.562335; uniform over 2 → ln 2.
    const stats = softTargetEntropy(Float32Array.from([0, Math.log(3), 5, 5]), 2, 2, 1);
    const h1 = -(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75));
    close(stats.min, h1, 1e-6, 'min');
    close(stats.max, Math.LN2, 1e-9, 'max');
    close(stats.mean, (h1 + Math.LN2) / 2, 1e-6, 'mean');
    close(stats.logV, Math.LN2, 0, 'logV');
  });

  it('applies the temperature: H(z, τ) = H(z/τ, 1)', () => {
    const z = randn([4, 9], new Rng(8), 3).data;
    const scaled = z.map((v) => v / 2.5);
    const a = softTargetEntropy(z, 4, 9, 2.5);
    const b = softTargetEntropy(scaled, 4, 9, 1);
    close(a.mean, b.mean, 1e-6, 'mean');
    assert.ok(softTargetEntropy(z, 4, 9, 10).mean > softTargetEntropy(z, 4, 9, 1).mean, 'higher τ, higher entropy');
  });

  it('warns for nearly one-hot and nearly uniform targets only', () => {
    const V = 50;
    const peaked = new Float32Array(V);
    peaked[3] = 40;
    const low = softTargetEntropy(peaked, 1, V, 1);
    assert.match(entropyWarning(low)!, /nearly one-hot.*higher temperature/);
    const high = softTargetEntropy(peaked, 1, V, 1000);
    assert.match(entropyWarning(high)!, /nearly uniform.*too high/);
    const middle = softTargetEntropy(randn([8, V], new Rng(9), 2).data, 8, V, 1);
    assert.equal(entropyWarning(middle), null);
  });

  it('rejects a buffer that is not rows × V', () => {
    assert.throws(() => softTargetEntropy(new Float32Array(7), 2, 4, 1), isQkd(/rows=2 × V=4/));
  });
});

describe('featureKd', () => {
  it('matches hand-computed mse, cosine and kl values', () => {
    const st = tensor([1, 0, 2, 2], [2, 2]);
    const te = tensor([0, 1, 1, 1], [2, 2]);
    close(featureKd(st, te, 'mse').item(), (1 + 1 + 1 + 1) / 4, 1e-7, 'mse');
    // rows: orthogonal → 1 − 0; parallel → 1 − 1.
    close(featureKd(st, te, 'cosine').item(), 0.5, 1e-7, 'cosine');
    const expectedKl = (kl(softmaxOf([0, 1]), softmaxOf([1, 0])) + kl(softmaxOf([1, 1]), softmaxOf([2, 2]))) / 2;
    close(featureKd(st, te, 'kl').item(), expectedKl, 1e-6, 'kl');
    // Antiparallel rows: 1 − (−1) = 2.
    close(featureKd(tensor([1, 2], [1, 2]), tensor([-2, -4], [1, 2]), 'cosine').item(), 2, 1e-7, 'antiparallel');
  });

  it('projects the student with [Dt, Ds]: loss equals the loss of s·Pᵀ', () => {
    const rng = new Rng(10);
    const st = randn([3, 4], rng);
    const te = randn([3, 6], rng);
    const p = randn([6, 4], rng);
    const projected = matmul(st, transpose(p));
    for (const kind of ['mse', 'cosine', 'kl'] as FeatureLossKind[]) {
      close(featureKd(st, te, kind, p).item(), featureKd(projected, te, kind).item(), 1e-6, kind);
    }
  });

  for (const kind of ['mse', 'cosine', 'kl'] as FeatureLossKind[]) {
    it(`${kind}: gradient check of student, teacher and projection`, () => {
      checkOp(`featureKd ${kind} projected`, ([a, b, p]) => featureKd(a!, b!, kind, p!), [s(2, 3, 4), s(2, 3, 6), s(6, 4)]);
      checkOp(`featureKd ${kind} same width`, ([a, b]) => featureKd(a!, b!, kind), [s(5, 7), s(5, 7)]);
    });

    it(`${kind}: identical features give zero loss and zero gradient`, () => {
      const t = randn([4, 8], new Rng(11), 1.5);
      const student = new Tensor(t.shape, t.data.slice(), true);
      const loss = featureKd(student, t, kind);
      close(loss.item(), 0, 1e-6, 'loss');
      backward(loss);
      for (const g of student.grad!) close(g, 0, 1e-6, 'gradient');
    });
  }

  it('requires a projection when widths differ, naming both widths', () => {
    const st = randn([2, 4], new Rng(12));
    const te = randn([2, 6], new Rng(13));
    assert.throws(() => featureKd(st, te, 'mse'), isQkd(/student width 4 differs from teacher width 6/, 'projection'));
    assert.throws(() => featureKd(st, te, 'mse', randn([4, 6], new Rng(1))), isQkd(/projection \[4,6\] does not map student width 4 to teacher width 6/, 'projection'));
    assert.throws(() => featureKd(randn([3, 4], new Rng(1)), te, 'mse'), isQkd(/all but the last/));
    assert.throws(() => featureKd(st, st, 'l1' as FeatureLossKind), isQkd(/unknown loss kind/, 'kind'));
  });
});

describe('createProjection', () => {
  function gram(p: Tensor, overColumns: boolean): number[][] {
    const [rows, cols] = p.shape as [number, number];
    const n = overColumns ? cols : rows;
    const len = overColumns ? rows : cols;
    const at = (v: number, i: number): number => (overColumns ? p.data[i * cols + v]! : p.data[v * cols + i]!);
    return Array.from({ length: n }, (_, a) => Array.from({ length: n }, (_, b) => {
      let d = 0;
      for (let i = 0; i < len; i++) d += at(a, i) * at(b, i);
      return d;
    }));
  }

  it('is semi-orthogonal [Dt, Ds], trainable, and seeded', () => {
    const tall = createProjection(3, 7, new Rng(1));
    assert.deepEqual(tall.shape, [7, 3]);
    assert.equal(tall.requiresGrad, true);
    assert.ok(tall.data instanceof Float32Array);
    gram(tall, true).forEach((row, a) => row.forEach((v, b) => close(v, a === b ? 1 : 0, 1e-6, `PᵀP[${a},${b}]`)));
    const wide = createProjection(7, 3, new Rng(1));
    assert.deepEqual(wide.shape, [3, 7]);
    gram(wide, false).forEach((row, a) => row.forEach((v, b) => close(v, a === b ? 1 : 0, 1e-6, `PPᵀ[${a},${b}]`)));
    assert.deepEqual(createProjection(3, 7, new Rng(1)).toArray(), tall.toArray());
    assert.notDeepEqual(createProjection(3, 7, new Rng(2)).toArray(), tall.toArray());
    assert.throws(() => createProjection(0, 3, new Rng(1)), isQkd(/studentWidth/, 'studentWidth'));
  });
});

describe('attentionKd', () => {
  it('matches a hand-computed value over the causal entries only', () => {
    // T = 2, one head: causal entries (0,0), (1,0), (1,1); the upper entry is ignored.
    const st = tensor([1, 0, 0.5, 0.5], [1, 1, 2, 2]);
    const te = tensor([1, 0, 0.25, 0.75], [1, 1, 2, 2]);
    close(attentionKd(st, te).item(), (0 + 0.0625 + 0.0625) / 3, 1e-7, 'value');
    const junkUpper = tensor([1, 9, 0.5, 0.5], [1, 1, 2, 2]);
    close(attentionKd(junkUpper, te).item(), (0 + 0.0625 + 0.0625) / 3, 1e-7, 'upper part ignored');
  });

  it('averages consecutive teacher head groups and repeats teacher heads', () => {
    // Teacher heads (a, b) average to the student map → zero loss.
    const a = [1, 0, 0.2, 0.8];
    const b = [1, 0, 0.6, 0.4];
    const mean = [1, 0, 0.4, 0.6];
    close(attentionKd(tensor(mean, [1, 1, 2, 2]), tensor([...a, ...b], [1, 2, 2, 2])).item(), 0, 1e-7, 'group mean');
    // Two student heads both compared to one teacher head.
    const twoStudents = tensor([...a, ...b], [1, 2, 2, 2]);
    const expected = ((0.2 - 0.4) ** 2 * 2 + (0.6 - 0.4) ** 2 * 2) / 6;
    close(attentionKd(twoStudents, tensor(mean, [1, 1, 2, 2])).item(), expected, 1e-7, 'repeat');
  });

  const maps = (B: number, H: number, T: number, S: number, noGrad = false): InputSpec => ({ shape: [B, H, T, S], lo: 0, hi: 1, noGrad });
  it('passes the gradient check: equal heads, grouped teacher, repeated teacher, S > T', () => {
    checkOp('attentionKd equal', ([a, b]) => attentionKd(a!, b!), [maps(2, 2, 3, 3), maps(2, 2, 3, 3)]);
    checkOp('attentionKd group', ([a, b]) => attentionKd(a!, b!), [maps(1, 2, 3, 3), maps(1, 6, 3, 3)]);
    checkOp('attentionKd repeat', ([a, b]) => attentionKd(a!, b!), [maps(2, 4, 3, 3), maps(2, 2, 3, 3)]);
    checkOp('attentionKd S>T', ([a, b]) => attentionKd(a!, b!), [maps(1, 2, 2, 4), maps(1, 1, 2, 4)]);
    checkOp('attentionKd frozen teacher', ([a, b]) => attentionKd(a!, b!), [maps(1, 2, 3, 3), maps(1, 2, 3, 3, true)]);
  });

  it('gives zero loss and zero gradient for identical real attention maps', () => {
    const rng = new Rng(14);
    const q = randn([2, 5, 2, 4], rng);
    const k = randn([2, 5, 2, 4], rng);
    const teacher = attentionProbs(q, k);
    const student = new Tensor(teacher.shape, teacher.data.slice(), true);
    const loss = attentionKd(student, teacher);
    assert.equal(loss.item(), 0);
    backward(loss);
    assert.ok(student.grad!.every((g) => g === 0));
  });

  it('rejects head counts that do not divide and mismatched shapes', () => {
    assert.throws(() => attentionKd(new Tensor([1, 2, 3, 3]), new Tensor([1, 3, 3, 3])), isQkd(/cannot map 3 teacher heads onto 2 student heads/, 'num_attention_heads'));
    assert.throws(() => attentionKd(new Tensor([1, 2, 3, 3]), new Tensor([1, 2, 4, 4])), isQkd(/differ in B, T or S/));
    assert.throws(() => attentionKd(new Tensor([2, 3, 3]), new Tensor([2, 3, 3])), isQkd(/\[B,H,T,S\]/));
  });
});

describe('layerMap', () => {
  it('spaces uniformly, maps last to last, and takes every other layer at half depth', () => {
    assert.deepEqual(layerMap(8, 4), [1, 3, 5, 7]);
    assert.deepEqual(layerMap(4, 4), [0, 1, 2, 3]);
    assert.deepEqual(layerMap(6, 4), [1, 2, 4, 5]);
    assert.deepEqual(layerMap(12, 3), [3, 7, 11]);
    assert.deepEqual(layerMap(5, 1), [4]);
    for (let lt = 1; lt <= 16; lt++) {
      for (let ls = 1; ls <= lt; ls++) {
        const m = layerMap(lt, ls);
        assert.equal(m.length, ls);
        assert.equal(m[ls - 1], lt - 1, `last→last for ${lt}/${ls}`);
        for (let i = 1; i < ls; i++) assert.ok(m[i]! > m[i - 1]!, `increasing for ${lt}/${ls}`);
        assert.ok(m[0]! >= 0);
      }
    }
  });

  it('rejects a student deeper than the teacher', () => {
    assert.throws(() => layerMap(2, 3), isQkd(/more than the teacher's 2/, 'num_hidden_layers'));
    assert.throws(() => layerMap(0, 1), isQkd(/teacherLayers/, 'teacherLayers'));
  });
});
