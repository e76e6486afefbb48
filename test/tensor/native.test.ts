// The native addon must load wherever it could be built (CI has a compiler);
// set QKD_ALLOW_NO_NATIVE=1 to run the suite on a machine without one.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nativeStatus, useBackend, currentBackend, withBackend, withFloat64, matmul, tensor } from '../../src/tensor/index.js';
import { loadNativeAddon } from '../../src/tensor/native/binding.js';
import { QkdError } from '../../src/errors.js';

const allowMissing = process.env.QKD_ALLOW_NO_NATIVE === '1';

describe('native addon', () => {
  it('loads (or the run explicitly allows the reference fallback)', () => {
    const status = nativeStatus();
    if (!allowMissing) assert.ok(status.loaded, `native addon did not load: ${status.reason}`);
    if (status.loaded) {
      assert.match(String(status.isa), /^(avx512|avx2|portable)$/);
      assert.ok((status.threads ?? 0) >= 1);
    }
  });

  it('a missing addon gives a clear reason, not an exception', () => {
    const saved = process.env.QKD_NATIVE_PATH;
    process.env.QKD_NATIVE_PATH = '/nonexistent/qkd_native.node';
    try {
      const { status, addon } = loadNativeAddon();
      assert.equal(addon, null);
      assert.equal(status.loaded, false);
      assert.match(status.reason, /does not exist.*build:native/);
    } finally {
      if (saved === undefined) delete process.env.QKD_NATIVE_PATH;
      else process.env.QKD_NATIVE_PATH = saved;
    }
  });

  it('rejects a too-short buffer with an error naming the function and argument', { skip: !nativeStatus().loaded && 'native addon not loaded' }, () => {
    const { addon } = loadNativeAddon();
    assert.throws(
      () => addon!.sgemm(1, 0, 0, 4, 4, 4, 1, new Float32Array(16), 4, 0, new Float32Array(16), 4, 0, 0, new Float32Array(10), 4, 0),
      (err: Error) => /sgemm/.test(err.message) && /\bC\b/.test(err.message),
    );
  });

  it('refuses float64 buffers (gradient-check mode is reference-only)', { skip: !nativeStatus().loaded && 'native addon not loaded' }, () => {
    withBackend('native', () => {
      assert.throws(() => withFloat64(() => matmul(tensor([1, 2], [1, 2]), tensor([1, 2], [2, 1]))), QkdError);
    });
  });

  it('useBackend rejects unknown names', () => {
    assert.throws(() => useBackend('gpu' as never), /unknown backend 'gpu'/);
    assert.ok(['reference', 'native'].includes(currentBackend()));
  });
});
