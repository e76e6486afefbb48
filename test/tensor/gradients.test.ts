// The backward-rule table (src/tensor/gradients.ts): `record` only takes its
// names (a compile-time check), and here, that no entry is stale — every
// rule names an op some source file records.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BACKWARD_RULES } from '../../src/tensor/gradients.js';
import { UNARY } from '../../src/tensor/ops/elementwise.js';

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

describe('backward rules', () => {
  it('every rule names an op that is recorded', () => {
    const text = sources('src').map((f) => readFileSync(f, 'utf8')).join('\n');
    // Literal names, plus the ops recorded under a variable: the unary table, the binary kinds and the axis reductions.
    const recorded = new Set([...text.matchAll(/record\([^,]+,\s*'([A-Za-z0-9_]+)'/g)].map((m) => m[1]!));
    for (const name of Object.keys(UNARY)) recorded.add(name);
    for (const name of ['add', 'sub', 'mul', 'div', 'sum', 'mean']) recorded.add(name);
    const stale = Object.keys(BACKWARD_RULES).filter((op) => !recorded.has(op));
    assert.deepEqual(stale, []);
    for (const [op, rule] of Object.entries(BACKWARD_RULES)) assert.ok(rule.length >= 8, `${op} has no rule`);
  });
});
