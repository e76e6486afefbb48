/**
 * Recipe mohawk (docs/mohawk.md, docs/algorithms.md §7): a Transformer
 * teacher distilled into a state-space student in three stages, each a
 * resumable run of the one training loop with its own metrics.jsonl:
 *
 *   DIR/mohawk/init     the student before training: the teacher's layers
 *                       (pruned to the student's depth) with each attention
 *                       turned into a mixer (distill/mohawk-init.ts)
 *   DIR/mohawk/stage1   matrix orientation: per layer and head,
 *                       ‖M_student − A_teacher‖²_F on the teacher's layer
 *                       inputs (M the mixer's materialised matrix, A the
 *                       teacher's attention probabilities)
 *   DIR/mohawk/stage2   hidden-state alignment: per block, the MSE between
 *                       the mixer's output and the teacher attention's
 *                       output, on the teacher's layer inputs
 *   DIR                 stage 3: end-to-end logit KD (recipe kd, or kd-qat
 *                       for a 4-bit SSM student), a normal distillation run
 *                       from the stage-2 student
 *
 * In stages 1 and 2 each student layer reads the teacher's input of the
 * teacher layer it was copied from, so the layers train independently (the
 * loss is their sum; no gradient crosses layers). Only the mixers change:
 * those stages run without weight decay, and the parameters without a
 * gradient keep their values under AdamW. The steps split by
 * mohawk.matrix_share / hidden_share, stage 3 taking the rest, so every
 * stage selection trains on the same number of tokens.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { loadModelAny, modelDirectory } from '../models/load-any.js';
import { loadLlama, saveLlama } from '../models/llama-io.js';
import { LlamaModel } from '../models/llama.js';
import { headDim, isSsmLayer, type LlamaConfig } from '../models/llama-config.js';
import { Mamba2Mixer } from '../nn/ssm-mixer.js';
import { initStudent, prunedLayers } from '../distill/student-init.js';
import { mohawkStudent, mostSensitiveLayers } from '../distill/mohawk-init.js';
import { profileSettings, profileTensor } from '../swan/profile.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tape.js';
import { withLoaded, type Tensor } from '../tensor/tensor.js';
import { add, scale, square, sub } from '../tensor/ops/elementwise.js';
import { sumAll } from '../tensor/ops/reduce.js';
import { mse } from '../tensor/ops/loss.js';
import { loopConfig, parseDistillConfig, resolveDistillConfig, studentConfig, type DistillConfig, type ResolvedDistillConfig } from './distill-config.js';
import type { MicroBatch, RecipeLoss, TrainRecipe } from './recipe.js';
import { readResumePoint, refuseConfigChanges, train, type TrainResult } from './trainer.js';
import { isCacheTeacher } from './server-teacher.js';
import { prepareRunDirectory, refuseInsideOutput } from './run-directory.js';
import { teacherFingerprint, teacherPrecision, teacherTokenizer } from './teachers.js';
import type { DistillOptions, DistillResult } from './distill-types.js';

/** The subdirectory of DIR holding the init and the stage-1 / stage-2 runs. */
export const MOHAWK_DIR = 'mohawk';

export type MohawkStage = 1 | 2 | 3;

export interface MohawkStageReport {
  stage: MohawkStage;
  /** What the stage fits: matrix, hidden or kd (kd-qat). */
  objective: string;
  dir: string;
  steps: number;
  /** steps × batch × seq_len × grad_accum. */
  tokens: number;
  /** Final training loss of the stage (its objective), NaN when reused without a result at hand. */
  final_loss: number;
  /** The stage had finished earlier and was reused. */
  reused: boolean;
}

export interface MohawkReport {
  /** Student layers that kept the teacher's attention. */
  attention_layers: number[];
  /** Student layer → teacher layer whose inputs and attention it is aligned with. */
  teacher_layers: number[];
  student_params: number;
  stages: MohawkStageReport[];
}

export interface MohawkResult extends DistillResult {
  mohawk: MohawkReport;
}

/** The file in DIR/mohawk holding the run's config (what --resume continues). */
const CONFIG_FILE = 'config.json';

/** The config a mohawk run in outDir was started with, or null when outDir holds none. */
export function savedMohawkConfig(outDir: string): DistillConfig | null {
  const path = join(outDir, MOHAWK_DIR, CONFIG_FILE);
  if (!existsSync(path)) return null;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new QkdError('IO', `${path} is not valid JSON: ${(err as Error).message}`, { path });
  }
  return parseDistillConfig(json, path);
}

/** Steps of each stage: stages 1 and 2 their shares of training.steps (at least 1 when selected), stage 3 the rest. */
export function mohawkStageSteps(c: DistillConfig): Record<MohawkStage, number> {
  const total = c.training.steps;
  const m = c.mohawk;
  const s1 = m.stages.includes(1) ? Math.max(1, Math.round(m.matrix_share * total)) : 0;
  const s2 = m.stages.includes(2) ? Math.max(1, Math.round(m.hidden_share * total)) : 0;
  const s3 = total - s1 - s2;
  if (s3 < 1) throw new QkdError('CONFIG', `training.steps ${total} leaves no step for stage 3 after stages 1 (${s1}) and 2 (${s2})`, { field: 'training.steps', hint: 'more steps, or smaller mohawk shares' });
  return { 1: s1, 2: s2, 3: s3 };
}

/**
 * Per teacher layer, the mean composite sensitivity (docs/algorithms.md §1)
 * of its attention weights, data-free.
 */
export function attentionSensitivity(teacher: LlamaModel, seed = 1234): number[] {
  const settings = profileSettings({ probes: 4, seed });
  const scores: number[] = [];
  for (let l = 0; l < teacher.config.num_hidden_layers; l++) {
    let sum = 0;
    let count = 0;
    teacher.arena.entries.forEach((e, i) => {
      if (e.shape.length !== 2 || !e.name.startsWith(`model.layers.${l}.self_attn.`)) return;
      const p = withLoaded(e.tensor, () => profileTensor(e.name, e.shape, Float32Array.from(e.tensor.data), settings, new Rng(seed * 1000003 + i)));
      sum += p.composite ?? 0;
      count++;
    });
    scores.push(count > 0 ? sum / count : 0);
  }
  return scores;
}

/** The teacher's per-layer inputs to attention (normed), attention probabilities and attention outputs on one batch. */
interface TeacherCapture {
  inputs: Map<number, Tensor>;
  probs: Map<number, Tensor>;
  outputs: Map<number, Tensor>;
}

function captureTeacher(teacher: LlamaModel, batch: MicroBatch, layers: ReadonlySet<number>, wantProbs: boolean): TeacherCapture {
  const cap: TeacherCapture = { inputs: new Map(), probs: new Map(), outputs: new Map() };
  const removers: (() => void)[] = [];
  for (const l of layers) {
    const layer = teacher.layers[l]!;
    removers.push(layer.inputNorm.registerForwardHook((e) => cap.inputs.set(l, e.output)));
    removers.push(layer.attn.registerForwardHook((e) => cap.outputs.set(l, e.output)));
  }
  const probs: Tensor[] = [];
  try {
    noGrad(() => teacher.forward(batch.inputs, batch.B, batch.T, wantProbs ? { attentionProbs: probs } : {}));
  } finally {
    for (const r of removers) r();
  }
  // The teacher is a Transformer: one probability tensor per layer, in order.
  if (wantProbs) for (const l of layers) cap.probs.set(l, probs[l]!);
  return cap;
}

/** Stages 1 and 2 as a training-loop recipe. */
export class AlignmentRecipe implements TrainRecipe {
  readonly name: string;
  private readonly teacherLayers: Set<number>;

  constructor(
    private readonly stage: 1 | 2,
    private readonly teacher: LlamaModel,
    private readonly teacherId: string,
    /** Student SSM layer → teacher layer. */
    private readonly pairs: readonly { student: number; teacher: number }[],
  ) {
    this.name = stage === 1 ? 'mohawk-matrix' : 'mohawk-hidden';
    this.teacherLayers = new Set(pairs.map((p) => p.teacher));
  }

  loss(model: LlamaModel, batch: MicroBatch): RecipeLoss {
    const cap = captureTeacher(this.teacher, batch, this.teacherLayers, this.stage === 1);
    let total: Tensor | null = null;
    const components: Record<string, number> = {};
    for (const { student, teacher } of this.pairs) {
      const mixer = model.layers[student]!.attn;
      if (!(mixer instanceof Mamba2Mixer)) throw new QkdError('STATE', `student layer ${student} has no state-space mixer`, { field: 'ssm.attention_layers' });
      const u = cap.inputs.get(teacher)!;
      let term: Tensor;
      if (this.stage === 1) {
        // ‖M − A‖²_F per (batch row, head), divided by T: the mean squared error of a row of mixing weights, summed over its keys.
        const diff = sub(mixer.mixingMatrix(u), cap.probs.get(teacher)!);
        term = scale(sumAll(square(diff)), 1 / (batch.B * model.config.num_attention_heads * batch.T));
      } else {
        term = mse(mixer.forward(u), cap.outputs.get(teacher)!);
      }
      components[`layer${student}`] = term.data[0]!;
      total = total === null ? term : add(total, term);
    }
    const key = this.stage === 1 ? 'matrix' : 'hidden';
    components[key] = total!.data[0]! / this.pairs.length;
    return { loss: total!, components };
  }

  getState(): unknown {
    return { teacher: this.teacherId };
  }

  setState(state: unknown): void {
    const saved = (state as { teacher?: unknown } | null)?.teacher;
    if (typeof saved === 'string' && saved !== this.teacherId) {
      throw new QkdError('CONFIG', `--resume: stage ${this.stage} was started with another teacher (fingerprint ${saved.slice(0, 12)}…)`, { field: 'teacher', hint: 'the --teacher the run was started with' });
    }
  }
}

/** A stage run that ran all its steps earlier. */
function finishedRun(dir: string, steps: number): boolean {
  return existsSync(join(dir, 'latest.json')) && readResumePoint(dir).state.step === steps;
}

/** The settings of a stage-1 / stage-2 run: the distillation's loop with the stage's steps, no weight decay, one evaluation at the end. */
function alignmentLoop(c: ResolvedDistillConfig, shape: LlamaConfig, steps: number) {
  const base = loopConfig(
    { ...c, training: { ...c.training, steps } },
    { hidden_size: shape.hidden_size, intermediate_size: shape.intermediate_size, num_hidden_layers: shape.num_hidden_layers, num_attention_heads: shape.num_attention_heads, num_key_value_heads: shape.num_key_value_heads },
  );
  return {
    ...base,
    lr: c.mohawk.align_lr ?? c.optimizer.lr,
    min_lr: Math.min(c.optimizer.min_lr, c.mohawk.align_lr ?? c.optimizer.lr),
    warmup_steps: Math.min(base.warmup_steps, Math.max(0, steps - 1)),
    weight_decay: 0,
    eval_every: steps,
    checkpoint_every: Math.min(c.training.checkpoint_every, steps),
  };
}

/**
 * Runs recipe mohawk (see the file comment). The teacher must be one model
 * qkd loads (its layer inputs and attention are read); DIR/mohawk/report.json
 * records the stages. Stage 3 is an ordinary distillation: `distill` is
 * passed in by distill.ts (whose entry point dispatches here), so this file
 * does not import distill.ts.
 */
export async function distillMohawk(options: DistillOptions, distill: (options: DistillOptions) => Promise<DistillResult>): Promise<MohawkResult> {
  const c0 = options.config;
  if ((options.world?.size ?? 1) > 1) {
    throw new QkdError('CONFIG', `recipe mohawk runs on one process, and this is one of ${options.world!.size} ranks`, { field: 'recipe', hint: 'run it without mpirun' });
  }
  const given = options.teacher;
  if (given === null || Array.isArray(given) || (typeof given !== 'string' && !(given instanceof LlamaModel)) || (typeof given !== 'string' && isCacheTeacher(given))) {
    throw new QkdError('CONFIG', "recipe mohawk aligns the student with the teacher's attention, so it needs one teacher whose weights are here", { field: '--teacher', hint: 'one --teacher PATH (a model qkd loads)' });
  }
  // --force clears the output directory: a teacher or student inside it would be lost.
  if (typeof given === 'string') refuseInsideOutput(given, options.outDir, 'teacher', '--teacher');
  if (c0.student.from !== null) refuseInsideOutput(c0.student.from, options.outDir, 'student', '--student');
  const teacher = typeof given === 'string' ? loadModelAny(given, { precision: teacherPrecision(given, c0.distillation.teacher_precision) }) : given;
  if (teacher.config.ssm !== null) throw new QkdError('CONFIG', 'the teacher already has state-space layers; recipe mohawk distills a Transformer', { field: '--teacher', hint: 'a Transformer teacher' });
  const teacherId = teacherFingerprint(teacher);
  const tokenizer: Tokenizer = teacherTokenizer(given, teacher, options.tokenizer);
  const c = resolveDistillConfig(c0, teacher.config.max_position_embeddings);
  const steps = mohawkStageSteps(c);
  // The student's shape and kept attention layers, checked before anything is written.
  const transformerShape = c.student.preset === null && c.student.model === null ? teacher.config : studentConfig(teacher.config, c);
  for (const f of ['hidden_size', 'num_attention_heads', 'num_key_value_heads', 'head_dim'] as const) {
    if (transformerShape[f] !== teacher.config[f]) {
      throw new QkdError('CONFIG', `recipe mohawk copies the teacher's layers, so the student keeps its ${f} (${teacher.config[f]}), not ${transformerShape[f]}`, { field: c.student.model !== null ? 'student.model' : 'student.preset', hint: `student.model with the teacher's widths (a smaller intermediate_size is allowed) and at most ${teacher.config.num_hidden_layers} layers, or neither (the teacher's shape)` });
    }
  }
  if (transformerShape.intermediate_size > teacher.config.intermediate_size) {
    throw new QkdError('CONFIG', `recipe mohawk keeps MLP neurons of the teacher; intermediate_size ${transformerShape.intermediate_size} exceeds its ${teacher.config.intermediate_size}`, { field: 'student.model.intermediate_size', hint: `at most ${teacher.config.intermediate_size}` });
  }
  const teacherOf = prunedLayers(teacher.config.num_hidden_layers, transformerShape.num_hidden_layers);
  const wanted = c.student.attention_layers;
  let attentionLayers: number[];
  if (Array.isArray(wanted)) attentionLayers = [...wanted].sort((a, b) => a - b);
  else {
    const scores = attentionSensitivity(teacher);
    attentionLayers = mostSensitiveLayers(teacherOf.map((t) => scores[t]!), wanted.most_sensitive);
  }
  if (attentionLayers.some((l) => l >= transformerShape.num_hidden_layers)) {
    throw new QkdError('CONFIG', `student.attention_layers ${JSON.stringify(attentionLayers)} names a layer the ${transformerShape.num_hidden_layers}-layer student does not have`, { field: 'student.attention_layers', hint: `indices below ${transformerShape.num_hidden_layers}` });
  }
  if (new Set(attentionLayers).size !== attentionLayers.length) {
    throw new QkdError('CONFIG', `student.attention_layers ${JSON.stringify(attentionLayers)} names a layer twice`, { field: 'student.attention_layers', hint: 'distinct layer indices' });
  }
  if (attentionLayers.length >= transformerShape.num_hidden_layers) {
    throw new QkdError('CONFIG', `student.attention_layers keeps all ${transformerShape.num_hidden_layers} layers as attention: no state-space layer is left to distill`, { field: 'student.attention_layers', hint: 'fewer layers, or recipe kd' });
  }
  const outDir = options.outDir;
  const root = join(outDir, MOHAWK_DIR);
  const resume = options.resume === true;
  if (resume && !existsSync(root)) {
    throw new QkdError('IO', `nothing to resume: ${root} does not exist`, { path: outDir, field: '--out', hint: 'the output directory of an earlier run with --recipe mohawk' });
  }
  if (resume) {
    // Nothing may change: the stage split is laid out over training.steps.
    const saved = savedMohawkConfig(outDir);
    if (saved !== null) refuseConfigChanges(saved, c0, [], 'the given distillation config');
  } else {
    if (existsSync(root) && options.force !== true) throw new QkdError('IO', `${outDir} holds a mohawk run (${MOHAWK_DIR}/); refusing to overwrite it`, { path: outDir, field: '--out', hint: '--resume to continue it, --force to replace it, or a new directory' });
    // An earlier run's stage 3 in DIR goes too (checked like any run directory first).
    prepareRunDirectory(outDir, { force: options.force, ignore: [MOHAWK_DIR] }).clear();
    rmSync(root, { recursive: true, force: true });
  }
  mkdirSync(root, { recursive: true });
  if (!existsSync(join(root, CONFIG_FILE))) writeBytesAtomic(join(root, CONFIG_FILE), JSON.stringify(c0, null, 2) + '\n');

  // The student before training: the teacher's layers (pruned to the student's depth), attention → mixers.
  const initDir = join(root, 'init');
  if (!existsSync(join(initDir, 'config.json'))) {
    // A narrower MLP keeps the neurons with the largest weight norms (the svd init at the teacher's width: every head, no change of basis that matters).
    const narrower = transformerShape.intermediate_size < teacher.config.intermediate_size;
    const transformer = initStudent(teacher, transformerShape, narrower ? 'svd' : 'pruned', c.training.seed);
    const student = noGrad(() => mohawkStudent(transformer, { state_size: c.mohawk.state_size ?? headDim(transformerShape), conv_kernel: c.mohawk.conv_kernel, groups: c.mohawk.groups ?? transformerShape.num_key_value_heads, attention_layers: attentionLayers }, c.training.seed));
    saveLlama(initDir, student);
  }
  const init = loadLlama(initDir);
  const pairs = teacherOf.map((t, s) => ({ student: s, teacher: t })).filter((p) => isSsmLayer(init.config, p.student));
  options.onNote?.(
    `mohawk: ${init.parameterCount} parameters, ${pairs.length} state-space layers${attentionLayers.length > 0 ? `, attention kept in layers ${attentionLayers.join(', ')}` : ''}; steps ${steps[1]} / ${steps[2]} / ${steps[3]} (stages 1 / 2 / 3)`,
  );
  const tokensPerStep = c.training.batch_size * c.training.seq_len * c.training.grad_accum;
  const stages: MohawkStageReport[] = [];
  let previous = initDir;
  for (const stage of [1, 2] as const) {
    if (!c.mohawk.stages.includes(stage)) continue;
    const dir = join(root, `stage${stage}`);
    const objective = stage === 1 ? 'matrix' : 'hidden';
    if (finishedRun(dir, steps[stage])) {
      options.onNote?.(`mohawk stage ${stage} (${objective}): reusing ${dir}`);
      stages.push({ stage, objective, dir, steps: steps[stage], tokens: steps[stage] * tokensPerStep, final_loss: NaN, reused: true });
      previous = dir;
      continue;
    }
    options.onNote?.(`mohawk stage ${stage} (${objective} alignment, ${steps[stage]} steps) → ${dir}`);
    const from = previous;
    const r: TrainResult = await train({
      text: options.text,
      outDir: dir,
      config: alignmentLoop(c, init.config, steps[stage]),
      resume: existsSync(join(dir, 'latest.json')),
      tokenizer,
      recipe: new AlignmentRecipe(stage, teacher, teacherId, pairs),
      createModel: () => loadLlama(modelDirectory(from)),
      onStep: options.onStep,
      shouldStop: options.shouldStop,
      onStopAgreed: options.onStopAgreed,
      onNote: options.onNote,
    });
    stages.push({ stage, objective, dir, steps: steps[stage], tokens: steps[stage] * tokensPerStep, final_loss: r.train_loss, reused: false });
    if (r.interrupted) return interrupted(r, init, attentionLayers, stages, teacherOf);
    previous = dir;
  }

  // Stage 3: a normal distillation run in DIR from the aligned student.
  const stage3Config: DistillConfig = {
    ...c0,
    recipe: c.mohawk.stage3,
    training: { ...c0.training, steps: steps[3] },
    student: { ...c0.student, preset: null, model: null, from: modelDirectory(previous), attention_layers: [] },
    mohawk: { ...c0.mohawk, stages: [1, 2, 3] },
  };
  options.onNote?.(`mohawk stage 3 (end-to-end ${c.mohawk.stage3}, ${steps[3]} steps) → ${outDir}`);
  // The teacher already loaded (and its tokenizer) go on to stage 3: no second copy in memory.
  const result = await distill({ ...options, teacher, tokenizer, config: stage3Config, resume: resume && existsSync(join(outDir, 'latest.json')) });
  stages.push({ stage: 3, objective: c.mohawk.stage3, dir: outDir, steps: steps[3], tokens: steps[3] * tokensPerStep, final_loss: result.train_loss, reused: false });
  const report: MohawkReport = { attention_layers: attentionLayers, teacher_layers: teacherOf, student_params: init.parameterCount, stages };
  writeBytesAtomic(join(root, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  return { ...result, recipe: 'mohawk', mohawk: report };
}

function interrupted(r: TrainResult, init: LlamaModel, attentionLayers: number[], stages: MohawkStageReport[], teacherOf: number[]): MohawkResult {
  return {
    ...r,
    recipe: 'mohawk',
    teacher_entropy: NaN,
    quantized_dir: '',
    quantized_avg_bits: NaN,
    quantized_bytes: 0,
    mohawk: { attention_layers: attentionLayers, teacher_layers: teacherOf, student_params: init.parameterCount, stages },
  };
}
