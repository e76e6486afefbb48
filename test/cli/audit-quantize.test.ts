// qkd audit and qkd quantize from the CLI, and the same calls through the API:
// a small random model (with planted outliers in one tensor) is profiled,
// planned, quantized to a packed checkpoint and evaluated.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama, loadLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { auditModel } from '../../src/swan/audit.js';
import { auditAndPlan } from '../../src/swan/plan.js';
import { quantizeModelFile } from '../../src/compress/quantize.js';
import { Rng, kernels } from '../../src/tensor/index.js';

function qkd(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/qkd.js', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, last: () => JSON.parse(r.stdout.trim().split('\n').pop()!) };
}

const dir = mkdtempSync(join(tmpdir(), 'qkd-audit-'));
const modelDir = join(dir, 'model');
const model = createLlama({ vocab_size: 256, hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 }, 3);
// Plant heavy outlier columns in one tensor: it must come out as the most sensitive.
const down = model.arena.get('model.layers.1.mlp.down_proj.weight');
const rng = new Rng(4);
for (let r = 0; r < 64; r++) for (const c of [5, 77]) down.data[r * 160 + c]! *= 25 + rng.uniform();
saveLlama(modelDir, model);
writeFileSync(join(modelDir, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));

/** Width 576: the square projections take the Krylov route (short side above 512). */
function wideModel(): string {
  const wide = join(dir, 'wide');
  if (!existsSync(wide)) saveLlama(wide, createLlama({ vocab_size: 64, hidden_size: 576, intermediate_size: 640, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 4, max_position_embeddings: 16 }, 9));
  return wide;
}

describe('qkd audit', () => {
  it('writes the JSON report with the documented fields and a self-contained HTML report', () => {
    const json = join(dir, 'audit.json');
    const html = join(dir, 'audit.html');
    const r = qkd('audit', modelDir, '--json', json, '--html', html, '--probes', '4');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(readFileSync(json, 'utf8'));
    for (const key of ['model', 'params', 'seconds', 'tensors']) assert.ok(key in report, key);
    assert.equal(report.params, model.arena.size);
    const t = report.tensors.find((x: { name: string }) => x.name === 'model.layers.0.self_attn.q_proj.weight');
    for (const key of ['name', 'shape', 'kurtosis', 'spectral_concentration', 'sigma_max_over_fro', 'noise_amplification', 'reconstruction_error', 'scores', 'composite']) assert.ok(key in t, key);
    assert.deepEqual(Object.keys(t.scores).sort(), ['kurtosis', 'noise_amplification', 'reconstruction_error', 'spectral_concentration']);
    const scored = report.tensors.filter((x: { composite: number | null }) => x.composite !== null);
    const top = scored.sort((a: { composite: number }, b: { composite: number }) => b.composite - a.composite)[0];
    assert.equal(top.name, 'model.layers.1.mlp.down_proj.weight');
    assert.ok(report.plan.avg_bits <= 4.5 + 1e-9);
    const page = readFileSync(html, 'utf8');
    assert.match(page, /<html/);
    assert.ok(!/src=["']https?:/.test(page));
    const summary = r.last();
    assert.equal(summary.tensors, report.tensors.length);
  });

  it('never overwrites the model, and keeps an existing file that is not an audit report unless --force', () => {
    const file = join(dir, 'single.safetensors');
    writeFileSync(file, readFileSync(join(modelDir, 'model.safetensors')));
    const before = readFileSync(file);
    for (const flag of ['--json', '--html']) {
      const r = qkd('audit', file, flag, file, '--force');
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`${flag} .*single\\.safetensors is the model itself; refusing to overwrite it`));
      const inDir = qkd('audit', modelDir, flag, join(modelDir, 'config.json'), '--force');
      assert.equal(inDir.code, 1);
      assert.match(inDir.stderr, /config\.json is a file of the model/);
      // The model given as a file: the files beside it are the model's too.
      const beside = qkd('audit', join(modelDir, 'model.safetensors'), flag, join(modelDir, 'config.json'), '--force');
      assert.equal(beside.code, 1);
      assert.match(beside.stderr, /config\.json is a file of the model/);
    }
    assert.deepEqual(readFileSync(file), before);
    const notes = join(dir, 'notes.txt');
    writeFileSync(notes, 'mine');
    const kept = qkd('audit', file, '--json', notes);
    assert.equal(kept.code, 1);
    assert.match(kept.stderr, /--json .*notes\.txt exists and is not a qkd audit JSON report.*--force/);
    assert.equal(readFileSync(notes, 'utf8'), 'mine');
    // An earlier report is rewritten, and --force replaces anything else.
    const json = join(dir, 'again.json');
    const html = join(dir, 'again.html');
    for (let i = 0; i < 2; i++) assert.equal(qkd('audit', file, '--json', json, '--html', html).code, 0);
    assert.equal(qkd('audit', file, '--json', notes, '--force').code, 0);
    assert.ok('tensors' in JSON.parse(readFileSync(notes, 'utf8')));
    // An empty placeholder (touch, mktemp) holds nothing to lose: replaced without --force.
    const placeholder = join(dir, 'placeholder.json');
    writeFileSync(placeholder, '');
    assert.equal(qkd('audit', file, '--json', placeholder).code, 0);
    assert.ok('tensors' in JSON.parse(readFileSync(placeholder, 'utf8')));
    // A FIFO or a device has size 0 too, but is no placeholder: kept without --force.
    const fifo = join(dir, 'fifo.json');
    if (spawnSync('mkfifo', [fifo]).status === 0) {
      const r = qkd('audit', file, '--json', fifo);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /fifo\.json exists and is not a qkd audit JSON report/);
      assert.ok(statSync(fifo).isFIFO());
    }
  });

  it('gives a clear error for a missing or malformed model', () => {
    const r = qkd('audit', join(dir, 'missing'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /qkd: error: .*missing/);
    const bad = join(dir, 'bad.safetensors');
    writeFileSync(bad, Buffer.from([1, 2, 3]));
    const b = qkd('audit', bad);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /qkd: error: /);
  });

  it('--products picks what the Krylov products run on (int8, bf16, auto), recorded in the report; a bad kind is refused', () => {
    const wide = wideModel();
    const run = (products: string) => {
      const out = join(dir, `products-${products}.json`);
      const r = qkd('audit', wide, '--json', out, '--products', products);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(readFileSync(out, 'utf8'));
    };
    const [int8, bf16, auto] = [run('int8'), run('bf16'), run('auto')];
    assert.equal(int8.settings.products, 'int8');
    assert.equal(auto.settings.products, 'auto');
    const q = (report: { tensors: { name: string; spectral_concentration: number }[] }) => report.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight')!.spectral_concentration;
    assert.notEqual(q(int8), q(bf16), 'the int8 route ran');
    assert.ok(Math.abs(q(int8) - q(bf16)) < 2e-3);
    assert.equal(q(auto), kernels().int8GemmFast() === 1 ? q(int8) : q(bf16));
    const api = auditModel(wide, { products: 'bf16' });
    assert.deepEqual(api.tensors.map((t) => t.spectral_concentration), bf16.tensors.map((t: { spectral_concentration: number | null }) => t.spectral_concentration));
    assert.match(qkd('audit', wide, '--products', 'int4').stderr, /--products.*int4.*(auto|choices)/s);
  });

  it('--krylov-dims and --krylov-depth reach the Krylov pass (recorded in the report, as the API gives); bad values are refused', () => {
    const wide = wideModel();
    const run = (...flags: string[]) => {
      const out = join(dir, `krylov-${flags.join('_')}.json`);
      const r = qkd('audit', wide, '--json', out, '--products', 'bf16', ...flags);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(readFileSync(out, 'utf8'));
    };
    const q = (report: { tensors: { name: string; spectral_concentration: number }[] }) => report.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight')!.spectral_concentration;
    const base = run();
    assert.equal(base.settings.krylovDimensions, 0.7);
    assert.equal(base.settings.krylovDepth, 8);
    const fine = run('--krylov-dims', '4');
    assert.equal(fine.settings.krylovDimensions, 4);
    // Another subspace, another estimate (both within the quadrature's spread of each other).
    assert.notEqual(q(fine), q(base));
    assert.ok(Math.abs(q(fine) - q(base)) < 0.02, `${q(fine)} vs ${q(base)}`);
    const deep = run('--krylov-depth', '12');
    assert.equal(deep.settings.krylovDepth, 12);
    assert.notEqual(q(deep), q(base));
    // Each tensor records the route it took and the depth it ran at: 41 dimensions wanted (0.7 × 58), but blocks
    // are at least 16 wide, so 9 blocks of 16; at --krylov-dims 4, 232 dimensions in 9 blocks of 32; asked for
    // depth 12, 13 blocks of 16.
    const spectrum = (report: { tensors: { name: string; spectrum: unknown }[] }, name: string) => report.tensors.find((t) => t.name === name)!.spectrum;
    assert.deepEqual(spectrum(base, 'model.layers.0.self_attn.q_proj.weight'), { route: 'krylov', block: 16, depth: 8, dimensions: 144, products: 'bf16' });
    assert.deepEqual(spectrum(fine, 'model.layers.0.self_attn.q_proj.weight'), { route: 'krylov', block: 32, depth: 8, dimensions: 288, products: 'bf16' });
    assert.deepEqual(spectrum(deep, 'model.layers.0.self_attn.q_proj.weight'), { route: 'krylov', block: 16, depth: 12, dimensions: 208, products: 'bf16' });
    assert.deepEqual(spectrum(base, 'model.embed_tokens.weight'), { route: 'exact' });
    assert.equal(spectrum(base, 'model.norm.weight'), null);
    const api = auditModel(wide, { products: 'bf16', krylovDimensions: 4 });
    assert.deepEqual(api.tensors.map((t) => t.spectral_concentration), fine.tensors.map((t: { spectral_concentration: number | null }) => t.spectral_concentration));
    assert.match(qkd('audit', wide, '--krylov-dims', '0.2').stderr, /--krylov-dims.*0\.2/s);
    assert.match(qkd('audit', wide, '--krylov-depth', '65').stderr, /--krylov-depth.*65/s);
    assert.throws(() => auditModel(wide, { krylovDimensions: Number.NaN }), /krylovDimensions/);
  });

  it('the API gives the same profile as the CLI for the same seed', () => {
    const a = auditModel(modelDir, { probes: 4 });
    const cli = JSON.parse(readFileSync(join(dir, 'audit.json'), 'utf8'));
    assert.deepEqual(a.tensors.map((t) => t.composite), cli.tensors.map((t: { composite: number | null }) => t.composite));
  });
});

describe('qkd quantize', () => {
  it('uniform 8-bit per channel: eval matches the float model closely', () => {
    const out = join(dir, 'q8');
    const r = qkd('quantize', modelDir, '--out', out, '--bits', '8', '--group', '0');
    assert.equal(r.code, 0, r.stderr);
    const j = r.last();
    assert.ok(j.avg_bits > 8 && j.avg_bits < 8.5, String(j.avg_bits));
    assert.ok(existsSync(join(out, 'tokenizer.json')) && existsSync(join(out, 'quantization.json')));
    const loaded = loadLlama(out);
    let err = 0;
    let norm = 0;
    model.arena.data.forEach((v, i) => {
      err += (loaded.arena.data[i]! - v) ** 2;
      norm += v * v;
    });
    assert.ok(Math.sqrt(err / norm) < 0.02, `relative error ${Math.sqrt(err / norm)}`);
    const e = qkd('eval', '--model', out);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(e.last().ppl > 1);
  });

  it('a budget gives a mixed plan within it; a plan file overrides', () => {
    const out = join(dir, 'mixed');
    const planFile = join(dir, 'plan.json');
    writeFileSync(planFile, JSON.stringify({ 'model.layers.0.mlp.up_proj.weight': 2 }));
    const result = quantizeModelFile(modelDir, { out, budgetBits: 4.6, groupSize: 32, planFile });
    assert.ok(result.avgBits <= 4.6 + 1e-9, String(result.avgBits));
    assert.equal(result.plan.bits['model.layers.0.mlp.up_proj.weight'], 2);
    const widths = new Set(Object.values(result.plan.bits));
    assert.ok(widths.size > 1, 'mixed widths');
    assert.ok(result.plan.bits['model.layers.1.mlp.down_proj.weight']! >= 4, 'the outlier tensor is not starved');
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    assert.equal(config.quantization_config.tensors['model.layers.0.mlp.up_proj.weight'].bits, 2);
  });

  it('plans as qkd audit does: the same default seed, and an audit report as the plan file', () => {
    // A uniform-weighted, p = 1 plan from the audit, at a budget where widths differ.
    const report = join(dir, 'audit-uniform.json');
    const a = qkd('audit', modelDir, '--json', report, '--budget', '3.6', '--group', '32', '--weighting', 'uniform');
    assert.equal(a.code, 0, a.stderr);
    const audited = JSON.parse(readFileSync(report, 'utf8')).plan;
    assert.equal(audited.weighting, 'uniform');
    assert.equal(audited.weight_power, null);
    const byDefault = JSON.parse(readFileSync(join(dir, 'audit.json'), 'utf8')).plan;
    assert.equal(byDefault.weighting, 'composite');
    assert.equal(byDefault.weight_power, 4);
    const api = auditAndPlan(modelDir, { scheme: { groupSize: 32, symmetric: false }, budgetBits: 3.6, weighting: 'uniform' });
    assert.deepEqual(audited.bits, api.plan.bits);
    const p1 = qkd('audit', modelDir, '--json', '-', '--budget', '3.6', '--group', '32', '--weight-power', '1');
    assert.deepEqual(JSON.parse(p1.stdout).plan.bits, auditAndPlan(modelDir, { scheme: { groupSize: 32, symmetric: false }, budgetBits: 3.6, weightPower: 1 }).plan.bits);
    // quantize --plan takes the audit report as it is.
    const fromReport = qkd('quantize', modelDir, '--out', join(dir, 'from-report'), '--group', '32', '--bits', '4', '--plan', report);
    assert.equal(fromReport.code, 0, fromReport.stderr);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'from-report', 'quantization.json'), 'utf8')).bits, audited.bits);
    // Without --seed, quantize --budget profiles with audit's seed, so both give one plan (here seed 0,
    // quantize's default before, gives 2 other widths).
    const composite = qkd('audit', modelDir, '--json', '-', '--budget', '4.3', '--group', '64');
    const q = qkd('quantize', modelDir, '--out', join(dir, 'same-plan'), '--budget', '4.3', '--group', '64');
    assert.equal(q.code, 0, q.stderr);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'same-plan', 'quantization.json'), 'utf8')).bits, JSON.parse(composite.stdout).plan.bits);
    assert.match(qkd('audit', modelDir, '--weighting', 'flat').stderr, /--weighting.*flat/s);
    assert.match(qkd('audit', modelDir, '--weight-power', '-1').stderr, /--weight-power/);
  });

  it('a tied model whose file also holds lm_head.weight quantizes within its budget, also from an audit report as the plan', () => {
    const tied = join(dir, 'tied');
    saveLlama(tied, createLlama({ vocab_size: 256, hidden_size: 64, intermediate_size: 160, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: false }, 6));
    const configPath = join(tied, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), tie_word_embeddings: true }));
    const r = qkd('quantize', tied, '--out', join(dir, 'tied-q'), '--budget', '3.2');
    assert.equal(r.code, 0, r.stderr);
    const written = JSON.parse(readFileSync(join(dir, 'tied-q', 'quantization.json'), 'utf8'));
    assert.equal('lm_head.weight' in written.bits, false);
    // The budget is spent on the tensors that get quantized (lm_head counted in took it to 3.29).
    assert.ok(written.avg_bits <= 3.2 + 1e-9, `avg_bits ${written.avg_bits}`);
    // An audit report lists lm_head in its plan: as the plan file it quantizes all the same.
    const report = join(dir, 'tied-report.json');
    assert.equal(qkd('audit', tied, '--json', report).code, 0);
    assert.ok('lm_head.weight' in JSON.parse(readFileSync(report, 'utf8')).plan.bits);
    const viaPlan = qkd('quantize', tied, '--out', join(dir, 'tied-plan'), '--plan', report);
    assert.equal(viaPlan.code, 0, viaPlan.stderr);
  });

  it('refuses bad flags with clear errors', () => {
    assert.match(qkd('quantize', modelDir, '--out', join(dir, 'x'), '--bits', '5').stderr, /--bits takes one of 2, 3, 4, 8, 16, got '5'/);
    assert.match(qkd('quantize', modelDir, '--out', join(dir, 'x'), '--calibration', join(dir, 'nonexistent')).stderr, /--calibration calibrates GPTQ, and --method rtn uses no calibration/);
    assert.match(qkd('quantize', modelDir, '--out', join(dir, 'x'), '--calibration-batches', '4').stderr, /--calibration-batches calibrates GPTQ/);
    assert.match(qkd('quantize', modelDir, '--out', join(dir, 'x'), '--bits', '4', '--budget', '4.5').stderr, /either --bits \(one width\) or --budget/);
    assert.match(qkd('quantize', modelDir, '--out', join(dir, 'x-budget'), '--budget', '1').stderr, /budget of 1 bits per weight is below/);
    assert.equal(existsSync(join(dir, 'x-budget')), false, 'a failed run leaves no empty --out it created');
    writeFileSync(join(dir, 'badplan.json'), JSON.stringify({ nope: 4 }));
    // A bad plan fails before the profile pass, and leaves no output directory behind.
    const bad = qkd('quantize', modelDir, '--out', join(dir, 'x-plan'), '--plan', join(dir, 'badplan.json'));
    assert.match(bad.stderr, /plan names a tensor .*nope/);
    assert.doesNotMatch(bad.stderr, /profile \d+\/\d+ tensors/);
    assert.equal(existsSync(join(dir, 'x-plan')), false);
    assert.match(qkd('quantize', modelDir, '--out', join(dir, 'x-plan'), '--plan', join(dir, 'missing.json')).stderr, /cannot read plan file/);
    assert.equal(existsSync(join(dir, 'x-plan')), false);
  });
});
