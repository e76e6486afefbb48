import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RawTensor, bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, fromBf16, fromF16, toBf16, toF16 } from '../../src/tensor/index.js';

describe('bf16', () => {
  it('encodes known values', () => {
    assert.equal(f32ToBf16Bits(1), 0x3f80);
    assert.equal(f32ToBf16Bits(-2), 0xc000);
    assert.equal(f32ToBf16Bits(0), 0);
    assert.equal(f32ToBf16Bits(Infinity), 0x7f80);
    assert.ok(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN))));
  });
  it('rounds to nearest even', () => {
    // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
    assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties up to even.
    assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
    assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  });
  it('round-trips every non-NaN bf16 pattern exactly', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const v = bf16BitsToF32(bits);
      if (Number.isNaN(v)) continue;
      assert.equal(f32ToBf16Bits(v), bits, `pattern ${bits.toString(16)}`);
    }
  });
  it('array conversion is within half an ulp (relative 2^-8)', () => {
    const src = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 10 ** ((i % 9) - 4));
    const back = fromBf16(toBf16(src));
    for (let i = 0; i < src.length; i++) assert.ok(Math.abs(back[i]! - src[i]!) <= Math.abs(src[i]!) * 2 ** -8, `${src[i]} → ${back[i]}`);
  });
});

describe('fp16', () => {
  it('encodes known values, subnormals, overflow and NaN', () => {
    assert.equal(f32ToF16Bits(1), 0x3c00);
    assert.equal(f32ToF16Bits(-2), 0xc000);
    assert.equal(f32ToF16Bits(65504), 0x7bff);
    assert.equal(f32ToF16Bits(65520), 0x7c00); // rounds to Inf
    assert.equal(f32ToF16Bits(2 ** -24), 0x0001); // smallest subnormal
    assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // tie → even (zero)
    assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002); // tie → even (2)
    assert.equal(f32ToF16Bits(-0), 0x8000);
    assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
    assert.equal(f16BitsToF32(0x7c00), Infinity);
  });
  it('round-trips every non-NaN fp16 pattern exactly', () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const v = f16BitsToF32(bits);
      if (Number.isNaN(v)) continue;
      assert.equal(f32ToF16Bits(v), bits, `pattern ${bits.toString(16)}`);
    }
  });
  it('array conversion of normal values is within relative 2^-11', () => {
    const src = Float32Array.from({ length: 1000 }, (_, i) => Math.cos(i) * 2 ** ((i % 20) - 10));
    const back = fromF16(toF16(src));
    for (let i = 0; i < src.length; i++) assert.ok(Math.abs(back[i]! - src[i]!) <= Math.abs(src[i]!) * 2 ** -11, `${src[i]} → ${back[i]}`);
  });
});

describe('RawTensor', () => {
  it('allocates integer storage', () => {
    assert.ok(new RawTensor('i8', [2, 3]).data instanceof Int8Array);
    assert.ok(new RawTensor('u8', [4]).data instanceof Uint8Array);
    assert.ok(new RawTensor('i32', [1]).data instanceof Int32Array);
    assert.equal(new RawTensor('bf16', [3, 3]).size, 9);
  });
  it('rejects data of the wrong size, naming the shape', () => {
    assert.throws(() => new RawTensor('i8', [2, 3], new Int8Array(5)), /RawTensor\(i8\): data has 5 elements but shape \[2,3\] needs 6/);
  });
});
