// Reading tensors through a memory mapping of the file (backend.mapFileRange): the bytes are the file's at
// any offset, writes never reach the file, released pages read the file again, and what maps (a safetensors
// source's BF16 and F32 tensors, the profiler's large tensors) gives what a plain read gives.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapFileRange, nativeStatus, readFileRangeStart, releaseMapped } from '../../src/tensor/backend.js';
import { openSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { openGguf } from '../../src/io/gguf-reader.js';
import { writeGguf } from '../../src/io/gguf-writer.js';
import { openTensorSource } from '../../src/io/tensor-source.js';
import { profileModel } from '../../src/swan/profile.js';
import { toBf16, toF16 } from '../../src/tensor/dtype.js';
import { Rng } from '../../src/tensor/random.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-mapped-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const native = nativeStatus().loaded;

function gaussian(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.normal() * 0.05);
}

/** Runs fn with QKD_MMAP set (or unset), restoring it after. */
function withMmap<T>(value: string | undefined, fn: () => T): T {
  const before = process.env.QKD_MMAP;
  if (value === undefined) delete process.env.QKD_MMAP;
  else process.env.QKD_MMAP = value;
  try {
    return fn();
  } finally {
    if (before === undefined) delete process.env.QKD_MMAP;
    else process.env.QKD_MMAP = before;
  }
}

describe('mapFileRange', { skip: native ? false : 'needs the native addon' }, () => {
  const path = join(dir, 'bytes.bin');
  const bytes = Uint8Array.from({ length: 3 * 4096 + 100 }, (_, i) => (i * 131 + 7) & 255);
  writeFileSync(path, bytes);

  it('gives the file bytes at any offset, page-aligned or not, and null for an empty range', () => {
    const fd = openSync(path, 'r');
    try {
      for (const [offset, length] of [[0, bytes.length], [1, 10], [4095, 2], [4096, 4096], [5000, 7388], [12287, 101]] as const) {
        const view = mapFileRange(fd, offset, length);
        assert.ok(view !== null, `mapped ${offset}+${length}`);
        assert.equal(view.length, length);
        assert.deepEqual(view, bytes.subarray(offset, offset + length), `${offset}+${length}`);
      }
      assert.equal(mapFileRange(fd, 10, 0), null);
    } finally {
      closeSync(fd);
    }
  });

  it('keeps writes to the view out of the file; a released page reads the file again; other arrays are left alone', () => {
    const fd = openSync(path, 'r');
    const view = mapFileRange(fd, 4000, 300)!;
    closeSync(fd);
    view[150] = view[150]! ^ 0xff;
    assert.deepEqual(new Uint8Array(readFileSync(path)), bytes, 'the file is unchanged');
    assert.notEqual(view[150], bytes[4150]);
    releaseMapped(view);
    assert.deepEqual(view, bytes.subarray(4000, 4300), 'after release the view reads the file');
    const plain = Uint8Array.from([1, 2, 3]);
    releaseMapped(plain);
    assert.deepEqual(plain, Uint8Array.from([1, 2, 3]));
  });

  it('QKD_MMAP=off reads instead (null)', () => {
    const fd = openSync(path, 'r');
    try {
      assert.equal(withMmap('off', () => mapFileRange(fd, 0, 10)), null);
      assert.ok(withMmap('on', () => mapFileRange(fd, 0, 10)) !== null);
    } finally {
      closeSync(fd);
    }
  });
});

describe('readFileRangeStart (background reads)', { skip: native ? false : 'needs the native addon' }, () => {
  const path = join(dir, 'read-bytes.bin');
  // Several 1 MiB chunks and a partial one, so the job has tasks for both the background thread and the pool.
  const bytes = Uint8Array.from({ length: 3 * (1 << 20) + 4099 }, (_, i) => (i * 7919 + (i >>> 11)) & 255);
  writeFileSync(path, bytes);

  it('reads the bytes at any offset and length; several reads may be in flight, waited for in any order', () => {
    const fd = openSync(path, 'r');
    try {
      const ranges = [[0, bytes.length], [1, 10], [4095, (1 << 20) + 3], [(1 << 20) - 1, 2 * (1 << 20) + 5]] as const;
      const reads = ranges.map(([offset, length]) => {
        const into = new Uint8Array(length).fill(0xa5);
        return { offset, length, into, finish: readFileRangeStart(fd, offset, into)! };
      });
      for (const r of reads.reverse()) {
        assert.equal(r.finish(), r.length, `${r.offset}+${r.length}`);
        assert.equal(r.finish(), r.length, 'a second call gives the same result');
        assert.deepEqual(r.into, bytes.subarray(r.offset, r.offset + r.length), `${r.offset}+${r.length}`);
      }
      assert.equal(readFileRangeStart(fd, 0, new Uint8Array(0)), null, 'nothing to read');
    } finally {
      closeSync(fd);
    }
  });

  it('says how many bytes it got when the file ends first, and throws the OS error of a bad descriptor', () => {
    const fd = openSync(path, 'r');
    try {
      const into = new Uint8Array(2 * (1 << 20));
      const offset = bytes.length - 5000;
      assert.equal(readFileRangeStart(fd, offset, into)!(), 5000);
      assert.deepEqual(into.subarray(0, 5000), bytes.subarray(offset));
    } finally {
      closeSync(fd);
    }
    const closed = openSync(path, 'r');
    closeSync(closed);
    const finish = readFileRangeStart(closed, 0, new Uint8Array(10));
    assert.ok(finish !== null);
    assert.throws(() => finish(), /errno 9\b/);
    assert.throws(() => readFileRangeStart(-1, 0, new Uint8Array(10)), /fd \(-1\) must be an open file descriptor/);
  });

  it('safetensors readBytesStart gives what readBytes gives, and names the tensor of a truncated file', () => {
    const file = join(dir, 'background.safetensors');
    const w = gaussian(300 * 40, 11);
    writeSafetensors(file, [
      { name: 'a', dtype: 'bf16', shape: [300, 40], data: toBf16(w) },
      { name: 'b', dtype: 'f32', shape: [300, 40], data: w },
    ]);
    const f = openSafetensors(file);
    try {
      for (const name of ['a', 'b']) {
        const scratch = new Uint8Array(300 * 40 * 4 + 16);
        assert.deepEqual(f.readBytesStart(name, scratch)!(), f.readBytes(name), name);
      }
      assert.equal(f.readBytesStart('b', new Uint8Array(10)), null, 'a scratch too small: read it instead');
    } finally {
      f.close();
    }
    const source = openTensorSource(file);
    try {
      assert.deepEqual(Array.from(source.readBf16Start!('a', new Uint16Array(300 * 40))!()), Array.from(toBf16(w)));
      assert.equal(source.readBf16Start!('b', new Uint16Array(300 * 40 * 2)), null, 'not bf16');
    } finally {
      source.close();
    }
    // A file cut short after it was opened (its header promised more).
    const whole = readFileSync(file);
    const cut = join(dir, 'cut.safetensors');
    writeFileSync(cut, whole);
    const g = openSafetensors(cut);
    truncateSync(cut, whole.length - 100);
    try {
      assert.throws(() => g.readBytesStart('b', new Uint8Array(300 * 40 * 4))!(), (e: Error) => /file ended while reading tensor 'b'/.test(e.message));
    } finally {
      g.close();
    }
  });
});

describe('mapped tensor reads equal plain reads', () => {
  const w = gaussian(48 * 40, 3);
  const path = join(dir, 'mixed.safetensors');
  // The 3-byte u8 tensor puts the bf16 one after it at an odd offset: that one cannot be mapped and is read.
  writeSafetensors(path, [
    { name: 'a.f32', dtype: 'f32', shape: [48, 40], data: w },
    { name: 'b.f16', dtype: 'f16', shape: [48, 40], data: toF16(w) },
    { name: 'c.bf16', dtype: 'bf16', shape: [48, 40], data: toBf16(w) },
    { name: 'd.u8', dtype: 'u8', shape: [3], data: Uint8Array.from([1, 2, 3]) },
    { name: 'e.bf16', dtype: 'bf16', shape: [48, 40], data: toBf16(w) },
  ]);

  it('safetensors: mapped BF16, F16 and F32 tensors equal their reads; an odd offset or QKD_MMAP=off give null', () => {
    for (const mode of ['on', 'off']) {
      withMmap(mode, () => {
        const f = openSafetensors(path);
        const source = openTensorSource(path);
        try {
          const maps = native && mode === 'on';
          const bf16 = source.mapped!('c.bf16');
          const f32 = source.mapped!('a.f32');
          if (maps) {
            assert.ok(bf16 !== null && bf16.dtype === 'bf16' && f32 !== null && f32.dtype === 'f32');
            assert.deepEqual(Array.from(bf16.data), Array.from(f.read('c.bf16').data), 'bf16');
            assert.deepEqual(Array.from(f32.data), Array.from(f.readFloat32('a.f32').data), 'f32');
          } else assert.ok(bf16 === null && f32 === null, `nothing mapped (${mode})`);
          const f16 = source.mapped!('b.f16');
          if (maps) assert.ok(f16 !== null && f16.dtype === 'f16' && f16.data.every((h, i) => h === (f.read('b.f16').data as Uint16Array)[i]), 'f16 bits');
          else assert.equal(f16, null);
          assert.equal(source.mapped!('e.bf16'), null, 'the odd offset is read');
          assert.deepEqual(Array.from(source.readBf16!('e.bf16')!), Array.from(f.read('e.bf16').data));
        } finally {
          f.close();
          source.close();
        }
      });
    }
  });

  it('prefetch: asks for the next tensor before each read, and reads stay the same', () => {
    const f = openSafetensors(path);
    try {
      f.prefetch('c.bf16');
      assert.deepEqual(Array.from(f.read('c.bf16').data), Array.from(toBf16(w)));
    } finally {
      f.close();
    }
    const events: string[] = [];
    const source = openTensorSource(path);
    try {
      const spy = {
        path,
        tensors: source.tensors.filter((t) => t.name !== 'd.u8'),
        readFloat32: (name: string, scratch?: Float32Array) => (events.push(`read ${name}`), source.readFloat32(name, scratch)),
        prefetch: (name: string) => (events.push(`prefetch ${name}`), source.prefetch!(name)),
      };
      profileModel(spy);
      assert.deepEqual(events, ['prefetch b.f16', 'read a.f32', 'prefetch c.bf16', 'read b.f16', 'prefetch e.bf16', 'read c.bf16', 'read e.bf16']);
    } finally {
      source.close();
    }
  });

  it('GGUF: a tensor decoded from a mapping (Q8_0, F16, BF16) equals the one decoded from a read', () => {
    const v = gaussian(64 * 96, 7);
    for (const type of ['Q8_0', 'F16', 'BF16'] as const) {
      const file = join(dir, `w-${type}.gguf`);
      writeGguf(file, { metadata: { 'general.architecture': { type: 'string', value: 'other' } }, tensors: [{ name: 'w', shape: [64, 96], type, data: () => v }] });
      const g = openGguf(file);
      try {
        const read = Array.from(g.readFloat32('w', new Float32Array(64 * 96)));
        g.mapStoredAbove = 0;
        assert.deepEqual(Array.from(g.readFloat32('w', new Float32Array(64 * 96))), read, type);
        assert.deepEqual(read, Array.from(g.readFloat32('w')), type);
      } finally {
        g.close();
      }
    }
  });

  it('profileModel: tensors read in the background while the one before is profiled give the report of plain reads', () => {
    const file = join(dir, 'model-background.safetensors');
    const shapes = [[96, 64], [64], [64, 64], [64, 160], [32, 64]];
    writeSafetensors(file, shapes.map((shape, i) => ({ name: `t${i}`, dtype: 'bf16' as const, shape, data: toBf16(gaussian(shape.reduce((a, b) => a * b, 1), 20 + i)) })));
    const source = openTensorSource(file);
    try {
      const events: string[] = [];
      const plain = { path: file, tensors: source.tensors, readFloat32: source.readFloat32.bind(source), readBf16: source.readBf16!.bind(source) };
      const spy = {
        ...plain,
        readBf16: (name: string, scratch?: Uint16Array) => (events.push(`read ${name}`), source.readBf16!(name, scratch)),
        readBf16Start: (name: string, scratch: Uint16Array) => {
          events.push(`start ${name}`);
          const finish = source.readBf16Start!(name, scratch);
          return finish && (() => (events.push(`finish ${name}`), finish()));
        },
      };
      const expected = profileModel(plain).tensors;
      assert.deepEqual(profileModel(spy).tensors, expected);
      if (native) assert.deepEqual(events, ['read t0', 'start t1', 'finish t1', 'start t2', 'finish t2', 'start t3', 'finish t3', 'start t4', 'finish t4']);
      // A read that fails is reported; one in flight when profiling fails is waited for before the error leaves.
      const failing = { ...spy, readBf16Start: (name: string, scratch: Uint16Array) => (name === 't3' ? () => { throw new Error('disk gone'); } : spy.readBf16Start(name, scratch)) };
      assert.throws(() => profileModel(failing), /disk gone/);
      const waited: string[] = [];
      const counting = { ...plain, readBf16Start: (name: string, scratch: Uint16Array) => { const finish = source.readBf16Start!(name, scratch)!; return () => (waited.push(name), finish()); } };
      const visit = (name: string) => {
        if (name === 't2') throw new Error('visitor failed');
      };
      assert.throws(() => profileModel(counting, { visit }), /visitor failed/);
      assert.deepEqual(waited, ['t1', 't2', 't3'], 't3, in flight when t2 failed, was waited for');
    } finally {
      source.close();
    }
  });

  it('profileModel: every tensor mapped (mapAbove 0) gives the report of every tensor read', () => {
    for (const dtype of ['bf16', 'f32', 'f16'] as const) {
      const file = join(dir, `model-${dtype}.safetensors`);
      const tensors = [
        { name: 'model.embed_tokens.weight', shape: [96, 64] },
        { name: 'model.layers.0.self_attn.q_proj.weight', shape: [64, 64] },
        { name: 'model.layers.0.input_layernorm.weight', shape: [64] },
        { name: 'model.layers.0.mlp.down_proj.weight', shape: [64, 160] },
      ];
      writeSafetensors(file, tensors.map((t, i) => {
        const v = gaussian(t.shape.reduce((a, b) => a * b, 1), 10 + i);
        return { name: t.name, dtype, shape: t.shape, data: dtype === 'bf16' ? toBf16(v) : dtype === 'f16' ? toF16(v) : v };
      }));
      const profile = (mapAbove?: number) => {
        const source = openTensorSource(file);
        try {
          return profileModel(source, { mapAbove }).tensors;
        } finally {
          source.close();
        }
      };
      assert.deepEqual(profile(0), profile(), dtype);
    }
  });
});
