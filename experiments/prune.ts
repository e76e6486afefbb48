/**
 * Student initialisations compared at one size (issue 17).
 *
 *   npm run experiment -- prune [--data PATH|default] [--budget small|full] [--out DIR] [--seed N]
 *
 * One teacher (trained by qkd's trainer, or reused from OUT), one target
 * size (the parameters of the every-other-layer student: half the layers),
 * one token budget. Rows:
 *   random             the width-pruned shape, random weights
 *   every-other-layer  layers 0, 2, 4, … of the teacher (qkd's `pruned`)
 *   svd                the width-pruned shape by weight-space SVD
 *   minitron-depth     half the layers, chosen by block influence
 *   minitron-width     every layer, narrower (hidden, heads, MLP) at the same size
 *   minitron-width-kd-qat-int4   the same student trained by KD+QAT, packed 4-bit
 * Every student is then distilled with the same steps and loss (logit-only
 * forward KL, Minitron's retraining). Columns: parameters, perplexity of
 * the pruned model before any training, perplexity after, and the
 * validation curve (ppl at each evaluation against training tokens), all on
 * the held-out 10% of the corpus. Last stdout line:
 * {"rows":[{"method","params","ppl_pruned","ppl","curve":[[tokens, ppl]…]}]}.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitText } from '../src/data/corpus.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { loadLlama } from '../src/models/llama-io.js';
import type { LlamaModel } from '../src/models/llama.js';
import { modelDirectory } from '../src/models/load-any.js';
import { presetConfig } from '../src/train/config.js';
import { distill } from '../src/train/distill.js';
import { parseDistillConfig, type DistillConfigInput } from '../src/train/distill-config.js';
import { initStudent, type StudentInitMethod } from '../src/distill/student-init.js';
import { configParameters, shapeForParameters, type PruneShape } from '../src/distill/minitron.js';
import { derivedConfig, type LlamaConfig } from '../src/models/llama-config.js';
import { presetTeacher, setupExperiment } from './_common.js';

const BUDGETS = {
  small: { teacherPreset: 'small', teacherSteps: 1500, studentSteps: 1200 },
  full: { teacherPreset: 'reference', teacherSteps: 2000, studentSteps: 2000 },
};
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/prune', BUDGETS);

interface Row {
  method: string;
  params: number;
  ppl_pruned: number;
  ppl: number;
  curve: [number, number][];
}

const teacherDir = (): Promise<string> => presetTeacher({ root, text, seed, log }, budget.teacherPreset, budget.teacherSteps);

async function main(): Promise<void> {
  const tDir = await teacherDir();
  const teacher = loadLlama(tDir);
  const t = teacher.config;
  const tokenizer = loadTokenizer(join(tDir, 'tokenizer.json'));
  const { train: trainText, validation: heldOut } = splitText(text);
  const p = presetConfig(budget.teacherPreset);
  const seqLen = p.seq_len;
  const trainTokens = Int32Array.from(tokenizer.encode(trainText));
  const ppl = (m: LlamaModel) => evaluatePerplexity(m, tokenizer, heldOut, seqLen).ppl;

  const depthShape: PruneShape = { num_hidden_layers: Math.ceil(t.num_hidden_layers / 2) };
  const target = configParameters(derivedConfig(t, depthShape as Partial<LlamaConfig> & Record<string, unknown>));
  // Whole heads of the teacher's width in every width-pruned row (random included), so all rows have the same shape.
  const widthShape = { ...shapeForParameters(t, target), head_dim: t.head_dim };
  log(`teacher ${teacher.parameterCount} parameters; target ${target}: depth ${JSON.stringify(depthShape)}, width ${JSON.stringify(widthShape)}`);
  const calibration = { tokens: trainTokens, batch: p.batch_size, seqLen, batches: 8 };
  const rowsSpec: { method: string; init: StudentInitMethod; shape: PruneShape & { head_dim?: number }; recipe: 'kd' | 'kd-qat' }[] = [
    { method: 'random', init: 'random', shape: widthShape, recipe: 'kd' },
    { method: 'every-other-layer', init: 'pruned', shape: depthShape, recipe: 'kd' },
    { method: 'svd', init: 'svd', shape: widthShape, recipe: 'kd' },
    { method: 'minitron-depth', init: 'minitron', shape: depthShape, recipe: 'kd' },
    { method: 'minitron-width', init: 'minitron', shape: widthShape, recipe: 'kd' },
    { method: 'minitron-width-kd-qat-int4', init: 'minitron', shape: widthShape, recipe: 'kd-qat' },
  ];
  const rows: Row[] = [];
  for (const spec of rowsSpec) {
    const shape = derivedConfig(t, spec.shape as Partial<LlamaConfig> & Record<string, unknown>);
    const pruned = initStudent(teacher, shape, spec.init, seed, calibration);
    const pplPruned = ppl(pruned);
    const dir = join(root, spec.method);
    if (!existsSync(join(dir, 'quantized', 'config.json'))) {
      const input: DistillConfigInput = {
        recipe: spec.recipe,
        training: { seed, steps: budget.studentSteps, batch_size: p.batch_size, seq_len: seqLen, eval_every: Math.max(1, Math.floor(budget.studentSteps / 12)), checkpoint_every: budget.studentSteps },
        optimizer: { lr: p.lr, min_lr: p.min_lr },
        student: { init: spec.init, model: { hidden_size: shape.hidden_size, intermediate_size: shape.intermediate_size, num_hidden_layers: shape.num_hidden_layers, num_attention_heads: shape.num_attention_heads, num_key_value_heads: shape.num_key_value_heads, head_dim: shape.head_dim } },
        // The same retraining loss for every row: Minitron's logit-only forward KL.
        distillation: { task_weight: 0 },
      };
      log(`training ${spec.method} (${spec.recipe}, ${budget.studentSteps} steps)`);
      await distill({ teacher: tDir, text, outDir: dir, config: parseDistillConfig(input, spec.method), force: true, onNote: (n) => log(`  ${spec.method}: ${n}`) });
    } else log(`reusing ${spec.method}`);
    const trained = loadLlama(spec.recipe === 'kd-qat' ? join(dir, 'quantized') : modelDirectory(dir));
    const tokensPerStep = p.batch_size * seqLen;
    const curve = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>)
      .filter((m) => m.val_loss !== undefined)
      .map((m) => [m.step! * tokensPerStep, Math.exp(m.val_loss!)] as [number, number]);
    const row = { method: spec.method, params: pruned.parameterCount, ppl_pruned: pplPruned, ppl: ppl(trained), curve };
    rows.push(row);
    log(`${row.method.padEnd(28)} ${String(row.params).padStart(8)} params  pruned ppl ${row.ppl_pruned.toFixed(3)}  trained ppl ${row.ppl.toFixed(4)}`);
  }
  console.log(`\nteacher ppl ${ppl(teacher).toFixed(4)} (${teacher.parameterCount} parameters)`);
  console.log('method                        params   ppl pruned   ppl trained   val ppl at ¼ / ½ / end of training');
  for (const r of rows) {
    const at = (f: number) => r.curve[Math.min(r.curve.length - 1, Math.max(0, Math.round(f * r.curve.length) - 1))]?.[1]?.toFixed(3) ?? '';
    console.log(`${r.method.padEnd(28)} ${String(r.params).padStart(8)}   ${r.ppl_pruned.toFixed(3).padStart(10)}   ${r.ppl.toFixed(4).padStart(11)}   ${at(0.25)} / ${at(0.5)} / ${at(1)}`);
  }
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, teacher_params: teacher.parameterCount, rows }));
}

await main();
