// The native kernels are declared once (native/kernels.mjs); the C++ entry
// points, the addon's TypeScript type and native/README.md's table are
// generated from it (scripts/gen-kernels.mjs). Drift in the bodies or the
// TypeScript callers is a compile error; this test covers the rest: a
// generated file older than the declaration, a built addon that exports
// something else, and a Kernels member with no reference.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { referenceKernels } from '../../src/tensor/reference/kernels.js';
import { loadNativeAddon } from '../../src/tensor/native/binding.js';
import { KERNEL_CONCERNS, KERNEL_NAMES } from '../../src/tensor/native/addon.generated.js';

describe('native kernel declarations', () => {
  it('the generated files are those of the declaration (npm run gen:kernels)', () => {
    const r = spawnSync(process.execPath, ['scripts/gen-kernels.mjs', '--check'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('the generator refuses a malformed declaration, naming the kernel and the argument', async () => {
    const { mkdtempSync, mkdirSync, writeFileSync, copyFileSync, readFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'qkd-gen-'));
    try {
      mkdirSync(join(dir, 'scripts'));
      mkdirSync(join(dir, 'native'));
      copyFileSync('scripts/gen-kernels.mjs', join(dir, 'scripts', 'gen-kernels.mjs'));
      const bad = readFileSync('native/kernels.mjs', 'utf8').replace("args: 'dst: f32, src: f32, n: size'", "args: 'dst: f32, src: float32, n: size'");
      writeFileSync(join(dir, 'native', 'kernels.mjs'), bad);
      const r = spawnSync(process.execPath, [join(dir, 'scripts', 'gen-kernels.mjs'), '--check'], { encoding: 'utf8' });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /kernel "addInto": argument src has kind float32/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every kernel belongs to a concern, and every Kernels member has a TypeScript reference', () => {
    assert.ok(KERNEL_NAMES.length > 30 && KERNEL_NAMES.includes('sgemm'));
    for (const name of KERNEL_NAMES) assert.ok(KERNEL_CONCERNS[name] !== undefined, name);
    for (const [name, fn] of Object.entries(referenceKernels)) if (name !== 'name') assert.equal(typeof fn, 'function', name);
  });

  it('the built addon exports exactly the declared kernels', { skip: loadNativeAddon().addon === null && 'native addon not built' }, () => {
    const addon = loadNativeAddon().addon as unknown as Record<string, unknown>;
    const exported = Object.keys(addon).filter((k) => typeof addon[k] === 'function').sort();
    assert.deepEqual(exported, [...KERNEL_NAMES].sort());
  });
});
