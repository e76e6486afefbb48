// The transpose kernel: native = reference on odd sizes (16×16 tiles and
// their edges, the threaded bands), and the frozen bf16 Linear (the bf16 GEMM reading x and writing y in
// their own layouts).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, kernels, nativeStatus, noGrad, withBackend } from '../../src/tensor/index.js';
import { linearBf16, linear } from '../../src/tensor/ops/matmul.js';
import { fromBf16, toBf16 } from '../../src/tensor/dtype.js';

describe('transpose', () => {
  const loaded = nativeStatus().loaded;
  for (const [rows, cols] of [[1, 1], [1, 37], [37, 1], [16, 16], [17, 33], [300, 257], [1024, 96]] as const) {
    it(`native = reference: ${rows}×${cols}`, { skip: !loaded && 'native addon not built' }, () => {
      const src = Float32Array.from({ length: rows * cols }, (_, i) => i + 0.5);
      const want = new Float32Array(rows * cols);
      withBackend('reference', () => kernels().transpose(src, want, rows, cols));
      assert.equal(want[1 * rows + 0], cols > 1 ? src[1] : want[1 * rows + 0]);
      const got = new Float32Array(rows * cols).fill(NaN);
      withBackend('native', () => kernels().transpose(src, got, rows, cols));
      assert.deepEqual(got, want);
    });
  }
  it('refuses overlapping buffers, naming them', { skip: !loaded && 'native addon not built' }, () => {
    const buf = new Float32Array(64);
    assert.throws(() => withBackend('native', () => kernels().transpose(buf.subarray(0, 32), buf.subarray(16, 48), 4, 8)), /src|dst/);
  });
  it('linearBf16 = the float32 Linear of the bf16-rounded weights and input (bias included)', () => {
    const rng = new Rng(3);
    const [rows, inF, outF] = [23, 40, 19];
    const x = new Tensor([rows, inF], Float32Array.from({ length: rows * inF }, () => rng.normal()));
    const w = Float32Array.from({ length: outF * inF }, () => rng.normal());
    const bias = new Tensor([outF], Float32Array.from({ length: outF }, () => rng.normal()));
    const w16 = toBf16(w);
    const y = noGrad(() => linearBf16(x, w16, outF, inF, bias));
    const xr = new Tensor([rows, inF], fromBf16(toBf16(x.data as Float32Array)));
    const want = noGrad(() => linear(xr, new Tensor([outF, inF], fromBf16(w16)), bias));
    for (let i = 0; i < y.size; i++) assert.ok(Math.abs(y.data[i]! - want.data[i]!) <= 1e-4 * (1 + Math.abs(want.data[i]!)), `${i}: ${y.data[i]} vs ${want.data[i]}`);
  });
});
