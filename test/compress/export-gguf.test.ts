// qkd export: GGUF files that are what llama.cpp's own tools write and that
// llama.cpp (node-llama-cpp, a devDependency) runs with the perplexity qkd
// measures.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { readLlama2cTokenizer, writeLlama2cTokenizer } from '../../src/data/llama2c-tokenizer.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama, type LlamaModel } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { loadModelAny, loadModelTokenizer } from '../../src/models/load-any.js';
import { ByteTokenizer, type Tokenizer } from '../../src/data/tokenizer.js';
import { trainBpe } from '../../src/data/bpe.js';
import { saveTokenizerJson } from '../../src/data/bpe.js';
import { loadDefaultCorpus, splitText } from '../../src/data/corpus.js';
import { compareModels } from '../../src/eval/compare.js';
import { exportGguf, ggufTensorTypes } from '../../src/compress/export-gguf.js';
import { useMoreBits } from '../../src/compress/ggml-mixtures.js';
import { roundTrip } from '../../src/quant/ggml-formats.js';
import { hfToGgufName } from '../../src/io/gguf-names.js';
import { openGguf } from '../../src/io/gguf-reader.js';
import { evaluatePerplexity } from '../../src/eval/perplexity.js';
import { llamaCppPerplexity, loadNodeLlamaCpp } from '../../src/eval/llama-cpp.js';
import { QkdError } from '../../src/errors.js';
import { distill } from '../../src/train/distill.js';
import { parseDistillConfig } from '../../src/train/distill-config.js';
import { FakeQuantController } from '../../src/distill/qat.js';
import { noGrad } from '../../src/tensor/tape.js';

const dir = mkdtempSync(join(tmpdir(), 'qkd-export-'));
const text = loadDefaultCorpus().slice(0, 200_000);

interface Golden {
  models: Record<string, { shape: Record<string, number>; types: Record<string, Record<string, string>> }>;
}
const golden = JSON.parse(readFileSync('test/fixtures/llama-quantize-types.json', 'utf8')) as Golden;

function modelDir(name: string, model: LlamaModel, tokenizer: Tokenizer): string {
  const path = join(dir, name);
  saveLlama(path, model);
  saveTokenizerJson(join(path, 'tokenizer.json'), tokenizer);
  return path;
}

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, last: () => JSON.parse(r.stdout.trim().split('\n').pop()!) };
}

describe('qkd export: the types llama-quantize picks', () => {
  for (const [name, g] of Object.entries(golden.models)) {
    const model = createLlama({ vocab_size: 256, max_position_embeddings: 64, ...g.shape } as never, 3);
    for (const [fileType, expected] of Object.entries(g.types)) {
      it(`${name} (${g.shape.num_hidden_layers} layers, width ${g.shape.hidden_size}) as ${fileType}: every tensor's type equals llama-quantize's`, () => {
        const { types, fallbacks } = ggufTensorTypes(model, { type: fileType });
        const ours = Object.fromEntries(Object.entries(types).filter(([n]) => n in expected));
        assert.deepEqual(ours, expected);
        if (g.shape.hidden_size % 256 !== 0 && fileType.includes('K')) assert.ok(fallbacks.length > 0, 'row-length fallbacks are reported');
      });
    }
  }

  it('use_more_bits picks the first and last eighth and every third layer between', () => {
    assert.deepEqual([...Array(16).keys()].filter((i) => useMoreBits(i, 16)), [0, 1, 4, 7, 10, 13, 14, 15]);
  });
});

describe('qkd export: round trip and llama.cpp', () => {
  const shape = { hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 };
  const byte = modelDir('byte', createLlama({ vocab_size: 256, ...shape }, 11), new ByteTokenizer());
  const bpeTokenizer = trainBpe(text, 600);
  const bpe = modelDir('bpe', createLlama({ vocab_size: 600, ...shape, tie_word_embeddings: true }, 12), bpeTokenizer);

  for (const [label, path, type] of [['byte', byte, 'Q4_K_M'], ['bpe (tied embeddings)', bpe, 'Q4_0'], ['byte', byte, 'Q8_0'], ['byte', byte, 'F32']] as const) {
    it(`${label} ${type}: qkd reads back exactly the encoded weights and the tokenizer; llama.cpp loads it without a warning and agrees on perplexity`, async () => {
      const out = join(dir, `${label.split(' ')[0]}-${type}.gguf`);
      const r = exportGguf(path, { out, type });
      const original = loadModelAny(path);
      const back = loadModelAny(out);
      for (const e of original.arena.entries) {
        const t = r.types[hfToGgufName(e.name)] ?? r.types['token_embd.weight']!;
        const expected = e.shape.length === 2 ? roundTrip(t, e.tensor.data as Float32Array) : e.tensor.data;
        assert.deepEqual(Array.from(back.arena.get(e.name).data), Array.from(expected), `${e.name} (${t})`);
      }
      const tokOriginal = loadModelTokenizer(original, path);
      const tokBack = loadModelTokenizer(back, out);
      const sample = text.slice(5000, 6000);
      assert.deepEqual(Array.from(tokBack.encode(sample)), Array.from(tokOriginal.encode(sample)));
      const tokens = tokOriginal.encode(text.slice(0, 4000)).subarray(0, 4 * 64 + 1);
      const ours = evaluatePerplexity(back, tokOriginal, tokOriginal.decode(tokens), 64);
      const theirs = await llamaCppPerplexity(out, tokens, 64);
      assert.deepEqual(theirs.warnings, [], 'llama.cpp loads the file without a warning');
      assert.equal(theirs.tokens, 4 * 64);
      assert.ok(Math.abs(theirs.ppl / ours.ppl - 1) < 0.005, `llama.cpp ppl ${theirs.ppl} vs qkd ${ours.ppl}`);
    });
  }
});

describe('qkd export from the CLI', () => {
  const small = modelDir('small', createLlama({ vocab_size: 256, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 32 }, 5), new ByteTokenizer());

  it('writes the file, states every fallback, and refuses bad requests by name', () => {
    const out = join(dir, 'small.gguf');
    const r = qkd('export', small, '--out', out, '--type', 'Q4_K_M');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Q4_K needs rows of a multiple of 256, the row has 64; Q5_0 instead \(as llama\.cpp\)/);
    assert.equal(r.last().file_type, 15);
    assert.match(qkd('export', small, '--out', out, '--type', 'Q4_K_M').stderr, /exists; refusing to overwrite it.*--force/);
    assert.match(qkd('export', small, '--out', join(dir, 'x.gguf'), '--type', 'Q4_X').stderr, /--type takes one of .*Q4_K_M.*got 'Q4_X'/);
    assert.throws(() => exportGguf(small, { out: join(dir, 'x.gguf'), type: 'Q4_X' }), /unknown GGUF type 'Q4_X'.*Q4_K_M/);
    assert.match(qkd('export', small, '--out', join(dir, 'x.bin'), '--type', 'Q8_0').stderr, /should end in \.gguf/);
    assert.match(qkd('export', small, '--out', join(out, 'x.gguf')).stderr, /is a file, not a directory/);
    assert.match(qkd('export', small, '--out', join(dir, 'y.gguf'), '--budget', '1').stderr, /below the smallest GGUF plan/);
    const evalGguf = qkd('eval', '--model', out, '--data', 'default');
    assert.equal(evalGguf.code, 0, evalGguf.stderr);
    // A GGUF as the input of quantize: the packed checkpoint gets the GGUF's tokenizer and evaluates.
    const packed = join(dir, 'from-gguf');
    assert.equal(qkd('quantize', out, '--out', packed, '--bits', '8').code, 0);
    const evalPacked = qkd('eval', '--model', packed, '--data', 'default');
    assert.equal(evalPacked.code, 0, evalPacked.stderr);
  });

  it('a budget picks K-quant types by sensitivity within the bits asked for', () => {
    const model = createLlama({ vocab_size: 256, ...{ hidden_size: 256, intermediate_size: 512, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 } }, 21);
    // One tensor with heavy outliers: it must not get the smallest type.
    const w = model.arena.get('model.layers.2.mlp.down_proj.weight').data;
    for (let i = 0; i < w.length; i += 97) w[i]! *= 40;
    const path = modelDir('budget', model, new ByteTokenizer());
    const r = exportGguf(path, { out: join(dir, 'budget.gguf'), budgetBits: 4.5 });
    const weights = Object.entries(r.types).filter(([n]) => !n.endsWith('norm.weight'));
    const bytesPerWeight = weights.reduce((s, [n, t]) => s + (t === 'Q2_K' ? 84 : t === 'Q3_K' ? 110 : t === 'Q4_K' ? 144 : t === 'Q5_K' ? 176 : t === 'Q6_K' ? 210 : t === 'Q8_0' ? 8 * 34 : 512) * (sizeOf(model, n) / 256), 0) / weights.reduce((s, [n]) => s + sizeOf(model, n), 0);
    assert.ok(8 * bytesPerWeight <= 4.5 + 1e-9, `${8 * bytesPerWeight} bits per weight`);
    assert.ok(new Set(weights.map(([, t]) => t)).size > 1, 'a mix of types');
    const rank = ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_0', 'F16'];
    const median = rank.indexOf(weights.map(([, t]) => t).sort((a, b) => rank.indexOf(a) - rank.indexOf(b))[Math.floor(weights.length / 2)]!);
    assert.ok(rank.indexOf(r.types['blk.2.ffn_down.weight']!) > median, `the outlier tensor got ${r.types['blk.2.ffn_down.weight']}`);
    assert.throws(() => exportGguf(path, { out: join(dir, 'both.gguf'), budgetBits: 4, type: 'Q4_0' }), (e: unknown) => e instanceof QkdError && /either a type or a budget/.test(e.message));
  });

  it('--imatrix weights the K-quant fits by calibration importance and says which tensors it could not weight', async () => {
    const model = createLlama({ vocab_size: 256, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 }, 23);
    const path = modelDir('imatrix', model, new ByteTokenizer());
    const plainOut = join(dir, 'imatrix-plain.gguf');
    const weightedOut = join(dir, 'imatrix-weighted.gguf');
    const plain = exportGguf(path, { out: plainOut, type: 'Q4_K_M' });
    const r = qkd('export', path, '--out', weightedOut, '--type', 'Q4_K_M', '--imatrix', 'default', '--imatrix-batches', '2');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /importance from \d+ calibration tokens weights the fits of \d+ K-quant tensors/);
    assert.ok(r.last().imatrix_tensors > 0);
    const a = openGguf(plainOut);
    const b = openGguf(weightedOut);
    try {
      let changed = 0;
      for (const t of a.tensors) {
        assert.equal(b.tensor(t.name).typeName, t.typeName, t.name);
        const same = Buffer.from(a.readBytes(t.name)).equals(Buffer.from(b.readBytes(t.name)));
        // Norms (F32) and the embedding lookup have no importance; every K-quant weight is refit.
        if (t.typeName.endsWith('_K') && t.name !== 'token_embd.weight') assert.ok(!same, `${t.name} (${t.typeName}) unchanged`);
        else assert.ok(same, `${t.name} (${t.typeName}) changed`);
        if (!same) changed++;
      }
      assert.ok(changed > 0);
    } finally {
      a.close();
      b.close();
    }
    assert.equal(r.last().bytes, plain.bytes);
    // Q4_0 has no fit to weight (only the Q6_K output layer is weighted), and the CLI says which tensors it left.
    const legacy = qkd('export', path, '--out', join(dir, 'imatrix-q4_0.gguf'), '--type', 'Q4_0', '--imatrix', 'default', '--imatrix-batches', '1');
    assert.equal(legacy.code, 0, legacy.stderr);
    const pure = qkd('export', path, '--out', join(dir, 'imatrix-q8_0.gguf'), '--type', 'Q8_0', '--pure', '--imatrix', 'default');
    assert.equal(pure.code, 0, pure.stderr);
    assert.match(pure.stderr, /no tensor has a K-quant type, so --imatrix has nothing to weight \(no calibration was run\)/);
    assert.match(legacy.stderr, /tensors have types with no fit to weight \(Q4_0.*\), written as without --imatrix: blk\.0\./);
    // A NaN weight has no encoding: refused by name before anything is written.
    const broken = createLlama({ vocab_size: 256, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 32 }, 3);
    broken.arena.get('model.layers.0.mlp.up_proj.weight').data[7] = Number.NaN;
    const brokenPath = modelDir('nan', broken, new ByteTokenizer());
    const nan = qkd('export', brokenPath, '--out', join(dir, 'nan.gguf'), '--type', 'Q8_0');
    assert.equal(nan.code, 1);
    assert.match(nan.stderr, /weight model\.layers\.0\.mlp\.up_proj\.weight holds NaN at element 7/);
    // A half-precision value or block scale that overflows (the GGUF's perplexity was NaN) is refused, F32 written.
    broken.arena.get('model.layers.0.mlp.up_proj.weight').data[7] = 1e30;
    const hugePath = modelDir('huge', broken, new ByteTokenizer());
    for (const type of ['Q4_0', 'Q4_K_M', 'F16']) {
      const huge = qkd('export', hugePath, '--out', join(dir, `huge-${type}.gguf`), '--type', type);
      assert.equal(huge.code, 1, type);
      assert.match(huge.stderr, /weight model\.layers\.0\.mlp\.up_proj\.weight holds 1\.0+\d*e\+30 at element 7, beyond what (Q4_0|Q5_0|F16) encodes/, type);
      assert.equal(existsSync(join(dir, `huge-${type}.gguf`)), false);
    }
    // Beyond ±65504 but within a type's scales: F16 and Q4_1's half-precision minimum overflow, Q8_0 and Q5_0 (Q4_K_M's fallback at this width) do not: the file decodes finite.
    broken.arena.get('model.layers.0.mlp.up_proj.weight').data[7] = 1e5;
    broken.arena.get('model.layers.0.mlp.up_proj.weight').data[40] = -1e5;
    const largePath = modelDir('large', broken, new ByteTokenizer());
    for (const [type, element] of [['F16', 7], ['Q4_1', 40]] as const) {
      const large = qkd('export', largePath, '--out', join(dir, `large-${type}.gguf`), '--type', type, '--pure');
      assert.equal(large.code, 1, type);
      assert.match(large.stderr, new RegExp(`up_proj\\.weight holds -?100000 at element ${element}, beyond what ${type} encodes`), type);
    }
    for (const type of ['Q8_0', 'Q4_K_M']) {
      const out = join(dir, `large-${type}.gguf`);
      assert.equal(qkd('export', largePath, '--out', out, '--type', type).code, 0, type);
      const f = openGguf(out);
      try {
        const up = f.readFloat32('blk.0.ffn_up.weight');
        assert.ok(up.every(Number.isFinite), type);
        assert.ok(Math.abs(up[7]! - 1e5) < 1e3 && Math.abs(up[40]! + 1e5) < 1e3, `${type}: ${up[7]}, ${up[40]}`);
      } finally {
        f.close();
      }
      // llama.cpp runs the file too, with the perplexity qkd computes from it (finite: no block decodes to ±Inf).
      const tokenizer = new ByteTokenizer();
      const tokens = tokenizer.encode(text.slice(0, 2000)).subarray(0, 4 * 32 + 1);
      const ours = evaluatePerplexity(loadModelAny(out), tokenizer, tokenizer.decode(tokens), 32);
      const theirs = await llamaCppPerplexity(out, tokens, 32);
      assert.ok(Number.isFinite(theirs.ppl) && Math.abs(theirs.ppl / ours.ppl - 1) < 0.005, `${type}: llama.cpp ppl ${theirs.ppl} vs qkd ${ours.ppl}`);
    }
    assert.equal(qkd('export', hugePath, '--out', join(dir, 'huge-F32.gguf'), '--type', 'F32').code, 0);
    assert.match(qkd('export', path, '--out', join(dir, 'imatrix-bad.gguf'), '--imatrix', join(dir, 'no-such.txt')).stderr, /no-such\.txt/);
    assert.match(qkd('export', path, '--out', join(dir, 'imatrix-bad.gguf'), '--imatrix-batches', '3').stderr, /--imatrix-batches needs --imatrix/);
  });
});

function sizeOf(model: LlamaModel, ggufName: string): number {
  const e = model.arena.entries.find((x) => hfToGgufName(x.name) === ggufName);
  return e ? e.tensor.size : 0;
}


describe('QAT on the deployment grid (quantization.format)', () => {
  it('Q4_K_M: the forward QAT trains is exactly the exported GGUF, and llama.cpp runs it with the same perplexity', async () => {
    const teacherShape = { vocab_size: 256, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 };
    const teacher = modelDir('qat-teacher', createLlama(teacherShape, 31), new ByteTokenizer());
    const out = join(dir, 'qat-q4km');
    const config = parseDistillConfig({ recipe: 'kd-qat', training: { steps: 4, batch_size: 2, seq_len: 32, eval_every: 4, checkpoint_every: 4, warmup_share: 0 }, student: { init: 'pruned' }, quantization: { format: 'Q4_K_M' } });
    const r = await distill({ teacher, text, outDir: out, config });
    assert.ok(r.gguf !== undefined && r.gguf.type === 'Q4_K_M');
    const student = loadModelAny(out);
    const qat = new FakeQuantController(student, { bits: 4, symmetric: false, granularity: 'channel', groupSize: 128, formatOf: ggufTensorTypes(student, { type: 'Q4_K_M' }).typeOf });
    qat.enabled = true;
    const deployed = loadModelAny(r.gguf.path);
    const ids = new ByteTokenizer().encode(text.slice(1000, 1000 + 64 * 3 + 1));
    const trained = noGrad(() => student.forward(ids.subarray(0, 64), 1, 64).data);
    const fromFile = noGrad(() => deployed.forward(ids.subarray(0, 64), 1, 64).data);
    assert.deepEqual(Array.from(fromFile), Array.from(trained), 'the GGUF holds exactly the fake-quantized weights');
    assert.equal(qat.formats.get('model.layers.0.mlp.down_proj.weight'), 'Q6_K', 'llama.cpp\'s Q4_K_M rule: ffn_down of a use_more_bits layer');
    const ours = evaluatePerplexity(deployed, new ByteTokenizer(), text.slice(1000, 1000 + 64 * 3 + 1), 64);
    const theirs = await llamaCppPerplexity(r.gguf.path, ids, 64);
    assert.deepEqual(theirs.warnings, []);
    assert.ok(Math.abs(theirs.ppl / ours.ppl - 1) < 0.005, `llama.cpp ${theirs.ppl} vs qkd ${ours.ppl}`);
    qat.detach();
  });

  it('refuses an unknown format by name', () => {
    assert.throws(() => parseDistillConfig({ quantization: { format: 'Q4_Z' } }), (e: unknown) => e instanceof QkdError && e.field === 'quantization.format' && /Q4_K_M/.test(e.message));
  });
});

describe('qkd eval --reference', () => {
  it('compares a model with its reference as llama.cpp\'s KL-divergence mode does', () => {
    const path = join(dir, 'byte');
    const gguf = join(dir, 'ref-Q4_0.gguf');
    exportGguf(path, { out: gguf, type: 'Q4_0', pure: true });
    const data = join(dir, 'compare.txt');
    writeFileSync(data, text.slice(0, 40_000));
    const self = compareModels(path, path, { data });
    assert.equal(self.kld.mean, 0);
    assert.equal(self.same_top, 1);
    assert.equal(self.delta_p.rms, 0);
    const q = compareModels(gguf, path, { data });
    assert.ok(q.kld.mean > 0 && q.kld.p99 >= q.kld.median && q.kld.max >= q.kld.p999, JSON.stringify(q.kld));
    assert.ok(q.same_top < 1 && q.same_top > 0.5);
    const ppl = evaluatePerplexity(loadModelAny(gguf), new ByteTokenizer(), splitText(text.slice(0, 40_000)).validation, 64);
    assert.ok(Math.abs(q.ppl / ppl.ppl - 1) < 1e-5, `${q.ppl} vs ${ppl.ppl} (float32 vs float64 log-softmax)`);
    // Retention and compression (an untrained model: its Q4_0 may even score better by chance), in about a sixth of the bytes.
    assert.equal(self.retention, 1);
    assert.deepEqual(self.compression, { params: 1, bytes: 1 });
    assert.ok(Math.abs(q.retention - q.reference_ppl / q.ppl) < 1e-12 && q.retention !== 1 && q.retention > 0.5 && q.retention < 1.5, `${q.retention}`);
    assert.equal(q.params, q.reference_params);
    assert.equal(q.bytes, statSync(gguf).size);
    assert.ok(q.compression.bytes > 4 && q.compression.bytes < 8, `${q.compression.bytes}`);
    assert.throws(() => compareModels(path, join(dir, 'bpe'), { data }), /600-token vocabulary/);
  });
});

describe('SentencePiece (llama2.c) vocabularies in GGUF', () => {
  it('llama.cpp tokenizes an exported llama2.c vocabulary exactly as qkd does', async () => {
    const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    // As in real SentencePiece vocabularies, every letter is a piece of its own (merges build on them).
    const letters = Array.from('abcdefghijklmnopqrstuvwxyz');
    const words = [' ', ...letters, ' t', 'he', ' the', ' a', 'an', ' and', ' w', 'ha', 'le', ' whale', 'wh', 'ale', ' s', 'ea', ' sea'];
    const pieces = ['<unk>', '\n<s>\n', '\n</s>\n', ...bytes, ...words];
    const scores = pieces.map((_, i) => (i < 259 ? 0 : -(i - 259)));
    const path = join(dir, 'spm');
    mkdirSync(path, { recursive: true });
    writeLlama2cTokenizer(join(path, 'tokenizer.bin'), pieces, scores);
    const model = createLlama({ vocab_size: pieces.length, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64 }, 8);
    saveLlama(path, model);
    const out = join(dir, 'spm.gguf');
    exportGguf(path, { out, type: 'F32', tokenizer: join(path, 'tokenizer.bin') });
    const ours = readLlama2cTokenizer(join(path, 'tokenizer.bin'), pieces.length);
    const back = loadModelTokenizer(loadModelAny(out), out);
    const sample = 'the whale and the sea\nthe end';
    assert.deepEqual(Array.from(back.encode(sample)), Array.from(ours.encode(sample)), 'qkd reads the GGUF vocabulary back');
    const { getLlama } = await loadNodeLlamaCpp<{ getLlama: (o: object) => Promise<{ loadModel(o: object): Promise<{ tokenize(t: string): number[]; dispose(): Promise<void> }> }> }>();
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
    const m = await llama.loadModel({ modelPath: out });
    try {
      assert.deepEqual(m.tokenize(sample), Array.from(ours.encode(sample)), 'llama.cpp splits the text into the same pieces');
    } finally {
      await m.dispose();
    }
  });
});
