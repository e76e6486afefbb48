// DBWA packed storage (SPEC 5): error bounds per tier and rounding mode,
// unbiased stochastic rounding, special values, non-finite rejection, real
// byte savings, checkpoint round trip, and the tier assignment.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { QkdError } from '../../src/errors.js';
import { DBWA_BLOCK, PackedArray, assignTiers, tierBytes, type PrecisionTier } from '../../src/sat/dbwa.js';

const TIERS: PrecisionTier[] = [16, 12, 8];
/** Mantissa bits and top minifloat exponent (2^E − 2) per tier; bf16 has no block scale. */
const FORMAT = { 16: { m: 7, top: 0 }, 12: { m: 6, top: 30 }, 8: { m: 3, top: 14 } } as const;

function exponentField(x: number): number {
  const f = new Float32Array([x]);
  return (new Uint32Array(f.buffer)[0]! >>> 23) & 0xff;
}

/**
 * The documented bound for element i: max(rel·|x|, floor) with rel = 2^-(M+1)
 * (nearest) or 2^-M (stochastic) and floor the subnormal step of its block
 * (half of it for nearest).
 */
function bounds(src: Float32Array, tier: PrecisionTier, stochastic: boolean): Float64Array {
  const { m, top } = FORMAT[tier];
  const rel = stochastic ? 2 ** -m : 2 ** -(m + 1);
  const out = new Float64Array(src.length);
  for (let start = 0; start < src.length; start += DBWA_BLOCK) {
    const end = Math.min(src.length, start + DBWA_BLOCK);
    let subStep: number;
    if (tier === 16) {
      subStep = 2 ** -133; // bf16 subnormal spacing
    } else {
      let emax = 0;
      for (let i = start; i < end; i++) emax = Math.max(emax, exponentField(src[i]!));
      const shift = Math.max(1, emax - top);
      subStep = 2 ** (1 - m) * 2 ** (shift - 127);
    }
    for (let i = start; i < end; i++) out[i] = Math.max(rel * Math.abs(src[i]!), stochastic ? subStep : subStep / 2);
  }
  return out;
}

function checkWithinBounds(src: Float32Array, tier: PrecisionTier, stochastic: boolean, label: string): void {
  const rng = stochastic ? new Rng(11) : null;
  const packed = PackedArray.encode(src, tier, rng);
  const out = packed.decode();
  const bound = bounds(src, tier, stochastic);
  for (let i = 0; i < src.length; i++) {
    const x = src[i]!;
    const y = out[i]!;
    assert.ok(Number.isFinite(y), `${label} ${tier}-bit: [${i}] ${x} decoded to ${y}`);
    assert.ok(Math.abs(y - x) <= bound[i]!, `${label} ${tier}-bit ${stochastic ? 'SR' : 'RTN'}: [${i}] ${x} → ${y}, error ${Math.abs(y - x)} > ${bound[i]}`);
    assert.ok(y === 0 || Math.sign(y) === Math.sign(x), `${label}: sign of [${i}] flipped`);
  }
}

function gaussian(n: number, seed: number, std = 0.02): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal() * std);
}

/** Magnitudes spread log-uniformly over `decades` (Adam's v looks like this), random signs unless positive. */
function logSpread(n: number, seed: number, lo: number, decades: number, positive = false): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => (positive || rng.uniform() < 0.5 ? 1 : -1) * lo * 10 ** (decades * rng.uniform()));
}

describe('PackedArray round trip', () => {
  for (const tier of TIERS) {
    for (const stochastic of [false, true]) {
      it(`${tier}-bit ${stochastic ? 'stochastic' : 'nearest'}: every element within its stated bound`, () => {
        checkWithinBounds(gaussian(10_001, 1), tier, stochastic, 'gaussian');
        checkWithinBounds(logSpread(5_000, 2, 1e-12, 8), tier, stochastic, 'log-spread');
        checkWithinBounds(logSpread(5_000, 3, 1e-20, 12, true), tier, stochastic, 'v-like');
        for (const n of [0, 1, 63, 64, 65, 127, 129]) checkWithinBounds(gaussian(n, 4 + n), tier, stochastic, `n=${n}`);
      });
    }
  }

  it('handles zero, signs, float32 subnormals and values up to FLT_MAX', () => {
    const FLT_MAX = 3.4028234663852886e38;
    const special = Float32Array.from([0, -0, -1.5, 1e-40, 1e-45, 2 ** -126, 3e38, -3.4e38, FLT_MAX, -FLT_MAX, 5, -(2 ** 127) * 1.99]);
    const tinyBlock = Float32Array.from({ length: 64 }, (_, i) => (i % 2 ? -1 : 1) * i * 1e-41);
    const hugeBlock = Float32Array.from({ length: 64 }, (_, i) => (i % 2 ? -1 : 1) * FLT_MAX * (1 - i / 128));
    for (const tier of TIERS) {
      for (const stochastic of [false, true]) {
        checkWithinBounds(special, tier, stochastic, 'special');
        checkWithinBounds(tinyBlock, tier, stochastic, 'tiny');
        checkWithinBounds(hugeBlock, tier, stochastic, 'huge');
      }
      const out = PackedArray.encode(special, tier, null).decode();
      assert.equal(out[0], 0);
      assert.ok(Object.is(out[1], -0) || out[1] === 0);
      assert.ok(out.every(Number.isFinite));
    }
  });

  it('stores representable values exactly, in both rounding modes', () => {
    const exact = Float32Array.from([1, 1.5, 1.25, -3, 0.375, 0, 7.5, -0.5, 0.0625, 2]);
    for (const tier of TIERS) {
      assert.deepEqual(Array.from(PackedArray.encode(exact, tier, null).decode()), Array.from(exact));
      assert.deepEqual(Array.from(PackedArray.encode(exact, tier, new Rng(1)).decode()), Array.from(exact));
    }
  });

  it('rounds ties to even', () => {
    const cases: [PrecisionTier, number, number[]][] = [
      [16, 2 ** -8, [1, 1 + 2 ** -6]],
      [12, 2 ** -7, [1, 1 + 2 ** -5]],
      [8, 2 ** -4, [1, 1.25]],
    ];
    for (const [tier, half, expected] of cases) {
      const src = Float32Array.from([1 + half, 1 + 3 * half]);
      assert.deepEqual(Array.from(PackedArray.encode(src, tier, null).decode()), expected, `${tier}-bit`);
    }
  });
});

describe('stochastic rounding', () => {
  it('is unbiased: the mean over many values equals the value', () => {
    const n = 40_000;
    for (const tier of TIERS) {
      for (const v of [0.3, -7.77e-3]) {
        const src = new Float32Array(n).fill(v);
        const out = PackedArray.encode(src, tier, new Rng(5)).decode();
        let mean = 0;
        for (const y of out) mean += y / n;
        const ulp = Math.abs(v) * 2 ** -FORMAT[tier].m; // ≥ the spacing around v
        assert.ok(Math.abs(mean - src[0]!) < (5 * ulp) / (2 * Math.sqrt(n)), `${tier}-bit ${v}: mean ${mean}`);
        const nearest = PackedArray.encode(src, tier, null).decode()[0]!;
        assert.notEqual(nearest, src[0], 'the test value is not on the grid');
      }
    }
  });

  it('is unbiased over repeated encodes, also below the normal range of a block', () => {
    // [v, 1]: block max 1, so v = 1e-6 is a subnormal minifloat at 8 and 12 bits (step 2^-16 at 8 bits).
    for (const tier of TIERS) {
      for (const v of [0.3, 1e-6]) {
        const src = Float32Array.from([v, 1]);
        const packed = PackedArray.encode(src, tier, null);
        const out = new Float32Array(2);
        const rng = new Rng(6);
        const reps = 20_000;
        let sum = 0;
        let sumSq = 0;
        for (let r = 0; r < reps; r++) {
          packed.encodeFrom(src, rng);
          packed.decodeInto(out);
          sum += out[0]!;
          sumSq += out[0]! ** 2;
        }
        const mean = sum / reps;
        const sd = Math.sqrt(Math.max(sumSq / reps - mean * mean, 0));
        const x = src[0]!;
        assert.ok(Math.abs(mean - x) <= 5 * (sd / Math.sqrt(reps)) + 1e-4 * Math.abs(x), `${tier}-bit ${v}: mean ${mean} (sd ${sd})`);
        if (tier !== 16) assert.ok(sd > 0, 'the value is not on the grid');
      }
    }
    // Round to nearest, by contrast, loses a sub-step value entirely.
    assert.equal(PackedArray.encode(Float32Array.from([1e-6, 1]), 8, null).decode()[0], 0);
  });

  it('is deterministic for a seed and advances the Rng by exactly 4 draws per encode', () => {
    const src = gaussian(1000, 7);
    for (const tier of TIERS) {
      const a = PackedArray.encode(src, tier, new Rng(3));
      const b = PackedArray.encode(src, tier, new Rng(3));
      const c = PackedArray.encode(src, tier, new Rng(4));
      assert.deepEqual(a.storage, b.storage);
      assert.notDeepEqual(a.storage, c.storage);
    }
    const rng = new Rng(8);
    const twin = new Rng(8);
    PackedArray.encode(src, 8, rng);
    for (let i = 0; i < 4; i++) twin.nextUint32();
    assert.deepEqual(rng.getState(), twin.getState());
  });
});

describe('PackedArray storage', () => {
  it('really shrinks: 8-bit ≈ 1/4 of float32 plus scales, 12-bit ≈ 3/8, 16-bit = 1/2', () => {
    const n = 4096;
    const src = gaussian(n, 9);
    const expected: Record<PrecisionTier, number> = { 8: n + n / 64, 12: (3 * n) / 2 + n / 64, 16: 2 * n };
    for (const tier of TIERS) {
      const packed = PackedArray.encode(src, tier, null);
      assert.equal(packed.bytes, expected[tier]);
      assert.equal(packed.bytes, tierBytes(n, tier));
      assert.equal(packed.storage.buffer.byteLength, packed.bytes, 'no hidden float32 copy');
    }
    assert.ok(tierBytes(n, 8) / (4 * n) < 0.26);
    assert.ok(tierBytes(n, 12) / (4 * n) < 0.38);
    assert.equal(tierBytes(n, 16) / (4 * n), 0.5);
    assert.equal(tierBytes(65, 12), 3 * 33 + 2);
    assert.equal(tierBytes(0, 8), 0);
    assert.throws(() => tierBytes(10, 4 as PrecisionTier), QkdError);
    assert.throws(() => tierBytes(-1, 8), QkdError);
  });

  it('restores from its bytes (checkpoint), including misaligned bf16 storage', () => {
    const src = gaussian(301, 10);
    for (const tier of TIERS) {
      const packed = PackedArray.encode(src, tier, new Rng(2));
      const copy = new Uint8Array(packed.bytes + 1);
      copy.set(packed.storage, 1);
      const restored = PackedArray.fromStorage(tier, src.length, copy.subarray(1));
      assert.deepEqual(restored.decode(), packed.decode());
      assert.throws(() => PackedArray.fromStorage(tier, src.length + 2, packed.storage), QkdError);
    }
  });

  it('rejects NaN and ±Inf with a QkdError naming the index, and length mismatches', () => {
    for (const tier of TIERS) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const src = gaussian(200, 11);
        src[70] = bad;
        assert.throws(
          () => PackedArray.encode(src, tier, new Rng(1)),
          (e: unknown) => e instanceof QkdError && e.code === 'ARGUMENT' && /index 70/.test(e.message),
        );
      }
      const packed = PackedArray.encode(gaussian(10, 12), tier, null);
      assert.throws(() => packed.decodeInto(new Float32Array(11)), QkdError);
      assert.throws(() => packed.encodeFrom(new Float32Array(9), null), QkdError);
    }
    assert.throws(() => PackedArray.encode(new Float32Array(4), 10 as PrecisionTier, null), QkdError);
  });
});

describe('format choice (documented in dbwa.ts)', () => {
  /** int8 with an absmax scale per block of 64, the rejected alternative. */
  function int8RoundTrip(src: Float32Array): Float32Array {
    const out = new Float32Array(src.length);
    for (let s = 0; s < src.length; s += 64) {
      let max = 0;
      for (let i = s; i < Math.min(src.length, s + 64); i++) max = Math.max(max, Math.abs(src[i]!));
      const step = max / 127;
      for (let i = s; i < Math.min(src.length, s + 64); i++) out[i] = step > 0 ? Math.round(src[i]! / step) * step : 0;
    }
    return out;
  }

  function relativeRms(src: Float32Array, out: Float32Array): number {
    let e = 0;
    let x = 0;
    for (let i = 0; i < src.length; i++) {
      e += (out[i]! - src[i]!) ** 2;
      x += src[i]! ** 2;
    }
    return Math.sqrt(e / x);
  }

  it('e4m3 costs ~4× int8 on Gaussian weights but keeps v-like data that int8 zeroes', () => {
    const w = gaussian(1 << 16, 13);
    const e4m3 = relativeRms(w, PackedArray.encode(w, 8, null).decode());
    const int8 = relativeRms(w, int8RoundTrip(w));
    assert.ok(e4m3 < 0.03 && int8 < 0.007, `e4m3 ${e4m3}, int8 ${int8}`);
    // 3.5 decades within each block (< 2^13): e4m3 keeps every entry to 2^-4 relative, int8 zeroes many.
    const v = logSpread(1 << 14, 14, 1e-10, 3.5, true);
    const packed = PackedArray.encode(v, 8, null).decode();
    const linear = int8RoundTrip(v);
    let zeroedInt8 = 0;
    for (let i = 0; i < v.length; i++) {
      assert.ok(Math.abs(packed[i]! - v[i]!) <= 2 ** -4 * v[i]!, `e4m3 [${i}]`);
      if (linear[i] === 0) zeroedInt8++;
    }
    assert.ok(zeroedInt8 > v.length / 5, `int8 zeroed only ${zeroedInt8}`);
  });
});

describe('assignTiers', () => {
  it('gives the top quarter 16 bits, the bottom quarter 8, the rest 12 (average 12)', () => {
    const scores = new Map(Array.from({ length: 8 }, (_, i) => [`t${i}`, i] as [string, number]));
    const tiers = assignTiers(scores);
    assert.deepEqual(
      [...tiers.entries()].sort(),
      [['t0', 8], ['t1', 8], ['t2', 12], ['t3', 12], ['t4', 12], ['t5', 12], ['t6', 16], ['t7', 16]],
    );
    assert.deepEqual([...assignTiers(new Map([['a', 1]])).values()], [12]);
    assert.deepEqual(Object.fromEntries(assignTiers(new Map([['a', 1], ['b', 2]]))), { a: 8, b: 16 });
    assert.deepEqual(Object.fromEntries(assignTiers(new Map([['b', 1], ['a', 1], ['c', 1]]))), { a: 16, b: 12, c: 8 });
    assert.equal(assignTiers(new Map()).size, 0);
    assert.throws(() => assignTiers(new Map([['a', NaN]])), QkdError);
  });
});
