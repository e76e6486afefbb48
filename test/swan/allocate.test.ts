import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { allocateBits, parsePlanJson, planCost, planDamage, uniformPlan, type AllocationTensor } from '../../src/swan/allocate.js';
import { packedBytes } from '../../src/quant/scheme.js';
import { QkdError } from '../../src/errors.js';

const scheme = { groupSize: 128, symmetric: false };
/** Errors that fall 2× per bit, like RTN on well-behaved weights, scaled by `hard`. */
const errors = (hard: number): Record<number, number> => ({ 2: 0.5 * hard, 3: 0.25 * hard, 4: 0.125 * hard, 8: 0.008 * hard, 16: 0.0003 });
const tensor = (name: string, rows: number, cols: number, composite: number, hard = 1): AllocationTensor => ({ name, rows, cols, composite, errors: errors(hard) });

describe('bit allocation', () => {
  it('never exceeds the budget and reports the packed bytes', () => {
    const ts = Array.from({ length: 12 }, (_, i) => tensor(`t${i}`, 256, 512 + 128 * (i % 3), (i % 5) / 5, 1 + (i % 4)));
    for (const budget of [2.3, 3, 4.1875, 4.5, 6, 16.0]) {
      const a = allocateBits(ts, { budgetBits: budget, scheme });
      assert.ok(a.avgBits <= budget + 1e-9, `${a.avgBits} > ${budget}`);
      const check = planCost(ts.map((t) => ({ name: t.name, rows: t.rows, cols: t.cols })), a.plan);
      assert.equal(check.bytes, a.bytes);
      assert.ok(Math.abs(check.avgBits - a.avgBits) < 1e-12);
    }
  });

  it('equal tensors at the uniform 4-bit budget all get 4 bits', () => {
    const ts = Array.from({ length: 6 }, (_, i) => tensor(`t${i}`, 128, 256, 0.3));
    const budget = (8 * packedBytes(128, 256, 4, scheme)) / (128 * 256);
    const a = allocateBits(ts, { budgetBits: budget, scheme });
    assert.deepEqual(Object.values(a.plan.bits), [4, 4, 4, 4, 4, 4]);
  });

  it('gives the extra bits to the sensitive and the hard tensors', () => {
    const ts = [tensor('calm', 256, 256, 0.1), tensor('sensitive', 256, 256, 0.9), tensor('hard', 256, 256, 0.1, 6), tensor('calm2', 256, 256, 0.1)];
    const budget = (8 * (2 * packedBytes(256, 256, 4, scheme) + 2 * packedBytes(256, 256, 8, scheme))) / (4 * 256 * 256);
    const a = allocateBits(ts, { budgetBits: budget, scheme });
    assert.ok(a.plan.bits.sensitive! > a.plan.bits.calm!, JSON.stringify(a.plan.bits));
    assert.ok(a.plan.bits.hard! > a.plan.bits.calm!, JSON.stringify(a.plan.bits));
    const uniform = allocateBits(ts, { budgetBits: budget, scheme, weighting: 'uniform' });
    assert.ok(uniform.plan.bits.hard! >= uniform.plan.bits.sensitive!, 'error-only weighting ignores the composite');
    // The plan's predicted damage beats uniform 4 bits at the same size.
    const four = uniformPlan(ts, 4, scheme);
    const damage4 = ts.reduce((s, t) => s + Math.max(0.02, t.composite) ** 4 * t.errors[four.bits[t.name]!]! ** 2, 0);
    assert.ok(a.predictedDamage < damage4);
  });

  it('planDamage scores any plan as the allocator does: its own plan at the predicted damage, a uniform one by hand', () => {
    const ts = Array.from({ length: 9 }, (_, i) => tensor(`t${i}`, 256, 256 + 128 * (i % 2), (i % 4) / 4, 1 + (i % 3)));
    for (const weighting of ['composite', 'uniform'] as const) {
      const a = allocateBits(ts, { budgetBits: 4.5, scheme, weighting, weightPower: 2 });
      assert.equal(planDamage(ts, a.plan, { weighting, weightPower: 2 }), a.predictedDamage);
    }
    const four = uniformPlan(ts, 4, scheme);
    const byHand = ts.reduce((s, t) => s + Math.max(0.02, t.composite) ** 4 * t.errors[4]! ** 2, 0);
    assert.ok(Math.abs(planDamage(ts, four) - byHand) <= 1e-15 * byHand);
    // The allocator's plan is no worse than uniform 4 bits at a budget that allows it.
    assert.ok(allocateBits(ts, { budgetBits: 4.5, scheme }).predictedDamage <= planDamage(ts, four));
    assert.throws(() => planDamage(ts, { scheme, bits: { t0: 4 } }), (e: unknown) => e instanceof QkdError && e.field === 't1');
  });

  it('refuses a budget below the smallest plan and unknown widths', () => {
    const ts = [tensor('a', 64, 64, 0.5)];
    assert.throws(() => allocateBits(ts, { budgetBits: 1, scheme }), (e: unknown) => e instanceof QkdError && e.field === 'budget');
    assert.throws(() => allocateBits(ts, { budgetBits: 4, scheme, choices: [5 as never] }), QkdError);
  });

  it('parses plan files with field-named errors', () => {
    const known = new Set(['a.weight', 'b.weight']);
    assert.deepEqual(parsePlanJson('{"a.weight": 8}', known, scheme, 'p.json').bits, { 'a.weight': 8 });
    assert.deepEqual(parsePlanJson('{"bits": {"b.weight": 3}}', known, scheme, 'p.json').bits, { 'b.weight': 3 });
    assert.throws(() => parsePlanJson('{"a.weight": 5}', known, scheme, 'p.json'), (e: unknown) => e instanceof QkdError && e.field === 'a.weight' && e.path === 'p.json');
    assert.throws(() => parsePlanJson('{"c.weight": 4}', known, scheme, 'p.json'), (e: unknown) => e instanceof QkdError && e.field === 'c.weight');
    assert.throws(() => parsePlanJson('[1]', known, scheme, 'p.json'), QkdError);
    assert.throws(() => parsePlanJson('{', known, scheme, 'p.json'), QkdError);
  });
});
