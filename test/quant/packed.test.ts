// Bit-packing of quantization codes (quant/packed.ts): the documented
// LSB-first layout by hand, round trips at every width, byte counts that
// agree with packedBytes, and errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { packCodes, packedRowBytes, parseQuantizationConfig, unpackCodes } from '../../src/quant/packed.js';
import { packedTensorsToWrite } from '../../src/models/packed-tensors.js';
import { rtnQuantize } from '../../src/quant/rtn.js';
import { packedBytes, type QuantScheme } from '../../src/quant/scheme.js';
import { QkdError } from '../../src/errors.js';
import { Rng, BYTES_PER_ELEMENT, type StorageArrayMap, type StorageDType } from '../../src/tensor/index.js';

function randomCodes(n: number, bits: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n }, () => rng.int(2 ** bits));
}

describe('packCodes / unpackCodes', () => {
  it('lays codes out LSB first, each row its own bitstream (by hand)', () => {
    // 4-bit: code 0 in the low nibble of byte 0
    assert.deepEqual(Array.from(packCodes(Uint8Array.from([1, 2, 3]), 1, 3, 4)), [0x21, 0x03]);
    // 3-bit: 5 = 101, 6 = 110, 7 = 111 → stream bits 101 011 111 (LSB first) → byte0 = 0b11_110_101, byte1 = 0b1
    assert.deepEqual(Array.from(packCodes(Uint8Array.from([5, 6, 7]), 1, 3, 3)), [0b11110101, 0b1]);
    // 2-bit, two rows of 3 codes: each row starts on a fresh byte
    assert.deepEqual(Array.from(packCodes(Uint8Array.from([1, 2, 3, 3, 0, 1]), 2, 3, 2)), [0b111001, 0b010011]);
    // 8-bit is the identity
    assert.deepEqual(Array.from(packCodes(Uint8Array.from([0, 255, 7]), 1, 3, 8)), [0, 255, 7]);
  });

  for (const bits of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`round-trips ${bits}-bit codes with odd row lengths`, () => {
      for (const [rows, cols] of [[1, 1], [3, 7], [5, 13], [4, 64], [2, 0]] as const) {
        const codes = randomCodes(rows * cols, bits, bits * 100 + cols);
        const packed = packCodes(codes, rows, cols, bits);
        assert.equal(packed.length, rows * packedRowBytes(cols, bits));
        assert.equal(packedRowBytes(cols, bits), Math.ceil((cols * bits) / 8));
        assert.deepEqual(unpackCodes(packed, rows, cols, bits), codes);
        // unused high bits of each row's last byte are zero
        const spare = packedRowBytes(cols, bits) * 8 - cols * bits;
        for (let r = 0; r < rows && cols > 0; r++) assert.equal(packed[(r + 1) * packedRowBytes(cols, bits) - 1]! >> (8 - spare), 0);
      }
    });
  }

  it('packedBytes equals the bytes actually written (qweight + scales + zeros)', () => {
    const rng = new Rng(5);
    const rows = 6;
    const cols = 200;
    const w = Float32Array.from({ length: rows * cols }, () => rng.normal());
    for (const bits of [2, 3, 4, 8]) {
      for (const scheme of [{ groupSize: 0, symmetric: false }, { groupSize: 64, symmetric: false }, { groupSize: 32, symmetric: true }, { groupSize: 0, symmetric: true, perTensor: true }] as QuantScheme[]) {
        const tensors = packedTensorsToWrite('w', rtnQuantize(w, rows, cols, bits, scheme));
        let bytes = 0;
        for (const t of tensors) {
          const data = (typeof t.data === 'function' ? t.data() : t.data) as StorageArrayMap[StorageDType];
          assert.equal(data.length, t.shape.reduce((a, b) => a * b, 1), `${t.name} shape`);
          bytes += data.length * BYTES_PER_ELEMENT[t.dtype];
        }
        assert.equal(bytes, packedBytes(rows, cols, bits, scheme), `${bits} bits ${JSON.stringify(scheme)}`);
        assert.deepEqual(tensors.map((t) => t.name), scheme.symmetric ? ['w.qweight', 'w.scales'] : ['w.qweight', 'w.scales', 'w.zeros']);
      }
    }
  });

  it('refuses codes that do not fit and buffers of the wrong size', () => {
    assert.throws(() => packCodes(Uint8Array.from([4]), 1, 1, 2), (e: unknown) => e instanceof QkdError && e.field === 'codes');
    assert.throws(() => packCodes(Uint8Array.from([1, 2]), 1, 3, 2), (e: unknown) => e instanceof QkdError && e.field === 'codes');
    assert.throws(() => unpackCodes(new Uint8Array(3), 2, 5, 3), (e: unknown) => e instanceof QkdError && e.field === 'packed bytes');
    assert.throws(() => packCodes(new Uint8Array(1), 1, 1, 9), (e: unknown) => e instanceof QkdError && e.field === 'bits');
  });
});

describe('parseQuantizationConfig', () => {
  const good = { quant_method: 'qkd', format_version: 1, group_size: 64, symmetric: false, tensors: { a: { bits: 4 }, b: { bits: 16, group_size: 0, symmetric: true } } };
  it('reads per-tensor entries with the top-level scheme as default', () => {
    const specs = parseQuantizationConfig(good, 'config.json');
    assert.deepEqual(specs.get('a'), { bits: 4, groupSize: 64, symmetric: false, perTensor: false });
    assert.deepEqual(specs.get('b'), { bits: 16, groupSize: 0, symmetric: true, perTensor: false });
  });
  it('names the bad field', () => {
    const cases: [unknown, string][] = [
      [{ ...good, quant_method: 'gptq' }, 'quantization_config.quant_method'],
      [{ ...good, format_version: 2 }, 'quantization_config.format_version'],
      [{ ...good, tensors: [] }, 'quantization_config.tensors'],
      [{ ...good, tensors: { a: { bits: 5 } } }, 'quantization_config.tensors.a.bits'],
      [{ ...good, tensors: { a: { bits: 4, group_size: -1 } } }, 'quantization_config.tensors.a.group_size'],
      [{ ...good, symmetric: 'no', tensors: { a: { bits: 4 } } }, 'quantization_config.tensors.a.symmetric'],
    ];
    for (const [value, field] of cases) {
      assert.throws(() => parseQuantizationConfig(value, 'config.json'), (e: unknown) => e instanceof QkdError && e.field === field && e.path === 'config.json', field);
    }
  });
});
