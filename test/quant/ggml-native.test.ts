// The native ggml codec (native/kernels/ggml_codec.cc) against the
// TypeScript definitions in src/quant/: the same bytes from the encoder, the
// same floats from the decoder and from the fused round trip, on rows many
// blocks long (so the threaded driver splits them), in place, and the same
// errors for bad lengths. ggml-oracle.test.ts holds both to llama.cpp.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { GGML_FORMATS, roundTrip, writableFormat } from '../../src/quant/ggml-formats.js';
import { Rng } from '../../src/tensor/index.js';
import { nativeGgmlCodec, nativeStatus, withBackend } from '../../src/tensor/backend.js';

const BLOCK_FORMATS = GGML_FORMATS.filter((t) => t.reference !== undefined).map((t) => t.name);
const skip = nativeStatus().loaded ? false : 'the native addon is not built';

function rows(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = rng.normal();
    // Weight-like rows with a heavy-tailed stretch and some exact zeros.
    x[i] = i % 4096 < 256 ? g / Math.max(0.05, Math.abs(rng.normal())) : i % 997 === 0 ? 0 : 0.02 * g;
  }
  return x;
}

const bitsOf = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('native ggml codec = the TypeScript definitions', { skip }, () => {
  const x = rows(256 * 300, 7);

  it('covers the ten block formats', () => {
    assert.deepEqual(BLOCK_FORMATS, ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K']);
    assert.ok(withBackend('native', () => nativeGgmlCodec()) !== null);
    assert.equal(withBackend('reference', () => nativeGgmlCodec()), null);
  });

  for (const name of BLOCK_FORMATS) {
    it(`${name}: encode, decode and round trip bit for bit, in place too`, () => {
      const t = writableFormat(name);
      const ref = t.reference!;
      const bytesRef = ref.encode(x);
      const bytesNative = withBackend('native', () => t.encode(x));
      const firstDiff = bytesNative.findIndex((b, i) => b !== bytesRef[i]);
      assert.equal(firstDiff, -1, `${name}: byte ${firstDiff} (block ${Math.floor(firstDiff / t.blockBytes)})`);
      const decodedRef = ref.decode(bytesRef, x.length);
      const decodedNative = withBackend('native', () => t.decode(bytesRef, x.length));
      assert.deepEqual(bitsOf(decodedNative), bitsOf(decodedRef));
      const fused = withBackend('native', () => roundTrip(name, x));
      assert.deepEqual(bitsOf(fused), bitsOf(decodedRef));
      // In place: the addon's round trip may write over its input.
      const copy = x.slice();
      withBackend('native', () => nativeGgmlCodec()!.ggmlRoundTrip(t.id, copy, copy));
      assert.deepEqual(bitsOf(copy), bitsOf(decodedRef));
    });
  }

  it('every instruction-set path (QKD_ISA=portable: 4 lanes, avx2: 8) gives the same bytes, with importance too', () => {
    const formats = ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'];
    const digest = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
    const importance = Float32Array.from({ length: 512 }, (_, j) => 0.25 + (j % 7));
    const formatsModule = new URL('../../src/quant/ggml-formats.js', import.meta.url).href;
    const script = `
      import { writableFormat } from ${JSON.stringify(formatsModule)};
      import { createHash } from 'node:crypto';
      const x = new Float32Array(Buffer.from(process.argv[1], 'base64').buffer.slice(0));
      const imp = Float32Array.from({ length: 512 }, (_, j) => 0.25 + (j % 7));
      const h = (b) => createHash('sha256').update(b).digest('hex');
      console.log(JSON.stringify(${JSON.stringify(formats)}.flatMap((n) => [h(writableFormat(n).encode(x)), h(writableFormat(n).encode(x, imp))])));`;
    const sample = x.subarray(0, 256 * 40);
    const want = formats.flatMap((name) => [digest(writableFormat(name).reference!.encode(sample)), digest(writableFormat(name).reference!.encode(sample, importance))]);
    for (const isa of ['portable', 'avx2']) {
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, Buffer.from(sample.buffer, sample.byteOffset, sample.byteLength).toString('base64')], { encoding: 'utf8', env: { ...process.env, QKD_ISA: isa, QKD_BACKEND: 'native' } });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout.trim()) as string[], want, `QKD_ISA=${isa}`);
    }
  });

  it('subarrays at any offset, and one block', () => {
    const t = writableFormat('Q4_K');
    const backing = rows(256 * 3 + 1, 11);
    const view = backing.subarray(1, 1 + 256);
    assert.deepEqual(withBackend('native', () => t.encode(view)), t.reference!.encode(view));
  });

  it('bad lengths fail with the same message on both paths', () => {
    const t = writableFormat('Q6_K');
    const odd = new Float32Array(300);
    const messageOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        return (err as Error).message;
      }
      return 'no error';
    };
    const native = messageOf(() => withBackend('native', () => t.encode(odd)));
    assert.equal(native, messageOf(() => t.reference!.encode(odd)));
    assert.match(native, /not a multiple of the block size 256/);
    assert.match(messageOf(() => withBackend('native', () => t.decode(new Uint8Array(209), 256))), /209 bytes for 256 elements, expected 210/);
    assert.match(messageOf(() => withBackend('native', () => nativeGgmlCodec()!.ggmlEncode(9, new Float32Array(32), new Uint8Array(36), null))), /ggml type id 9 is not one of/);
    assert.match(messageOf(() => withBackend('native', () => nativeGgmlCodec()!.ggmlEncode(2, new Float32Array(32), new Uint8Array(17), null))), /has 17 bytes, expected exactly 18/);
    const a = new Float32Array(64);
    assert.match(messageOf(() => withBackend('native', () => nativeGgmlCodec()!.ggmlRoundTrip(2, a.subarray(0, 32), a.subarray(16, 48)))), /overlap/);
  });
});

// F16 and BF16 decode through the backend's widening kernel when the bytes can be viewed as 16-bit words in
// place (into `into` when given), and through a little-endian loop otherwise: the same floats either way,
// specials included (compared as values: a NaN is a NaN, whatever payload each path keeps; ±0 stay apart).
describe('F16 and BF16 decode: the kernel path equals the loop', () => {
  const words = Uint16Array.from([0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff, 0x7c00, 0xfc00, 0x3555, 0x7f80, 0xff80, 0x3f80, 0x0080, 0x1234]);
  for (const name of ['F16', 'BF16'] as const) {
    it(name, () => {
      const format = GGML_FORMATS.find((t) => t.name === name)!;
      const bytes = new Uint8Array(words.buffer.slice(0));
      // At an odd offset the bytes cannot be viewed as words: the loop decodes them.
      const odd = new Uint8Array(bytes.length + 1);
      odd.set(bytes, 1);
      const loop = format.decode!(odd.subarray(1), words.length);
      for (const backend of nativeStatus().loaded ? (['reference', 'native'] as const) : (['reference'] as const)) {
        withBackend(backend, () => {
          assert.deepEqual(Array.from(format.decode!(bytes, words.length)), Array.from(loop), `${name} ${backend}`);
          const into = new Float32Array(words.length + 3);
          const got = format.decode!(bytes, words.length, into);
          assert.equal(got.buffer, into.buffer, 'decoded into `into`');
          assert.deepEqual(Array.from(got), Array.from(loop), `${name} ${backend} into`);
        });
      }
      assert.throws(() => format.decode!(bytes.subarray(2), words.length), /expected 32/);
    });
  }
});
