/**
 * MOHAWK (issue 18): attention distilled into a state-space student, against
 * a Transformer student distilled by KD from the same teacher.
 *
 *   npm run experiment -- mohawk [--data PATH|default] [--budget small|full|smoke] [--out DIR] [--seed N]
 *
 * One teacher (trained by qkd's trainer on the corpus, or reused from OUT),
 * with twice the students' depth. Every student has the teacher's width and
 * half its layers, starts from the teacher's layers (layer pruning) and runs
 * the same steps, batch and sequence length (the same token budget).
 * Parameters are matched: a mixer holds more than the GQA attention it
 * replaces (its gate z, decay and convolutions; x and B are shared per
 * key/value group as the teacher shares V and K), so the state-space
 * students keep fewer MLP neurons (the largest by weight norm), as many as
 * bring their parameter count closest to the Transformer student's:
 *   transformer-kd   recipe kd
 *   mohawk           recipe mohawk, stages 1 + 2 + 3 (3% / 5% / 92% of the steps)
 *   mohawk-hybrid    the same with a quarter of the layers kept as attention
 *                    (the most sensitive by the teacher's data-free profile)
 *   stage3-only      recipe mohawk, stage 3 alone (its init, all the steps in KD)
 *   stages23         recipe mohawk, stages 2 + 3
 * Measured on the corpus's held-out 10%: ppl, KL(teacher ‖ student) per
 * token, and greedy generation speed (tokens/s over `decode` new tokens,
 * one at a time through the model's cache, after a random prompt filling
 * the context to 256 / 1024 / 4096 tokens; measured after all training, in
 * five rounds interleaved over every student and context, each after 8
 * untimed tokens and restarting at the context length, the median round
 * counting) with the cache's bytes at that length
 * (keys and values of attention layers, the fixed state of SSM layers).
 * Last stdout line:
 * {"rows":[{"method","params","ppl","kl_to_teacher","gen_tokens_per_s":{"256","1024","4096"},"cache_bytes":{…}}],"teacher":{…}}.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitText } from '../src/data/corpus.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { loadLlama } from '../src/models/llama-io.js';
import { modelDirectory } from '../src/models/load-any.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { distill, validationKl } from '../src/train/distill.js';
import { parseDistillConfig, type DistillConfigInput } from '../src/train/distill-config.js';
import { Rng } from '../src/tensor/random.js';
import { noGrad } from '../src/tensor/tape.js';
import { parseTrainConfig } from '../src/train/config.js';
import { llamaConfig, llamaParameterSpecs, type LlamaConfig } from '../src/models/llama-config.js';
import { ssmStudentConfig } from '../src/distill/mohawk-init.js';
import { setupExperiment, trainedTeacher } from './_common.js';

const SHAPE = { hidden_size: 64, intermediate_size: 176, num_attention_heads: 4, num_key_value_heads: 2 };
const BUDGETS = {
  /** A minute's check that every row runs (numbers meaningless). */
  smoke: { teacherLayers: 4, teacherSteps: 20, studentSteps: 40, batch: 2, seqLen: 32, decode: 8, klBatches: 2 },
  small: { teacherLayers: 8, teacherSteps: 800, studentSteps: 400, batch: 8, seqLen: 128, decode: 160, klBatches: 16 },
  full: { teacherLayers: 8, teacherSteps: 2000, studentSteps: 1500, batch: 8, seqLen: 128, decode: 160, klBatches: 32 },
};
const CONTEXTS = [256, 1024, 4096] as const;
/** Timed rounds per (student, context); the median counts. */
const ROUNDS = 5;
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/mohawk', BUDGETS);

interface Row {
  method: string;
  params: number;
  ppl: number;
  kl_to_teacher: number;
  gen_tokens_per_s: Record<string, number>;
  cache_bytes: Record<string, number>;
  attention_layers: number[];
}

/** A model's cache filled to a context length, ready to decode one token at a time. */
interface Decoder {
  model: LlamaModel;
  cache: KvCache;
  context: number;
  /** The cache's bytes at the context length. */
  bytes: number;
  last: number;
}

/**
 * A cache sized for `context` + the timed tokens, filled by a random prompt
 * of `context` tokens (in chunks of 256, untimed). Its capacity is set past
 * the trained length on purpose: RoPE runs there, and the speed, not the
 * text, is measured.
 */
function prefilled(model: LlamaModel, context: number, decodeTokens: number, rng: Rng): Decoder {
  const cache = new KvCache({ ...model.config, max_position_embeddings: context + decodeTokens });
  const V = model.config.vocab_size;
  let last = 0;
  noGrad(() => {
    for (let start = 0; start < context; start += 256) {
      const n = Math.min(256, context - start);
      const ids = Int32Array.from({ length: n }, () => rng.int(V));
      const logits = model.forward(ids, 1, n, { cache }).data;
      last = argmax(logits.subarray((n - 1) * V, n * V));
    }
  });
  return { model, cache, context, bytes: cache.bytesInUse, last };
}

/** Untimed tokens before each timed round: they bring the model's weights back into the CPU caches after another model ran. */
const WARM_TOKENS = 8;

/** Greedy tokens per second of one timed round of `steps` single-token forwards through the cache (after WARM_TOKENS untimed ones). */
function decodeRound(d: Decoder, steps: number): number {
  // Every round starts at the context length: attention layers forget the previous round's keys
  // (a state-space layer's cost does not depend on the position, and its state simply goes on).
  d.cache.position = d.context;
  const next = () => (d.last = argmax(d.model.forward(Int32Array.of(d.last), 1, 1, { cache: d.cache }).data));
  let started = 0;
  noGrad(() => {
    for (let s = 0; s < WARM_TOKENS; s++) next();
    started = performance.now();
    for (let s = 0; s < steps; s++) next();
  });
  return steps / ((performance.now() - started) / 1000);
}

/** Parameters of a model of this config (without building it). */
function parameterCount(c: LlamaConfig): number {
  return llamaParameterSpecs(c).reduce((n, spec) => n + spec.shape.reduce((a, b) => a * b, 1), 0);
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

async function main(): Promise<void> {
  const teacherConfig = {
    model: { ...SHAPE, num_hidden_layers: budget.teacherLayers },
    batch_size: budget.batch,
    seq_len: budget.seqLen,
    steps: budget.teacherSteps,
    lr: 3e-3,
    min_lr: 3e-4,
    warmup_steps: 40,
    eval_every: budget.teacherSteps,
    checkpoint_every: budget.teacherSteps,
    seed,
  };
  const tDir = await trainedTeacher(root, text, parseTrainConfig(teacherConfig, 'mohawk teacher'), `${budget.teacherLayers} layers × ${SHAPE.hidden_size}, ${budget.teacherSteps} steps`, log);
  const teacher = loadLlama(tDir);
  const tokenizer = loadTokenizer(join(tDir, 'tokenizer.json'));
  const heldOut = splitText(text).validation;
  const heldOutTokens = Int32Array.from(tokenizer.encode(heldOut));
  const teacherEval = evaluatePerplexity(teacher, tokenizer, heldOut, budget.seqLen);
  log(`teacher: ${teacher.parameterCount} parameters, held-out ppl ${teacherEval.ppl.toFixed(4)}`);

  const layers = budget.teacherLayers / 2;
  const quarter = Math.max(1, Math.round(layers / 4));
  const transformerShape = llamaConfig({ ...teacher.config, num_hidden_layers: layers });
  const target = parameterCount(transformerShape);
  // The state-space students' MLP width: the count closest to the Transformer student's (ties: the wider).
  const matched = (attentionLayers: number): number => {
    const kept = Array.from({ length: attentionLayers }, (_, l) => l);
    const gap = (i: number) => Math.abs(parameterCount(ssmStudentConfig(llamaConfig({ ...transformerShape, intermediate_size: i }), { attention_layers: kept })) - target);
    let best = SHAPE.intermediate_size;
    for (let i = best - 1; i >= 1; i--) if (gap(i) < gap(best)) best = i;
    return best;
  };
  const studentShape = (intermediate: number) => ({ ...SHAPE, intermediate_size: intermediate, num_hidden_layers: layers });
  const ssmShape = studentShape(matched(0));
  const hybridShape = studentShape(matched(quarter));
  log(`parameters matched to the Transformer student's ${target}: MLP width ${ssmShape.intermediate_size} (state space), ${hybridShape.intermediate_size} (hybrid), of ${SHAPE.intermediate_size}`);
  const base = (recipe: 'kd' | 'mohawk', extra: Partial<DistillConfigInput> = {}): DistillConfigInput => ({
    recipe,
    training: { seed, steps: budget.studentSteps, batch_size: budget.batch, seq_len: budget.seqLen, eval_every: budget.studentSteps, checkpoint_every: budget.studentSteps },
    student: { init: 'pruned', model: recipe === 'kd' ? studentShape(SHAPE.intermediate_size) : ssmShape },
    // τ = 1 (as the retention experiment) and the default λ schedule.
    distillation: { temperature: 1 },
    ...extra,
  });
  const runs: [string, DistillConfigInput][] = [
    ['transformer-kd', base('kd')],
    ['mohawk', base('mohawk')],
    ['mohawk-hybrid', base('mohawk', { student: { init: 'pruned', model: hybridShape, attention_layers: { most_sensitive: quarter } } })],
    ['stage3-only', base('mohawk', { mohawk: { stages: [3] } })],
    ['stages23', base('mohawk', { mohawk: { stages: [2, 3] } })],
  ];
  const rows: Row[] = [];
  const students: LlamaModel[] = [];
  for (const [method, input] of runs) {
    const dir = join(root, method);
    // A finished run is reused when it ran these settings.
    const settings = join(dir, 'mohawk-settings.json');
    const fresh = !existsSync(join(dir, 'quantized', 'config.json')) || !existsSync(settings) || readFileSync(settings, 'utf8') !== JSON.stringify(input);
    if (fresh) {
      log(`training ${method} (${budget.studentSteps} steps)`);
      rmSync(settings, { force: true }); // a stale record would make the directory look like no qkd run
      await distill({ teacher: tDir, text, outDir: dir, config: parseDistillConfig(input, method), force: true, resume: false, onNote: (n) => log(`  ${method}: ${n}`) });
      writeFileSync(settings, JSON.stringify(input));
    } else log(`reusing ${dir}`);
    const student = loadLlama(modelDirectory(dir));
    const e = evaluatePerplexity(student, tokenizer, heldOut, budget.seqLen);
    const kl = validationKl(teacher, student, heldOutTokens, budget.batch, budget.seqLen, budget.klBatches);
    const row: Row = { method, params: student.parameterCount, ppl: e.ppl, kl_to_teacher: kl, gen_tokens_per_s: {}, cache_bytes: {}, attention_layers: student.config.ssm?.attention_layers ?? [] };
    rows.push(row);
    students.push(student);
    log(`${method.padEnd(15)} ${String(row.params).padStart(7)} params  ppl ${row.ppl.toFixed(4)}  KL ${row.kl_to_teacher.toFixed(4)}`);
  }

  // Generation speed, after all training: every (student, context) pair is
  // timed once per round, ROUNDS rounds interleaved, and the median round
  // counts, so load from elsewhere on the machine spreads over every row.
  log(`generation speed: ${ROUNDS} interleaved rounds of ${budget.decode} tokens at contexts ${CONTEXTS.join(' / ')}`);
  const rng = new Rng(seed);
  const decoders = students.map((m) => CONTEXTS.map((ctx) => prefilled(m, ctx, budget.decode + WARM_TOKENS, rng)));
  for (const perModel of decoders) decodeRound(perModel[0]!, budget.decode); // warm-up, not counted
  const rates = decoders.map((perModel) => perModel.map(() => [] as number[]));
  for (let round = 0; round < ROUNDS; round++) {
    decoders.forEach((perModel, i) => perModel.forEach((d, j) => rates[i]![j]!.push(decodeRound(d, budget.decode))));
  }
  rows.forEach((row, i) => {
    CONTEXTS.forEach((ctx, j) => {
      const sorted = [...rates[i]![j]!].sort((a, b) => a - b);
      row.gen_tokens_per_s[String(ctx)] = sorted[Math.floor(sorted.length / 2)]!;
      row.cache_bytes[String(ctx)] = decoders[i]![j]!.bytes;
    });
  });

  console.log(`\nteacher: ${teacher.parameterCount} parameters, ppl ${teacherEval.ppl.toFixed(4)}`);
  console.log(`method            params      ppl   KL(T‖S)   tokens/s at ${CONTEXTS.join(' / ')}   cache KiB at ${CONTEXTS.join(' / ')}`);
  for (const r of rows) {
    console.log(
      `${r.method.padEnd(16)} ${String(r.params).padStart(7)}  ${r.ppl.toFixed(4).padStart(8)}  ${r.kl_to_teacher.toFixed(4).padStart(8)}   ${CONTEXTS.map((c) => r.gen_tokens_per_s[String(c)]!.toFixed(0).padStart(5)).join(' / ')}   ${CONTEXTS.map((c) => (r.cache_bytes[String(c)]! / 1024).toFixed(0)).join(' / ')}`,
    );
  }
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, teacher: { params: teacher.parameterCount, ppl: teacherEval.ppl, layers: teacher.config.num_hidden_layers }, rows }));
}

await main();
