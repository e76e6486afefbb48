// The frozen bf16 Linear: the bf16 GEMM reads x and writes y in their own layouts (transB, transC).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Tensor, noGrad } from '../../src/tensor/index.js';
import { linearBf16, linear } from '../../src/tensor/ops/matmul.js';
import { fromBf16, toBf16 } from '../../src/tensor/dtype.js';

describe('linearBf16', () => {
  // Odd sizes, and one spanning several 14-row tiles, 32-column panels and 16-pair packing steps.
  for (const [rows, inF, outF] of [[23, 40, 19], [70, 301, 45]] as const) {
    it(`= the float32 Linear of the bf16-rounded weights and input (bias included): ${rows}×${inF} → ${outF}`, () => {
      const rng = new Rng(3);
      const x = new Tensor([rows, inF], Float32Array.from({ length: rows * inF }, () => rng.normal()));
      const w = Float32Array.from({ length: outF * inF }, () => rng.normal());
      const bias = new Tensor([outF], Float32Array.from({ length: outF }, () => rng.normal()));
      const w16 = toBf16(w);
      const y = noGrad(() => linearBf16(x, w16, outF, inF, bias));
      const xr = new Tensor([rows, inF], fromBf16(toBf16(x.data as Float32Array)));
      const want = noGrad(() => linear(xr, new Tensor([outF, inF], fromBf16(w16)), bias));
      for (let i = 0; i < y.size; i++) assert.ok(Math.abs(y.data[i]! - want.data[i]!) <= 1e-4 * (1 + Math.abs(want.data[i]!)), `${i}: ${y.data[i]} vs ${want.data[i]}`);
    });
  }
});
