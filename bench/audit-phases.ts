/**
 * Where `qkd audit`'s main thread spends its time: one audit-and-plan of
 * FILE (as `qkd audit FILE` runs it, without process start) with every
 * kernel call timed on the thread that makes it. The native kernels run on
 * the pool (both cores) while the main thread waits, so these are wall
 * times of the run; work in the background (reads, eigen-solves, the
 * plan's RTN errors) overlaps them and is not listed. bf16Gemm calls are
 * split by their shape. Then the cost of fresh memory on this machine:
 * allocating and first touching 512 MB with and without huge pages.
 *
 * Usage: npm run bench -- audit-phases FILE
 *   (e.g. /tmp/qkd-bench-audit-grid/llama3.2-1b/model-bf16.safetensors,
 *   which `npm run bench -- audit --grid --shapes llama3.2-1b --dtypes bf16 --keep` writes).
 * Last stdout line: JSON {"total_ms","outside_ms","kernels":[{"kernel","calls","ms"}],"first_touch_ms":{"small_pages","huge_pages"}}.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { kernels } from '../src/tensor/index.js';
import { adviseHugePages } from '../src/tensor/backend.js';
import { auditAndPlan } from '../src/swan/plan.js';
import { requireNative } from './_util.js';

if (process.argv[2] === '--first-touch') {
  // Run in a child process of its own: fresh memory there is fresh, and the audit's timing is not disturbed.
  requireNative();
  const bytes = 512 << 20;
  const held: Uint8Array[] = [];
  /** Milliseconds to allocate and first touch `bytes` (one write per 4 KB page); both buffers are kept, so neither reuses the other's pages. */
  const firstTouch = (huge: boolean): number => {
    const t0 = performance.now();
    let a = new Uint8Array(bytes);
    if (huge) a = adviseHugePages(a);
    for (let i = 0; i < a.length; i += 4096) a[i] = 1;
    held.push(a);
    return performance.now() - t0;
  };
  console.log(JSON.stringify({ small_pages: firstTouch(false), huge_pages: firstTouch(true) }));
  process.exit(0);
}
const file = process.argv[2];
if (file === undefined || !existsSync(file)) {
  console.error(`usage: npm run bench -- audit-phases FILE (${file ?? 'no file'} does not exist)`);
  process.exit(1);
}
requireNative();
const table = kernels() as unknown as Record<string, unknown>;
const spent = new Map<string, { calls: number; ms: number }>();
for (const name of Object.keys(table)) {
  const kernel = table[name];
  if (typeof kernel !== 'function') continue;
  table[name] = (...args: unknown[]) => {
    const start = process.hrtime.bigint();
    const result = (kernel as (...a: unknown[]) => unknown)(...args);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    let key = name;
    if (name === 'bf16Gemm') {
      const a = args[0] as { M: number; N: number; K: number; transA: boolean };
      key = `bf16Gemm ${a.transA ? 'Aᵀ' : 'A'} ${a.M}×${a.N}×${a.K}`;
    }
    const s = spent.get(key) ?? { calls: 0, ms: 0 };
    s.calls++;
    s.ms += ms;
    spent.set(key, s);
    return result;
  };
}
const start = process.hrtime.bigint();
auditAndPlan(file, { scheme: { groupSize: 128, symmetric: false }, budgetBits: 4.5 }, {});
const total = Number(process.hrtime.bigint() - start) / 1e6;
const rows = [...spent].map(([kernel, s]) => ({ kernel, calls: s.calls, ms: s.ms })).sort((a, b) => b.ms - a.ms);
const inside = rows.reduce((sum, r) => sum + r.ms, 0);
console.log(`qkd audit ${file}: ${(total / 1000).toFixed(2)} s (main thread, no process start)`);
for (const r of rows) if (r.ms >= 5) console.log(`  ${r.kernel.padEnd(34)} ${String(r.calls).padStart(6)} calls ${r.ms.toFixed(0).padStart(6)} ms`);
console.log(`  ${'outside the kernels (JavaScript)'.padEnd(34)} ${''.padStart(12)} ${(total - inside).toFixed(0).padStart(6)} ms`);

const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--first-touch'], { encoding: 'utf8' });
if (child.status !== 0) {
  console.error(child.stderr);
  process.exit(1);
}
const touch = JSON.parse(child.stdout.trim().split('\n').pop()!) as { small_pages: number; huge_pages: number };
console.log(`fresh memory, 512 MB allocated and first touched: ${touch.small_pages.toFixed(0)} ms with 4 KB pages, ${touch.huge_pages.toFixed(0)} ms with huge pages advised`);
console.log(JSON.stringify({ total_ms: total, outside_ms: total - inside, kernels: rows, first_touch_ms: touch }));
