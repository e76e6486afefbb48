// DBWA's packed parameter store: training through it (no float32 arena)
// equals float32 training on tier-rounded values, op by op.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ParameterArena, UNLOADED, backward, Rng, tensor, sumAll, tapeLength } from '../../src/tensor/index.js';
import { Linear, RMSNorm } from '../../src/nn/layers.js';
import { AdamW } from '../../src/optim/adamw.js';
import { PackedArray, type PrecisionTier } from '../../src/sat/dbwa.js';
import { PackedParameterStore, restorePackedState } from '../../src/sat/packed-store.js';

const specs = [
  { name: 'a', shape: [6, 8] },
  { name: 'n', shape: [6] },
  { name: 'c', shape: [3, 6] },
];
const tiers = new Map<string, PrecisionTier>([
  ['a', 12],
  ['n', 16],
  ['c', 8],
]);
const round = (x: Float32Array, tier: PrecisionTier) => PackedArray.encode(x, tier, null).decode();

function makeArena(): ParameterArena {
  const arena = new ParameterArena(specs);
  const rng = new Rng(5);
  for (let i = 0; i < arena.size; i++) arena.data[i] = rng.normal() * 0.5;
  return arena;
}

/** loss = Σ linear(rmsnorm(linear(x, a)), c); every parameter used once. */
function lossOf(arena: ParameterArena, x: ReturnType<typeof tensor>) {
  const h = new Linear('a', arena.get('a')).forward(x);
  const y = new Linear('c', arena.get('c')).forward(new RMSNorm('n', arena.get('n'), 1e-5).forward(h));
  return sumAll(y);
}

describe('PackedParameterStore', () => {
  const x = tensor(Array.from({ length: 16 }, (_, i) => Math.sin(i)), [2, 8]);

  it('forward, backward and one AdamW update equal float32 on tier-rounded values, bit for bit (round to nearest)', () => {
    // Reference: float32 arena holding the tier-rounded weights; its gradients and update rounded to the tiers.
    const ref = makeArena();
    for (const e of ref.entries) e.tensor.data.set(round(e.tensor.data as Float32Array, tiers.get(e.name)!));
    backward(lossOf(ref, x));
    const refOpt = new AdamW(ref, { lr: 0.01 });
    const { c1, c2 } = refOpt.beginUpdate();
    const expected = new Map<string, { w: Float32Array; m: Float32Array; v: Float32Array; g: Float32Array }>();
    for (const e of ref.entries) {
      const tier = tiers.get(e.name)!;
      const g = round(e.tensor.grad as Float32Array, tier);
      const w = (e.tensor.data as Float32Array).slice();
      const m = new Float32Array(e.size);
      const v = new Float32Array(e.size);
      refOpt.updateSlice(e, w, g, m, v, 0.01, c1, c2);
      expected.set(e.name, { w: round(w, tier), m: round(m, tier), v: round(v, tier), g });
    }

    const arena = makeArena();
    const store = new PackedParameterStore(arena, tiers, () => null);
    assert.equal(arena.data.length, 0, 'the float32 arena is gone');
    assert.equal(arena.size, 48 + 6 + 18);
    for (const e of arena.entries) assert.equal(e.tensor.data, UNLOADED);
    store.zeroGrad();
    backward(lossOf(arena, x));
    assert.equal(tapeLength(), 0);
    for (const e of arena.entries) {
      assert.equal(e.tensor.grad, null, `${e.name}: no float32 gradient buffer after backward`);
      assert.equal(e.tensor.data, UNLOADED, `${e.name}: unloaded after backward`);
    }
    let norm2 = 0;
    for (const { g } of expected.values()) for (const v of g) norm2 += v * v;
    assert.ok(Math.abs(store.gradNorm() - Math.sqrt(norm2)) < 1e-9 * Math.sqrt(norm2));
    const opt = new AdamW(arena, { lr: 0.01, moments: false });
    store.update(opt, 0.01, 1);
    const saved = new Map(store.checkpointBytes().map(({ name, bytes }) => [name, bytes]));
    const restored = restorePackedState(store.layout(), (name) => saved.get(name)!, 'test');
    for (const e of arena.entries) {
      const want = expected.get(e.name)!;
      const got = restored.get(e.name)!;
      assert.deepEqual(got.w.decode(), want.w, `${e.name}: weights`);
      assert.deepEqual(got.m!.decode(), want.m, `${e.name}: m`);
      assert.deepEqual(got.v!.decode(), want.v, `${e.name}: v`);
      store.load(e.tensor);
      assert.deepEqual(e.tensor.data, want.w, `${e.name}: a load unpacks the updated weights`);
      store.unload(e.tensor);
    }
  });

  it('adds the contributions of a weight used twice, counts nested loads and restores from a checkpoint', () => {
    const arena = makeArena();
    const a0 = round(arena.get('a').data as Float32Array, 16);
    const store = new PackedParameterStore(arena, new Map([...tiers.keys()].map((k) => [k, 16 as PrecisionTier])), () => null);
    store.zeroGrad();
    const lin = new Linear('a', arena.get('a'));
    backward(sumAll(lin.forward(x)));
    backward(sumAll(lin.forward(x)));
    // Twice the gradient of Σ x·aᵀ: every row of a gets 2·Σ_b x[b, :]; doubling is exact in bf16.
    const once = new Float32Array(8);
    for (let b = 0; b < 2; b++) for (let j = 0; j < 8; j++) once[j]! += x.data[b * 8 + j]!;
    let norm2 = 0;
    for (let i = 0; i < 6; i++) for (let j = 0; j < 8; j++) norm2 += (2 * round(once, 16)[j]!) ** 2;
    assert.ok(Math.abs(store.gradNorm() - Math.sqrt(norm2)) < 1e-6 * Math.sqrt(norm2), `${store.gradNorm()} vs ${Math.sqrt(norm2)}`);
    const t = arena.get('a');
    store.load(t);
    store.load(t);
    store.unload(t);
    assert.deepEqual(t.data, a0, 'still loaded after the inner unload');
    store.unload(t);
    assert.equal(t.data, UNLOADED);
    assert.throws(() => store.unload(t), /not loaded/);
    const saved = new Map(store.checkpointBytes().map(({ name, bytes }) => [name, bytes]));
    assert.deepEqual([...saved.keys()], ['a.packed', 'n.packed', 'c.packed'], 'no moments before the first update');
    const again = new PackedParameterStore(makeArena(), new Map([...tiers.keys()].map((k) => [k, 16 as PrecisionTier])), () => null, restorePackedState(store.layout(), (n) => saved.get(n)!, 'ckpt'));
    const t2 = [...(again as unknown as { slots: Map<unknown, unknown> }).slots.keys()][0] as typeof t;
    again.load(t2);
    assert.deepEqual(t2.data, a0);
    again.unload(t2);
    assert.throws(() => restorePackedState(store.layout(), (n) => (n === 'n.packed' ? new Uint8Array(3) : saved.get(n)!), 'ckpt/recipe.safetensors'), /'n\.packed' has 3 bytes.*ckpt\/recipe\.safetensors.*12 bytes/);
  });

  it('a gradient that cannot be packed names its parameter and leaves nothing loaded or half-accumulated', () => {
    const arena = makeArena();
    const store = new PackedParameterStore(arena, tiers, () => null);
    store.zeroGrad();
    const bad = tensor([Infinity, 1, 1, 1, 1, 1, 1, 1], [1, 8]);
    assert.throws(() => backward(sumAll(new Linear('a', arena.get('a')).forward(bad))), /gradient of 'a' cannot be packed.*not finite/);
    const a = arena.get('a');
    assert.equal(a.data, UNLOADED);
    assert.equal(a.grad, null);
    store.load(a); // a fresh load unpacks (the failed backward did not leave a load open)
    assert.deepEqual(a.data, round(makeArena().get('a').data as Float32Array, 12));
    store.unload(a);
  });

  it('loads a frozen packed weight for a backward that reads it (the input gradient), without taking a gradient for it', () => {
    const arena = makeArena();
    const store = new PackedParameterStore(arena, tiers, () => null);
    store.zeroGrad();
    const a = arena.get('a');
    a.requiresGrad = false;
    const xs = tensor(Array.from(x.data), [2, 8], true);
    backward(sumAll(new Linear('a', a).forward(xs)));
    // d/dx Σ x·aᵀ = column sums of a, the same for both rows.
    const w = round(makeArena().get('a').data as Float32Array, 12);
    for (let j = 0; j < 8; j++) {
      let col = 0;
      for (let i = 0; i < 6; i++) col += w[i * 8 + j]!;
      assert.ok(Math.abs(xs.grad![j]! - col) < 1e-5 && Math.abs(xs.grad![8 + j]! - col) < 1e-5, `column ${j}`);
    }
    assert.equal(a.data, UNLOADED);
    assert.equal(store.gradNorm(), 0, 'no gradient for the frozen weight');
  });

  it('re-packs weights and moments when a re-profile moves a tier', () => {
    const arena = makeArena();
    const store = new PackedParameterStore(arena, tiers, () => null);
    store.zeroGrad();
    backward(lossOf(arena, x));
    store.update(new AdamW(arena, { lr: 0.01, moments: false }), 0.01, 1);
    const t = arena.get('a');
    store.load(t);
    const before = (t.data as Float32Array).slice();
    store.unload(t);
    store.setTiers(new Map([...tiers, ['a', 8]]));
    assert.equal(store.tierOf('a'), 8);
    store.load(t);
    assert.deepEqual(t.data, round(before, 8));
    store.unload(t);
    assert.ok(store.residentBytes() > 0);
  });
});
