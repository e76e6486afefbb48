// Shared pieces of the Node addon tests: loading the built addon, running a
// test file once per ISA path (one child process each, QKD_ISA set), counting
// checks, and seeded random arrays.
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
// QKD_NATIVE_PATH (as for the TypeScript loader) tests another build.
export const addonPath = process.env.QKD_NATIVE_PATH ?? path.resolve(here, '../../build/Release/qkd_native.node');

// Without QKD_ISA set: re-runs `scriptUrl` once per path and exits with the
// combined status (never returns). With it set: returns.
export function runPerIsa(scriptUrl) {
  if (process.env.QKD_ISA !== undefined) return;
  let failed = 0;
  const paths = ['portable', 'avx2', 'avx512'];
  for (const isa of paths) {
    const child = spawnSync(process.execPath, [fileURLToPath(scriptUrl)], {
      env: { ...process.env, QKD_ISA: isa },
      encoding: 'utf8',
    });
    process.stdout.write(child.stdout);
    process.stderr.write(child.stderr);
    if (child.status !== 0) failed += 1;
  }
  console.log(`${paths.length - failed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

export function loadAddon() {
  return createRequire(import.meta.url)(addonPath);
}

let passed = 0;
let failed = 0;

export function check(ok, what) {
  if (ok) passed += 1;
  else {
    failed += 1;
    console.log(`FAIL [${process.env.QKD_ISA}] ${what}`);
  }
}

export function expectThrow(fn, pattern, what) {
  try {
    fn();
    check(false, `${what}: did not throw`);
  } catch (error) {
    check(error instanceof Error && pattern.test(error.message), `${what}: message was "${error.message}"`);
  }
}

// Prints the summary and exits with the status.
export function finish() {
  console.log(`[${process.env.QKD_ISA}] ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

let seed = 12345;
export function random() {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648 - 0.5;
}

export function randomArray(n, scale = 1) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 1) out[i] = random() * 2 * scale;
  return out;
}
