/**
 * Fuzz tests for every model parser (safetensors, GGUF, llama2.c and
 * openTensorSource). Each starts from small valid files and applies many
 * seeded mutations: truncation at every header byte, length / count / size
 * fields overwritten with huge, negative-as-signed and off-by-one values,
 * random byte flips, and structure-aware edits (JSON headers and indexes,
 * llama2.c header fields). Every call must either succeed or throw a
 * QkdError: never another error type, never a hang, never a giant
 * allocation.
 *
 * Each target runs in a worker thread, which is terminated if it takes too
 * long (a sync infinite loop cannot be interrupted otherwise). Inside the
 * worker, the allocation entry points (Buffer.alloc*, ArrayBuffer, typed
 * array and Array constructors) are wrapped so any single allocation above
 * 16 MiB (the base files are a few KiB) is reported as a failure, and the
 * process RSS must stay within a bound.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QkdError } from '../../src/errors.js';
import { Rng } from '../../src/tensor/random.js';
import { openGguf } from '../../src/io/gguf-reader.js';
import { writeGguf } from '../../src/io/gguf-writer.js';
import { openSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { openLlama2c, readLlama2cCheckpoint } from '../../src/io/llama2c.js';
import { openTensorSource } from '../../src/io/tensor-source.js';
import { createLlama } from '../../src/models/llama.js';
import { writeLlama2cCheckpoint } from '../../src/models/llama2c-io.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { toBf16, toF16 } from '../../src/tensor/dtype.js';

type TargetName = 'safetensors' | 'gguf' | 'llama2c' | 'tensor-source';
const TARGETS: TargetName[] = ['safetensors', 'gguf', 'llama2c', 'tensor-source'];

interface FuzzReport {
  cases: number;
  parsed: number;
  refused: number;
  failures: string[];
  maxCaseMs: number;
  rssGrowthMb: number;
}

const ALLOCATION_LIMIT = 16 * 1024 * 1024;
const RSS_GROWTH_LIMIT_MB = 300;
const WORKER_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------
// Worker side

class GiantAllocation extends Error {}

/** Wraps the allocation entry points so a single allocation above the limit throws GiantAllocation. */
function installAllocationGuard(): void {
  const check = (bytes: unknown, what: string): void => {
    if (typeof bytes === 'number' && bytes > ALLOCATION_LIMIT) throw new GiantAllocation(`${what} of ${bytes} bytes`);
  };
  for (const key of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
    const original = Buffer[key] as (size: number, ...rest: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[key] = (size: number, ...rest: unknown[]) => {
      check(size, `Buffer.${key}`);
      return original.call(Buffer, size, ...rest);
    };
  }
  const g = globalThis as unknown as Record<string, unknown>;
  const sized: [string, number][] = [
    ['ArrayBuffer', 1],
    ['Uint8Array', 1],
    ['Int8Array', 1],
    ['Uint16Array', 2],
    ['Int16Array', 2],
    ['Uint32Array', 4],
    ['Int32Array', 4],
    ['Float32Array', 4],
    ['Float64Array', 8],
    ['Array', 8],
  ];
  for (const [name, bytesPer] of sized) {
    const target = g[name] as new (...args: unknown[]) => unknown;
    g[name] = new Proxy(target, {
      construct(t, args, newTarget) {
        if (typeof args[0] === 'number') check(args[0] * bytesPer, `new ${name}(${args[0]})`);
        return Reflect.construct(t, args, newTarget === g[name] ? t : newTarget);
      },
    });
  }
}

/** Collects outcomes: success, QkdError, or a failure (any other error, or a slow case). */
class Outcomes {
  cases = 0;
  parsed = 0;
  refused = 0;
  maxCaseMs = 0;
  /** Peak resident set size seen after any case (the work is synchronous, so sample here). */
  rssMax = process.memoryUsage().rss;
  readonly failures: string[] = [];

  run(label: string, fn: () => void): void {
    this.cases++;
    const start = performance.now();
    try {
      fn();
      this.parsed++;
    } catch (err) {
      if (err instanceof QkdError) this.refused++;
      else if (this.failures.length < 50) this.failures.push(`${label}: ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)}`);
    }
    const ms = performance.now() - start;
    this.rssMax = Math.max(this.rssMax, process.memoryUsage.rss());
    this.maxCaseMs = Math.max(this.maxCaseMs, ms);
    if (ms > 2000 && this.failures.length < 50) this.failures.push(`${label}: took ${ms.toFixed(0)} ms`);
  }

  /** Runs each read separately so one refused tensor does not hide the others. */
  reads(label: string, names: readonly string[], read: (name: string) => void): void {
    for (const name of names) this.run(`${label} read ${name}`, () => read(name));
  }
}

const U64_VALUES = [0n, 1n, 31n, 0xffffffffn, 1n << 32n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, (1n << 64n) - 1n];
const U32_VALUES = [0, 1, 5, 13, 99, 0x7fffffff, 0x80000000, 0xffffffff];
const I32_VALUES = [0, 1, -1, 2, 3, 7, 64, 65536, 0x7fffffff, -0x80000000];

/** Byte-level mutants of `base`: truncations, u64/u32 overwrites over the header, random flips. */
function* byteMutants(base: Buffer, headerEnd: number, rng: Rng, random: number): Generator<[string, Buffer]> {
  for (let cut = 0; cut < Math.min(headerEnd + 1, base.length); cut++) yield [`cut@${cut}`, base.subarray(0, cut)];
  for (let k = 0; k < 10; k++) {
    const cut = headerEnd + rng.int(Math.max(1, base.length - headerEnd));
    yield [`cut@${cut}`, base.subarray(0, cut)];
  }
  // Every header offset gets a few of the interesting values (which ones: seeded).
  const u64Values = [...U64_VALUES, BigInt(base.length), BigInt(base.length + 1), BigInt(base.length - headerEnd)];
  for (let at = 0; at + 8 <= headerEnd; at++) {
    for (let k = 0; k < 3; k++) {
      const v = u64Values[rng.int(u64Values.length)]!;
      const b = Buffer.from(base);
      b.writeBigUInt64LE(v, at);
      yield [`u64@${at}=${v}`, b];
    }
  }
  for (let at = 0; at + 4 <= headerEnd; at++) {
    for (let k = 0; k < 2; k++) {
      const v = U32_VALUES[rng.int(U32_VALUES.length)]!;
      const b = Buffer.from(base);
      b.writeUInt32LE(v, at);
      yield [`u32@${at}=${v}`, b];
    }
  }
  for (let k = 0; k < random; k++) {
    const b = Buffer.from(base);
    const flips = 1 + rng.int(8);
    for (let f = 0; f < flips; f++) {
      // Mostly in the header, sometimes anywhere.
      const at = rng.uniform() < 0.8 ? rng.int(Math.max(1, headerEnd)) : rng.int(b.length);
      b[at] = rng.uniform() < 0.5 ? b[at]! ^ (1 << rng.int(8)) : rng.int(256);
    }
    yield [`random#${k}`, b];
  }
}

function tinyModel(tie: boolean, seed: number) {
  return createLlama({ vocab_size: 8, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, tie_word_embeddings: tie }, seed);
}

function fuzzSafetensors(dir: string, out: Outcomes, rng: Rng): void {
  const base = join(dir, 'base.safetensors');
  writeSafetensors(
    base,
    [
      { name: 'a', dtype: 'f32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      { name: 'b', dtype: 'f16', shape: [3], data: toF16([1, -2, 0.5]) },
      { name: 'c', dtype: 'bf16', shape: [2], data: toBf16([3, 4]) },
      { name: 'd', dtype: 'i8', shape: [4], data: Int8Array.from([1, -1, 2, -2]) },
      { name: 'e', dtype: 'i32', shape: [1], data: Int32Array.from([7]) },
    ],
    { format: 'pt' },
  );
  const bytes = readFileSync(base);
  const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));
  const path = join(dir, 'm.safetensors');
  const exercise = (label: string): void => {
    let names: string[] = [];
    let f: ReturnType<typeof openSafetensors> | undefined;
    out.run(label, () => {
      f = openSafetensors(path);
      names = f.names;
    });
    if (f === undefined) return;
    out.reads(label, names, (n) => f!.readFloat32(n));
    f.close();
  };
  for (const [label, b] of byteMutants(bytes, headerEnd, rng, 300)) {
    writeFileSync(path, b);
    exercise(label);
  }
  // Structure-aware: edit the JSON header, then write it with its true length (or keep the old one).
  const header = JSON.parse(bytes.subarray(8, headerEnd).toString('utf8')) as Record<string, Record<string, unknown>>;
  const data = bytes.subarray(headerEnd);
  const weird: unknown[] = [-1, 1.5, 2 ** 53, 2 ** 60, 1e300, -0, null, 'NaN', '4', [], [[1]], {}, true, [0, 1e400], [-8, 8], [0, 2 ** 64]];
  for (let k = 0; k < 300; k++) {
    const h = JSON.parse(JSON.stringify(header)) as Record<string, Record<string, unknown>>;
    const names = Object.keys(h).filter((n) => n !== '__metadata__');
    const entry = h[names[rng.int(names.length)]!]!;
    const which = rng.int(5);
    const value = weird[rng.int(weird.length)];
    if (which === 0) entry.shape = rng.uniform() < 0.5 ? value : [value, 2];
    else if (which === 1) entry.data_offsets = rng.uniform() < 0.5 ? value : [value, 24];
    else if (which === 2) entry.dtype = ['F64', 'I64', 'F8_E4M3', 'f32', '', 7][rng.int(6)];
    else if (which === 3) h.__metadata__ = value as Record<string, unknown>;
    else h[names[rng.int(names.length)]!] = value as Record<string, unknown>;
    const json = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(rng.uniform() < 0.8 ? BigInt(json.length) : BigInt(headerEnd - 8));
    writeFileSync(path, Buffer.concat([len, json, data]));
    exercise(`json#${k}`);
  }
}

function fuzzGguf(dir: string, out: Outcomes, rng: Rng): void {
  const base = join(dir, 'base.gguf');
  const values = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1));
  writeGguf(base, {
    metadata: {
      'general.architecture': { type: 'string', value: 'llama' },
      'a.u8': { type: 'u8', value: 7 },
      'a.i64': { type: 'i64', value: -5n },
      'a.f64': { type: 'f64', value: 0.5 },
      'a.bool': { type: 'bool', value: true },
      'a.tokens': { type: 'array', itemType: 'string', value: ['<s>', 'ab', ''] },
      'a.scores': { type: 'array', itemType: 'f32', value: [0.5, -1] },
      'a.nested': { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'u16', value: [1, 2] }] },
    },
    tensors: [
      { name: 'token_embd.weight', shape: [2, 32], type: 'F32', data: values(64) },
      { name: 'blk.0.attn_q.weight', shape: [2, 32], type: 'Q8_0', data: values(64) },
      { name: 'blk.0.attn_k.weight', shape: [1, 64], type: 'Q4_0', data: values(64) },
      { name: 'blk.0.attn_v.weight', shape: [2, 4], type: 'F16', data: values(8) },
      { name: 'output_norm.weight', shape: [4], type: 'BF16', data: values(4) },
    ],
  });
  const f0 = openGguf(base);
  const headerEnd = f0.dataOffset;
  f0.close();
  const bytes = readFileSync(base);
  const path = join(dir, 'm.gguf');
  for (const [label, b] of byteMutants(bytes, headerEnd, rng, 400)) {
    writeFileSync(path, b);
    let f: ReturnType<typeof openGguf> | undefined;
    out.run(label, () => (f = openGguf(path)));
    if (f === undefined) continue;
    out.reads(label, f.tensors.map((t) => t.name), (n) => f!.readFloat32(n));
    f.close();
  }
}

function fuzzLlama2c(dir: string, out: Outcomes, rng: Rng): void {
  const bases: [string, Buffer][] = [];
  for (const [format, tie] of [['legacy', false], ['legacy', true], ['v1', false], ['v2', true]] as const) {
    const path = join(dir, `base-${format}-${tie}.bin`);
    writeLlama2cCheckpoint(path, tinyModel(tie, 3), format);
    bases.push([`${format}/${tie}`, readFileSync(path)]);
  }
  const path = join(dir, 'm.bin');
  const exercise = (label: string): void => {
    let r: ReturnType<typeof openLlama2c> | undefined;
    out.run(label, () => (r = openLlama2c(path)));
    if (r !== undefined) {
      out.reads(label, r.tensors.map((t) => t.name), (n) => r!.read(n));
      r.close();
    }
    out.run(`${label} stream`, () => readLlama2cCheckpoint(path));
  };
  for (const [name, bytes] of bases) {
    const headerEnd = name.startsWith('legacy') ? 28 : 44;
    for (const [label, b] of byteMutants(bytes, headerEnd, rng, 60)) {
      writeFileSync(path, b);
      exercise(`${name} ${label}`);
    }
    // Header fields set to interesting int32 values (all offsets, aligned or not).
    for (let at = 0; at + 4 <= headerEnd; at++) {
      for (const v of I32_VALUES.filter(() => rng.uniform() < 0.4)) {
        const b = Buffer.from(bytes);
        b.writeInt32LE(v, at);
        writeFileSync(path, b);
        exercise(`${name} i32@${at}=${v}`);
      }
    }
  }
}

function fuzzTensorSource(dir: string, out: Outcomes, rng: Rng): void {
  const exercise = (label: string, path: string): void => {
    let s: ReturnType<typeof openTensorSource> | undefined;
    out.run(label, () => (s = openTensorSource(path)));
    if (s === undefined) return;
    out.reads(label, s.tensors.map((t) => t.name), (n) => s!.readFloat32(n));
    s.close();
  };
  // A sharded Hugging Face directory inside a training run directory.
  const run = join(dir, 'run');
  const ckpt = join(run, 'checkpoint-3');
  saveLlama(ckpt, tinyModel(false, 5));
  rmSync(join(ckpt, 'model.safetensors'));
  const model = tinyModel(false, 5);
  const entries = model.arena.entries;
  const shardNames = ['s1.safetensors', 's2.safetensors'];
  const weightMap: Record<string, string> = {};
  [entries.slice(0, 4), entries.slice(4)].forEach((part, k) => {
    writeSafetensors(join(ckpt, shardNames[k]!), part.map((e) => ({ name: e.name, dtype: 'f32' as const, shape: e.shape, data: e.tensor.data })));
    for (const e of part) weightMap[e.name] = shardNames[k]!;
  });
  const index = { weight_map: weightMap };
  const writeIndex = (value: unknown) => writeFileSync(join(ckpt, 'model.safetensors.index.json'), typeof value === 'string' ? value : JSON.stringify(value));
  const writeLatest = (value: unknown) => writeFileSync(join(run, 'latest.json'), typeof value === 'string' ? value : JSON.stringify(value));
  writeIndex(index);
  writeLatest({ step: 3, dir: 'checkpoint-3' });
  exercise('valid run', run);
  assert.equal(out.parsed > 0, true);

  const weird: unknown[] = [5, null, '', '.', '..', '../s1.safetensors', 'a/b', 'missing.safetensors', 's2.safetensors', [], {}, 'checkpoint-3', '/etc/passwd'];
  for (let k = 0; k < 150; k++) {
    const map: Record<string, unknown> = { ...weightMap };
    const keys = Object.keys(map);
    const choice = rng.int(4);
    if (choice === 0) map[keys[rng.int(keys.length)]!] = weird[rng.int(weird.length)];
    else if (choice === 1) map[`extra.${k}`] = shardNames[rng.int(2)];
    else if (choice === 2) delete map[keys[rng.int(keys.length)]!];
    writeIndex(choice === 3 ? { weight_map: weird[rng.int(weird.length)] } : { weight_map: map });
    exercise(`index#${k}`, run);
  }
  const indexText = JSON.stringify(index);
  for (let k = 0; k < 100; k++) {
    const chars = indexText.split('');
    chars[rng.int(chars.length)] = '{}[]",:0\\x'[rng.int(10)]!;
    writeIndex(chars.join(''));
    exercise(`index-bytes#${k}`, run);
  }
  writeIndex(index);
  for (const latest of [...weird.map((d) => ({ step: 3, dir: d })), [], 'null', '{', '"checkpoint-3"', { step: 3 }]) {
    writeLatest(latest);
    exercise(`latest ${JSON.stringify(latest)}`, run);
  }
  writeLatest({ step: 3, dir: 'checkpoint-3' });
  const shard = join(ckpt, shardNames[0]!);
  const shardBytes = readFileSync(shard);
  for (const [label, b] of byteMutants(shardBytes, 8 + Number(shardBytes.readBigUInt64LE(0)), rng, 0)) {
    if (!label.startsWith('cut') && rng.uniform() > 0.05) continue; // a sample: the safetensors target covers the rest
    writeFileSync(shard, b);
    exercise(`shard ${label}`, run);
  }
  writeFileSync(shard, shardBytes);

  // Single files of every format, mutated, through openTensorSource (magic sniffing included).
  const singles: string[] = [];
  const gguf = join(dir, 'x.gguf');
  writeGguf(gguf, { metadata: { 'general.architecture': { type: 'string', value: 'llama' } }, tensors: [{ name: 'output.weight', shape: [1, 32], type: 'Q4_0', data: new Float32Array(32).fill(1) }] });
  singles.push(gguf);
  const bin = join(dir, 'x.bin');
  writeLlama2cCheckpoint(bin, tinyModel(true, 6), 'v2');
  singles.push(bin);
  const st = join(dir, 'x.safetensors');
  writeSafetensors(st, [{ name: 'w', dtype: 'bf16', shape: [2], data: toBf16([1, 2]) }]);
  singles.push(st);
  for (const file of singles) {
    const bytes = readFileSync(file);
    for (let k = 0; k < 80; k++) {
      const b = Buffer.from(bytes);
      const at = rng.int(Math.min(b.length, 300));
      if (rng.uniform() < 0.3) writeFileSync(file, b.subarray(0, at));
      else {
        b[at] = rng.int(256);
        writeFileSync(file, b);
      }
      exercise(`${file} #${k}`, file);
    }
  }
  exercise('directory without a model', dir);
  mkdirSync(join(dir, 'empty'), { recursive: true });
  exercise('empty directory', join(dir, 'empty'));
}

function runTarget(target: TargetName, seed: number): FuzzReport {
  // Thousands of small files: use a RAM-backed directory where there is one.
  const scratch = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(scratch, `qkd-fuzz-${target}-`));
  const out = new Outcomes();
  const rng = new Rng(seed);
  const rssBefore = process.memoryUsage().rss;
  installAllocationGuard();
  try {
    if (target === 'safetensors') fuzzSafetensors(dir, out, rng);
    else if (target === 'gguf') fuzzGguf(dir, out, rng);
    else if (target === 'llama2c') fuzzLlama2c(dir, out, rng);
    else fuzzTensorSource(dir, out, rng);
  } catch (err) {
    out.failures.push(`harness: ${err instanceof Error ? err.stack : String(err)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { cases: out.cases, parsed: out.parsed, refused: out.refused, failures: out.failures, maxCaseMs: out.maxCaseMs, rssGrowthMb: (out.rssMax - rssBefore) / 2 ** 20 };
}

// ---------------------------------------------------------------------------
// Test side

function inWorker(target: TargetName, seed: number): Promise<FuzzReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { target, seed } });
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`${target}: fuzzing did not finish in ${WORKER_TIMEOUT_MS} ms (a parser hangs?)`));
    }, WORKER_TIMEOUT_MS);
    worker.once('message', (report: FuzzReport) => {
      clearTimeout(timer);
      void worker.terminate();
      resolve(report);
    });
    worker.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

if (!isMainThread) {
  const { target, seed } = workerData as { target: TargetName; seed: number };
  parentPort!.postMessage(runTarget(target, seed));
} else {
  describe('parser fuzzing: every mutant parses or throws a QkdError', { concurrency: 2 }, () => {
    for (const target of TARGETS) {
      it(`${target}`, async () => {
        const report = await inWorker(target, 20240601 + TARGETS.indexOf(target));
        assert.deepEqual(report.failures, [], `${report.failures.length} failures (first shown)`);
        assert.ok(report.cases > 300, `only ${report.cases} cases`);
        assert.ok(report.parsed > 0 && report.refused > 0, `parsed ${report.parsed}, refused ${report.refused}`);
        assert.ok(report.rssGrowthMb < RSS_GROWTH_LIMIT_MB, `RSS grew by ${report.rssGrowthMb.toFixed(0)} MB`);
      });
    }
  });
}
