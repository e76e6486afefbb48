/**
 * The retention curve (issue 21): how much of a teacher a student keeps at
 * 2×, 4×, 10× and 50× fewer parameters.
 *
 *   npm run experiment -- retention [--data PATH|default] [--budget small|full] [--out DIR] [--seed N]
 *
 * One teacher (trained by qkd's trainer on the corpus, or reused from OUT).
 * For each ratio r, a student of the teacher's family with about
 * teacher_params / r parameters (L / r^⅓ layers and the width closest to
 * the count; every student starts from random weights, so no row inherits the teacher's
 * weights and the rows differ only in what teaches them). Every student runs
 * the same steps, batch and sequence length as the teacher (the same token
 * budget). Rows:
 *   no-kd            the task loss on the corpus alone
 *   kd               + logit KD from the teacher on the corpus (recipe kd)
 *   kd-assistant     (10× and 50×) teacher → assistant → student: an
 *                    assistant of about 4× (for 10×) or 10× (for 50×) fewer
 *                    parameters is distilled first with the same steps, then
 *                    teaches (twice the student's token budget in all)
 *   seqkd-datafree   trained only on text the teacher wrote from single
 *                    vocabulary entries (qkd synth --data-free: 3 greedy
 *                    tokens, then sampled at τ = 1), with the teacher's
 *                    logit KD on that text (recipe seqkd); the corpus is
 *                    never read
 * Measured on the corpus's held-out 10% (which no run trains on): ppl, and
 * bits per byte. Retention = teacher ppl / student ppl (and teacher bpb /
 * student bpb). Last stdout line:
 * {"rows":[{"method","ratio","params","ppl","retention","bpb","retention_bpb"}],"teacher":{...}}.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCorpusData, splitText } from '../src/data/corpus.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { loadLlama } from '../src/models/llama-io.js';
import { modelDirectory } from '../src/models/load-any.js';
import { derivedConfig, type LlamaConfig } from '../src/models/llama-config.js';
import { configParameters } from '../src/distill/minitron.js';
import { generateDataFree, modelSequenceTeacher } from '../src/distill/synth-local.js';
import { distill } from '../src/train/distill.js';
import { parseDistillConfig, type DistillConfigInput } from '../src/train/distill-config.js';
import { presetTeacher, setupExperiment } from './_common.js';

const BUDGETS = {
  small: { teacherPreset: 'small', teacherSteps: 1500, studentSteps: 1500, batch: 8, seqLen: 128, dataFree: { sequences: 1500, length: 127 } },
  full: { teacherPreset: 'reference', teacherSteps: 2000, studentSteps: 2000, batch: 8, seqLen: 256, dataFree: { sequences: 4000, length: 255 } },
};
const RATIOS = [2, 4, 10, 50] as const;
/** The assistant's ratio for a student's (about the geometric middle). */
const ASSISTANT_RATIO: Record<number, number> = { 10: 4, 50: 10 };
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/retention', BUDGETS);

type Shape = { hidden_size: number; intermediate_size: number; num_hidden_layers: number; num_attention_heads: number; num_key_value_heads: number };

/**
 * The shape of about teacher_params / ratio parameters: depth shrinks with
 * the cube root of the ratio (L / r^⅓, at least 1 layer), and the width
 * (steps of 8, heads 32 wide, MLP 2.75× the width) is the one whose count
 * comes closest in log-ratio, so depth and width both fall as the ratio grows.
 */
function shapeFor(t: LlamaConfig, ratio: number): { shape: Shape; params: number } {
  const target = configParameters(t) / ratio;
  const layers = Math.max(1, Math.round(t.num_hidden_layers / Math.cbrt(ratio)));
  let best: { shape: Shape; params: number } | null = null;
  for (let hidden = 8; hidden <= t.hidden_size; hidden += 8) {
    const heads = Math.max(1, Math.round(hidden / 32));
    if (hidden % heads !== 0) continue;
    const shape: Shape = { hidden_size: hidden, intermediate_size: Math.max(8, Math.round((2.75 * hidden) / 8) * 8), num_hidden_layers: layers, num_attention_heads: heads, num_key_value_heads: heads % 2 === 0 ? heads / 2 : heads };
    const params = configParameters(derivedConfig(t, { ...shape, head_dim: hidden / heads }));
    if (best === null || Math.abs(Math.log(params / target)) < Math.abs(Math.log(best.params / target))) best = { shape, params };
  }
  return best!;
}

interface Row {
  method: string;
  ratio: number;
  params: number;
  layers: number;
  hidden: number;
  ppl: number;
  retention: number;
  bpb: number;
  retention_bpb: number;
}

const teacherDir = (): Promise<string> => presetTeacher({ root, text, seed, log }, budget.teacherPreset, budget.teacherSteps, { seq_len: budget.seqLen });

async function main(): Promise<void> {
  const tDir = await teacherDir();
  const teacher = loadLlama(tDir);
  const t = teacher.config;
  const tokenizer = loadTokenizer(join(tDir, 'tokenizer.json'));
  const heldOut = splitText(text).validation;
  const measure = (dir: string) => evaluatePerplexity(loadLlama(dir), tokenizer, heldOut, budget.seqLen);
  const teacherEval = evaluatePerplexity(teacher, tokenizer, heldOut, budget.seqLen);
  log(`teacher: ${teacher.parameterCount} parameters, held-out ppl ${teacherEval.ppl.toFixed(4)}, ${teacherEval.bits_per_byte.toFixed(4)} bits per byte`);

  // The data-free corpus, written once by the teacher (resumable like qkd synth).
  const dataFree = join(root, 'data-free.jsonl');
  if (!existsSync(dataFree)) {
    log(`writing the data-free corpus: ${budget.dataFree.sequences} sequences of ${budget.dataFree.length + 1} tokens → ${dataFree}`);
    await generateDataFree(modelSequenceTeacher(teacher), tokenizer, dataFree, { ...budget.dataFree, greedy: 3, temperature: 1, seed, teacherId: tDir });
  } else log(`reusing ${dataFree}`);
  const synthetic = loadCorpusData(dataFree);

  const shapes = new Map<number, { shape: Shape; params: number }>();
  for (const r of [...RATIOS, ...Object.values(ASSISTANT_RATIO)]) if (!shapes.has(r)) shapes.set(r, shapeFor(t, r));
  const rows: Row[] = [];
  const run = async (method: string, ratio: number, input: DistillConfigInput, corpus: typeof synthetic, teacherGiven: string | null): Promise<void> => {
    const dir = join(root, `${method}-${ratio}x`);
    // A finished run is reused when it ran these settings (the budget or the shape rule may have changed since).
    const settings = join(dir, 'retention-settings.json');
    const fresh = !existsSync(join(dir, 'quantized', 'config.json')) || !existsSync(settings) || readFileSync(settings, 'utf8') !== JSON.stringify(input);
    if (fresh) {
      log(`training ${method} at ${ratio}× (${shapes.get(ratio)!.params} parameters, ${budget.studentSteps} steps)`);
      await distill({ teacher: teacherGiven, text: corpus, outDir: dir, config: parseDistillConfig(input, method), force: true, resume: false, onNote: (n) => log(`  ${method} ${ratio}×: ${n}`) });
      writeFileSync(settings, JSON.stringify(input));
    } else log(`reusing ${dir}`);
    const e = measure(modelDirectory(dir));
    const row = { method, ratio, params: shapes.get(ratio)!.params, layers: shapes.get(ratio)!.shape.num_hidden_layers, hidden: shapes.get(ratio)!.shape.hidden_size, ppl: e.ppl, retention: teacherEval.ppl / e.ppl, bpb: e.bits_per_byte, retention_bpb: teacherEval.bits_per_byte / e.bits_per_byte };
    rows.push(row);
    log(`${method.padEnd(15)} ${String(ratio).padStart(3)}×  ${String(row.params).padStart(8)} params  ppl ${row.ppl.toFixed(4)}  retention ${(100 * row.retention).toFixed(1)}% (bpb ${row.bpb.toFixed(4)}, ${(100 * row.retention_bpb).toFixed(1)}%)`);
  };
  for (const ratio of RATIOS) {
    const base = (recipe: DistillConfigInput['recipe'], extra: Partial<DistillConfigInput> = {}): DistillConfigInput => ({
      recipe,
      training: { seed, steps: budget.studentSteps, batch_size: budget.batch, seq_len: budget.seqLen, eval_every: Math.max(1, Math.floor(budget.studentSteps / 6)), checkpoint_every: budget.studentSteps },
      student: { init: 'random', model: shapes.get(ratio)!.shape },
      // τ = 1 and the default λ schedule: one setting for every ratio.
      distillation: { temperature: 1 },
      ...extra,
    });
    await run('no-kd', ratio, base('seqkd'), text, null);
    await run('kd', ratio, base('kd'), text, tDir);
    const mid = ASSISTANT_RATIO[ratio];
    if (mid !== undefined) await run('kd-assistant', ratio, base('kd', { assistant: { model: shapes.get(mid)!.shape, steps: budget.studentSteps } }), text, tDir);
    await run('seqkd-datafree', ratio, base('seqkd'), synthetic, tDir);
  }

  console.log(`\nteacher: ${teacher.parameterCount} parameters, ppl ${teacherEval.ppl.toFixed(4)}, ${teacherEval.bits_per_byte.toFixed(4)} bpb`);
  console.log('ratio  method            params      ppl   retention   bpb     retention(bpb)');
  for (const r of rows) console.log(`${String(r.ratio).padStart(4)}×  ${r.method.padEnd(16)} ${String(r.params).padStart(8)}  ${r.ppl.toFixed(4).padStart(8)}   ${(100 * r.retention).toFixed(1).padStart(6)}%   ${r.bpb.toFixed(4)}   ${(100 * r.retention_bpb).toFixed(1).padStart(6)}%`);
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, teacher: { params: teacher.parameterCount, ppl: teacherEval.ppl, bpb: teacherEval.bits_per_byte }, rows }));
}

await main();
