import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { QkdError } from '../../src/errors.js';
import { Rng, toBf16, toF16 } from '../../src/tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-st-'));

/** A safetensors file assembled by hand from a header object and raw data (independent of our writer). */
function handMade(path: string, header: unknown, data: Uint8Array, lengthOverride?: bigint): void {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, data]));
}

describe('safetensors', () => {
  it('round-trips every dtype with metadata', () => {
    const path = join(dir, 'all.safetensors');
    const f32 = Float32Array.from([1.5, -2, 3.25, 0, 1e-8, -7]);
    writeSafetensors(path, [
      { name: 'a.f32', dtype: 'f32', shape: [2, 3], data: f32 },
      { name: 'b.f16', dtype: 'f16', shape: [3], data: toF16([1, 0.5, -2]) },
      { name: 'c.bf16', dtype: 'bf16', shape: [1, 2], data: () => toBf16([3, -0.25]) },
      { name: 'd.i8', dtype: 'i8', shape: [4], data: Int8Array.from([-128, -1, 0, 127]) },
      { name: 'e.u8', dtype: 'u8', shape: [1], data: Uint8Array.from([255]) },
      { name: 'f.i32', dtype: 'i32', shape: [2], data: Int32Array.from([-5, 1 << 30]) },
      { name: 'g.empty', dtype: 'f32', shape: [0, 4], data: new Float32Array(0) },
    ], { format: 'pt', note: 'qkd test' });
    const raw = readFileSync(path);
    assert.equal((8 + Number(raw.readBigUInt64LE(0))) % 8, 0, 'data section 8-byte aligned');
    const f = openSafetensors(path);
    assert.deepEqual(f.metadata, { format: 'pt', note: 'qkd test' });
    assert.deepEqual(Array.from(f.readFloat32('a.f32').data), Array.from(f32));
    assert.deepEqual(f.readFloat32('a.f32').shape, [2, 3]);
    assert.deepEqual(Array.from(f.readFloat32('b.f16').data), [1, 0.5, -2]);
    assert.deepEqual(Array.from(f.readFloat32('c.bf16').data), [3, -0.25]);
    assert.deepEqual(Array.from(f.read('d.i8').data), [-128, -1, 0, 127]);
    assert.deepEqual(Array.from(f.read('e.u8').data), [255]);
    assert.deepEqual(Array.from(f.read('f.i32').data), [-5, 1 << 30]);
    assert.equal(f.read('g.empty').data.length, 0);
    assert.throws(() => f.readFloat32('d.i8'), /dtype I8, not a float type/);
    assert.throws(() => f.read('missing'), /tensor 'missing' is not in the file/);
    f.close();
  });

  it('reads a file assembled by hand from the format description', () => {
    const path = join(dir, 'hand.safetensors');
    const data = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
    handMade(path, { __metadata__: { format: 'pt' }, 'x': { dtype: 'F32', shape: [2, 2], data_offsets: [8, 24] }, 'y': { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data);
    const f = openSafetensors(path);
    assert.deepEqual(Array.from(f.readFloat32('x').data), [3, 4, 5, 6]);
    assert.deepEqual(Array.from(f.readFloat32('y').data), [1, 2]);
    f.close();
  });

  const data24 = new Uint8Array(24);
  const malformed: [string, () => void, RegExp][] = [
    ['empty file', () => writeFileSync(join(dir, 'm.safetensors'), Buffer.alloc(3)), /shorter than the 8-byte header length.*field: header length/],
    ['header length past the end', () => handMade(join(dir, 'm.safetensors'), {}, data24, 1n << 40n), /header length \d+ does not fit.*field: header length/],
    ['header not JSON', () => { const b = Buffer.alloc(12); b.writeBigUInt64LE(4n); b.write('{{{{', 8); writeFileSync(join(dir, 'm.safetensors'), b); }, /header is not JSON/],
    ['unknown dtype', () => handMade(join(dir, 'm.safetensors'), { t: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, data24), /unsupported dtype "F128".*field: t\.dtype/],
    ['bad shape', () => handMade(join(dir, 'm.safetensors'), { t: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, data24), /field: t\.shape/],
    ['offsets past the end (truncated)', () => handMade(join(dir, 'm.safetensors'), { t: { dtype: 'F32', shape: [100], data_offsets: [0, 400] } }, data24), /truncated file.*field: t\.data_offsets/],
    ['size does not match shape', () => handMade(join(dir, 'm.safetensors'), { t: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 8] } }, data24), /8 bytes for shape \[2,2\] of F32, which needs 16/],
    ['overlapping tensors', () => handMade(join(dir, 'm.safetensors'), { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data24), /overlaps/],
    ['reversed offsets', () => handMade(join(dir, 'm.safetensors'), { t: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data24), /field: t\.data_offsets/],
    ['metadata not strings', () => handMade(join(dir, 'm.safetensors'), { __metadata__: { a: 1 } }, data24), /field: __metadata__\.a/],
  ];
  for (const [name, make, message] of malformed) {
    it(`rejects a malformed file: ${name}, naming file and field`, () => {
      make();
      assert.throws(() => openSafetensors(join(dir, 'm.safetensors')), (err: unknown) => {
        assert.ok(err instanceof QkdError, `not a QkdError: ${String(err)}`);
        assert.match(err.message, message);
        assert.ok(err.message.includes('m.safetensors'), 'message names the file');
        return true;
      });
    });
  }

  it('an empty tensor may start where another tensor lies (its range overlaps nothing)', () => {
    const path = join(dir, 'empty.safetensors');
    const data = Buffer.from(new Float32Array([1, 2, 3, 4]).buffer);
    // Listed after the tensor it starts in, and in the middle of it.
    handMade(path, { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, e: { dtype: 'F32', shape: [0, 3], data_offsets: [0, 0] }, m: { dtype: 'F32', shape: [0], data_offsets: [8, 8] } }, data);
    const f = openSafetensors(path);
    try {
      assert.deepEqual(Array.from(f.readFloat32('a').data), [1, 2, 3, 4]);
      assert.equal(f.readFloat32('e').data.length, 0);
      assert.equal(f.readFloat32('m').data.length, 0);
    } finally {
      f.close();
    }
  });

  it('readFloat32 into a scratch (f32 read in place, f16 widened natively) gives the values of a plain read, tensor after tensor', () => {
    const path = join(dir, 'scratch.safetensors');
    const rng = new Rng(5);
    const values = (n: number) => Float32Array.from({ length: n }, () => rng.normal() * 3);
    const big = values(700);
    writeSafetensors(path, [
      { name: 'a', dtype: 'f16', shape: [20, 35], data: toF16(big) },
      { name: 'b', dtype: 'f32', shape: [3, 7], data: values(21) },
      { name: 'c', dtype: 'f16', shape: [9], data: toF16(values(9)) },
      { name: 'd', dtype: 'bf16', shape: [4], data: toBf16(values(4)) },
    ]);
    const f = openSafetensors(path);
    try {
      const scratch = new Float32Array(700).fill(Number.NaN);
      for (const name of ['a', 'b', 'c', 'd', 'a']) {
        const plain = f.readFloat32(name).data;
        const viaScratch = f.readFloat32(name, scratch).data;
        assert.deepEqual(Array.from(viaScratch), Array.from(plain), name);
        // f32 and f16 land in the scratch; bf16 is read the plain way.
        assert.equal(viaScratch.buffer === scratch.buffer, name !== 'd', name);
      }
      assert.deepEqual(f.readFloat32('b', new Float32Array(3)).data.length, 21, 'a scratch too small is not used');
    } finally {
      f.close();
    }
  });

  it('survives random mutations of a valid header: opens or throws QkdError, nothing else', () => {
    const path = join(dir, 'fuzz-src.safetensors');
    writeSafetensors(path, [
      { name: 'w', dtype: 'f32', shape: [3, 4], data: new Float32Array(12).fill(1) },
      { name: 'b', dtype: 'bf16', shape: [5], data: new Uint16Array(5) },
    ]);
    const original = readFileSync(path);
    const headerEnd = 8 + Number(original.readBigUInt64LE(0));
    const rng = new Rng(77);
    const target = join(dir, 'fuzz.safetensors');
    for (let trial = 0; trial < 600; trial++) {
      const bytes = Buffer.from(original);
      const edits = 1 + rng.int(4);
      for (let e = 0; e < edits; e++) {
        const pos = rng.int(trial % 5 === 0 ? 8 : headerEnd); // sometimes the length field itself
        bytes[pos] = trial % 3 === 0 ? '0123456789[]{},:"-'.charCodeAt(rng.int(18)) : rng.int(256);
      }
      const cut = trial % 7 === 0 ? rng.int(bytes.length) : bytes.length; // and truncations
      writeFileSync(target, bytes.subarray(0, cut));
      try {
        const f = openSafetensors(target);
        for (const n of f.names) f.read(n); // whatever opened must be readable in bounds
        f.close();
      } catch (err) {
        if (!(err instanceof QkdError)) assert.fail(`trial ${trial}: ${String(err)}`);
      }
    }
  });

  it('writes atomically: a failure mid-write leaves the old file intact and no temp file', () => {
    const path = join(dir, 'atomic.safetensors');
    writeSafetensors(path, [{ name: 'x', dtype: 'f32', shape: [2], data: Float32Array.from([1, 2]) }]);
    const before = readFileSync(path);
    assert.throws(() =>
      writeSafetensors(path, [
        { name: 'x', dtype: 'f32', shape: [2], data: Float32Array.from([3, 4]) },
        { name: 'y', dtype: 'f32', shape: [3], data: () => { throw new QkdError('STATE', 'producer failed'); } },
      ]), /producer failed/);
    assert.deepEqual(readFileSync(path), before);
    assert.deepEqual(readdirSync(dir).filter((n) => n.includes('.tmp-')), []);
  });
});
