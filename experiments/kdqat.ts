/**
 * KD+QAT proof (issue: distillation and joint distillation + QAT).
 *
 *   npm run experiment -- kdqat [--data PATH|default] [--budget small|full] [--out DIR] [--seed N]
 *
 * One seed (default 1337), one corpus, one token budget for every student. A teacher is
 * trained with qkd's own trainer (or reused from OUT), then a student with
 * half its layers, initialised by layer pruning, is trained three ways with
 * the same steps, batches and data order:
 *   fp32-student-kd  logit KD (kd recipe), evaluated in FP32
 *   qat-int4         QAT without a teacher (task loss + γ·L_quant), packed 4-bit
 *   kd-qat-int4      joint KD + QAT (SPEC section 4 schedule), packed 4-bit
 * and the KD student is post-training quantized (RTN per-channel) to give
 * ptq-int8 and ptq-int4. Every row is evaluated on the same held-out tokens:
 * perplexity and mean per-token KL(teacher ‖ row) at τ = 1. The last stdout
 * line is JSON {"rows":[{"method","bits","ppl","kl_to_teacher"}...]}.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
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
import { train } from '../src/train/trainer.js';
import { distill, validationKl } from '../src/train/distill.js';
import { parseDistillConfig, type DistillConfigInput } from '../src/train/distill-config.js';
import { setupExperiment } from './_common.js';

const BUDGETS = {
  small: { teacherPreset: 'small', teacherSteps: 1500, studentSteps: 1200 },
  full: { teacherPreset: 'reference', teacherSteps: 2000, studentSteps: 2000 },
};
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/kdqat', BUDGETS);

async function teacherDir(): Promise<string> {
  const dir = join(root, 'teacher');
  if (!existsSync(join(dir, 'latest.json'))) {
    const config = { ...presetConfig(budget.teacherPreset), seed, steps: budget.teacherSteps, checkpoint_every: budget.teacherSteps };
    log(`training the teacher (${budget.teacherPreset}, ${config.steps} steps) into ${dir}`);
    // force: an unfinished run (no latest.json) has nothing worth keeping.
    await train({ text, outDir: dir, config, force: true });
  } else log(`reusing the teacher in ${dir}`);
  return modelDirectory(dir);
}

async function student(name: string, recipe: 'kd' | 'qat' | 'kd-qat', teacher: string): Promise<string> {
  const dir = join(root, name);
  if (existsSync(join(dir, 'quantized', 'config.json'))) {
    log(`reusing ${name} in ${dir}`);
    return dir;
  }
  const teacherConfig = presetConfig(budget.teacherPreset);
  const input: DistillConfigInput = {
    recipe,
    training: { seed, steps: budget.studentSteps, batch_size: teacherConfig.batch_size, seq_len: teacherConfig.seq_len, eval_every: Math.max(1, Math.floor(budget.studentSteps / 6)), checkpoint_every: budget.studentSteps },
    optimizer: { lr: teacherConfig.lr, min_lr: teacherConfig.min_lr },
    student: { init: 'pruned' },
  };
  log(`training ${name} (${recipe}, ${budget.studentSteps} steps)`);
  // force: a student without quantized/ is unfinished; it starts over as before.
  await distill({ teacher, text, outDir: dir, config: parseDistillConfig(input, name), force: true, onNote: (n) => log(`  ${name}: ${n}`) });
  return dir;
}

interface Row {
  method: string;
  bits: number;
  ppl: number;
  kl_to_teacher: number;
}

async function main(): Promise<void> {
  const tDir = await teacherDir();
  const teacher = loadLlama(tDir);
  const tokenizer: Tokenizer = loadTokenizer(join(tDir, 'tokenizer.json'));
  const heldOut = splitText(text).validation;
  const heldOutTokens = Int32Array.from(tokenizer.encode(heldOut));
  const seqLen = presetConfig(budget.teacherPreset).seq_len;
  const evalRow = (method: string, bits: number, model: LlamaModel): Row => {
    const ppl = evaluatePerplexity(model, tokenizer, heldOut, seqLen).ppl;
    const kl = model === teacher ? 0 : validationKl(teacher, model, heldOutTokens, 8, seqLen, Infinity);
    const row = { method, bits, ppl, kl_to_teacher: kl };
    log(`${method.padEnd(16)} ${String(bits).padStart(2)} bits  ppl ${ppl.toFixed(4)}  KL ${kl.toFixed(5)}`);
    return row;
  };

  const kdDir = await student('fp32-student-kd', 'kd', tDir);
  const qatDir = await student('qat-int4', 'qat', tDir);
  const kdqatDir = await student('kd-qat-int4', 'kd-qat', tDir);

  const rows: Row[] = [];
  rows.push(evalRow('fp32-teacher', 32, teacher));
  const kd = loadLlama(modelDirectory(kdDir));
  rows.push(evalRow('fp32-student-kd', 32, kd));
  const twoD = kd.arena.entries.filter((e) => e.shape.length === 2);
  for (const bits of [8, 4] as const) {
    const q = quantizeLlama(kd, uniformPlan(twoD, bits, { groupSize: 0, symmetric: false }), { method: 'rtn' });
    rows.push(evalRow(`ptq-int${bits}`, bits, q.toFloatModel()));
  }
  rows.push(evalRow('qat-int4', 4, loadLlama(join(qatDir, 'quantized'))));
  rows.push(evalRow('kd-qat-int4', 4, loadLlama(join(kdqatDir, 'quantized'))));

  const ref = rows.find((r) => r.method === 'fp32-student-kd')!.ppl;
  console.log('\nmethod            bits   ppl      vs fp32-student-kd   KL(teacher‖·)');
  for (const r of rows) console.log(`${r.method.padEnd(17)} ${String(r.bits).padStart(3)}  ${r.ppl.toFixed(4)}  ${(((r.ppl - ref) / ref) * 100).toFixed(2).padStart(7)}%           ${r.kl_to_teacher.toFixed(5)}`);
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, rows }));
}

await main();
