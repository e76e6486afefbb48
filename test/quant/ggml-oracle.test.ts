// qkd's ggml block formats against llama.cpp itself: the prebuilt
// libggml-base.so of @node-llama-cpp/linux-x64 (a devDependency) quantizes
// and dequantizes the same rows through a small C++ harness compiled here
// (test/quant/ggml_oracle.cc). Encoded bytes must be identical, and our
// decoder must give ggml's floats bit for bit: both the TypeScript
// definitions and the native codec (when the addon is built).
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { GGML_WRITABLE, formatBytes, ggmlFormat, writableFormat } from '../../src/quant/ggml-formats.js';
import { Rng } from '../../src/tensor/index.js';
import { nativeStatus, withBackend } from '../../src/tensor/backend.js';

const require = createRequire(import.meta.url);

function ggmlLibrary(): string {
  // The package exports only dist/index.js; the libraries sit beside dist/.
  const root = dirname(dirname(require.resolve('@node-llama-cpp/linux-x64')));
  const lib = join(root, 'bins', 'linux-x64', 'libggml-base.so');
  assert.ok(existsSync(lib), `${lib} is missing: npm ci installs @node-llama-cpp/linux-x64`);
  return lib;
}

let oracle = '';
let lib = '';

function run(mode: 'quantize' | 'dequantize', type: string, count: number, input: Uint8Array): Buffer {
  const r = spawnSync(oracle, [lib, mode, type, String(count)], { input, maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout;
}

/** The oracle's name for a format: the suffix of its ggml row functions. */
const ORACLE_NAME: Record<string, string> = { F16: 'fp16', BF16: 'bf16', Q4_0: 'q4_0', Q4_1: 'q4_1', Q5_0: 'q5_0', Q5_1: 'q5_1', Q8_0: 'q8_0', Q2_K: 'q2_K', Q3_K: 'q3_K', Q4_K: 'q4_K', Q5_K: 'q5_K', Q6_K: 'q6_K' };

/** Rows that stress the fitting: Gaussian, heavy-tailed, outliers, constant, zero, tiny, huge, one non-zero per block, ties. */
function testRows(): Float32Array {
  const rng = new Rng(20261202);
  const n = 256 * 48;
  const x = new Float32Array(n);
  for (let block = 0; block < 48; block++) {
    const at = block * 256;
    const kind = block % 12;
    for (let i = 0; i < 256; i++) {
      const g = rng.normal();
      let v: number;
      switch (kind) {
        case 0: v = g * 0.02; break; // a typical weight row
        case 1: v = g / Math.max(0.05, Math.abs(rng.normal())); break; // heavy tails (Cauchy-like)
        case 2: v = i % 37 === 5 ? 40 * g : 0.01 * g; break; // outliers
        case 3: v = 0.125; break; // constant
        case 4: v = 0; break; // all zero
        case 5: v = g * 1e-20; break; // tiny
        case 6: v = g * 3e3; break; // large
        case 7: v = i % 32 === 7 ? -1.5 : 0; break; // one non-zero per 32
        case 8: v = Math.round(g * 4) / 4; break; // many exact ties
        case 9: v = Math.abs(g) * 0.1; break; // all positive
        case 10: v = -Math.abs(g) * 0.1; break; // all negative
        default: v = (i - 128) / 64; // a ramp
      }
      x[at + i] = v;
    }
  }
  return x;
}

describe('ggml formats against llama.cpp (libggml-base from @node-llama-cpp/linux-x64)', () => {
  before(() => {
    lib = ggmlLibrary();
    const dir = mkdtempSync(join(tmpdir(), 'qkd-oracle-'));
    oracle = join(dir, 'ggml_oracle');
    const cc = spawnSync('c++', ['-O1', '-o', oracle, 'test/quant/ggml_oracle.cc', '-ldl'], { encoding: 'utf8' });
    assert.equal(cc.status, 0, `compiling the oracle: ${cc.stderr}`);
  });

  const x = testRows();
  const input = new Uint8Array(x.buffer);

  const paths: { label: string; backend: 'reference' | 'native' }[] = [{ label: 'TypeScript', backend: 'reference' }];
  if (nativeStatus().loaded) paths.push({ label: 'native', backend: 'native' });
  for (const name of GGML_WRITABLE.filter((n) => n !== 'F32')) {
    it(`${name}: identical bytes from the encoder, identical floats from the decoder (${paths.map((p) => p.label).join(' and ')})`, () => {
      const t = writableFormat(name);
      const size = formatBytes(t, x.length);
      const theirs = run('quantize', ORACLE_NAME[name]!, x.length, input).subarray(0, size);
      const decodedTheirs = new Float32Array(new Uint8Array(run('dequantize', ORACLE_NAME[name]!, x.length, theirs)).buffer);
      for (const path of paths) {
        withBackend(path.backend, () => {
          const ours = t.encode(x);
          assert.equal(ours.length, size);
          const firstDiff = ours.findIndex((b, i) => b !== theirs[i]);
          assert.equal(firstDiff, -1, `${name} (${path.label}): first differing byte ${firstDiff} (block ${Math.floor(firstDiff / t.blockBytes)}): ours ${ours[firstDiff]}, ggml ${theirs[firstDiff]}`);
          const decodedOurs = t.decode(theirs, x.length);
          const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
          const a = bits(decodedOurs);
          const b = bits(decodedTheirs);
          const diff = a.findIndex((v, i) => v !== b[i]);
          assert.equal(diff, -1, `${name} (${path.label}): decoded element ${diff}: ours ${decodedOurs[diff]}, ggml ${decodedTheirs[diff]}`);
        });
      }
    });
  }

  it('covers every format the issue names', () => {
    for (const name of ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K']) {
      assert.ok(GGML_WRITABLE.includes(name), name);
      assert.ok(ggmlFormat(name)?.decode, name);
    }
  });
});
