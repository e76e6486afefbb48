/**
 * KD+QAT against quantizing afterwards, over bit widths and seeds (issue 14).
 *
 *   npm run experiment -- kdqat [--data PATH|default] [--budget small|full] [--out DIR]
 *                               [--bits 4,3,2] [--seeds N] [--seed S] [--methods a,b,...] [--report]
 *
 * One teacher per corpus and budget (qkd's own trainer, seed S), then per
 * student seed (S, S+1, …, N of them) a student with half its layers,
 * initialised by layer pruning, trained by KD in FP32 (`fp32-student-kd`),
 * and per bit width b:
 *   ptq-rtn          RTN per channel of fp32-student-kd
 *   ptq-gptq         GPTQ per channel of fp32-student-kd (calibration: training split)
 *   qat              QAT without a teacher, from the pruned init, full steps
 *   kd-qat           the default recipe, full steps: the tuned defaults (FP32 KD, then KD+QAT with
 *                    learned step sizes started by the clip search over the last 25%)
 *   kd-qat-early     docs/algorithms.md §4's schedule (the default before): fake quantization after the 5%
 *                    warm-up, min/max grid, full steps
 *   kd-qat-late      one run of the same steps: FP32 KD, then KD+QAT (min/max grid) over the last 25%
 *   kd-qat-late-lsq  one run of the same steps: FP32 KD, then KD+QAT with learned step
 *                    sizes over the last 25% (fake_quant_start 0.75, scales from RTN there)
 *   kd-qat-ft        QAT fine-tuning of fp32-student-kd: 25% more steps at ¼ of the lr, KD+QAT
 *                    from the first step (min/max grid); starts at ptq-rtn's model
 *   kd-ft-ptq-rtn, kd-ft-ptq-gptq   the fine-tuning runs' fair baseline: the same extra steps
 *                    and lr by FP32 KD only (one run per seed), then RTN / GPTQ
 *   kd-qat-ft-lsq    the same with learned step sizes (LSQ+, RTN start)
 *   kd-qat-ft-lsq-clip, -gptq   … scales starting from the clip search, from GPTQ
 *   kd-qat-ft-lsq-cakld         … confidence-aware KL instead of forward KL
 *   kd-qat-ft-lsq-logit         … logit-only KD (task_weight 0)
 * Every quantized row is evaluated from its packed checkpoint (what is
 * deployed) on the held-out 10% (its first 131,072 characters, so a large
 * corpus does not spend most of the grid on evaluation): perplexity and
 * KL(teacher ‖ row) at τ = 1.
 * For each trained run, the curves' ends (task loss, logit KD and L_quant
 * averaged over the first and the last 20 fake-quantized steps, from its
 * metrics.jsonl) show what QAT did; they are printed and saved in
 * OUT/…/curves.json. Finished runs and rows are reused (OUT/…/rows.json), so an interrupted
 * grid resumes. The last stdout line is
 * {"rows":[{"method","bits","seed","ppl","kl_to_teacher"}]}; the table before
 * it gives each method's mean ± standard deviation over the seeds.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { splitText } from '../src/data/corpus.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import type { Tokenizer } from '../src/data/tokenizer.js';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { loadLlama } from '../src/models/llama-io.js';
import type { LlamaModel } from '../src/models/llama.js';
import { modelDirectory } from '../src/models/load-any.js';
import { quantizeLlama } from '../src/compress/quantize-model.js';
import { uniformPlan } from '../src/swan/allocate.js';
import { presetConfig } from '../src/train/config.js';
import { distill, validationKl } from '../src/train/distill.js';
import { parseDistillConfig, type DistillConfigInput } from '../src/train/distill-config.js';
import { writeBytesAtomic } from '../src/io/atomic.js';
import { setupExperiment, trainedTeacher } from './_common.js';

const BUDGETS = {
  small: { teacherPreset: 'small', teacherSteps: 1500, studentSteps: 1200 },
  full: { teacherPreset: 'reference', teacherSteps: 2000, studentSteps: 2000 },
};
const { values } = parseArgs({ args: process.argv.slice(2), strict: false, options: { bits: { type: 'string', default: '4' }, seeds: { type: 'string', default: '1' }, methods: { type: 'string' }, report: { type: 'boolean' } } });
/** --report: train nothing; print the tables of the rows already measured (a grid run in parts). */
const reportOnly = values.report === true;
const bitWidths = String(values.bits).split(',').map(Number);
if (bitWidths.some((b) => ![2, 3, 4, 8].includes(b))) {
  console.error(`--bits takes a comma-separated list of 2, 3, 4, 8; got ${String(values.bits)}`);
  process.exit(1);
}
const seedCount = Number(values.seeds);
if (!Number.isInteger(seedCount) || seedCount < 1) {
  console.error(`--seeds must be a positive integer, got ${String(values.seeds)}`);
  process.exit(1);
}
process.argv = process.argv.filter((a, i, all) => !['--bits', '--seeds', '--methods', '--report'].includes(a) && !['--bits', '--seeds', '--methods'].includes(all[i - 1]!));
const { budget, budgetName, data, seed: baseSeed, text, root, log } = setupExperiment('runs/kdqat', BUDGETS);

/** Held-out characters every row is evaluated on (at most). */
const EVAL_CHARS = 131_072;

const QUANTIZED_METHODS = ['ptq-rtn', 'ptq-gptq', 'kd-ft-ptq-rtn', 'kd-ft-ptq-gptq', 'qat', 'kd-qat', 'kd-qat-early', 'kd-qat-late', 'kd-qat-late-lsq', 'kd-qat-ft', 'kd-qat-ft-lsq', 'kd-qat-ft-lsq-clip', 'kd-qat-ft-lsq-gptq', 'kd-qat-ft-lsq-cakld', 'kd-qat-ft-lsq-logit'] as const;
type QuantizedMethod = (typeof QUANTIZED_METHODS)[number];
const chosen = values.methods === undefined ? [...QUANTIZED_METHODS] : String(values.methods).split(',');
for (const m of chosen) {
  if (!(QUANTIZED_METHODS as readonly string[]).includes(m)) {
    console.error(`--methods: unknown method '${m}' (${QUANTIZED_METHODS.join(', ')})`);
    process.exit(1);
  }
}
const methods = chosen as QuantizedMethod[];

interface Row {
  method: string;
  bits: number;
  seed: number;
  ppl: number;
  kl_to_teacher: number;
}

const rowsPath = join(root, 'rows.json');
const done: Row[] = existsSync(rowsPath) ? (JSON.parse(readFileSync(rowsPath, 'utf8')) as Row[]) : [];
const keyOf = (method: string, bits: number, seed: number) => `${method}|${bits}|${seed}`;
const doneKeys = new Map(done.map((r) => [keyOf(r.method, r.bits, r.seed), r]));

function teacherDir(): Promise<string> {
  const config = { ...presetConfig(budget.teacherPreset), seed: baseSeed, steps: budget.teacherSteps, checkpoint_every: budget.teacherSteps };
  return trainedTeacher(root, text, config, `${budget.teacherPreset}, ${config.steps} steps`, log);
}

/** A student run (reused when finished); `input` adds to the shared settings. */
async function student(name: string, seed: number, input: DistillConfigInput, teacher: string): Promise<string> {
  const dir = join(root, `seed-${seed}`, name);
  if (existsSync(join(dir, 'quantized', 'config.json'))) {
    log(`reusing ${name} (seed ${seed})`);
    return dir;
  }
  const t = presetConfig(budget.teacherPreset);
  const steps = input.training?.steps ?? budget.studentSteps;
  const config: DistillConfigInput = {
    ...input,
    training: { seed, batch_size: t.batch_size, seq_len: t.seq_len, eval_every: Math.max(1, Math.floor(steps / 6)), checkpoint_every: steps, ...input.training, steps },
    optimizer: { lr: t.lr, min_lr: t.min_lr, ...input.optimizer },
    student: { init: 'pruned', ...input.student },
  };
  log(`training ${name} (seed ${seed}, ${config.recipe ?? 'kd-qat'}, ${steps} steps)`);
  const started = performance.now();
  // force: a student without quantized/ is unfinished; it starts over.
  await distill({ teacher, text, outDir: dir, config: parseDistillConfig(config, name), force: true, onNote: (n) => log(`  ${name}: ${n}`) });
  log(`  ${name}: ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return dir;
}

/** The extra FP32 KD steps of the fine-tuning rows (kd-ft-ptq-*): the kd-qat-ft settings without fake quantization. */
function kdFineTune(kdDir: string): DistillConfigInput {
  const t = presetConfig(budget.teacherPreset);
  return { recipe: 'kd', training: { steps: Math.round(budget.studentSteps / 4), warmup_share: 0 }, optimizer: { lr: t.lr / 4, min_lr: t.min_lr / 4, warmup_steps: 0 }, student: { from: modelDirectory(kdDir) } };
}

/** The distillation settings of each trained method at `bits`, given the FP32 KD student's directory. */
function recipeOf(method: QuantizedMethod, bits: 2 | 3 | 4 | 8, kdDir: string): DistillConfigInput | null {
  const t = presetConfig(budget.teacherPreset);
  const ftSteps = Math.round(budget.studentSteps / 4);
  const quantization = { bits };
  const ft: DistillConfigInput = {
    recipe: 'kd-qat',
    training: { steps: ftSteps, warmup_share: 0 },
    quantization: { ...quantization, fake_quant_start: 0, learned_step_size: false },
    optimizer: { lr: t.lr / 4, min_lr: t.min_lr / 4, warmup_steps: 0 },
    student: { from: modelDirectory(kdDir) },
  };
  const lsq = (extra: Record<string, unknown> = {}, distillation: Record<string, unknown> = {}): DistillConfigInput => ({ ...ft, quantization: { ...ft.quantization, learned_step_size: true, scale_init: 'rtn', ...extra }, distillation });
  switch (method) {
    case 'ptq-rtn':
    case 'ptq-gptq':
    case 'kd-ft-ptq-rtn':
    case 'kd-ft-ptq-gptq':
      return null;
    case 'qat':
      return { recipe: 'qat', quantization };
    case 'kd-qat':
      return { recipe: 'kd-qat', quantization };
    case 'kd-qat-early':
      return { recipe: 'kd-qat', quantization: { ...quantization, fake_quant_start: null, learned_step_size: false } };
    case 'kd-qat-late':
      return { recipe: 'kd-qat', quantization: { ...quantization, fake_quant_start: 0.75, learned_step_size: false } };
    case 'kd-qat-late-lsq':
      return { recipe: 'kd-qat', quantization: { ...quantization, learned_step_size: true, scale_init: 'rtn', fake_quant_start: 0.75 } };
    case 'kd-qat-ft':
      return ft;
    case 'kd-qat-ft-lsq':
      return lsq();
    case 'kd-qat-ft-lsq-clip':
      return lsq({ scale_init: 'clip-search' });
    case 'kd-qat-ft-lsq-gptq':
      return lsq({ scale_init: 'gptq' });
    case 'kd-qat-ft-lsq-cakld':
      return lsq({}, { kl: 'confidence' });
    case 'kd-qat-ft-lsq-logit':
      return lsq({}, { task_weight: 0 });
  }
}

interface CurveEnds {
  method: string;
  bits: number;
  seed: number;
  /** First step with fake quantization on. */
  qat_start: number;
  first: { task: number; logit_kd: number; quant: number };
  last: { task: number; logit_kd: number; quant: number };
}

/** Task loss, logit KD and L_quant over the first and last 20 fake-quantized steps of a run. */
function curveEnds(dir: string, method: string, bits: number, seed: number): CurveEnds | null {
  const path = join(dir, 'metrics.jsonl');
  if (!existsSync(path)) return null;
  const steps = readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>)
    .filter((m) => m.fake_quant === 1 && m.task !== undefined);
  if (steps.length === 0) return null;
  const avg = (xs: Record<string, number>[], k: string) => mean(xs.map((m) => m[k] ?? NaN));
  const ends = (xs: Record<string, number>[]) => ({ task: avg(xs, 'task'), logit_kd: avg(xs, 'logit_kd'), quant: avg(xs, 'quant') });
  return { method, bits, seed, qat_start: steps[0]!.step!, first: ends(steps.slice(0, 20)), last: ends(steps.slice(-20)) };
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}
function std(xs: number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}

async function main(): Promise<void> {
  const tDir = await teacherDir();
  const teacher = loadLlama(tDir);
  const tokenizer: Tokenizer = loadTokenizer(join(tDir, 'tokenizer.json'));
  const { train: trainText, validation } = splitText(text);
  const heldOut = validation.slice(0, EVAL_CHARS);
  const heldOutTokens = Int32Array.from(tokenizer.encode(heldOut));
  const seqLen = presetConfig(budget.teacherPreset).seq_len;
  const rows: Row[] = [];
  const curves: CurveEnds[] = [];
  const record = (method: string, bits: number, seed: number, model: () => LlamaModel): void => {
    const key = keyOf(method, bits, seed);
    let row = doneKeys.get(key);
    if (row === undefined) {
      const m = model();
      const ppl = evaluatePerplexity(m, tokenizer, heldOut, seqLen).ppl;
      const kl = m === teacher ? 0 : validationKl(teacher, m, heldOutTokens, 8, seqLen, Infinity);
      row = { method, bits, seed, ppl, kl_to_teacher: kl };
      doneKeys.set(key, row);
      writeBytesAtomic(rowsPath, JSON.stringify([...doneKeys.values()], null, 1) + '\n');
    }
    rows.push(row);
    log(`${method.padEnd(20)} ${String(bits).padStart(2)} bits  seed ${seed}  ppl ${row.ppl.toFixed(4)}  KL ${row.kl_to_teacher.toFixed(5)}`);
  };

  record('fp32-teacher', 32, baseSeed, () => teacher);
  for (let k = 0; k < seedCount; k++) {
    const seed = baseSeed + k;
    if (reportOnly && !doneKeys.has(keyOf('fp32-student-kd', 32, seed))) continue;
    const kdDir = await student('fp32-student-kd', seed, { recipe: 'kd' }, tDir);
    const kd = loadLlama(modelDirectory(kdDir));
    record('fp32-student-kd', 32, seed, () => kd);
    const twoD = kd.arena.entries.filter((e) => e.shape.length === 2);
    const calibration = { tokens: tokenizer.encode(trainText), batch: 8, seqLen, batches: 16, seed };
    let kdFt: LlamaModel | null = null;
    const kdFtModel = async (): Promise<LlamaModel> => (kdFt ??= loadLlama(modelDirectory(await student('fp32-student-kd-ft', seed, kdFineTune(kdDir), tDir))));
    if (methods.some((m) => m.startsWith('kd-ft-ptq')) && (!reportOnly || doneKeys.has(keyOf('fp32-student-kd-ft', 32, seed)))) {
      const m = doneKeys.has(keyOf('fp32-student-kd-ft', 32, seed)) ? kd : await kdFtModel();
      record('fp32-student-kd-ft', 32, seed, () => m);
    }
    for (const bits of bitWidths as (2 | 3 | 4 | 8)[]) {
      const plan = uniformPlan(twoD, bits, { groupSize: 0, symmetric: false });
      for (const method of methods) {
        if (reportOnly && !doneKeys.has(keyOf(method, bits, seed))) continue;
        if (method === 'ptq-rtn') record(method, bits, seed, () => quantizeLlama(kd, plan, { method: 'rtn' }).toFloatModel());
        else if (method === 'ptq-gptq') record(method, bits, seed, () => quantizeLlama(kd, plan, { method: 'gptq', calibration }).toFloatModel());
        else if (method === 'kd-ft-ptq-rtn' || method === 'kd-ft-ptq-gptq') {
          const m = doneKeys.has(keyOf(method, bits, seed)) ? kd : await kdFtModel();
          record(method, bits, seed, () => quantizeLlama(m, plan, method === 'kd-ft-ptq-rtn' ? { method: 'rtn' } : { method: 'gptq', calibration }).toFloatModel());
        } else {
          const name = `${method}-int${bits}`;
          if (!doneKeys.has(keyOf(method, bits, seed))) await student(name, seed, recipeOf(method, bits, kdDir)!, tDir);
          record(method, bits, seed, () => loadLlama(join(root, `seed-${seed}`, name, 'quantized')));
          const ends = curveEnds(join(root, `seed-${seed}`, name), method, bits, seed);
          if (ends) curves.push(ends);
        }
      }
    }
  }

  // Mean ± standard deviation over the seeds, and the change against fp32-student-kd and ptq-rtn.
  const groups = new Map<string, Row[]>();
  for (const r of rows) groups.set(`${r.method}|${r.bits}`, [...(groups.get(`${r.method}|${r.bits}`) ?? []), r]);
  const kdPpl = mean(rows.filter((r) => r.method === 'fp32-student-kd').map((r) => r.ppl));
  console.log(`\nmethod                bits  seeds  ppl (mean ± sd)        vs fp32-student-kd  recovered of PTQ loss  KL(teacher‖·)`);
  for (const [key, rs] of groups) {
    const [method, bitsText] = key.split('|');
    const ppls = rs.map((r) => r.ppl);
    const rtn = groups.get(`ptq-rtn|${bitsText}`);
    const ptqLoss = rtn ? mean(rtn.map((r) => r.ppl)) - kdPpl : NaN;
    const recovered = Number.isFinite(ptqLoss) && ptqLoss > 0 && Number(bitsText) < 32 ? `${(((ptqLoss - (mean(ppls) - kdPpl)) / ptqLoss) * 100).toFixed(0)}%` : '';
    console.log(`${method!.padEnd(21)} ${bitsText!.padStart(4)}  ${String(rs.length).padStart(5)}  ${mean(ppls).toFixed(4)} ± ${std(ppls).toFixed(4)}    ${(((mean(ppls) - kdPpl) / kdPpl) * 100).toFixed(2).padStart(7)}%           ${recovered.padStart(6)}          ${mean(rs.map((r) => r.kl_to_teacher)).toFixed(5)}`);
  }
  console.log('\nQAT curves (mean of the first / last 20 fake-quantized steps; logit KD at τ, L_quant = Σ relative rounding error)');
  console.log('method                bits  seed  from step  task first → last   logit KD first → last   L_quant first → last');
  for (const c of curves) {
    // A recipe without the term (qat has no logit KD) prints a dash.
    const f = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) ? `${a.toFixed(4)} → ${b.toFixed(4)}` : '—'.padEnd(16));
    console.log(`${c.method.padEnd(21)} ${String(c.bits).padStart(4)}  ${c.seed}  ${String(c.qat_start).padStart(9)}  ${f(c.first.task, c.last.task)}   ${f(c.first.logit_kd, c.last.logit_kd)}       ${f(c.first.quant, c.last.quant)}`);
  }
  writeBytesAtomic(join(root, 'curves.json'), JSON.stringify(curves, null, 1) + '\n');
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, rows }));
}

await main();
