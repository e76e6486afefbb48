// DBWA's codec kernels: the native addon packs and unpacks bit for bit like
// the TypeScript reference, for every tier, both roundings, and inputs that
// reach the subnormal, saturating and non-finite paths.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, nativeStatus, withBackend, kernels } from '../../src/tensor/index.js';
import { referenceKernels } from '../../src/tensor/reference/kernels.js';
import { tierBytes, type PrecisionTier } from '../../src/sat/dbwa.js';

const skipNative = { skip: !nativeStatus().loaded && 'native addon not loaded' };
const TIERS: PrecisionTier[] = [8, 12, 16];

/** Values over many decades in blocks of differing scale, with zeros, float32 subnormals and values near FLT_MAX. */
function hardValues(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const block = Math.floor(i / 64);
    const kind = block % 8;
    const x = rng.normal();
    if (kind === 0) out[i] = x * 0.02;
    else if (kind === 1) out[i] = x * 10 ** (rng.uniform() * 12 - 10); // 12 decades inside one block
    else if (kind === 2) out[i] = x * 1e-39; // float32 subnormals
    else if (kind === 3) out[i] = Math.max(-1.1, Math.min(1.1, x)) * 3e38; // near FLT_MAX (3.4e38): the saturating shift
    else if (kind === 4) out[i] = i % 3 === 0 ? 0 : -x * 1e-3;
    else if (kind === 5) out[i] = x * 2 ** -120;
    else if (kind === 6) out[i] = x;
    else out[i] = (i % 2 ? -1 : 1) * (1 + (i % 5) / 5) * 2 ** -(i % 64) * (i % 64 === 0 ? 1.9 : 1); // every binade below the block max
  }
  return out;
}

function encodeWith(backend: 'reference' | 'native', tier: PrecisionTier, src: Float32Array, seed: Uint32Array | null): { storage: Uint8Array; bad: number } {
  const storage = new Uint8Array(tierBytes(src.length, tier)).fill(0xa5);
  const bad = withBackend(backend, () => kernels().dbwaEncode(tier, src, storage, seed));
  return { storage, bad };
}

describe('DBWA codec kernels', () => {
  for (const tier of TIERS) {
    // 200,001 values span several native tasks of 16 chunks × 4096 (threads, and the random stream jumped per task).
    for (const n of [0, 1, 63, 65, 4097, 9000 + (tier === 12 ? 1 : 0), 200_001]) {
      it(`native equals reference: tier ${tier}, ${n} values, nearest and stochastic`, skipNative, () => {
        const src = hardValues(n, tier * 1000 + n);
        for (const seed of [null, Uint32Array.of(1, 2, 3, 4), Uint32Array.of(0xdeadbeef, 0, 0x12345678, 0xffffffff)]) {
          const ref = encodeWith('reference', tier, src, seed && seed.slice());
          const nat = encodeWith('native', tier, src, seed && seed.slice());
          assert.equal(nat.bad, -1);
          assert.equal(ref.bad, -1);
          assert.deepEqual(nat.storage, ref.storage, `codes and scales (seed ${seed ? [...seed].join(',') : 'none'})`);
          const a = new Float32Array(n);
          const b = new Float32Array(n);
          referenceKernels.dbwaDecode(tier, ref.storage, a);
          withBackend('native', () => kernels().dbwaDecode(tier, ref.storage, b));
          assert.deepEqual(new Uint32Array(b.buffer), new Uint32Array(a.buffer), 'decoded bits');
        }
      });
    }
  }

  it('both report the first non-finite value', skipNative, () => {
    for (const tier of TIERS) {
      const src = hardValues(300_000, 5);
      src[230_130] = NaN; // in a later native task than the next one
      src[130_000] = Infinity;
      src[200_000] = -Infinity;
      for (const backend of ['reference', 'native'] as const) {
        assert.equal(encodeWith(backend, tier, src, Uint32Array.of(7, 7, 7, 7)).bad, 130_000, `${backend}, tier ${tier}, across tasks`);
      }
    }
    for (const tier of TIERS) {
      const src = hardValues(300, 5);
      src[130] = NaN;
      src[200] = Infinity;
      for (const backend of ['reference', 'native'] as const) {
        assert.equal(encodeWith(backend, tier, src, null).bad, 130, `${backend}, tier ${tier}`);
        assert.equal(encodeWith(backend, tier, src, Uint32Array.of(9, 9, 9, 9)).bad, 130, `${backend}, tier ${tier}, stochastic`);
      }
    }
  });

  it('the reference checks the tier and the storage size too', () => {
    const src = new Float32Array(100);
    assert.throws(() => referenceKernels.dbwaEncode(10, src, new Uint8Array(200), null), /tier must be 8, 12 or 16/);
    assert.throws(() => referenceKernels.dbwaEncode(12, src, new Uint8Array(151), null), /151 bytes, needs at least 152/);
    assert.throws(() => referenceKernels.dbwaDecode(16, new Uint8Array(199), src), /199 bytes, needs at least 200/);
  });

  it('native checks the tier, the storage size and the seed', skipNative, () => {
    const src = new Float32Array(100);
    withBackend('native', () => {
      assert.throws(() => kernels().dbwaEncode(10, src, new Uint8Array(200), null), /tier must be 8, 12 or 16/);
      assert.throws(() => kernels().dbwaEncode(12, src, new Uint8Array(tierBytes(100, 12) - 1), null), /storage \(Uint8Array\) has 151 elements, needs at least 152/);
      assert.throws(() => kernels().dbwaEncode(8, src, new Uint8Array(200), Uint32Array.of(0, 0, 0, 0)), /must not be all zero/);
      assert.throws(() => kernels().dbwaEncode(8, src, new Uint8Array(200), new Uint32Array(3)), /seed/);
      assert.throws(() => kernels().dbwaDecode(16, new Uint8Array(199), src), /storage/);
    });
  });
});
