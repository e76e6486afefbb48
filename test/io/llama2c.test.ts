import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readLlama2cCheckpoint, readLlama2cHeader } from '../../src/io/llama2c.js';
import { loadLlama2c, writeLlama2cCheckpoint } from '../../src/models/llama2c-io.js';
import { createLlama } from '../../src/models/llama.js';
import { llamaConfig } from '../../src/models/llama-config.js';
import { Rng } from '../../src/tensor/random.js';
import { noGrad } from '../../src/tensor/index.js';
import { QkdError } from '../../src/errors.js';

// ---------------------------------------------------------------------------
// A tiny llama2.c model written by hand from the format description.

interface Dims {
  dim: number;
  hidden_dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  vocab_size: number;
  seq_len: number;
}

/** Weights in llama2.c's own layout (wq / wk rows in interleaved RoPE order). */
interface Weights {
  tok: Float32Array;
  rmsAtt: Float32Array[];
  wq: Float32Array[];
  wk: Float32Array[];
  wv: Float32Array[];
  wo: Float32Array[];
  rmsFfn: Float32Array[];
  w1: Float32Array[];
  w2: Float32Array[];
  w3: Float32Array[];
  rmsFinal: Float32Array;
  wcls: Float32Array | null;
}

const DIMS: Dims = { dim: 16, hidden_dim: 24, n_layers: 2, n_heads: 4, n_kv_heads: 2, vocab_size: 12, seq_len: 8 };

function randomWeights(d: Dims, seed: number, shared: boolean): Weights {
  const rng = new Rng(seed);
  const mat = (n: number, scale = 0.5) => Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * scale);
  const norm = () => Float32Array.from({ length: d.dim }, () => 0.8 + 0.4 * rng.uniform());
  const L = Array.from({ length: d.n_layers });
  const kv = (d.dim / d.n_heads) * d.n_kv_heads;
  return {
    tok: mat(d.vocab_size * d.dim, 1),
    rmsAtt: L.map(norm),
    wq: L.map(() => mat(d.dim * d.dim)),
    wk: L.map(() => mat(kv * d.dim)),
    wv: L.map(() => mat(kv * d.dim)),
    wo: L.map(() => mat(d.dim * d.dim)),
    rmsFfn: L.map(norm),
    w1: L.map(() => mat(d.hidden_dim * d.dim)),
    w2: L.map(() => mat(d.dim * d.hidden_dim)),
    w3: L.map(() => mat(d.hidden_dim * d.dim)),
    rmsFinal: norm(),
    wcls: shared ? null : mat(d.vocab_size * d.dim, 1),
  };
}

/** Little-endian byte writer. */
class Bytes {
  private readonly chunks: Buffer[] = [];
  int32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.chunks.push(b);
    return this;
  }
  uint32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.chunks.push(b);
    return this;
  }
  uint8(v: number): this {
    this.chunks.push(Buffer.from([v]));
    return this;
  }
  floats(...arrays: ArrayLike<number>[]): this {
    for (const a of arrays) {
      const b = Buffer.alloc(4 * a.length);
      for (let i = 0; i < a.length; i++) b.writeFloatLE(a[i]!, 4 * i);
      this.chunks.push(b);
    }
    return this;
  }
  int8s(a: Int8Array): this {
    this.chunks.push(Buffer.from(a.buffer, a.byteOffset, a.length));
    return this;
  }
  padTo(size: number): this {
    const length = this.length;
    this.chunks.push(Buffer.alloc(size - length));
    return this;
  }
  get length(): number {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }
  done(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** freq_cis_real or _imag [seq_len, D/2]: cos / sin(pos · 10000^(−2i/D)). */
function freqTable(d: Dims, part: 'cos' | 'sin'): Float32Array {
  const D = d.dim / d.n_heads;
  const out = new Float32Array(d.seq_len * (D / 2));
  for (let t = 0; t < d.seq_len; t++) for (let i = 0; i < D / 2; i++) out[t * (D / 2) + i] = Math[part](t * Math.pow(10000, (-2 * i) / D));
  return out;
}

function legacyFile(d: Dims, w: Weights): Buffer {
  const b = new Bytes();
  for (const v of [d.dim, d.hidden_dim, d.n_layers, d.n_heads, d.n_kv_heads, w.wcls === null ? d.vocab_size : -d.vocab_size, d.seq_len]) b.int32(v);
  b.floats(w.tok, ...w.rmsAtt, ...w.wq, ...w.wk, ...w.wv, ...w.wo, ...w.rmsFfn, ...w.w1, ...w.w2, ...w.w3, w.rmsFinal, freqTable(d, 'cos'), freqTable(d, 'sin'));
  if (w.wcls !== null) b.floats(w.wcls);
  return b.done();
}

function versionedHeader(d: Dims, version: number, shared: boolean, groupSize?: number): Bytes {
  const b = new Bytes().uint32(0x616b3432).int32(version);
  for (const v of [d.dim, d.hidden_dim, d.n_layers, d.n_heads, d.n_kv_heads, d.vocab_size, d.seq_len]) b.int32(v);
  b.uint8(shared ? 1 : 0);
  if (groupSize !== undefined) b.int32(groupSize);
  return b.padTo(256);
}

function v1File(d: Dims, w: Weights): Buffer {
  const b = versionedHeader(d, 1, w.wcls === null);
  b.floats(...w.rmsAtt, ...w.rmsFfn, w.rmsFinal, w.tok, ...w.wq, ...w.wk, ...w.wv, ...w.wo, ...w.w1, ...w.w2, ...w.w3);
  if (w.wcls !== null) b.floats(w.wcls);
  return b.done();
}

/** export.py's Q8_0: scale = max|w| / 127 per group, q = round(w / scale), half to even. */
function q80(w: Float32Array, gs: number): { q: Int8Array; s: Float32Array; deq: Float32Array } {
  const q = new Int8Array(w.length);
  const s = new Float32Array(w.length / gs);
  const deq = new Float32Array(w.length);
  for (let g = 0; g < s.length; g++) {
    const group = w.subarray(g * gs, (g + 1) * gs);
    s[g] = Math.max(...Array.from(group, Math.abs)) / 127;
    for (let i = 0; i < gs; i++) {
      const x = Math.fround(group[i]! / s[g]!);
      const r = Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x);
      q[g * gs + i] = s[g] === 0 ? 0 : r;
      deq[g * gs + i] = q[g * gs + i]! * s[g]!;
    }
  }
  return { q, s, deq };
}

function v2File(d: Dims, w: Weights, gs: number): { bytes: Buffer; dequantized: Weights } {
  const b = versionedHeader(d, 2, w.wcls === null, gs);
  b.floats(...w.rmsAtt, ...w.rmsFfn, w.rmsFinal);
  const quant = (x: Float32Array): Float32Array => {
    const { q, s, deq } = q80(x, gs);
    b.int8s(q).floats(s);
    return deq;
  };
  const tok = quant(w.tok);
  const wq = w.wq.map(quant);
  const wk = w.wk.map(quant);
  const wv = w.wv.map(quant);
  const wo = w.wo.map(quant);
  const w1 = w.w1.map(quant);
  const w2 = w.w2.map(quant);
  const w3 = w.w3.map(quant);
  const wcls = w.wcls === null ? null : quant(w.wcls);
  return { bytes: b.done(), dequantized: { ...w, tok, wq, wk, wv, wo, w1, w2, w3, wcls } };
}

/** Rows of each head of w [heads·D, C] reordered: interleaved pairs → halves (evens, then odds). */
function toHalfOrder(w: Float32Array, heads: number, C: number): Float32Array {
  const D = w.length / heads / C;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    const rows = [...Array(D).keys()];
    const order = [...rows.filter((r) => r % 2 === 0), ...rows.filter((r) => r % 2 === 1)];
    order.forEach((src, dst) => out.set(w.subarray((h * D + src) * C, (h * D + src + 1) * C), (h * D + dst) * C));
  }
  return out;
}

/** The Hugging Face tensors a llama2.c reader must produce from `w`. */
function expectedTensors(d: Dims, w: Weights): Map<string, Float32Array> {
  const m = new Map<string, Float32Array>([['model.embed_tokens.weight', w.tok]]);
  for (let l = 0; l < d.n_layers; l++) {
    const p = `model.layers.${l}`;
    m.set(`${p}.input_layernorm.weight`, w.rmsAtt[l]!);
    m.set(`${p}.self_attn.q_proj.weight`, toHalfOrder(w.wq[l]!, d.n_heads, d.dim));
    m.set(`${p}.self_attn.k_proj.weight`, toHalfOrder(w.wk[l]!, d.n_kv_heads, d.dim));
    m.set(`${p}.self_attn.v_proj.weight`, w.wv[l]!);
    m.set(`${p}.self_attn.o_proj.weight`, w.wo[l]!);
    m.set(`${p}.post_attention_layernorm.weight`, w.rmsFfn[l]!);
    m.set(`${p}.mlp.gate_proj.weight`, w.w1[l]!);
    m.set(`${p}.mlp.down_proj.weight`, w.w2[l]!);
    m.set(`${p}.mlp.up_proj.weight`, w.w3[l]!);
  }
  m.set('model.norm.weight', w.rmsFinal);
  if (w.wcls !== null) m.set('lm_head.weight', w.wcls);
  return m;
}

// ---------------------------------------------------------------------------
// run.c's forward pass, one token at a time, float64 and plain loops.

function runcForward(d: Dims, w: Weights, tokens: number[]): number[][] {
  const C = d.dim;
  const D = C / d.n_heads;
  const kvDim = D * d.n_kv_heads;
  const kvMul = d.n_heads / d.n_kv_heads;
  const matvec = (m: Float32Array, x: number[], rows: number): number[] => {
    const cols = x.length;
    return Array.from({ length: rows }, (_, r) => x.reduce((s, xc, c) => s + m[r * cols + c]! * xc, 0));
  };
  const rmsnorm = (x: number[], g: Float32Array): number[] => {
    const ss = 1 / Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + 1e-5);
    return x.map((v, i) => g[i]! * ss * v);
  };
  const keys: number[][][] = Array.from({ length: d.n_layers }, () => []);
  const values: number[][][] = Array.from({ length: d.n_layers }, () => []);
  const logits: number[][] = [];
  tokens.forEach((token, pos) => {
    let x = Array.from(w.tok.subarray(token * C, (token + 1) * C));
    for (let l = 0; l < d.n_layers; l++) {
      const xb = rmsnorm(x, w.rmsAtt[l]!);
      const q = matvec(w.wq[l]!, xb, C);
      const k = matvec(w.wk[l]!, xb, kvDim);
      const v = matvec(w.wv[l]!, xb, kvDim);
      for (let i = 0; i < C; i += 2) {
        const freq = 1 / Math.pow(10000, (i % D) / D);
        const cos = Math.cos(pos * freq);
        const sin = Math.sin(pos * freq);
        for (const vec of i < kvDim ? [q, k] : [q]) {
          const [v0, v1] = [vec[i]!, vec[i + 1]!];
          vec[i] = v0 * cos - v1 * sin;
          vec[i + 1] = v0 * sin + v1 * cos;
        }
      }
      keys[l]!.push(k);
      values[l]!.push(v);
      const out = new Array<number>(C).fill(0);
      for (let h = 0; h < d.n_heads; h++) {
        const g = Math.floor(h / kvMul);
        const scores = keys[l]!.map((kt) => {
          let s = 0;
          for (let i = 0; i < D; i++) s += q[h * D + i]! * kt[g * D + i]!;
          return s / Math.sqrt(D);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        e.forEach((p, t) => {
          for (let i = 0; i < D; i++) out[h * D + i] += (p / sum) * values[l]![t]![g * D + i]!;
        });
      }
      x = matvec(w.wo[l]!, out, C).map((o, i) => x[i]! + o);
      const xn = rmsnorm(x, w.rmsFfn[l]!);
      const h1 = matvec(w.w1[l]!, xn, d.hidden_dim);
      const h3 = matvec(w.w3[l]!, xn, d.hidden_dim);
      const hb = h1.map((a, i) => (a / (1 + Math.exp(-a))) * h3[i]!);
      x = matvec(w.w2[l]!, hb, C).map((o, i) => x[i]! + o);
    }
    logits.push(matvec(w.wcls ?? w.tok, rmsnorm(x, w.rmsFinal), d.vocab_size));
  });
  return logits;
}

// ---------------------------------------------------------------------------

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'qkd-llama2c-'));
}

function writeTo(bytes: Uint8Array, name = 'model.bin'): string {
  const path = join(tmp(), name);
  writeFileSync(path, bytes);
  return path;
}

function assertTensorsEqual(actual: Map<string, { shape: number[]; data: Float32Array }>, expected: Map<string, Float32Array>): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [name, data] of expected) assert.deepEqual(actual.get(name)!.data, data, name);
}

/** Max |our logits − run.c's| over two sequences. */
function forwardGap(path: string, d: Dims, w: Weights): number {
  const model = loadLlama2c(path);
  const seqs = [
    [1, 5, 9, 2, 10, 3, 7],
    [0, 0, 4, 8, 6, 1, 2],
  ];
  const T = seqs[0]!.length;
  const logits = noGrad(() => model.forward(Int32Array.from(seqs.flat()), seqs.length, T)).data;
  let gap = 0;
  seqs.forEach((seq, b) => {
    runcForward(d, w, seq).forEach((row, t) => row.forEach((v, j) => (gap = Math.max(gap, Math.abs(logits[(b * T + t) * d.vocab_size + j]! - v)))));
  });
  return gap;
}

function throwsField(fn: () => unknown, path: string, field: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof QkdError, `expected a QkdError, got ${String(e)}`);
    assert.equal(e.field, field, e.message);
    assert.equal(e.path, path);
    return true;
  });
}

/** A copy of `bytes` with an int32 (or a byte) replaced. */
function patched(bytes: Buffer, offset: number, value: number, kind: 'int32' | 'uint8' = 'int32'): Buffer {
  const out = Buffer.from(bytes);
  if (kind === 'int32') out.writeInt32LE(value, offset);
  else out.writeUInt8(value, offset);
  return out;
}

describe('llama2.c checkpoints', () => {
  for (const shared of [true, false]) {
    const label = shared ? 'shared classifier' : 'separate classifier';

    it(`reads a hand-built legacy file (${label}) bit-exactly, q/k rows in 'half' order`, () => {
      const w = randomWeights(DIMS, 1, shared);
      const path = writeTo(legacyFile(DIMS, w));
      const ckpt = readLlama2cCheckpoint(path);
      assert.equal(ckpt.format, 'legacy');
      assert.deepEqual(
        { ...ckpt.config },
        { vocab_size: 12, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: shared, max_position_embeddings: 8 },
      );
      assertTensorsEqual(ckpt.tensors, expectedTensors(DIMS, w));
      assert.deepEqual(ckpt.tensors.get('model.layers.1.self_attn.k_proj.weight')!.shape, [8, 16]);
    });

    it(`reads hand-built v1 and v2 files (${label})`, () => {
      const w = randomWeights(DIMS, 2, shared);
      const v1 = readLlama2cCheckpoint(writeTo(v1File(DIMS, w)));
      assert.equal(v1.format, 'v1');
      assert.equal(v1.config.tie_word_embeddings, shared);
      assertTensorsEqual(v1.tensors, expectedTensors(DIMS, w));
      // group size 32 spans two rows of wq: quantization happens in llama2.c's row order
      const { bytes, dequantized } = v2File(DIMS, w, 32);
      const v2 = readLlama2cCheckpoint(writeTo(bytes));
      assert.equal(v2.format, 'v2');
      assertTensorsEqual(v2.tensors, expectedTensors(DIMS, dequantized));
      assert.equal(readLlama2cHeader(writeTo(bytes)).group_size, 32);
    });

    it(`a model loaded from llama2.c computes run.c's forward (GQA, ${label})`, () => {
      const w = randomWeights(DIMS, 3, shared);
      assert.ok(forwardGap(writeTo(legacyFile(DIMS, w)), DIMS, w) < 1e-4);
      assert.ok(forwardGap(writeTo(v1File(DIMS, w)), DIMS, w) < 1e-4);
      const { bytes, dequantized } = v2File(DIMS, w, 16);
      assert.ok(forwardGap(writeTo(bytes), DIMS, dequantized) < 1e-4);
      // The comparison is sensitive to the RoPE pairing: without the row permutation it fails.
      const unpermuted = { ...w, wq: w.wq.map((m) => toHalfOrder(m, DIMS.n_heads, DIMS.dim)), wk: w.wk.map((m) => toHalfOrder(m, DIMS.n_kv_heads, DIMS.dim)) };
      assert.ok(forwardGap(writeTo(legacyFile(DIMS, unpermuted)), DIMS, w) > 1e-2);
    });

    it(`the writer reproduces the hand-built files byte for byte (${label})`, () => {
      const w = randomWeights(DIMS, 4, shared);
      const legacy = legacyFile(DIMS, w);
      const model = loadLlama2c(writeTo(legacy));
      const dir = tmp();
      writeLlama2cCheckpoint(join(dir, 'v1.bin'), model, 'v1');
      assert.ok(readFileSync(join(dir, 'v1.bin')).equals(v1File(DIMS, w)));
      writeLlama2cCheckpoint(join(dir, 'v2.bin'), model, 'v2', { groupSize: 32 });
      assert.ok(readFileSync(join(dir, 'v2.bin')).equals(v2File(DIMS, w, 32).bytes));
      writeLlama2cCheckpoint(join(dir, 'legacy.bin'), model, 'legacy');
      const written = readFileSync(join(dir, 'legacy.bin'));
      assert.equal(written.length, legacy.length);
      // Identical except possibly the last bits of the (unused) freq_cis tables.
      const C = DIMS.dim;
      const freqStart = 28 + 4 * (DIMS.vocab_size * C + DIMS.n_layers * (2 * C + 2 * C * C + 2 * C * 8 + 3 * C * DIMS.hidden_dim) + C);
      const freqEnd = freqStart + 4 * DIMS.seq_len * 2 * 2;
      assert.ok(written.subarray(0, freqStart).equals(legacy.subarray(0, freqStart)));
      assert.ok(written.subarray(freqEnd).equals(legacy.subarray(freqEnd)));
      for (let o = freqStart; o < freqEnd; o += 4) assert.ok(Math.abs(written.readFloatLE(o) - legacy.readFloatLE(o)) < 1e-6);
    });

    it(`writer → reader round trips a qkd model in every format (${label})`, () => {
      const model = createLlama({ vocab_size: 13, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 1, max_position_embeddings: 16, tie_word_embeddings: shared }, 7);
      const dir = tmp();
      for (const format of ['legacy', 'v1'] as const) {
        const path = join(dir, `${format}.bin`);
        writeLlama2cCheckpoint(path, model, format);
        const ckpt = readLlama2cCheckpoint(path);
        assert.equal(ckpt.format, format);
        assert.deepEqual(llamaConfig({ ...ckpt.config, initializer_range: model.config.initializer_range }), model.config);
        assert.equal(ckpt.tensors.size, model.arena.entries.length);
        for (const e of model.arena.entries) assert.deepEqual(ckpt.tensors.get(e.name)!.data, Float32Array.from(e.tensor.data), e.name);
        const loaded = loadLlama2c(path);
        assert.deepEqual(loaded.arena.data, model.arena.data);
      }
      const path = join(dir, 'v2.bin');
      writeLlama2cCheckpoint(path, model, 'v2');
      const header = readLlama2cHeader(path);
      assert.equal(header.group_size, 32, 'export.py default: 64 halved until it divides dim');
      const ckpt = readLlama2cCheckpoint(path);
      assert.equal(ckpt.format, 'v2');
      for (const e of model.arena.entries) {
        const got = ckpt.tensors.get(e.name)!.data;
        const want = e.tensor.data;
        if (e.shape.length === 1) {
          assert.deepEqual(got, Float32Array.from(want), `${e.name} (norms stay float32)`);
          continue;
        }
        // Q8_0 error bound: half a step of the group's scale; rows are 32 wide = one group.
        for (let r = 0; r < e.shape[0]!; r++) {
          const row = want.subarray(r * 32, (r + 1) * 32);
          const step = Math.max(...Array.from(row, Math.abs)) / 127;
          for (let i = 0; i < 32; i++) assert.ok(Math.abs(got[r * 32 + i]! - row[i]!) <= step / 2 + 1e-7, `${e.name}[${r},${i}]`);
        }
      }
    });
  }

  it('writes atomically, replacing an existing file and leaving no temporary file', () => {
    const dir = tmp();
    const path = join(dir, 'model.bin');
    writeFileSync(path, 'old contents');
    writeLlama2cCheckpoint(path, createLlama({ vocab_size: 8, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 }, 1), 'v1');
    assert.deepEqual(readdirSync(dir), ['model.bin']);
    assert.equal(readLlama2cHeader(path).format, 'v1');
  });

  it('refuses to export what run.c cannot compute', () => {
    const path = join(tmp(), 'model.bin');
    const model = createLlama({ vocab_size: 8, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, rope_theta: 500000 }, 1);
    throwsField(() => writeLlama2cCheckpoint(path, model, 'legacy'), path, 'rope_theta');
    const ok = createLlama({ vocab_size: 8, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2 }, 1);
    throwsField(() => writeLlama2cCheckpoint(path, ok, 'v2', { groupSize: 3 }), path, 'groupSize');
    assert.deepEqual(readdirSync(join(path, '..')), []);
  });

  describe('validation names the file and the header field', () => {
    const w = randomWeights(DIMS, 5, false);
    const legacy = legacyFile(DIMS, w);
    const v1 = v1File(DIMS, w);
    const v2 = v2File(DIMS, w, 16).bytes;

    it('legacy: truncated, trailing bytes, short header', () => {
      let p = writeTo(legacy.subarray(0, legacy.length - 4));
      throwsField(() => readLlama2cCheckpoint(p), p, 'file size');
      p = writeTo(Buffer.concat([legacy, Buffer.alloc(1)]));
      throwsField(() => readLlama2cCheckpoint(p), p, 'file size');
      p = writeTo(legacy.subarray(0, 10));
      throwsField(() => readLlama2cCheckpoint(p), p, 'header');
      p = join(tmp(), 'missing.bin');
      assert.throws(() => readLlama2cCheckpoint(p), (e: unknown) => e instanceof QkdError && e.code === 'IO' && e.path === p);
    });

    it('legacy: inconsistent header fields', () => {
      const cases: [number, number, string][] = [
        [0, 0, 'dim'],
        [4, -3, 'hidden_dim'],
        [8, 0, 'n_layers'],
        [12, 3, 'n_heads'], // 16 % 3 ≠ 0
        [12, 16, 'n_heads'], // head size 1 is odd
        [16, 3, 'n_kv_heads'], // 4 % 3 ≠ 0
        [16, 8, 'n_kv_heads'],
        [20, 0, 'vocab_size'],
        [20, 12, 'vocab_size'], // claims a shared classifier, but wcls is there
        [24, -1, 'seq_len'],
        [8, 2 ** 31 - 1, 'file size'], // absurd n_layers: refused before any allocation
        [4, 2 ** 31 - 1, 'file size'],
      ];
      for (const [offset, value, field] of cases) {
        const p = writeTo(patched(legacy, offset, value));
        throwsField(() => readLlama2cCheckpoint(p), p, field);
      }
    });

    it('versioned: magic, version, flags, group size', () => {
      const cases: [Buffer, string][] = [
        [patched(v1, 0, 0x616b3433), 'magic'], // damaged magic: not a legacy file either
        [patched(v1, 4, 3), 'version'],
        [patched(v1, 4, 0), 'version'],
        [patched(v1, 36, 2, 'uint8'), 'shared_classifier'],
        [patched(v1, 36, 1, 'uint8'), 'shared_classifier'], // wcls is present
        [patched(v1, 28, -12), 'vocab_size'],
        [patched(v1, 20, 12), 'n_heads'], // 16 % 12
        [v1.subarray(0, 255), 'header'],
        [v1.subarray(0, v1.length - 1), 'file size'],
        [patched(v2, 37, 0), 'group_size'],
        [patched(v2, 37, 5), 'group_size'],
        [patched(v2, 37, 32), 'file size'], // fewer scales than the file holds
        [v2.subarray(0, v2.length - 100), 'file size'],
      ];
      for (const [bytes, field] of cases) {
        const p = writeTo(bytes);
        throwsField(() => readLlama2cCheckpoint(p), p, field);
      }
    });

    it('an expected format is enforced', () => {
      const pl = writeTo(legacy);
      throwsField(() => readLlama2cCheckpoint(pl, { format: 'v1' }), pl, 'magic');
      throwsField(() => readLlama2cCheckpoint(pl, { format: 'versioned' }), pl, 'magic');
      const p1 = writeTo(v1);
      throwsField(() => readLlama2cCheckpoint(p1, { format: 'legacy' }), p1, 'magic');
      throwsField(() => readLlama2cCheckpoint(p1, { format: 'v2' }), p1, 'version');
      assert.equal(readLlama2cCheckpoint(p1, { format: 'versioned' }).format, 'v1');
    });
  });
});
