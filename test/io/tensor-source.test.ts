import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTensorSource, type TensorSource } from '../../src/io/tensor-source.js';
import { writeGguf } from '../../src/io/gguf-writer.js';
import { hfToGgufName } from '../../src/io/gguf-names.js';
import { decodeQ8_0 as dequantizeQ8_0, encodeQ8_0 as quantizeQ8_0 } from '../../src/quant/ggml-legacy.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { createLlama, type LlamaModel } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { loadLlama2c, writeLlama2cCheckpoint } from '../../src/models/llama2c-io.js';
import { toBf16, fromBf16 } from '../../src/tensor/dtype.js';
import { QkdError } from '../../src/errors.js';

const root = mkdtempSync(join(tmpdir(), 'qkd-source-'));
// hidden 32 so every matrix row is whole Q8_0 / Q4_0 blocks.
const config = { vocab_size: 40, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
const model = createLlama(config, 11);
const names = model.arena.entries.map((e) => e.name);

function weights(m: LlamaModel): Map<string, { shape: number[]; data: Float32Array }> {
  return new Map(m.arena.entries.map((e) => [e.name, { shape: [...e.shape], data: e.tensor.data }]));
}

/** Every tensor of the source equals `expected` (names, shapes, values). */
function assertSourceEquals(source: TensorSource, expected: Map<string, { shape: number[]; data: Float32Array }>, transform: (x: Float32Array) => Float32Array = (x) => x): void {
  assert.deepEqual(new Set(source.tensors.map((t) => t.name)), new Set(expected.keys()));
  for (const t of source.tensors) {
    const want = expected.get(t.name)!;
    assert.deepEqual(t.shape, want.shape, t.name);
    assert.deepEqual(Array.from(source.readFloat32(t.name)), Array.from(transform(want.data)), t.name);
  }
}

function assertQkdError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof QkdError, `not a QkdError: ${String(e)}`);
    assert.match(e.message, message);
    return true;
  });
}

describe('openTensorSource', () => {
  it('reads a .safetensors file and a Hugging Face directory (saveLlama), in file order', () => {
    const dir = join(root, 'hf');
    saveLlama(dir, model);
    for (const path of [dir, join(dir, 'model.safetensors')]) {
      const s = openTensorSource(path);
      assert.equal(s.format, 'safetensors');
      assert.equal(s.path, path);
      assert.deepEqual(s.tensors.map((t) => t.name), names, 'file order = arena order');
      assert.ok(s.tensors.every((t) => t.dtype === 'F32'));
      assertSourceEquals(s, weights(model));
      assertQkdError(() => s.readFloat32('missing.weight'), /tensor 'missing.weight' is not in the model/);
      s.close();
    }
  });

  it('reads a sharded directory through model.safetensors.index.json (BF16 widened)', () => {
    const dir = join(root, 'sharded');
    mkdirSync(dir, { recursive: true });
    const entries = model.arena.entries;
    const half = Math.ceil(entries.length / 2);
    const shards = [entries.slice(0, half), entries.slice(half)];
    const files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, k) => {
      writeSafetensors(join(dir, files[k]!), shard.map((e) => ({ name: e.name, dtype: 'bf16' as const, shape: e.shape, data: toBf16(e.tensor.data) })));
      for (const e of shard) weightMap[e.name] = files[k]!;
    });
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const s = openTensorSource(dir);
    assert.deepEqual(s.tensors.map((t) => t.name), names);
    assert.ok(s.tensors.every((t) => t.dtype === 'BF16'));
    assertSourceEquals(s, weights(model), (x) => fromBf16(toBf16(x)));
    s.close();

    // An index naming a tensor its shard lacks, and a shard path outside the directory.
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...weightMap, 'extra.weight': files[0] } }));
    assertQkdError(() => openTensorSource(dir), /index lists 'extra.weight' in model-00001-of-00002.safetensors, which does not hold it/);
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: '../x.safetensors' } }));
    assertQkdError(() => openTensorSource(dir), /weight_map entry for 'a'/);
  });

  it('reads the newest checkpoint of a training run directory (latest.json)', () => {
    const run = join(root, 'run');
    const newer = createLlama(config, 12);
    saveLlama(run, createLlama(config, 13)); // stale top-level copy: latest.json wins
    saveLlama(join(run, 'checkpoint-20'), newer);
    writeFileSync(join(run, 'latest.json'), JSON.stringify({ step: 20, dir: 'checkpoint-20' }));
    const s = openTensorSource(run);
    assert.equal(s.path, run);
    assertSourceEquals(s, weights(newer));
    s.close();
    writeFileSync(join(run, 'latest.json'), JSON.stringify({ step: 20, dir: '../elsewhere' }));
    assertQkdError(() => openTensorSource(run), /latest.json names checkpoint directory "..\/elsewhere"/);
    writeFileSync(join(run, 'latest.json'), '{"step":');
    assertQkdError(() => openTensorSource(run), /latest.json is not readable JSON/);
  });

  it('reads a llama GGUF under Hugging Face names (F32 exact, Q8_0 dequantized)', () => {
    for (const quantized of [false, true]) {
      const path = join(root, `model-${quantized ? 'q8' : 'f32'}.gguf`);
      writeGguf(path, {
        metadata: { 'general.architecture': { type: 'string', value: 'llama' } },
        tensors: model.arena.entries.map((e) => ({
          name: hfToGgufName(e.name),
          shape: e.shape,
          type: quantized && e.shape.length === 2 ? ('Q8_0' as const) : ('F32' as const),
          data: () => e.tensor.data,
        })),
      });
      const s = openTensorSource(path);
      assert.equal(s.format, 'gguf');
      assert.deepEqual(s.tensors.map((t) => t.name), names);
      const expected = weights(model);
      for (const t of s.tensors) {
        const want = expected.get(t.name)!;
        assert.deepEqual(t.shape, want.shape);
        const is2d = want.shape.length === 2;
        assert.equal(t.dtype, quantized && is2d ? 'Q8_0' : 'F32');
        const values = quantized && is2d ? dequantizeQ8_0(quantizeQ8_0(want.data), want.data.length) : want.data;
        s.prefetch!(t.name); // the profiler asks for the next tensor first; it changes nothing that is read
        assert.deepEqual(Array.from(s.readFloat32(t.name)), Array.from(values), t.name);
      }
      s.close();
    }
  });

  it('keeps stored names for a GGUF of another architecture', () => {
    const path = join(root, 'other.gguf');
    writeGguf(path, {
      metadata: { 'general.architecture': { type: 'string', value: 'gpt2' } },
      tensors: [{ name: 'token_embd.weight', shape: [2, 3], type: 'F32', data: new Float32Array([1, 2, 3, 4, 5, 6]) }],
    });
    const s = openTensorSource(path);
    assert.deepEqual(s.tensors, [{ name: 'token_embd.weight', shape: [2, 3], dtype: 'F32' }]);
    assert.deepEqual(Array.from(s.readFloat32('token_embd.weight')), [1, 2, 3, 4, 5, 6]);
    s.close();
  });

  for (const format of ['legacy', 'v1', 'v2'] as const) {
    it(`reads a llama2.c ${format} checkpoint one tensor at a time`, () => {
      const path = join(root, `model-${format}.bin`);
      writeLlama2cCheckpoint(path, model, format);
      const s = openTensorSource(path);
      assert.equal(s.format, 'llama2c');
      assert.deepEqual(new Set(s.tensors.map((t) => t.name)), new Set(names));
      const matrices = s.tensors.filter((t) => t.shape.length === 2);
      assert.ok(matrices.every((t) => t.dtype === (format === 'v2' ? 'Q8_G32' : 'F32')), JSON.stringify(matrices.map((t) => t.dtype)));
      // legacy / v1 are float32: exactly the original; v2 equals what the full loader dequantizes.
      const expected = format === 'v2' ? weights(loadLlama2c(path)) : weights(model);
      assertSourceEquals(s, expected);
      s.close();
    });
  }

  it('refuses paths it cannot read, naming them and listing what is accepted', () => {
    const text = join(root, 'notes.txt');
    writeFileSync(text, 'hello');
    assertQkdError(() => openTensorSource(text), /not a model file qkd reads: notes.txt.*file: .*notes.txt.*expected: a \.safetensors file, a \.gguf file, a llama2\.c \.bin checkpoint/);
    assertQkdError(() => openTensorSource(join(root, 'absent.safetensors')), /cannot open model.*absent\.safetensors/);
    const empty = join(root, 'empty-dir');
    mkdirSync(empty, { recursive: true });
    assertQkdError(() => openTensorSource(empty), /no model\.safetensors, model\.safetensors\.index\.json or latest\.json/);
    const bogusBin = join(root, 'bogus.bin');
    writeFileSync(bogusBin, Buffer.alloc(40, 1));
    assertQkdError(() => openTensorSource(bogusBin), /invalid llama2\.c checkpoint/);
  });
});
