/**
 * PTQ proof (issue: data-free profiling and mixed precision).
 *
 *   npm run experiment -- ptq [--model DIR] [--data PATH] [--steps N] [--out DIR] [--eval-tokens N] [--seeds N]
 *
 * --data trains and evaluates on another corpus (a text file or a directory
 * of them, as `qkd train --data`; default: the embedded Moby-Dick).
 *
 * On a model trained with qkd's own trainer on the embedded corpus (trained
 * once into OUT/model and reused), every row quantizes the same FP32 weights
 * and is evaluated on the same held-out tokens (the last 10% of the corpus,
 * the split `qkd train` validates on):
 *   FP32; RTN 8-bit per-channel; RTN 4-bit per-channel; RTN 4-bit g128;
 *   GPTQ 4-bit g128 (calibrated on the training split); the sensitivity plan
 *   (data-free) at the same average bits as RTN 4-bit g128 and at 4.5 bits;
 *   plus ablations: the same budgets with error-only weighting and with the
 *   unsharpened composite (p = 1), and 3-bit rows where differences are larger.
 * Then the correlation study of docs/algorithms.md §1: each 2-D weight alone is
 * quantized (RTN 3-bit per-channel, so the damage is measurable), Δ perplexity
 * is measured, and Spearman ρ between every metric and that damage is printed.
 * With --seeds N (N > 1) the profile is also taken with the seeds 1 … N−1
 * (the default is 1234): the probes and Krylov starts change, the RTN
 * errors do not. For each seed and each budget of the sensitivity plans
 * (4.5 bits and the rtn-int3-g128 size), it prints how many widths differ
 * from the seed-1234 plan, how much worse that plan scores under the
 * seed-1234 metrics (planDamage, the allocator's own objective), and its
 * measured perplexity: are the plans of different seeds ties?
 * The last stdout line is JSON {"rows": [...], "correlation": {...}, "seeds": [...]}.
 */
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadCorpus, splitText, splitTokens } from '../src/data/corpus.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { loadLlama } from '../src/models/llama-io.js';
import { LlamaModel } from '../src/models/llama.js';
import { quantizeLlama, type QuantMethod } from '../src/compress/quantize-model.js';
import { presetConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { modelDirectory } from '../src/models/load-any.js';
import { openTensorSource } from '../src/io/tensor-source.js';
import { profileModel } from '../src/swan/profile.js';
import { errorCollector, planFromProfile } from '../src/swan/plan.js';
import { planDamage, uniformPlan } from '../src/swan/allocate.js';
import { PLAN_BITS, type QuantPlan, type QuantScheme } from '../src/quant/scheme.js';
import { rtnQuantize, dequantize } from '../src/quant/rtn.js';
import type { Tokenizer } from '../src/data/tokenizer.js';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    model: { type: 'string' },
    steps: { type: 'string', default: '2000' },
    preset: { type: 'string', default: 'small' },
    out: { type: 'string', default: 'runs/ptq' },
    'eval-tokens': { type: 'string', default: '0' },
    'study-tokens': { type: 'string', default: '32768' },
    seeds: { type: 'string', default: '1' },
    data: { type: 'string', default: 'default' },
  },
});

const seeds = Number(values.seeds);
if (!Number.isInteger(seeds) || seeds < 1) {
  console.error(`ptq: --seeds must be a whole number ≥ 1, got '${values.seeds}'`);
  process.exit(1);
}

const corpusText = loadCorpus(values.data!);
/** The corpus in the model directory's name: none for the embedded one, else the path's last part and a hash of the whole path. */
const corpusTag = values.data === 'default' ? '' : `-${basename(resolve(values.data!)).replace(/[^A-Za-z0-9._-]/g, '_')}-${createHash('sha256').update(resolve(values.data!)).digest('hex').slice(0, 8)}`;

async function teacherDir(): Promise<string> {
  if (values.model) return modelDirectory(values.model);
  const dir = join(values.out!, `model-${values.preset}-${values.steps}${corpusTag}`);
  if (!existsSync(join(dir, 'latest.json'))) {
    const config = { ...presetConfig(values.preset!), steps: Number(values.steps), checkpoint_every: Number(values.steps) };
    console.log(`training a ${values.preset} model for ${config.steps} steps on ${values.data === 'default' ? 'the embedded corpus' : values.data} into ${dir} ...`);
    let last = 0;
    await train({
      text: corpusText,
      outDir: dir,
      config,
      force: true, // no latest.json: an unfinished run, nothing worth keeping
      onStep: (p) => {
        if (p.step - last >= config.steps / 10 || p.step === p.steps) {
          last = p.step;
          console.log(`  step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)}`);
        }
      },
    });
  }
  return modelDirectory(dir);
}

interface Row {
  method: string;
  avg_bits: number;
  bytes: number;
  ppl: number;
}

function spearman(xs: number[], ys: number[]): number {
  const rank = (v: number[]): number[] => {
    const order = v.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
    const r = new Array<number>(v.length);
    for (let i = 0; i < order.length; ) {
      let j = i;
      while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
      for (let k = i; k <= j; k++) r[order[k]![1]] = (i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  const rx = rank(xs);
  const ry = rank(ys);
  const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
  const mx = mean(rx);
  const my = mean(ry);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < rx.length; i++) {
    sxy += (rx[i]! - mx) * (ry[i]! - my);
    sxx += (rx[i]! - mx) ** 2;
    syy += (ry[i]! - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : 0;
}

async function main(): Promise<void> {
  const dir = await teacherDir();
  const model = loadLlama(dir);
  const tokenizer: Tokenizer = loadTokenizer(join(dir, 'tokenizer.json'));
  const corpus = corpusText;
  let heldOut = splitText(corpus).validation;
  const evalTokens = Number(values['eval-tokens']);
  if (evalTokens > 0) heldOut = heldOut.slice(0, evalTokens);
  const seqLen = model.config.max_position_embeddings;
  const ppl = (m: LlamaModel, text = heldOut): number => evaluatePerplexity(m, tokenizer, text, seqLen).ppl;

  // One streaming profile pass: metrics + RTN errors at every width for g128 and per-channel.
  const g128: QuantScheme = { groupSize: 128, symmetric: false };
  const perChannel: QuantScheme = { groupSize: 0, symmetric: false };
  const collect128 = errorCollector(g128, PLAN_BITS);
  const source = openTensorSource(dir);
  const report = profileModel(source, { visit: collect128.visit });
  source.close();
  console.log(`profiled ${report.tensors.length} tensors (${(report.params / 1e6).toFixed(2)}M params) in ${report.seconds.toFixed(2)} s`);
  const quantizable = report.tensors.filter((t) => t.composite !== null);

  const trainTokens = splitTokens(Int32Array.from(tokenizer.encode(corpus))).train;
  const calibration = { tokens: trainTokens, batch: 4, seqLen: Math.min(256, seqLen), batches: 16, seed: 0 };
  const rows: Row[] = [];
  const fp32Params = quantizable.reduce((s, t) => s + t.shape[0]! * t.shape[1]!, 0);
  rows.push({ method: 'fp32', avg_bits: 32, bytes: 4 * fp32Params, ppl: ppl(model) });
  console.log(`fp32 ppl ${rows[0]!.ppl.toFixed(4)}`);
  const run = (label: string, plan: QuantPlan, method: QuantMethod = 'rtn'): Row => {
    const q = quantizeLlama(model, plan, { method, calibration: method === 'gptq' ? calibration : undefined });
    const s = q.storage();
    const row = { method: label, avg_bits: s.avgBits, bytes: s.bytes, ppl: ppl(q.toFloatModel()) };
    rows.push(row);
    console.log(`${label.padEnd(34)} ${row.avg_bits.toFixed(3)} bits ${String(row.bytes).padStart(9)} B  ppl ${row.ppl.toFixed(4)}`);
    return row;
  };
  const mixed = (budget: number, weighting: 'composite' | 'uniform' = 'composite', weightPower?: number): QuantPlan => planFromProfile(report, collect128.measured, { scheme: g128, budgetBits: budget, weighting, weightPower }).plan;

  run('rtn-int8-per-channel', uniformPlan(quantizable, 8, perChannel));
  run('rtn-int4-per-channel', uniformPlan(quantizable, 4, perChannel));
  const rtn4 = run('rtn-int4-g128', uniformPlan(quantizable, 4, g128));
  run('gptq-int4-g128', uniformPlan(quantizable, 4, g128), 'gptq');
  run(`mixed-sensitivity@${rtn4.avg_bits.toFixed(3)}`, mixed(rtn4.avg_bits));
  run('mixed-sensitivity@4.5', mixed(4.5));
  // Ablations and a harsher budget where differences are larger.
  run(`mixed-error-only@${rtn4.avg_bits.toFixed(3)}`, mixed(rtn4.avg_bits, 'uniform'));
  run(`mixed-sensitivity-p1@${rtn4.avg_bits.toFixed(3)}`, mixed(rtn4.avg_bits, 'composite', 1));
  const rtn3 = run('rtn-int3-g128', uniformPlan(quantizable, 3, g128));
  run(`mixed-sensitivity@${rtn3.avg_bits.toFixed(3)}`, mixed(rtn3.avg_bits));
  run(`mixed-error-only@${rtn3.avg_bits.toFixed(3)}`, mixed(rtn3.avg_bits, 'uniform'));
  run(`mixed-sensitivity-p1@${rtn3.avg_bits.toFixed(3)}`, mixed(rtn3.avg_bits, 'composite', 1));

  // The plans' dependence on the profile's seed (the probes and Krylov starts; the RTN errors are the same).
  const seedRows: { seed: number; budget: number; widths_changed: number; predicted_damage_vs_default: number; avg_bits: number; ppl: number }[] = [];
  if (seeds > 1) {
    const budgets = [4.5, rtn3.avg_bits];
    const defaults = budgets.map((budget) => planFromProfile(report, collect128.measured, { scheme: g128, budgetBits: budget }));
    const defaultMetrics = defaults[0]!.tensors; // the seed-1234 metrics (the same for every budget)
    console.log(`\nplans by profile seed (1234 is the default; damage: planDamage under the seed-1234 metrics, relative to the seed-1234 plan)`);
    for (let seed = 1; seed < seeds; seed++) {
      const other = openTensorSource(dir);
      const profile = profileModel(other, { seed });
      other.close();
      for (const [i, budget] of budgets.entries()) {
        const own = defaults[i]!;
        const plan = planFromProfile(profile, collect128.measured, { scheme: g128, budgetBits: budget });
        const changed = Object.keys(own.plan.bits).filter((n) => own.plan.bits[n] !== plan.plan.bits[n]).length;
        const damage = planDamage(defaultMetrics, plan.plan) / planDamage(defaultMetrics, own.plan) - 1;
        const row = run(`mixed-sensitivity@${budget.toFixed(3)} seed ${seed}`, plan.plan);
        rows.pop(); // reported in `seeds`, not in the main table
        seedRows.push({ seed, budget, widths_changed: changed, predicted_damage_vs_default: damage, avg_bits: row.avg_bits, ppl: row.ppl });
        console.log(`  seed ${seed} @${budget.toFixed(3)}: ${changed} of ${own.tensors.length} widths differ, predicted damage ${damage >= 0 ? '+' : '−'}${Math.abs(100 * damage).toFixed(2)}% against the seed-1234 plan's`);
      }
    }
  }

  // Correlation study: damage of quantizing one tensor alone.
  const studyText = heldOut.slice(0, Number(values['study-tokens']));
  const base = ppl(model, studyText);
  const damage: number[] = [];
  for (const t of quantizable) {
    const work = new LlamaModel(model.config);
    work.arena.data.set(model.arena.data);
    const view = work.arena.get(t.name);
    const [rows_, cols] = [t.shape[0]!, t.shape[1]!];
    view.data.set(dequantize(rtnQuantize(Float32Array.from(view.data), rows_, cols, 3, perChannel)));
    damage.push(ppl(work, studyText) - base);
  }
  const metrics = ['kurtosis', 'spectral_concentration', 'sigma_max_over_fro', 'noise_amplification', 'reconstruction_error', 'composite'] as const;
  const correlation: Record<string, number> = {};
  console.log(`\ncorrelation study: ${quantizable.length} tensors, each alone at RTN 3-bit per-channel, Δppl on ${studyText.length} held-out bytes`);
  console.log('metric                      Spearman ρ vs Δppl');
  for (const m of metrics) {
    correlation[m] = spearman(quantizable.map((t) => t[m] as number), damage);
    console.log(`${m.padEnd(28)}${correlation[m]!.toFixed(3)}`);
  }
  const byDamage = quantizable.map((t, i) => ({ name: t.name, damage: damage[i]!, composite: t.composite! })).sort((a, b) => b.damage - a.damage);
  console.log('most damaging alone:', byDamage.slice(0, 5).map((d) => `${d.name} (+${d.damage.toFixed(4)})`).join(', '));
  console.log(JSON.stringify({ model: dir, rows, correlation, seeds: seedRows, study: { quantizer: 'rtn-int3-per-channel', tensors: quantizable.length, damage: byDamage } }));
}

await main();
