import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bytesPerToken,
  cachedKd,
  openSoftTargetCache,
  softTargetWindow,
  softTargetWindowCount,
  softTargetsFromLogits,
  writeSoftTargetCache,
  type SoftTargets,
} from '../../src/distill/soft-targets.js';
import { logitKd } from '../../src/distill/losses.js';
import { QkdError } from '../../src/errors.js';
import { Rng, Tensor, backward, randn, tensor } from '../../src/tensor/index.js';
import { checkOp } from '../helpers/check-op.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-soft-'));

/** Deterministic teacher logits for window w: [seqLen, V]. */
function teacherLogits(w: number, seqLen: number, V: number): Float32Array {
  return randn([seqLen, V], new Rng(1000 + w), 2).data;
}

function writeCache(path: string, k: number, V = 20, seqLen = 5, tokenCount = 23): { tokens: Int32Array } {
  const rng = new Rng(4);
  const tokens = Int32Array.from({ length: tokenCount }, () => rng.int(V));
  writeSoftTargetCache(path, { tokens, topK: k, seqLen, V, temperature: 2 }, (w) => teacherLogits(w, seqLen, V));
  return { tokens };
}

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected} (tol ${tol})`);
}

function ioError(field: string, pattern: RegExp, file = 'bad.qkdsoft') {
  return (err: unknown): boolean => {
    assert.ok(err instanceof QkdError, `not a QkdError: ${String(err)}`);
    assert.equal(err.field, field);
    assert.match(err.message, pattern);
    assert.ok(err.message.includes(file), 'names the file');
    return true;
  };
}

describe('soft targets from logits', () => {
  it('keeps the top k by probability with exact log-probs and the tail mass', () => {
    // probabilities (1, 3, 2, 1) / 7
    const t = softTargetsFromLogits(Float32Array.from([0, Math.log(3), Math.log(2), 0]), 1, 4, 2);
    assert.deepEqual(Array.from(t.ids), [1, 2]);
    close(t.logp[0]!, Math.log(3 / 7), 1e-6, 'logp 0');
    close(t.logp[1]!, Math.log(2 / 7), 1e-6, 'logp 1');
    close(t.tailLogp[0]!, Math.log(2 / 7), 1e-6, 'tail');
    const ties = softTargetsFromLogits(Float32Array.from([5, 5, 1, 5]), 1, 4, 2);
    assert.deepEqual(Array.from(ties.ids), [0, 1], 'ties prefer the lower id');
    const all = softTargetsFromLogits(Float32Array.from([1, 2, 3]), 1, 3, 3);
    assert.deepEqual(Array.from(all.ids), [2, 1, 0]);
    assert.equal(all.tailLogp[0], -Infinity);
  });

  it('matches a full sort on random rows', () => {
    const V = 300;
    const logits = randn([4, V], new Rng(5), 3).data;
    const t = softTargetsFromLogits(logits, 4, V, 17);
    for (let r = 0; r < 4; r++) {
      const row = Array.from(logits.subarray(r * V, (r + 1) * V));
      const expected = row.map((v, i) => ({ v, i })).sort((a, b) => b.v - a.v || a.i - b.i).slice(0, 17).map((x) => x.i);
      assert.deepEqual(Array.from(t.ids.subarray(r * 17, (r + 1) * 17)), expected);
      const total = Array.from(t.logp.subarray(r * 17, (r + 1) * 17)).reduce((s, lp) => s + Math.exp(lp), 0) + Math.exp(t.tailLogp[r]!);
      close(total, 1, 1e-5, 'probabilities sum to 1');
    }
  });

  it('reports bytes per token and rejects a bad k', () => {
    assert.equal(bytesPerToken(256, 8), 8 * 2 + 8 * 2 + 2);
    assert.equal(bytesPerToken(65535, 1), 2 + 2 + 2);
    assert.equal(bytesPerToken(70000, 8), 8 * 4 + 8 * 2 + 2);
    assert.throws(() => softTargetsFromLogits(new Float32Array(4), 1, 4, 5), (e: unknown) => e instanceof QkdError && e.field === 'topK');
  });

  it('tiles windows of seqLen inputs with targets one token later', () => {
    const tokens = Int32Array.from({ length: 11 }, (_, i) => i);
    assert.equal(softTargetWindowCount(11, 5), 2);
    assert.equal(softTargetWindowCount(10, 5), 1);
    assert.deepEqual(softTargetWindow(tokens, 5, 1), { inputs: Int32Array.from([5, 6, 7, 8, 9]), targets: Int32Array.from([6, 7, 8, 9, 10]) });
    assert.throws(() => softTargetWindow(tokens, 5, 2), (e: unknown) => e instanceof QkdError && e.field === 'window');
  });
});

describe('soft-target cache file', () => {
  it('round-trips windows (ids exact, log-probs within f16 rounding) and the header', () => {
    const path = join(dir, 'round.qkdsoft');
    const { tokens } = writeCache(path, 4);
    const size = readFileSync(path).length;
    assert.equal(size, 48 + 4 * 5 * bytesPerToken(20, 4));
    const cache = openSoftTargetCache(path, { tokens });
    assert.equal(cache.V, 20);
    assert.equal(cache.k, 4);
    assert.equal(cache.seqLen, 5);
    assert.equal(cache.count, 4);
    assert.equal(cache.temperature, 2);
    for (let w = 0; w < cache.count; w++) {
      const got = cache.window(w);
      const expected = softTargetsFromLogits(teacherLogits(w, 5, 20), 5, 20, 4);
      assert.deepEqual(Array.from(got.ids), Array.from(expected.ids));
      got.logp.forEach((v, i) => close(v, expected.logp[i]!, 1e-3 * Math.abs(expected.logp[i]!) + 1e-6, `logp ${i}`));
      got.tailLogp.forEach((v, i) => close(v, expected.tailLogp[i]!, 1e-3 * Math.abs(expected.tailLogp[i]!) + 1e-6, `tail ${i}`));
    }
    assert.throws(() => cache.window(4), (e: unknown) => e instanceof QkdError && e.field === 'window');
    cache.close();
    assert.throws(() => cache.window(0), /closed/);
    assert.ok(!readdirSync(dir).some((f) => f.includes('.tmp-')), 'no temporary files left');
  });

  it('stores u32 ids when V > 65535', () => {
    const path = join(dir, 'wide.qkdsoft');
    const V = 70000;
    const tokens = Int32Array.from([1, 2, 3]);
    writeSoftTargetCache(path, { tokens, topK: 2, seqLen: 2, V }, () => {
      const z = new Float32Array(2 * V);
      z[69999] = 9;
      z[V + 65536] = 8;
      z[V + 3] = 7;
      return z;
    });
    const w = openSoftTargetCache(path).window(0);
    assert.equal(w.ids[0], 69999);
    assert.deepEqual(Array.from(w.ids.subarray(2)), [65536, 3]);
  });

  it('refuses other tokens, and wrong-sized teacher logits leave no file', () => {
    const path = join(dir, 'tokens.qkdsoft');
    const { tokens } = writeCache(path, 3);
    const other = tokens.slice();
    other[7] = (other[7]! + 1) % 20;
    assert.throws(() => openSoftTargetCache(path, { tokens: other }), ioError('tokens_hash', /made from other tokens/, 'tokens.qkdsoft'));
    const missing = join(dir, 'never.qkdsoft');
    assert.throws(() => writeSoftTargetCache(missing, { tokens, topK: 3, seqLen: 5, V: 20 }, () => new Float32Array(7)), /window 0 have 7 values/);
    assert.equal(existsSync(missing), false);
  });

  const corruptions: [string, (b: Buffer) => Buffer, string, RegExp][] = [
    ['magic', (b) => (b.write('XKDSOFT', 0, 'latin1'), b), 'magic', /bad magic/],
    ['version', (b) => (b.writeUInt32LE(9, 8), b), 'version', /unsupported version 9/],
    ['top_k above V', (b) => (b.writeUInt32LE(21, 16), b), 'top_k', /top-k 21 is outside \[1, 20\]/],
    ['top_k zero', (b) => (b.writeUInt32LE(0, 16), b), 'top_k', /top-k 0/],
    ['seq_len', (b) => (b.writeUInt32LE(0, 20), b), 'seq_len', /seq_len 0/],
    ['id_bytes', (b) => (b.writeUInt32LE(4, 28), b), 'id_bytes', /id_bytes 4 for vocab 20/],
    ['temperature', (b) => (b.writeFloatLE(-1, 32), b), 'temperature', /temperature -1/],
    ['count', (b) => (b.writeUInt32LE(5, 24), b), 'count', /5 windows .* \(truncated\)/],
    ['truncated data', (b) => b.subarray(0, b.length - 1), 'count', /truncated/],
    ['short header', (b) => b.subarray(0, 20), 'header', /shorter than the 48-byte header/],
  ];
  for (const [name, corrupt, field, pattern] of corruptions) {
    it(`rejects a corrupted header (${name}), naming file and field`, () => {
      const good = join(dir, 'good.qkdsoft');
      writeCache(good, 4);
      const bad = join(dir, 'bad.qkdsoft');
      writeFileSync(bad, corrupt(Buffer.from(readFileSync(good))));
      assert.throws(() => openSoftTargetCache(bad), ioError(field, pattern));
    });
  }

  it('rejects token ids outside the vocabulary when reading a window', () => {
    const good = join(dir, 'good.qkdsoft');
    writeCache(good, 4);
    const bytes = Buffer.from(readFileSync(good));
    bytes.writeUInt16LE(20, 48 + 2); // second id of window 0
    const bad = join(dir, 'bad.qkdsoft');
    writeFileSync(bad, bytes);
    const cache = openSoftTargetCache(bad);
    assert.throws(() => cache.window(0), ioError('ids', /token id 20 ≥ vocab 20/));
    cache.close();
  });
});

describe('cachedKd', () => {
  it('equals logitKd when k = V (exactly in memory, within f16 rounding from the file)', () => {
    const V = 20;
    const zt = teacherLogits(0, 5, V);
    const zs = randn([5, V], new Rng(6), 2);
    const memory = softTargetsFromLogits(zt, 5, V, V);
    const path = join(dir, 'full.qkdsoft');
    writeSoftTargetCache(path, { tokens: new Int32Array(6), topK: V, seqLen: 5, V }, (w) => teacherLogits(w, 5, V));
    const fromFile = openSoftTargetCache(path).window(0);
    for (const tau of [1, 3]) {
      const full = logitKd(new Tensor([5, V], zt), zs, tau).item();
      close(cachedKd(zs, memory, tau).item(), full, 1e-5 * full + 1e-6, `τ=${tau} memory`);
      close(cachedKd(zs, fromFile, tau).item(), full, 5e-3 * full + 1e-4, `τ=${tau} file`);
    }
  });

  it('matches a hand-computed bucketed KL at τ = 1', () => {
    // teacher (1,3,2,1)/7 with k = 2 → buckets {1: 3/7, 2: 2/7, tail 2/7}; student uniform → {1/4, 1/4, 1/2}.
    const cached = softTargetsFromLogits(Float32Array.from([0, Math.log(3), Math.log(2), 0]), 1, 4, 2);
    const expected = (3 / 7) * Math.log(3 / 7 / 0.25) + (2 / 7) * Math.log(2 / 7 / 0.25) + (2 / 7) * Math.log(2 / 7 / 0.5);
    close(cachedKd(tensor([0, 0, 0, 0], [1, 4]), cached, 1).item(), expected, 1e-6, 'value');
    // τ = 2: cached tokens tempered as p^(1/2); the tail (two tokens of 1/7 here,
    // so the uniform-tail estimate is exact) as 2·(1/7)^(1/2); student still uniform.
    const q = [Math.sqrt(3 / 7), Math.sqrt(2 / 7), 2 * Math.sqrt(1 / 7)];
    const qs = q.reduce((a, b) => a + b, 0);
    const s = [0.25, 0.25, 0.5];
    const expected2 = 4 * q.reduce((acc, qi, i) => acc + (qi / qs) * Math.log(qi / qs / s[i]!), 0);
    close(cachedKd(tensor([0, 0, 0, 0], [1, 4]), cached, 2).item(), expected2, 1e-6, 'τ=2 value');
  });

  it('passes the gradient check (k < V, k = V, τ = 1 and 2.5)', () => {
    const V = 9;
    const zt = randn([6, V], new Rng(7), 2).data;
    for (const k of [1, 3, V]) {
      const cached = softTargetsFromLogits(zt, 6, V, k);
      for (const tau of [1, 2.5]) {
        checkOp(`cachedKd k=${k} τ=${tau}`, ([z]) => cachedKd(z!, cached, tau), [{ shape: [2, 3, V], lo: -3, hi: 3 }]);
      }
    }
  });

  it('gives zero loss and zero gradient when the student is the teacher (τ = 1, k < V)', () => {
    const V = 12;
    const z = randn([4, V], new Rng(8), 2);
    const cached = softTargetsFromLogits(z.data, 4, V, 3);
    const student = new Tensor(z.shape, z.data.slice(), true);
    const loss = cachedKd(student, cached, 1);
    close(loss.item(), 0, 1e-6, 'loss');
    backward(loss);
    for (const g of student.grad!) close(g, 0, 1e-7, 'gradient');
  });

  it('rejects logits that do not fit the targets and duplicate ids', () => {
    const cached: SoftTargets = softTargetsFromLogits(new Float32Array(8), 2, 4, 2);
    assert.throws(() => cachedKd(new Tensor([3, 4]), cached, 1), /do not fit 2 cached rows of top-2/);
    const dup: SoftTargets = { ...cached, ids: Int32Array.from([1, 1, 0, 2]) };
    assert.throws(() => cachedKd(new Tensor([2, 4]), dup, 1), (e: unknown) => e instanceof QkdError && e.field === 'ids' && /appears twice/.test(e.message));
    assert.throws(() => cachedKd(new Tensor([2, 4]), cached, 0), (e: unknown) => e instanceof QkdError && e.field === 'temperature');
  });
});
