import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeQ4_0 as dequantizeQ4_0, decodeQ8_0 as dequantizeQ8_0, encodeQ4_0 as quantizeQ4_0, encodeQ8_0 as quantizeQ8_0 } from '../../src/quant/ggml-legacy.js';
import { openGguf } from '../../src/io/gguf-reader.js';
import { writeGguf, type GgufWriteType } from '../../src/io/gguf-writer.js';
import type { GgufValue } from '../../src/io/gguf-types.js';
import { ggufToHfName, hfToGgufName } from '../../src/io/gguf-names.js';
import { QkdError } from '../../src/errors.js';
import { GGML_WRITABLE, roundTrip } from '../../src/quant/ggml-formats.js';
import { Rng } from '../../src/tensor/random.js';
import { nativeStatus } from '../../src/tensor/backend.js';
import { f16BitsToF32, f32ToF16Bits, fromBf16, fromF16, toBf16, toF16 } from '../../src/tensor/dtype.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-gguf-'));

/** Little-endian bytes assembled field by field from the format description (independent of the writer). */
class Bytes {
  private readonly bytes: number[] = [];
  get length(): number {
    return this.bytes.length;
  }
  raw(values: ArrayLike<number>): this {
    for (let i = 0; i < values.length; i++) this.bytes.push(values[i]! & 0xff);
    return this;
  }
  u8(v: number): this {
    return this.raw([v]);
  }
  u16(v: number): this {
    return this.raw([v, v >>> 8]);
  }
  u32(v: number): this {
    return this.raw([v, v >>> 8, v >>> 16, v >>> 24]);
  }
  u64(v: bigint | number): this {
    let x = BigInt.asUintN(64, BigInt(v));
    for (let i = 0; i < 8; i++, x >>= 8n) this.bytes.push(Number(x & 0xffn));
    return this;
  }
  f32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    return this.raw(b);
  }
  f64(v: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    return this.raw(b);
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    return this.u64(b.length).raw(b);
  }
  pad(alignment: number): this {
    while (this.bytes.length % alignment !== 0) this.bytes.push(0);
    return this;
  }
  buffer(): Buffer {
    return Buffer.from(this.bytes);
  }
}

/** GGUF value type ids and ggml type ids, from the specification. */
const T = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;
const G = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8, Q8_1: 9, Q4_K: 12, BF16: 30 } as const;

function header(b: Bytes, tensors: number | bigint, kvs: number | bigint, version = 3): Bytes {
  return b.raw(Buffer.from('GGUF', 'latin1')).u32(version).u64(tensors).u64(kvs);
}

function tensorInfo(b: Bytes, name: string, ne: (number | bigint)[], type: number, offset: number | bigint): Bytes {
  b.str(name).u32(ne.length);
  for (const d of ne) b.u64(d);
  return b.u32(type).u64(offset);
}

function write(name: string, bytes: Buffer | Bytes): string {
  const path = join(dir, name);
  writeFileSync(path, bytes instanceof Bytes ? bytes.buffer() : bytes);
  return path;
}

function randomValues(seed: number, n: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

describe('GGUF reader: a file assembled by hand', () => {
  /** Metadata of every value type (incl. arrays and a nested array), alignment 64, F32 / Q8_0 / F16 tensors. */
  function handFile(version: number): Bytes {
    const b = header(new Bytes(), 3, 17, version);
    b.str('general.architecture').u32(T.string).str('llama');
    b.str('general.alignment').u32(T.u32).u32(64);
    b.str('t.u8').u32(T.u8).u8(200);
    b.str('t.i8').u32(T.i8).u8(-5);
    b.str('t.u16').u32(T.u16).u16(60000);
    b.str('t.i16').u32(T.i16).u16(-30000);
    b.str('t.u32').u32(T.u32).u32(4_000_000_000);
    b.str('t.i32').u32(T.i32).u32(-2_000_000_000);
    b.str('t.f32').u32(T.f32).f32(1.5);
    b.str('t.bool').u32(T.bool).u8(1);
    b.str('t.u64').u32(T.u64).u64(1n << 60n);
    b.str('t.i64').u32(T.i64).u64(-(1n << 40n));
    b.str('t.f64').u32(T.f64).f64(Math.PI);
    b.str('t.strings').u32(T.array).u32(T.string).u64(3).str('a').str('bé').str('');
    b.str('t.i32s').u32(T.array).u32(T.i32).u64(3).u32(1).u32(-2).u32(3);
    b.str('t.nested').u32(T.array).u32(T.array).u64(2).u32(T.u8).u64(2).u8(1).u8(2).u32(T.u8).u64(1).u8(3);
    b.str('t.bools').u32(T.array).u32(T.bool).u64(2).u8(0).u8(1);
    tensorInfo(b, 'token_embd.weight', [4, 3], G.F32, 0); // 48 bytes → next at 64
    tensorInfo(b, 'blk.0.attn_q.weight', [32, 2], G.Q8_0, 64); // 68 bytes → next at 192
    tensorInfo(b, 'output_norm.weight', [4], G.F16, 192);
    b.pad(64);
    for (let i = 0; i < 12; i++) b.f32(i - 5.5);
    b.pad(64);
    b.u16(0x3c00); // d = 1
    for (let j = 0; j < 32; j++) b.u8(j - 16);
    b.u16(0x3800); // d = 0.5
    for (let j = 0; j < 32; j++) b.u8(2 * j - 31);
    b.pad(64);
    b.u16(0x3c00).u16(0xc000).u16(0x3800).u16(0x7bff); // 1, -2, 0.5, 65504 (no trailing padding)
    return b;
  }

  for (const version of [3, 2]) {
    it(`reads metadata of every type and F32 / Q8_0 / F16 tensors (version ${version})`, () => {
      const path = write(`hand-v${version}.gguf`, handFile(version));
      const f = openGguf(path);
      assert.equal(f.version, version);
      assert.equal(f.alignment, 64);
      assert.equal(f.dataOffset % 64, 0);
      assert.equal(f.architecture, 'llama');
      const m = Object.fromEntries(f.metadata) as Record<string, GgufValue>;
      assert.deepEqual(m['t.u8'], { type: 'u8', value: 200 });
      assert.deepEqual(m['t.i8'], { type: 'i8', value: -5 });
      assert.deepEqual(m['t.u16'], { type: 'u16', value: 60000 });
      assert.deepEqual(m['t.i16'], { type: 'i16', value: -30000 });
      assert.deepEqual(m['t.u32'], { type: 'u32', value: 4_000_000_000 });
      assert.deepEqual(m['t.i32'], { type: 'i32', value: -2_000_000_000 });
      assert.deepEqual(m['t.f32'], { type: 'f32', value: 1.5 });
      assert.deepEqual(m['t.bool'], { type: 'bool', value: true });
      assert.deepEqual(m['t.u64'], { type: 'u64', value: 1n << 60n });
      assert.deepEqual(m['t.i64'], { type: 'i64', value: -(1n << 40n) });
      assert.deepEqual(m['t.f64'], { type: 'f64', value: Math.PI });
      assert.deepEqual(m['t.strings'], { type: 'array', itemType: 'string', value: ['a', 'bé', ''] });
      assert.deepEqual(m['t.i32s'], { type: 'array', itemType: 'i32', value: [1, -2, 3] });
      assert.deepEqual(m['t.nested'], {
        type: 'array',
        itemType: 'array',
        value: [
          { type: 'array', itemType: 'u8', value: [1, 2] },
          { type: 'array', itemType: 'u8', value: [3] },
        ],
      });
      assert.deepEqual(m['t.bools'], { type: 'array', itemType: 'bool', value: [false, true] });
      assert.equal(f.numberValue('t.i64'), -(2 ** 40));
      assert.equal(f.numberValue('t.u64'), undefined, 'beyond 2^53: not exactly a number');
      assert.equal(f.numberValue('t.u16'), 60000);
      assert.equal(f.stringValue('t.u8'), undefined);

      assert.deepEqual(
        f.tensors.map((t) => [t.name, t.shape, t.typeName, t.offset - f.dataOffset, t.byteLength]),
        [
          ['token_embd.weight', [3, 4], 'F32', 0, 48],
          ['blk.0.attn_q.weight', [2, 32], 'Q8_0', 64, 68],
          ['output_norm.weight', [4], 'F16', 192, 8],
        ],
      );
      assert.deepEqual(Array.from(f.readFloat32('token_embd.weight')), Array.from({ length: 12 }, (_, i) => i - 5.5));
      const q = f.readFloat32('blk.0.attn_q.weight');
      assert.deepEqual(Array.from(q.subarray(0, 32)), Array.from({ length: 32 }, (_, j) => j - 16));
      assert.deepEqual(Array.from(q.subarray(32)), Array.from({ length: 32 }, (_, j) => (2 * j - 31) * 0.5));
      assert.deepEqual(Array.from(f.readFloat32('output_norm.weight')), [1, -2, 0.5, 65504]);
      // With a scratch (the profiler's read path): the same values, decoded into it when it is long enough.
      const scratch = new Float32Array(70).fill(9);
      const viaScratch = f.readFloat32('blk.0.attn_q.weight', scratch);
      assert.deepEqual(Array.from(viaScratch), Array.from(q));
      if (nativeStatus().loaded) assert.equal(viaScratch.buffer, scratch.buffer, 'a block format decodes into the scratch');
      assert.deepEqual(Array.from(f.readFloat32('token_embd.weight', scratch)), Array.from({ length: 12 }, (_, i) => i - 5.5));
      assert.deepEqual(Array.from(f.readFloat32('output_norm.weight', new Float32Array(2))), [1, -2, 0.5, 65504], 'a short scratch: a fresh array');
      assert.throws(() => f.readFloat32('nope'), /tensor 'nope' is not in the file/);
      f.close();
      assert.throws(() => f.readFloat32('token_embd.weight'), (e: unknown) => e instanceof QkdError && e.code === 'STATE');
    });
  }

  it('dequantizes Q4_0, Q4_1, Q8_1, BF16 and K-quant blocks built by hand; refuses a type it cannot decode, naming tensor and type', () => {
    const b = header(new Bytes(), 7, 0);
    tensorInfo(b, 'q4_0', [32], G.Q4_0, 0);
    tensorInfo(b, 'q4_1', [32], G.Q4_1, 32);
    tensorInfo(b, 'q8_1', [32], G.Q8_1, 64);
    tensorInfo(b, 'bf16', [3], G.BF16, 128);
    tensorInfo(b, 'k', [256], G.Q4_K, 160);
    tensorInfo(b, 'f64', [2], 28, 320);
    tensorInfo(b, 'i32', [1], 26, 352);
    b.pad(32);
    // Q4_0: d = 0.5; byte j = q[j] | q[j + 16] << 4 with q[j] = j, q[j + 16] = 15 − j
    b.u16(0x3800);
    for (let j = 0; j < 16; j++) b.u8(j | ((15 - j) << 4));
    b.pad(32);
    // Q4_1: d = 2, m = −1: x = q · 2 − 1
    b.u16(0x4000).u16(0xbc00);
    for (let j = 0; j < 16; j++) b.u8(j | ((15 - j) << 4));
    b.pad(32);
    // Q8_1: d = 0.25, s (ignored), q = j − 16
    b.u16(0x3400).u16(0x1234);
    for (let j = 0; j < 32; j++) b.u8(j - 16);
    b.pad(32);
    b.u16(0x3f80).u16(0xc040).u16(0x0000); // bf16 1, -3, 0
    b.pad(32);
    b.raw(new Uint8Array(144));
    b.pad(32);
    b.f64(0.1).f64(-2.5);
    b.pad(32);
    b.u32(7);
    const f = openGguf(write('blocks.gguf', b));
    assert.deepEqual(Array.from(f.readFloat32('f64')), [Math.fround(0.1), -2.5]);
    assert.throws(() => f.readFloat32('i32'), /ggml type I32/);
    const q4 = Array.from({ length: 32 }, (_, i) => (i < 16 ? i : 15 - (i - 16)));
    assert.deepEqual(Array.from(f.readFloat32('q4_0')), q4.map((q) => (q - 8) * 0.5));
    assert.deepEqual(Array.from(f.readFloat32('q4_1')), q4.map((q) => q * 2 - 1));
    assert.deepEqual(Array.from(f.readFloat32('q8_1')), Array.from({ length: 32 }, (_, j) => (j - 16) * 0.25));
    assert.deepEqual(Array.from(f.readFloat32('bf16')), [1, -3, 0]);
    assert.equal(f.tensor('k').typeName, 'Q4_K');
    assert.deepEqual(Array.from(f.readFloat32('k')), new Array(256).fill(0), 'an all-zero Q4_K block');
    assert.throws(() => f.readFloat32('i32'), (e: unknown) => {
      assert.ok(e instanceof QkdError);
      assert.match(e.message, /tensor 'i32' has ggml type I32, which qkd cannot dequantize/);
      assert.ok(e.message.includes('blocks.gguf'));
      return true;
    });
    f.close();
  });
});

describe('GGUF quantizers (ggml reference behaviour)', () => {
  it('Q8_0: bit-exact on a hand-computed block (d = 1, roundf rounds halves away from zero)', () => {
    const x = new Float32Array(32);
    x.set([127, -127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49, -0.49, 126.5, 3]);
    const expected = [0x00, 0x3c, 127, 0x81, 1, 0xff, 2, 0xfe, 3, 0xfd, 0, 0, 127, 3, ...new Array(20).fill(0)];
    assert.deepEqual(Array.from(quantizeQ8_0(x)), expected);
    assert.deepEqual(Array.from(dequantizeQ8_0(quantizeQ8_0(x), 32)).slice(0, 12), [127, -127, 1, -1, 2, -2, 3, -3, 0, 0, 127, 3]);
    // All-zero block: d = 0, all q = 0.
    assert.deepEqual(Array.from(quantizeQ8_0(new Float32Array(32))), new Array(34).fill(0));
  });

  it('Q4_0: bit-exact on hand-computed blocks (d = max/−8, trunc(x/d + 8.5) clamped to 15, nibble layout)', () => {
    const x = new Float32Array(64);
    // Block 0: the first element of largest magnitude is −8, so d = 1.
    x.set([-8, 8, 0, 0.5, -0.5, 1.49, 7.4, -7.6, 7.5, -7.5], 0);
    x.set([3, -3, 2.5, -2.5], 16);
    // Block 1: max = 8, so d = −1 (the scale carries the sign).
    x.set([8, -8, 1], 32);
    const block0 = [0x00, 0x3c, 0xb0, 0x5f, 0xb8, 0x69, 0x88, 0x89, 0x8f, 0x80, 0x8f, 0x81, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88];
    const block1 = [0x00, 0xbc, 0x80, 0x8f, 0x87, ...new Array(13).fill(0x88)];
    assert.deepEqual(Array.from(quantizeQ4_0(x)), [...block0, ...block1]);
    const back = dequantizeQ4_0(quantizeQ4_0(x), 64);
    assert.deepEqual(Array.from(back.subarray(0, 10)), [-8, 7, 0, 1, 0, 1, 7, -8, 7, -7]);
    assert.deepEqual(Array.from(back.subarray(16, 20)), [3, -3, 3, -2]);
    assert.deepEqual(Array.from(back.subarray(32, 35)), [8, -7, 1]);
  });

  /**
   * Error bounds per block, with d the float32 scale and d16 its stored f16:
   *   Q8_0: q = round(x/d), |x/d| ≤ 127, so |x − q·d| ≤ d/2; dequantizing with
   *         d16 adds |q|·|d − d16| ≤ 127·|d − d16| (≈ 0.062·d for normal f16).
   *   Q4_0: x/d ∈ [−8, 8]; q − 8 = round-half-up(x/d) except when x/d ≥ 7.5
   *         (only elements of sign opposite to the block's extreme), clamped to 7:
   *         |x − (q−8)·d| ≤ |d| (equality at x = −m), ≤ |d|/2 elsewhere;
   *         d16 adds |q − 8|·|d − d16| ≤ 8·|d − d16|.
   * Both get 1e-4·|d| of slack for float32 rounding of x·(1/d).
   */
  it('round trips within the stated error bounds (and the writer stores exactly these bytes)', () => {
    const x = randomValues(7, 32 * 40, 0.3);
    x[5] = 0; // exercise exact zeros and an outlier block
    x[70] = 9;
    const q8 = dequantizeQ8_0(quantizeQ8_0(x), x.length);
    const q4 = dequantizeQ4_0(quantizeQ4_0(x), x.length);
    for (let b = 0; b < x.length / 32; b++) {
      const block = x.subarray(b * 32, b * 32 + 32);
      let amax = 0;
      let m = 0;
      for (const v of block) if (Math.abs(v) > amax) [amax, m] = [Math.abs(v), v];
      const d8 = Math.fround(amax / 127);
      const d8err = Math.abs(d8 - f16BitsToF32(f32ToF16Bits(d8)));
      const d4 = Math.abs(Math.fround(m / -8));
      const d4err = Math.abs(d4 - Math.abs(f16BitsToF32(f32ToF16Bits(d4))));
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        assert.ok(Math.abs(x[i]! - q8[i]!) <= d8 / 2 + 127 * d8err + 1e-4 * d8, `Q8_0 element ${i}`);
        const ratio = x[i]! / Math.fround(m / -8);
        const bound4 = ratio >= 7.5 ? d4 : d4 / 2;
        assert.ok(Math.abs(x[i]! - q4[i]!) <= bound4 + 8 * d4err + 1e-4 * d4, `Q4_0 element ${i}: ${x[i]} → ${q4[i]}`);
      }
    }
    // RMSE well under the worst case (≈ d/√12 for uniform rounding).
    const rmse = (a: Float32Array) => Math.sqrt(a.reduce((s, v, i) => s + (v - x[i]!) ** 2, 0) / x.length);
    assert.ok(rmse(q8) < 0.01 && rmse(q4) < 0.15, `rmse q8 ${rmse(q8)} q4 ${rmse(q4)}`);
  });

  it('refuses element counts that are not whole blocks', () => {
    assert.throws(() => quantizeQ8_0(new Float32Array(31)), (e: unknown) => e instanceof QkdError && e.code === 'SHAPE');
    assert.throws(() => dequantizeQ4_0(new Uint8Array(18), 64), (e: unknown) => e instanceof QkdError && /expected 36/.test(e.message));
  });
});

describe('GGUF writer', () => {
  const types = GGML_WRITABLE as GgufWriteType[];

  it('round-trips every type; stores ne reversed, offsets aligned; streams tensor data', () => {
    const path = join(dir, 'types.gguf');
    const data = types.map((_, k) => randomValues(100 + k, 3 * 256));
    let calls = 0;
    writeGguf(path, {
      metadata: { 'general.architecture': { type: 'string', value: 'llama' }, 'general.name': { type: 'string', value: 'tiny' } },
      tensors: types.map((type, k) => ({ name: `t.${type}`, shape: [3, 256], type, data: () => (calls++, data[k]!) })),
    });
    assert.equal(calls, types.length);
    const f = openGguf(path);
    assert.equal(f.version, 3);
    assert.equal(f.alignment, 32);
    assert.deepEqual(f.metadata.get('general.quantization_version'), { type: 'u32', value: 2 });
    const expected: Partial<Record<GgufWriteType, (x: Float32Array) => Float32Array>> = {
      F32: (x) => x,
      F16: (x) => fromF16(toF16(x)),
      BF16: (x) => fromBf16(toBf16(x)),
      Q8_0: (x) => dequantizeQ8_0(quantizeQ8_0(x), x.length),
      Q4_0: (x) => dequantizeQ4_0(quantizeQ4_0(x), x.length),
    };
    assert.ok(types.length >= 13, 'every format of the table');
    types.forEach((type, k) => {
      const t = f.tensor(`t.${type}`);
      assert.deepEqual(t.shape, [3, 256]);
      assert.equal(t.typeName, type);
      assert.equal((t.offset - f.dataOffset) % 32, 0);
      assert.deepEqual(Array.from(f.readFloat32(t.name)), Array.from((expected[type] ?? ((x: Float32Array) => roundTrip(type, x)))(data[k]!)), type);
    });
    assert.deepEqual(Array.from(f.readBytes('t.Q4_0')), Array.from(quantizeQ4_0(data[types.indexOf('Q4_0')]!)));
    f.close();
    // ne in the file is the reversed shape: ne[0] = 256 columns.
    const raw = readFileSync(path);
    const nameAt = raw.indexOf('t.F32');
    assert.equal(raw.readUInt32LE(nameAt + 5), 2);
    assert.equal(raw.readBigUInt64LE(nameAt + 9), 256n);
    assert.equal(raw.readBigUInt64LE(nameAt + 17), 3n);
  });

  it('honours general.alignment and round-trips metadata of every type', () => {
    const metadata = new Map<string, GgufValue>([
      ['general.alignment', { type: 'u32', value: 128 }],
      ['a.u8', { type: 'u8', value: 255 }],
      ['a.i8', { type: 'i8', value: -128 }],
      ['a.u16', { type: 'u16', value: 65535 }],
      ['a.i16', { type: 'i16', value: -32768 }],
      ['a.u32', { type: 'u32', value: 2 ** 32 - 1 }],
      ['a.i32', { type: 'i32', value: -(2 ** 31) }],
      ['a.f32', { type: 'f32', value: -0.25 }],
      ['a.f64', { type: 'f64', value: 1e300 }],
      ['a.bool', { type: 'bool', value: false }],
      ['a.string', { type: 'string', value: 'ünïcode ✓' }],
      ['a.u64', { type: 'u64', value: 2n ** 64n - 1n }],
      ['a.i64', { type: 'i64', value: -(2n ** 63n) }],
      ['a.tokens', { type: 'array', itemType: 'string', value: ['<s>', '</s>', 'hello'] }],
      ['a.scores', { type: 'array', itemType: 'f32', value: [0, -1.5, 2] }],
      ['a.u64s', { type: 'array', itemType: 'u64', value: [0n, 5n] }],
      ['a.nested', { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'i16', value: [-1] }] }],
      ['a.empty', { type: 'array', itemType: 'u32', value: [] }],
    ]);
    const path = join(dir, 'meta.gguf');
    writeGguf(path, {
      metadata,
      tensors: [
        { name: 'x', shape: [5], type: 'F32', data: new Float32Array([1, 2, 3, 4, 5]) },
        { name: 'y', shape: [2, 3], type: 'F16', data: new Float32Array([1, 2, 3, 4, 5, 6]) },
      ],
    });
    const f = openGguf(path);
    assert.equal(f.alignment, 128);
    assert.equal(f.dataOffset % 128, 0);
    assert.deepEqual([...f.metadata.entries()], [...metadata.entries()]);
    assert.deepEqual(f.tensors.map((t) => t.offset - f.dataOffset), [0, 128]);
    assert.deepEqual(Array.from(f.readFloat32('y')), [1, 2, 3, 4, 5, 6]);
    assert.equal(readFileSync(path).length, f.dataOffset + 128 + 128);
    f.close();
  });

  it('refuses bad tensors and metadata without touching the target file', () => {
    const path = join(dir, 'refused.gguf');
    const cases: [string, Parameters<typeof writeGguf>[1], RegExp][] = [
      ['row not whole blocks', { tensors: [{ name: 'a', shape: [2, 16], type: 'Q8_0', data: new Float32Array(32) }] }, /multiple of 32/],
      ['unknown type', { tensors: [{ name: 'a', shape: [4], type: 'IQ2_XXS' as GgufWriteType, data: new Float32Array(4) }] }, /cannot write type "IQ2_XXS"/],
      ['name too long', { tensors: [{ name: 'n'.repeat(64), shape: [1], type: 'F32', data: new Float32Array(1) }] }, /longer than 63 bytes/],
      ['duplicate name', { tensors: [{ name: 'a', shape: [1], type: 'F32', data: new Float32Array(1) }, { name: 'a', shape: [1], type: 'F32', data: new Float32Array(1) }] }, /duplicate/],
      ['5 dims', { tensors: [{ name: 'a', shape: [1, 1, 1, 1, 1], type: 'F32', data: new Float32Array(1) }] }, /shape \[1,1,1,1,1\]/],
      ['data length', { tensors: [{ name: 'a', shape: [2, 2], type: 'F32', data: () => new Float32Array(3) }] }, /3 elements, shape \[2,2\] needs 4/],
      ['u8 out of range', { metadata: { k: { type: 'u8', value: 256 } }, tensors: [] }, /not a valid u8.*field: metadata\["k"\]/],
      ['u64 given a number', { metadata: { k: { type: 'u64', value: 5 as unknown as bigint } }, tensors: [] }, /not a valid u64/],
      ['array item of the wrong type', { metadata: { k: { type: 'array', itemType: 'string', value: ['a', 1] } }, tensors: [] }, /field: metadata\["k"\]\[1\]/],
      ['alignment not a power of two', { metadata: { 'general.alignment': { type: 'u32', value: 48 } }, tensors: [] }, /power of two/],
    ];
    for (const [label, contents, message] of cases) {
      assert.throws(() => writeGguf(path, contents), (e: unknown) => {
        assert.ok(e instanceof QkdError, `${label}: ${String(e)}`);
        assert.match(e.message, message, label);
        return true;
      });
      assert.equal(existsSync(path), false, `${label}: no file left behind`);
    }
  });
});

describe('GGUF reader: malformed files are QkdErrors naming the file and the field', () => {
  /** A valid one-tensor file's prefix: header + one KV, for the cases below to extend. */
  const kv = (b: Bytes) => b.str('k').u32(T.u32).u32(1);
  const oneTensor = (ne: (number | bigint)[], type: number, offset: number | bigint, dataBytes: number, nameOverride = 't') => {
    const b = header(new Bytes(), 1, 1);
    kv(b);
    tensorInfo(b, nameOverride, ne, type, offset).pad(32);
    return b.raw(new Uint8Array(dataBytes));
  };
  const cases: [string, () => Bytes | Buffer, RegExp, string][] = [
    ['too short for the magic', () => Buffer.from('GG'), /too short/, 'magic'],
    ['wrong magic', () => Buffer.from('GGML\x03\x00\x00\x00'), /magic is 0x47474d4c/, 'magic'],
    ['version 1', () => header(new Bytes(), 0, 0, 1), /version 1/, 'version'],
    ['big-endian version', () => header(new Bytes(), 0, 0, 0x03000000), /big-endian/, 'version'],
    ['truncated header', () => new Bytes().raw(Buffer.from('GGUF')).u32(3).u32(0), /file ends at byte 12, inside tensor_count/, 'tensor_count'],
    ['tensor_count 2^63', () => header(new Bytes(), 1n << 63n, 0), /tensor infos cannot fit/, 'tensor_count'],
    ['metadata_kv_count 2^64 − 1', () => header(new Bytes(), 0, -1n), /metadata entries cannot fit/, 'metadata_kv_count'],
    ['key length 2^63', () => header(new Bytes(), 0, 1).u64(1n << 63n).raw(new Uint8Array(16)), /string length \d+ exceeds/, 'metadata[0].key'],
    ['unknown value type', () => header(new Bytes(), 0, 1).str('k').u32(13).u32(0), /unknown metadata value type 13/, 'metadata["k"].type'],
    ['array length huge', () => header(new Bytes(), 0, 1).str('k').u32(T.array).u32(T.u32).u64(1n << 62n).u32(0), /cannot fit/, 'metadata["k"].length'],
    ['unknown array item type', () => header(new Bytes(), 0, 1).str('k').u32(T.array).u32(99).u64(0), /unknown array item type 99/, 'metadata["k"].item_type'],
    ['string in array too long', () => header(new Bytes(), 0, 1).str('k').u32(T.array).u32(T.string).u64(1).u64(100), /exceeds/, 'metadata["k"][0]'],
    ['arrays nested too deep', () => { const b = header(new Bytes(), 0, 1).str('k'); b.u32(T.array); for (let i = 0; i < 5; i++) b.u32(T.array).u64(1); return b.u32(T.u8).u64(0); }, /nested more than 4 deep/, 'metadata["k"][0][0][0][0]'],
    ['bool 2', () => header(new Bytes(), 0, 1).str('k').u32(T.bool).u8(2), /bool value is 2/, 'metadata["k"]'],
    ['duplicate key', () => { const b = header(new Bytes(), 0, 2); kv(b); return kv(b); }, /duplicate metadata key "k"/, 'metadata["k"]'],
    ['alignment of the wrong type', () => header(new Bytes(), 0, 1).str('general.alignment').u32(T.u64).u64(32), /has type u64/, 'metadata["general.alignment"]'],
    ['alignment not a power of two', () => header(new Bytes(), 0, 1).str('general.alignment').u32(T.u32).u32(48), /is 48/, 'metadata["general.alignment"]'],
    ['n_dims 5', () => oneTensor([1, 1, 1, 1, 1], G.F32, 0, 4), /has 5 dimensions/, 'tensor_infos[0].n_dims'],
    ['negative dimension', () => oneTensor([4, -1n], G.F32, 0, 16), /-1 \(negative as int64\)/, 'tensor_infos[0].ne[1]'],
    ['unknown ggml type', () => oneTensor([4], 4, 0, 16), /unknown ggml type 4/, 'tensor_infos[0].type'],
    ['row not whole blocks', () => oneTensor([16], G.Q8_0, 0, 34), /not a multiple of the block size 32/, 'tensor_infos[0].ne[0]'],
    ['misaligned offset', () => oneTensor([1], G.F32, 8, 16), /not a multiple of the alignment 32/, 'tensor_infos[0].offset'],
    ['offset past the end', () => oneTensor([4], G.F32, 1n << 40n, 16), /past the end/, 'tensor_infos[0].offset'],
    ['truncated data', () => oneTensor([8], G.F32, 0, 20), /past the end.*truncated/, 'tensor_infos[0].offset'],
    ['shape larger than the file', () => oneTensor([1n << 30n, 1n << 20n], G.F32, 0, 16), /more than the whole/, 'tensor_infos[0].ne'],
    ['tensor name length past the end', () => { const b = header(new Bytes(), 1, 0); return b.u64(1000).raw(new Uint8Array(30)); }, /exceeds/, 'tensor_infos[0].name'],
    ['duplicate tensor name', () => { const b = header(new Bytes(), 2, 0); tensorInfo(b, 'a', [1], G.F32, 0); tensorInfo(b, 'a', [1], G.F32, 32); return b.pad(32).raw(new Uint8Array(64)); }, /duplicate tensor name "a"/, 'tensor_infos[1].name'],
    ['overlapping tensors', () => { const b = header(new Bytes(), 2, 0); tensorInfo(b, 'a', [16], G.F32, 0); tensorInfo(b, 'b', [4], G.F32, 32); return b.pad(32).raw(new Uint8Array(64)); }, /'b' overlaps tensor 'a'/, 'tensor_infos[1].offset'],
  ];
  for (const [label, make, message, field] of cases) {
    it(label, () => {
      const path = write('bad.gguf', make());
      assert.throws(() => openGguf(path), (e: unknown) => {
        assert.ok(e instanceof QkdError, `not a QkdError: ${String(e)}`);
        assert.match(e.message, message);
        assert.equal(e.field, field);
        assert.equal(e.path, path);
        return true;
      });
    });
  }

  it('refuses strings and arrays the file could hold but JS cannot (sparse files, nothing allocated)', () => {
    const big = (name: string, b: Bytes, size: number): string => {
      const path = write(name, b);
      truncateSync(path, size); // sparse: no disk or memory used
      return path;
    };
    const longKey = big('long-key.gguf', header(new Bytes(), 0, 1).u64(2 ** 28 + 1), 2 ** 28 + 64);
    assert.throws(() => openGguf(longKey), (e: unknown) => e instanceof QkdError && /longer than qkd reads/.test(e.message) && e.field === 'metadata[0].key');
    const longArray = big('long-array.gguf', header(new Bytes(), 0, 1).str('k').u32(T.array).u32(T.u8).u64(2 ** 26 + 1), 2 ** 26 + 128);
    assert.throws(() => openGguf(longArray), (e: unknown) => e instanceof QkdError && /array of 67108865 items/.test(e.message) && e.field === 'metadata["k"].length');
    rmSync(longKey);
    rmSync(longArray);
  });

  it('every truncation of a valid file is refused (naming the field being read)', () => {
    const b = header(new Bytes(), 1, 2);
    b.str('general.architecture').u32(T.string).str('llama');
    b.str('v').u32(T.array).u32(T.f32).u64(2).f32(1).f32(2);
    tensorInfo(b, 'w', [32, 2], G.Q8_0, 0).pad(32);
    b.raw(new Uint8Array(68));
    const full = b.buffer();
    openGguf(write('full.gguf', full)).close();
    for (let cut = 0; cut < full.length; cut++) {
      const path = write('cut.gguf', full.subarray(0, cut));
      assert.throws(() => openGguf(path), (e: unknown) => e instanceof QkdError && e.field !== undefined, `cut at ${cut}`);
    }
  });
});

describe('llama.cpp ↔ Hugging Face names', () => {
  const pairs: [string, string][] = [
    ['token_embd.weight', 'model.embed_tokens.weight'],
    ['output_norm.weight', 'model.norm.weight'],
    ['output.weight', 'lm_head.weight'],
    ['blk.0.attn_q.weight', 'model.layers.0.self_attn.q_proj.weight'],
    ['blk.11.attn_k.weight', 'model.layers.11.self_attn.k_proj.weight'],
    ['blk.2.attn_v.weight', 'model.layers.2.self_attn.v_proj.weight'],
    ['blk.2.attn_output.weight', 'model.layers.2.self_attn.o_proj.weight'],
    ['blk.3.ffn_gate.weight', 'model.layers.3.mlp.gate_proj.weight'],
    ['blk.3.ffn_up.weight', 'model.layers.3.mlp.up_proj.weight'],
    ['blk.3.ffn_down.weight', 'model.layers.3.mlp.down_proj.weight'],
    ['blk.4.attn_norm.weight', 'model.layers.4.input_layernorm.weight'],
    ['blk.4.ffn_norm.weight', 'model.layers.4.post_attention_layernorm.weight'],
    ['blk.5.attn_q.bias', 'model.layers.5.self_attn.q_proj.bias'],
  ];
  it('maps every llama tensor both ways', () => {
    for (const [gguf, hf] of pairs) {
      assert.equal(ggufToHfName(gguf), hf);
      assert.equal(hfToGgufName(hf), gguf);
    }
  });
  it('leaves other names as they are', () => {
    for (const name of ['rope_freqs.weight', 'blk.0.attn_rot.weight', 'model.layers.0.self_attn.rotary_emb.inv_freq', 'output', 'weird']) {
      assert.equal(ggufToHfName(name), name);
      assert.equal(hfToGgufName(name), name);
    }
  });
});
