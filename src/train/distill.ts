/**
 * `qkd distill` as one API call (docs/algorithms.md §3–4): a frozen teacher,
 * a student initialised from it (layer pruning, SVD truncation or random),
 * and the KD / QAT / KD+QAT recipe run by the one training loop, so
 * checkpoints, exact resume, metrics.jsonl and progress are those of
 * `qkd train`.
 *
 *   L_total = L_task + λ·L_distill + γ·L_quant
 *   L_distill = τ²·KL(teacher ‖ student) at τ
 *             + feature_weight · mean_l featureKd(student_l, teacher_map(l))
 *             + attention_weight · mean_l attentionKd(P_student_l, P_teacher_map(l))
 *
 * λ and γ follow the phase schedule (warm-up: no fake quantization; joint;
 * fine-tune). After warm-up, at every eval, when the average
 * L_distill / L_task since the previous eval exceeds the threshold (3), λ is
 * lowered by 0.05 (floor 0.05) and the action is logged. The teacher's
 * soft-target entropy at τ is reported before training.
 *
 * Output in DIR: the FP32 student exactly as `qkd train` writes it, plus
 * DIR/quantized/ — the packed checkpoint at the deployment bit width (RTN of
 * the trained weights; after QAT they already sit on the grid).
 */
import { existsSync } from 'node:fs';
import { copyTokenizerFiles } from '../data/tokenizer-io.js';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { SINGLE_PROCESS, type World } from '../parallel/world.js';
import { loadModelAny, loadModelTokenizer, modelDirectory, peekConfig } from '../models/load-any.js';
import { derivedConfig, llamaConfig, llamaParameterSpecs, type LlamaConfig } from '../models/llama-config.js';
import { createLlama, LlamaModel } from '../models/llama.js';
import { loadTokenizerAt } from '../data/tokenizer-io.js';
import { CrossTokenizerKd } from './cross-tokenizer.js';
import { loadLlama } from '../models/llama-io.js';
import { packLearned, quantizeLlama } from '../compress/quantize-model.js';
import { saveQuantizedLlama } from '../compress/quantized-io.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { sequentialBatches } from '../data/corpus.js';
import { ParameterArena } from '../tensor/arena.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tape.js';
import { Tensor, withLoaded } from '../tensor/tensor.js';
import { add, scale } from '../tensor/ops/elementwise.js';
import { reshape, selectRows } from '../tensor/ops/shape.js';
import { klDivergence } from '../tensor/ops/loss.js';
import { uniformPlan } from '../swan/allocate.js';
import type { QuantScheme } from '../quant/scheme.js';
import { FakeQuantController, fakeQuantizedWeights, type LearnedParameters } from '../distill/qat.js';
import { initLearnedScales, scalesOf } from '../quant/lsq.js';
import { attentionKd, confidenceKd, createProjection, entropyWarning, featureKd, layerMap, logitKd, reverseLogitKd, softTargetEntropy } from '../distill/losses.js';
import { initStudent } from '../distill/student-init.js';
import { bytesPerToken, cachedKd, openSoftTargetCache, teacherTag, softTargetWindow, softTargetWindowCount, writeSoftTargetCache, type SoftTargetCache } from '../distill/soft-targets.js';
import { PRESETS } from './config.js';
import { coefficient, fakeQuantActive, GGUF_TYPE_NAMES, learnedStepSizes, loopConfig, parseDistillConfig, phaseAt, recipeQuantizes, resolveDistillConfig, studentConfig, scaleInit, swdlTemperature, taskWeight, type DistillConfig, type ResolvedDistillConfig } from './distill-config.js';
import { layerScores, SakdMechanisms, swdlWeights } from './sakd.js';
import type { MicroBatch, RecipeLoss, TrainRecipe } from './recipe.js';
import { checkSplitFits, countedRows, readResumePoint, sampledStarts, refuseConfigChanges, tokenizeSplit, train, validationLoss, type TrainResult } from './trainer.js';
import { prepareRunDirectory, refuseInsideOutput } from './run-directory.js';
import { exportGguf, ggufTensorTypes } from '../compress/export-gguf.js';
import { profileModel, type ProfileSource } from '../swan/profile.js';
import { cacheTeacherFingerprint, cachedValidationKl, isCacheTeacher, isTeacherServer, LLAMA_CPP_DEFAULT_TOP_K, prepareCaches, refuseForCacheTeacher, SERVER_DEFAULT_TOP_K, windowsTouched, type CacheTeacher } from './server-teacher.js';
import { TeacherEnsemble, type TeacherModel } from '../distill/ensemble.js';
import { distillMohawk, MOHAWK_DIR } from './mohawk.js';
import { loadEnsemble, refuseForEnsemble, refuseWithoutTeacher, teacherFingerprint, teacherPrecision, teacherTokenizer, teacherlessTokenizer } from './teachers.js';

export { teacherFingerprint };

import type { DistillOptions, DistillResult, SakdReport } from './distill-types.js';

export type { DistillOptions, DistillResult, SakdReport };

/** A model in memory as a profile source (arena views, no copies). */
function modelSource(model: LlamaModel, label: string): ProfileSource {
  return { path: label, tensors: model.arena.entries.map((e) => ({ name: e.name, shape: e.shape })), readFloat32: (name) => model.arena.get(name).data as Float32Array };
}

/** The deployment scheme of a config (what QAT simulates and the packed checkpoint stores). */
export function deploymentScheme(c: DistillConfig): QuantScheme {
  return { groupSize: c.quantization.granularity === 'group' ? c.quantization.group_size : 0, symmetric: c.quantization.scheme === 'symmetric' };
}

/** One line with the run's QAT and loss settings (logged at the start, as metrics.jsonl logs every step's terms). */
export function describeRun(c: ResolvedDistillConfig, hasTeacher = true): string {
  const q = c.quantization;
  const d = c.distillation;
  const parts = [`recipe ${c.recipe}`, c.student.from !== null ? `student from ${c.student.from}` : `student init ${c.student.init}`];
  if (recipeQuantizes(c.recipe)) {
    const start = Math.round((q.fake_quant_start ?? c.training.warmup_share) * c.training.steps);
    const grid = q.format !== null ? `ggml ${q.format}` : `${q.bits}-bit ${q.scheme} per ${q.granularity === 'group' ? `group of ${q.group_size}` : 'channel'}`;
    parts.push(`fake quantization after step ${start} on ${grid}`, learnedStepSizes(c) ? `learned step sizes (${q.scheme === 'asymmetric' ? 'LSQ+' : 'LSQ'}) from ${scaleInit(c)}` : q.format !== null ? 'block scales refit each step' : 'min/max scales');
  }
  if (c.recipe !== 'qat' && hasTeacher) parts.push(`${d.kl} KL at τ=${d.temperature}`);
  else if (c.recipe !== 'qat') parts.push('no teacher: the task loss on the text alone');
  parts.push(`task weight ${taskWeight(c)}`);
  return `settings: ${parts.join('; ')}`;
}

/** The shape of an existing student (student.from), which must share the teacher's vocabulary and family. */
function existingStudentConfig(path: string, teacher: LlamaConfig): LlamaConfig {
  const config = peekConfig(path);
  if (config.vocab_size !== teacher.vocab_size) {
    throw new QkdError('CONFIG', `the student has ${config.vocab_size} tokens in its vocabulary and the teacher ${teacher.vocab_size}`, { path, field: 'student.from', hint: 'a student distilled from this teacher (same tokenizer)' });
  }
  if (config.model_type !== teacher.model_type) {
    throw new QkdError('CONFIG', `the student is a ${config.model_type} model and the teacher a ${teacher.model_type} model`, { path, field: 'student.from', hint: 'a student of the teacher\'s family' });
  }
  return config;
}

/** The student of a teacher on a server or in llama.cpp: an existing model (student.from), whose config bounds the run. */
function cacheTeacherStudent(config: DistillConfig): { path: string; config: LlamaConfig } {
  const path = config.student?.from;
  if (typeof path !== 'string' || path === '') {
    throw new QkdError('CONFIG', "a teacher on a server or in llama.cpp has no weights in qkd to build a student from; the student must exist", { field: 'student.from', hint: '--student PATH (a model with the teacher\'s tokenizer)' });
  }
  return { path, config: peekConfig(path) };
}

/** The tokenizer with a teacher on a server or in llama.cpp: the given one, else the student's (teacher and student share it; the teacher's ids are checked against it). */
function cacheTeacherTokenizer(student: { path: string; config: LlamaConfig }, given: Tokenizer | undefined): Tokenizer {
  if (given === undefined) return loadModelTokenizer({ config: student.config }, student.path);
  if (given.vocabSize > student.config.vocab_size) {
    throw new QkdError('CONFIG', `the tokenizer has ${given.vocabSize} tokens but the student's vocab_size is ${student.config.vocab_size}`, { path: student.path, field: 'vocab_size', hint: "the student's own tokenizer" });
  }
  return given;
}

/** What distillation across tokenizers cannot do (yet), refused by field before anything runs. */
function refuseForCrossTokenizer(c: ResolvedDistillConfig, text: DistillOptions['text']): void {
  const refuse = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `across tokenizers (distillation.cross_tokenizer), ${what}`, { field, hint });
  };
  if (c.recipe === 'qat') refuse('recipe', 'recipe qat has no teacher', 'recipe kd or kd-qat');
  if (c.recipe === 'sakd') refuse('recipe', 'SAKD is not supported yet', 'recipe kd or kd-qat');
  if (c.distillation.kl !== 'forward') refuse('distillation.kl', `distillation.kl '${c.distillation.kl}' is not supported`, 'kl: forward');
  const featureKdOn = c.distillation.feature_weight > 0 && (c.distillation.feature_layers === 'all' || c.distillation.feature_layers.length > 0);
  if (featureKdOn) refuse('distillation.feature_layers', 'feature KD is not supported', 'feature_layers: []');
  if (c.distillation.attention_weight > 0) refuse('distillation.attention_weight', 'attention KD is not supported', 'attention_weight: 0');
  if (c.distillation.teacher_correction.steps > 0) refuse('distillation.teacher_correction.steps', 'teacher correction is not supported yet', 'steps: 0');
  if (c.student.from === null && c.student.init !== 'random') refuse('student.init', `student init '${c.student.init}' copies the teacher's weights, whose vocabulary is not the student's`, 'init: random, or student.from');
  if (typeof text !== 'string') refuse('data', 'chat data is not supported yet', 'text data');
}

/**
 * The teacher's tokenizer across tokenizers when the teacher is read through
 * caches: the given one (--teacher-tokenizer), else a GGUF teacher's own; a
 * server's must be given (qkd sends it token ids).
 */
function crossCacheTeacherTokenizer(teacher: CacheTeacher, given: Tokenizer | undefined): Tokenizer {
  if (given !== undefined) return given;
  if (!isTeacherServer(teacher)) return loadModelTokenizer({ config: peekConfig(teacher.gguf) }, teacher.gguf);
  throw new QkdError('CONFIG', "across tokenizers, a teacher on a server needs its tokenizer here: qkd sends it the text as the teacher's token ids", { field: '--teacher-tokenizer', hint: "--teacher-tokenizer PATH (the served model's tokenizer.json or model directory)" });
}

/** The student's tokenizer across tokenizers: the given one, student.tokenizer, or student.from's own. */
function crossStudentTokenizer(c: ResolvedDistillConfig, given: Tokenizer | undefined): Tokenizer {
  if (given !== undefined) return given;
  if (c.student.tokenizer !== null) return loadTokenizerAt(c.student.tokenizer);
  if (c.student.from !== null) return loadModelTokenizer({ config: peekConfig(c.student.from) }, c.student.from);
  throw new QkdError('CONFIG', "distillation across tokenizers needs the student's tokenizer", { field: 'student.tokenizer', hint: '--student-tokenizer PATH (a tokenizer.json, model directory, GGUF or tokenizer.bin)' });
}

/** The student's shape across tokenizers: student.from's, or the teacher's family in the asked shape with the student tokenizer's vocabulary. */
function crossStudentConfig(c: ResolvedDistillConfig, teacher: LlamaConfig, tokenizer: Tokenizer): LlamaConfig {
  if (c.student.from !== null) {
    const config = peekConfig(c.student.from);
    if (config.vocab_size < tokenizer.vocabSize) {
      throw new QkdError('CONFIG', `the student has ${config.vocab_size} tokens in its vocabulary and its tokenizer ${tokenizer.vocabSize}`, { path: c.student.from, field: 'student.tokenizer', hint: "the student's own tokenizer" });
    }
    return config;
  }
  return derivedConfig(studentConfig(teacher, c), { vocab_size: tokenizer.vocabSize });
}

/** The result of a run stopped while its server caches were still filling (nothing trained yet). */
function interruptedBeforeTraining(): TrainResult {
  const none = { weights: 0, gradients: 0, moments: 0, total: 0, resident: 0 };
  return { steps: 0, train_loss: NaN, val_loss: NaN, val_ppl: NaN, tokens_per_s: 0, interrupted: true, params: 0, peak_rss_bytes: process.resourceUsage().maxRSS * 1024, recipe: 'none', state: { storage: 'float32', ...none } };
}

/** Decoder-layer index in a module name ('model.layers.3.mlp' → 3). */
function layerIndexOf(name: string): number | null {
  const m = /^model\.layers\.(\d+)(\.|$)/.exec(name);
  return m ? Number(m[1]) : null;
}

/** Captures the outputs of named modules during one forward. */
class FeatureTap {
  readonly outputs = new Map<string, Tensor>();
  private readonly removers: (() => void)[] = [];

  constructor(model: LlamaModel, names: readonly string[]) {
    const modules = model.namedModules();
    for (const name of names) {
      const m = modules.get(name);
      if (m === undefined) throw new QkdError('CONFIG', `no module named '${name}' in the model`, { field: 'distillation.feature_layers', hint: 'names like model.layers.1 or model.layers.1.mlp' });
      this.removers.push(m.registerForwardHook(({ output }) => this.outputs.set(name, output)));
    }
  }

  remove(): void {
    for (const r of this.removers) r();
  }
}

interface RecipeState {
  lambda_delta: number;
  sakd?: unknown;
  /** The run's resolved distillation config, so a resume can refuse different settings. */
  config?: ResolvedDistillConfig;
  /** The teacher's fingerprint (teacherFingerprint), so a resume can refuse another teacher. */
  teacher?: string;
  /** Learned step sizes: whether they were initialised (at the first fake-quantized step). */
  lsq_initialized?: boolean;
}

/** Where teacher correction keeps the fine-tuned teacher, in a distillation's output directory. */
const TEACHER_CORRECTED = 'teacher-corrected';

/**
 * Teacher correction (Minitron): the teacher fine-tuned for `steps` steps
 * by the task loss on the distillation data, at a tenth of the learning
 * rate unless set, written to DIR/teacher-corrected (a run reused when its
 * steps and learning rate match) and returned frozen.
 */
async function correctTeacher(teacher: LlamaModel, tokenizer: Tokenizer, options: DistillOptions, c: ResolvedDistillConfig, steps: number): Promise<LlamaModel> {
  const dir = join(options.outDir, TEACHER_CORRECTED);
  const lr = c.distillation.teacher_correction.lr ?? c.optimizer.lr / 10;
  const t = teacher.config;
  const base = loopConfig(c, { hidden_size: t.hidden_size, intermediate_size: t.intermediate_size, num_hidden_layers: t.num_hidden_layers, num_attention_heads: t.num_attention_heads, num_key_value_heads: t.num_key_value_heads });
  // The teacher's short fine-tune keeps float32 storage (training.dbwa is the student's).
  const config = { ...base, sat: { ...base.sat, dbwa: { ...base.sat.dbwa, enabled: false } }, steps, lr, min_lr: lr / 10, warmup_steps: 0, eval_every: steps, checkpoint_every: steps };
  let reuse = false;
  if (existsSync(join(dir, 'latest.json'))) {
    const saved = readResumePoint(dir).state;
    reuse = saved.step === steps && saved.config.steps === steps && saved.config.lr === lr;
  }
  if (!reuse) {
    options.onNote?.(`teacher correction: fine-tuning the teacher ${steps} steps at lr ${lr} on the distillation data → ${dir}`);
    const copy = (): LlamaModel => {
      const m = new LlamaModel(teacher.config);
      m.arena.data.set(teacher.arena.data);
      return m;
    };
    const r = await train({ text: options.text, outDir: dir, config, force: true, tokenizer, createModel: copy, onNote: options.onNote, world: options.world });
    options.onNote?.(`teacher correction: val loss ${r.val_loss.toFixed(4)}`);
  } else options.onNote?.(`teacher correction: reusing ${dir}`);
  return loadLlama(modelDirectory(dir));
}

/** The soft-target cache's file name in a distillation's output directory. */
const SOFT_TARGET_CACHE = 'soft-targets.bin';
/** A server teacher's validation targets. */
const VALIDATION_CACHE = 'soft-targets.validation.bin';
/** Files that a distillation keeps across --force and that do not make its directory "used": the caches and a half-filled cache job (the corrected teacher is kept beside them). */
const KEPT_FILES = [SOFT_TARGET_CACHE, VALIDATION_CACHE, ...[SOFT_TARGET_CACHE, VALIDATION_CACHE].flatMap((f) => [`${f}.partial`, `${f}.progress`])];

/** The KD / QAT / KD+QAT recipe for the training loop. */
class DistillRecipe implements TrainRecipe {
  readonly name: string;
  readonly extra: ParameterArena | undefined;
  private lambdaDelta = 0;
  private lambda = 0;
  private gamma = 0;
  private qat: FakeQuantController | null = null;
  private studentTap: FeatureTap | null = null;
  private teacherTap: FeatureTap | null = null;
  private pairs: { student: string; teacher: string; projection: string | null; teacherLayer: number }[] = [];
  private readonly useTeacher: boolean;
  /** Offline KD: the teacher's cached top-k targets over the training tokens (null: run the teacher live). */
  cache: SoftTargetCache | null = null;
  /** A server teacher's targets on the validation windows validation KL reads. */
  validationCache: SoftTargetCache | null = null;
  /** Distillation across tokenizers (distillation.cross_tokenizer): the teacher's side. */
  xtok: CrossTokenizerKd | null = null;
  /** SAKD (recipe sakd): teacher layer scores, SGR / TDNI / feedback. */
  readonly sakd: SakdMechanisms | null = null;
  private readonly teacherLayerScores: number[] = [];
  private sakdState: unknown = undefined;
  /** Learned step sizes: parameter names per weight, and whether they hold their start values yet. */
  private readonly lsq = new Map<string, { logStep: string; offset: string | null; shape: readonly number[] }>();
  private lsqReady = false;
  private student: LlamaModel | null = null;
  /** Training tokens (scale_init gptq draws its calibration windows from them). */
  trainTokens: Int32Array | null = null;
  /** The teacher's confidence c for distillation.kl = confidence. */
  confidence = 1;

  constructor(
    private readonly config: ResolvedDistillConfig,
    private readonly teacher: TeacherModel | null,
    studentShape: LlamaConfig,
    private readonly teacherId: string,
    /** Whether any teacher teaches (false: seqkd from teacher-generated text alone). */
    hasTeacher = true,
  ) {
    this.name = config.recipe;
    this.useTeacher = config.recipe !== 'qat' && hasTeacher;
    const d = config.distillation;
    const specs: { name: string; shape: number[] }[] = [];
    if (config.recipe === 'sakd') {
      if (!(teacher instanceof LlamaModel)) throw new QkdError('CONFIG', 'recipe sakd scores the layers of one teacher whose weights are here', { field: 'recipe', hint: 'one --teacher (a model qkd loads)' });
      this.teacherLayerScores = layerScores(teacher);
      this.sakd = new SakdMechanisms(config, this.teacherLayerScores, layerMap(teacher.config.num_hidden_layers, studentShape.num_hidden_layers));
    }
    if (this.useTeacher && d.feature_weight > 0 && teacher instanceof LlamaModel) {
      // SAKD weighs every layer's feature term by sensitivity: all layers unless named.
      const layers = config.recipe === 'sakd' && Array.isArray(d.feature_layers) && d.feature_layers.length === 0 ? 'all' : d.feature_layers;
      const names =
        layers === 'all' ? Array.from({ length: studentShape.num_hidden_layers }, (_, i) => `model.layers.${i}`) : layers;
      // The layer map only when layers are matched: a student deeper than its teacher is fine without feature KD.
      const map = names.length > 0 ? layerMap(teacher.config.num_hidden_layers, studentShape.num_hidden_layers) : [];
      for (const student of names) {
        const l = layerIndexOf(student);
        if (l === null || l >= studentShape.num_hidden_layers) throw new QkdError('CONFIG', `feature layer '${student}' is not inside a student decoder layer`, { field: 'distillation.feature_layers', hint: `model.layers.0 .. model.layers.${studentShape.num_hidden_layers - 1}[.submodule]` });
        const teacherName = student.replace(/^model\.layers\.\d+/, `model.layers.${map[l]}`);
        const needsProjection = studentShape.hidden_size !== teacher.config.hidden_size;
        const projection = needsProjection ? `proj.${student}` : null;
        if (projection) specs.push({ name: projection, shape: [teacher.config.hidden_size, studentShape.hidden_size] });
        this.pairs.push({ student, teacher: teacherName, projection, teacherLayer: map[l]! });
      }
    }
    const q = config.quantization;
    if (learnedStepSizes(config)) {
      // One θ = ln s (and, asymmetric, one offset) per group of every fake-quantized weight, as 1-D parameters (no weight decay).
      // The 2-D weights are exactly the Linear and Embedding weights fake quantization covers (checked when attached).
      for (const w of llamaParameterSpecs(studentShape).filter((p) => p.shape.length === 2)) {
        const name = w.name;
        const [rows, cols] = w.shape as [number, number];
        const n = rows * (q.granularity === 'group' ? Math.ceil(cols / q.group_size) : 1);
        const entry = { logStep: `lsq.${name}.log_step`, offset: q.scheme === 'asymmetric' ? `lsq.${name}.offset` : null, shape: w.shape };
        specs.push({ name: entry.logStep, shape: [n] });
        if (entry.offset) specs.push({ name: entry.offset, shape: [n] });
        this.lsq.set(name, entry);
      }
    }
    this.extra = specs.length > 0 ? new ParameterArena(specs) : undefined;
    if (this.extra) {
      const rng = new Rng(config.training.seed + 17);
      for (const s of specs) if (s.name.startsWith('proj.')) this.extra.set(s.name, s.shape, createProjection(s.shape[1]!, s.shape[0]!, rng).data);
    }
  }

  /** The learned step sizes of the weights (null: not learned). */
  private learnedParameters(): LearnedParameters | undefined {
    if (this.lsq.size === 0) return undefined;
    const extra = this.extra!;
    const entry = (name: string) => {
      const e = this.lsq.get(name);
      if (e === undefined) throw new QkdError('STATE', `no learned step sizes for weight '${name}'`, { field: name });
      return e;
    };
    return { logStep: (name) => extra.get(entry(name).logStep), offset: (name) => (entry(name).offset === null ? null : extra.get(entry(name).offset!)) };
  }

  /** The learned step sizes of a weight as plain arrays (packing at the end), or null. */
  learnedScalesOf(name: string): { logStep: Float32Array; zero: Float32Array | null } | null {
    const e = this.lsq.get(name);
    if (e === undefined || !this.lsqReady) return null;
    return { logStep: this.extra!.get(e.logStep).data as Float32Array, zero: e.offset === null ? null : (this.extra!.get(e.offset).data as Float32Array) };
  }

  /**
   * Learned step sizes start from the student's weights when fake
   * quantization switches on (so a late start begins at the trained
   * weights' PTQ): RTN's scales, the clip search's, or GPTQ's (whose ŵ then
   * replaces the weights).
   */
  private initLearned(student: LlamaModel): void {
    const q = this.config.quantization;
    const scheme = deploymentScheme(this.config);
    const set = (name: string, p: { logStep: Float32Array; zero: Float32Array | null }): void => {
      const e = this.lsq.get(name)!;
      this.extra!.set(e.logStep, [p.logStep.length], p.logStep);
      if (e.offset !== null) this.extra!.set(e.offset, [p.zero!.length], p.zero!);
    };
    const init = scaleInit(this.config);
    if (init === 'gptq') {
      if (this.trainTokens === null) throw new QkdError('STATE', 'scale_init gptq needs the training tokens');
      const t = this.config.training;
      const plan = uniformPlan([...this.lsq].map(([name, e]) => ({ name, shape: e.shape })), q.bits, scheme);
      const gptq = noGrad(() => quantizeLlama(student, plan, { method: 'gptq', calibration: { tokens: this.trainTokens!, batch: t.batch_size, seqLen: t.seq_len, batches: Math.max(1, Math.min(16, t.eval_batches * 2)), seed: t.seed } }));
      for (const [name, w] of gptq.weights) {
        if (w.quantized === null) continue;
        student.arena.set(name, student.arena.entry(name).shape, gptq.floatValues(name));
        set(name, scalesOf(w.quantized));
      }
    } else {
      for (const [name, e] of this.lsq) {
        const [rows, cols] = e.shape as [number, number];
        const w = student.arena.get(name);
        set(name, withLoaded(w, () => initLearnedScales(w.data as Float32Array, rows, cols, q.bits, scheme, init)));
      }
    }
    this.lsqReady = true;
  }

  /** Hooks and fake quantization go on the student the loop trains (created or resumed). */
  attach(student: LlamaModel): void {
    this.student = student;
    if (recipeQuantizes(this.config.recipe)) {
      const q = this.config.quantization;
      const formatOf = q.format === null ? undefined : ggufTensorTypes(student, { type: q.format }).typeOf;
      this.qat = new FakeQuantController(student, { bits: q.bits, symmetric: q.scheme === 'symmetric', granularity: q.granularity, groupSize: q.group_size, formatOf, learned: this.learnedParameters() });
      if (this.lsq.size > 0) {
        const covered = [...fakeQuantizedWeights(student).keys()];
        const missing = covered.find((n) => !this.lsq.has(n)) ?? [...this.lsq.keys()].find((n) => !covered.includes(n));
        if (missing !== undefined) throw new QkdError('STATE', `learned step sizes and fake quantization disagree on weight '${missing}'`, { field: missing });
      }
    }
    if (this.sakd) {
      this.sakd.attach(student);
      if (this.sakdState !== undefined) this.sakd.setState(this.sakdState);
    }
    if (this.pairs.length > 0) {
      this.studentTap = new FeatureTap(student, this.pairs.map((p) => p.student));
      this.teacherTap = new FeatureTap(this.teacher as LlamaModel, this.pairs.map((p) => p.teacher));
    }
  }

  detach(): void {
    this.sakd?.detach();
    this.qat?.detach();
    this.studentTap?.remove();
    this.teacherTap?.remove();
  }

  beginStep(step: number): void {
    const c = this.config;
    const phase = phaseAt(c, step);
    // The floor bounds the monitor's decrements only: a λ set below it (0: the teacher's term off) is kept.
    const base = coefficient(c.distillation.lambda_distill, phase);
    this.lambda = this.useTeacher ? Math.max(Math.min(c.distillation.lambda_floor, base), base - this.lambdaDelta) : 0;
    this.gamma = recipeQuantizes(c.recipe) ? coefficient(c.distillation.gamma_quant, phase) : 0;
    if (this.qat) this.qat.enabled = fakeQuantActive(c, step);
    // Several teachers taking turns: this step's batch reads one of them.
    if (this.teacher instanceof TeacherEnsemble && this.teacher.mix === 'alternate') this.teacher.active = this.teacher.select(step);
    if (this.qat?.enabled && this.lsq.size > 0 && !this.lsqReady && this.student) this.initLearned(this.student);
  }

  /** Feature-KD weights of the pairs at a step: SWDL softmax(S/T) for sakd, else uniform 1/n. */
  featureWeights(step: number): number[] {
    const n = this.pairs.length;
    if (this.sakd && this.config.sakd.swdl.enabled) return swdlWeights(this.pairs.map((p) => this.teacherLayerScores[p.teacherLayer] ?? 0), swdlTemperature(this.config, step));
    return this.pairs.map(() => 1 / n);
  }

  loss(student: LlamaModel, batch: MicroBatch, step: number): RecipeLoss {
    const d = this.config.distillation;
    const wantAttention = this.useTeacher && d.attention_weight > 0;
    const studentProbs: Tensor[] = [];
    const logits = student.forward(batch.inputs, batch.B, batch.T, wantAttention ? { attentionProbs: studentProbs } : {});
    const task = student.loss(logits, batch.targets);
    // Rows a loss mask leaves out (chat data: not the assistant's) count in no logit or feature term either.
    const keep = countedRows(batch.targets);
    const rowsOf = (x: Tensor): Tensor => {
      const flat = reshape(x, [x.size / x.shape[x.rank - 1]!, x.shape[x.rank - 1]!]);
      return keep === null ? flat : selectRows(flat, keep);
    };
    const components: Record<string, number> = { task: task.item(), lambda: this.lambda, gamma: this.gamma, fake_quant: this.qat?.enabled ? 1 : 0 };
    // task_weight 0: logit-only KD (the task loss is still logged).
    const w = taskWeight(this.config);
    let total = w === 1 ? task : scale(task, w);
    const cached = this.useTeacher && this.cache ? gatherCachedTargets(this.cache, batch, keep) : null;
    // A server teacher answers from its cache only: a batch reaching past the cached windows (the stream's last partial window) has no targets.
    if (this.useTeacher && this.xtok !== null) {
      // Across tokenizers: the logit term at the aligned positions only.
      const x = this.xtok.loss(logits, batch);
      components.aligned_share = x.alignedShare;
      if (!Number.isNaN(x.mappedMass)) components.mapped_mass = x.mappedMass;
      if (x.kd !== null) {
        components.logit_kd = components.distill = x.kd.item();
        total = add(total, scale(x.kd, this.lambda));
      }
    } else if (this.useTeacher && cached === null && this.teacher === null) components.offline_kd = 0;
    else if (this.useTeacher) {
      const V = student.config.vocab_size;
      const teacherProbs: Tensor[] = [];
      const teacherLogits = cached ? null : noGrad(() => this.teacher!.forward(batch.inputs, batch.B, batch.T, wantAttention ? { attentionProbs: teacherProbs } : {}));
      const none = keep !== null && keep.length === 0;
      const divergence = (t: Tensor, s: Tensor): Tensor => (d.kl === 'forward' ? logitKd(t, s, d.temperature) : d.kl === 'reverse' ? reverseLogitKd(t, s, d.temperature) : confidenceKd(t, s, d.temperature, this.confidence));
      const kd = none ? new Tensor([]) : cached ? cachedKd(rowsOf(logits), cached, d.temperature) : divergence(rowsOf(reshape(teacherLogits!, [-1, V])), rowsOf(logits));
      components.offline_kd = cached ? 1 : 0;
      let distill = kd;
      components.logit_kd = kd.item();
      if (this.pairs.length > 0 && this.studentTap && this.teacherTap) {
        // L_feat = Σ_l w_l L_l (w uniform 1/n, or SWDL's softmax(S/T)).
        const weights = this.featureWeights(step);
        let feat: Tensor | null = null;
        this.pairs.forEach((p, i) => {
          const s = this.studentTap!.outputs.get(p.student)!;
          const t = this.teacherTap!.outputs.get(p.teacher)!;
          const term = none ? new Tensor([]) : scale(featureKd(rowsOf(s), rowsOf(t), d.feature_loss, p.projection ? this.extra!.get(p.projection) : undefined), weights[i]!);
          feat = feat === null ? term : add(feat, term);
        });
        const mean = feat!;
        components.feature_kd = mean.item();
        distill = add(distill, scale(mean, d.feature_weight));
      }
      if (wantAttention) {
        const map = layerMap(teacherProbs.length, studentProbs.length);
        let att: Tensor | null = null;
        studentProbs.forEach((ps, l) => {
          const term = attentionKd(ps, teacherProbs[map[l]!]!);
          att = att === null ? term : add(att, term);
        });
        const mean = scale(att!, 1 / studentProbs.length);
        components.attention_kd = mean.item();
        distill = add(distill, scale(mean, d.attention_weight));
      }
      components.distill = distill.item();
      total = add(total, scale(distill, this.lambda));
    }
    if (this.sakd) {
      const r = this.sakd.regularizer();
      Object.assign(components, r.components);
      if (r.loss) total = add(total, r.loss);
    }
    // Learned step sizes define no grid before they start (at the first fake-quantized step): no L_quant until then.
    if (this.qat && this.gamma > 0 && (this.lsq.size === 0 || this.lsqReady)) {
      const q = this.qat.quantLoss();
      components.quant = q.item();
      total = add(total, scale(q, this.gamma));
    }
    return { loss: total, components };
  }

  afterEval(step: number, averages: Record<string, number>, student: LlamaModel, validation: Int32Array, validationMask?: Uint8Array): { metrics?: Record<string, number>; notes?: string[] } {
    const c = this.config;
    const notes: string[] = [];
    const metrics: Record<string, number> = {};
    if (this.sakd) {
      notes.push(...this.sakd.feedback(step));
      if (this.config.sakd.swdl.enabled) metrics.swdl_temperature = swdlTemperature(c, step);
      // Each penalised weight's κ at this evaluation (what the feedback monitor watches), when SGR penalises them.
      if (this.config.sakd.sgr.enabled) for (const [name, kappa] of Object.entries(this.sakd.kurtosisSnapshot())) metrics[`kappa.${name}`] = kappa;
    }
    if (this.useTeacher) {
      const batches = validationKlBatches(c);
      // Teachers taking turns are measured against their mean mixture.
      if (this.teacher instanceof TeacherEnsemble) this.teacher.active = null;
      // Across tokenizers the vocabularies differ: no token-by-token KL (aligned_share and mapped_mass are logged per step).
      if (this.xtok === null && this.teacher !== null) metrics.val_kl = validationKl(this.teacher, student, validation, c.training.batch_size, c.training.seq_len, batches, validationMask);
      else if (this.xtok === null && this.validationCache !== null) metrics.val_kl = cachedValidationKl(student, this.validationCache, validation, c.training.batch_size, c.training.seq_len, batches, validationMask);
      const ratio = averages.task! > 0 ? averages.distill! / averages.task! : 0;
      metrics.distill_task_ratio = ratio;
      if (phaseAt(c, step) !== 'warmup' && ratio > c.distillation.ratio_threshold && this.lambda > c.distillation.lambda_floor) {
        const before = this.lambda;
        this.lambdaDelta += c.distillation.lambda_step;
        this.beginStep(step + 1);
        notes.push(`step ${step}: L_distill/L_task = ${ratio.toFixed(2)} > ${c.distillation.ratio_threshold}; λ lowered ${before.toFixed(3)} → ${this.lambda.toFixed(3)}`);
      }
    }
    return { metrics, notes };
  }

  getState(): RecipeState {
    return { lambda_delta: this.lambdaDelta, sakd: this.sakd?.getState(), config: this.config, teacher: this.teacherId, lsq_initialized: this.lsqReady };
  }

  setState(state: unknown): void {
    const s = state as Partial<RecipeState>;
    if (typeof s?.lambda_delta === 'number') this.lambdaDelta = s.lambda_delta;
    if (s?.lsq_initialized === true) this.lsqReady = true;
    // Applied when the student is attached (the mechanisms need its modules).
    this.sakdState = s?.sakd;
  }
}

/**
 * The cached teacher targets of a batch, or null when a row reaches past the
 * cached windows (the loop then runs the teacher for that batch). Position p
 * of the token stream is read from window ⌊p/N⌋ at offset p mod N; the
 * teacher produced it with that window as context, which can differ from the
 * student's row (an approximation of offline KD on random windows).
 */
function gatherCachedTargets(cache: SoftTargetCache, batch: MicroBatch, keep: Int32Array | null): { ids: Int32Array; logp: Float32Array; tailLogp: Float32Array } | null {
  const N = cache.seqLen;
  const k = cache.k;
  const rows = batch.B * batch.T;
  const ids = new Int32Array(rows * k);
  const logp = new Float32Array(rows * k);
  const tailLogp = new Float32Array(rows);
  for (let b = 0; b < batch.B; b++) {
    const start = batch.starts[b]!;
    if (Math.floor((start + batch.T - 1) / N) >= cache.count) return null;
    for (let t = 0; t < batch.T; ) {
      const p = start + t;
      const w = cache.window(Math.floor(p / N));
      const offset = p % N;
      const span = Math.min(N - offset, batch.T - t);
      const row = b * batch.T + t;
      ids.set(w.ids.subarray(offset * k, (offset + span) * k), row * k);
      logp.set(w.logp.subarray(offset * k, (offset + span) * k), row * k);
      tailLogp.set(w.tailLogp.subarray(offset, offset + span), row);
      t += span;
    }
  }
  if (keep === null) return { ids, logp, tailLogp };
  // Only the rows a loss mask counts, in order.
  const kept = { ids: new Int32Array(keep.length * k), logp: new Float32Array(keep.length * k), tailLogp: new Float32Array(keep.length) };
  keep.forEach((r, i) => {
    kept.ids.set(ids.subarray(r * k, (r + 1) * k), i * k);
    kept.logp.set(logp.subarray(r * k, (r + 1) * k), i * k);
    kept.tailLogp[i] = tailLogp[r]!;
  });
  return kept;
}

/** Builds (or reuses, when it matches the tokens) the soft-target cache of the training split. */
function prepareSoftTargetCache(path: string, teacher: TeacherModel, teacherId: string, trainTokens: Int32Array, seqLen: number, topK: number, temperature: number, world: World, note?: (s: string) => void): SoftTargetCache {
  let reused: SoftTargetCache | null = null;
  if (existsSync(path)) {
    try {
      const cache = openSoftTargetCache(path, { tokens: trainTokens });
      if (cache.k === topK && cache.seqLen === seqLen && cache.V === teacher.config.vocab_size && cache.teacher === teacherTag(teacherId)) reused = cache;
      else cache.close();
    } catch {
      // a stale or foreign cache: rebuild it
    }
  }
  // The ranks rebuild together or not at all.
  const stale = Float64Array.of(reused === null ? 1 : 0);
  world.allreduceMax(stale);
  if (stale[0] === 0) return reused!;
  reused?.close();
  const V = teacher.config.vocab_size;
  const count = softTargetWindowCount(trainTokens.length, seqLen);
  const started = performance.now();
  // Every rank scores its share of the windows; rank 0 writes them all (writeSoftTargetCache).
  writeSoftTargetCache(path, { tokens: trainTokens, topK, seqLen, V, temperature, teacher: teacherId }, (w) => noGrad(() => teacher.forward(softTargetWindow(trainTokens, seqLen, w).inputs, 1, seqLen).data), world);
  world.barrier();
  note?.(`soft-target cache: ${count} windows × ${seqLen} tokens, top-${topK} of ${V}, ${bytesPerToken(V, topK)} bytes/token, built in ${((performance.now() - started) / 1000).toFixed(1)} s${world.size > 1 ? ` on ${world.size} ranks` : ''} → ${path}`);
  return openSoftTargetCache(path, { tokens: trainTokens });
}

/** The validation batches KL(teacher ‖ student) is measured on at each evaluation. */
function validationKlBatches(c: ResolvedDistillConfig): number {
  return Math.min(4, c.training.eval_batches);
}

/** Mean per-token KL(teacher ‖ student) at τ = 1 over validation batches (the table's kl_to_teacher). */
export function validationKl(teacher: TeacherModel, student: LlamaModel, tokens: Int32Array, B: number, T: number, maxBatches: number, mask?: Uint8Array): number {
  let total = 0;
  let n = 0;
  noGrad(() => {
    for (const b of sequentialBatches(tokens, B, T, maxBatches, mask)) {
      const keep = countedRows(b.targets);
      const rows = keep === null ? B * T : keep.length;
      if (rows === 0) continue;
      const V = student.config.vocab_size;
      const pick = (z: Tensor): Tensor => (keep === null ? reshape(z, [B * T, V]) : selectRows(reshape(z, [B * T, V]), keep));
      total += klDivergence(pick(teacher.forward(b.inputs, B, T)), pick(student.forward(b.inputs, B, T)), { temperature: 1 }).item() * rows;
      n += rows;
    }
  });
  return n > 0 ? total / n : NaN;
}

/** The teacher's mean probability of the next token (τ = 1) over the first training batches (counted targets only): c of confidence-aware KL. */
function teacherConfidence(teacher: TeacherModel, tokens: Int32Array, B: number, T: number, mask?: Uint8Array): number {
  const V = teacher.config.vocab_size;
  let sum = 0;
  let n = 0;
  noGrad(() => {
    for (const b of sequentialBatches(tokens, B, T, 4, mask)) {
      const z = teacher.forward(b.inputs, B, T).data;
      for (let r = 0; r < B * T; r++) {
        const target = b.targets[r]!;
        if (target < 0) continue;
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, z[r * V + v]!);
        let denom = 0;
        for (let v = 0; v < V; v++) denom += Math.exp(z[r * V + v]! - max);
        sum += Math.exp(z[r * V + target]! - max) / denom;
        n++;
      }
    }
  });
  if (n === 0) throw new QkdError('ARGUMENT', 'the training split holds no counted target to measure the teacher\'s confidence on', { field: 'distillation.kl' });
  return sum / n;
}

/** Teacher soft-target entropy at τ over the first few training batches. */
function teacherEntropy(teacher: TeacherModel, tokens: Int32Array, B: number, T: number, temperature: number): ReturnType<typeof softTargetEntropy> {
  const V = teacher.config.vocab_size;
  let stats: ReturnType<typeof softTargetEntropy> | null = null;
  noGrad(() => {
    for (const b of sequentialBatches(tokens, B, T, 1)) {
      stats = softTargetEntropy(teacher.forward(b.inputs, B, T).data, B * T, V, temperature);
    }
  });
  if (stats === null) throw new QkdError('ARGUMENT', 'the training split is shorter than one batch', { field: 'training.batch_size' });
  return stats;
}

/** The distillation config a run in `outDir` was started with (null: none saved, e.g. an older qkd). */
export function savedDistillConfig(outDir: string): ResolvedDistillConfig | null {
  return savedRecipeState(outDir).config;
}

/** The saved config (parsed: defaults fill keys an older checkpoint lacks) and teacher fingerprint of a run. */
function savedRecipeState(outDir: string): { config: ResolvedDistillConfig | null; teacher: string | null } {
  const recipe = readResumePoint(outDir).state.recipe as Partial<RecipeState> | undefined;
  const saved = recipe?.config;
  const config = saved && typeof saved.training?.seq_len === 'number' ? (parseDistillConfig(saved, join(outDir, 'trainer_state.json')) as ResolvedDistillConfig) : null;
  return { config, teacher: typeof recipe?.teacher === 'string' ? recipe.teacher : null };
}

/** A teacher inside the output directory would be deleted by --force and overwritten by checkpoints. */
function refuseTeacherInside(given: DistillOptions['teacher'], outDir: string): void {
  if (Array.isArray(given)) {
    for (const g of given) refuseTeacherInside(g, outDir);
    return;
  }
  const one = given as Exclude<DistillOptions['teacher'], readonly unknown[]>;
  const teacher = typeof one === 'string' ? one : one !== null && isCacheTeacher(one) && !isTeacherServer(one) ? one.gguf : null;
  if (teacher !== null) refuseInsideOutput(teacher, outDir, 'teacher', '--teacher', RUN_KEEPS);
}


/** Where a teaching assistant is distilled, in the student's output directory. */
const ASSISTANT = 'assistant';

/** What a distillation run in DIR keeps when --force clears it: its caches, the corrected teacher, the assistant and MOHAWK's stages. */
const RUN_KEEPS: readonly string[] = [...KEPT_FILES, TEACHER_CORRECTED, ASSISTANT, MOHAWK_DIR];

/**
 * A chain through a teaching assistant (config.assistant): the teacher is
 * distilled by recipe kd into a student of the assistant's shape in
 * DIR/assistant (a run finished earlier is reused, an interrupted one
 * resumed), and that assistant then teaches the student in DIR by the
 * run's own recipe. Each step is a normal distillation run.
 */
async function distillThroughAssistant(options: DistillOptions): Promise<DistillResult> {
  const c = options.config;
  const a = c.assistant!;
  const dir = join(options.outDir, ASSISTANT);
  if (options.teacher === null) throw new QkdError('CONFIG', 'a teaching assistant learns from a teacher, and none is given', { field: 'assistant', hint: '--teacher PATH, or no --assistant' });
  if (c.distillation.cross_tokenizer !== null) throw new QkdError('CONFIG', 'a teaching assistant across tokenizers is not supported yet', { field: 'assistant', hint: 'no --assistant, or one tokenizer' });
  if (!Array.isArray(options.teacher) && isCacheTeacher(options.teacher)) throw new QkdError('CONFIG', 'a teaching assistant is built from the teacher\'s weights, and a teacher on a server or in llama.cpp has none here', { field: 'assistant', hint: 'no --assistant, or a teacher qkd loads' });
  if (c.distillation.teacher_correction.steps > 0) throw new QkdError('CONFIG', 'teacher correction with a teaching assistant is not supported (which teacher would it correct?)', { field: 'distillation.teacher_correction.steps', hint: 'steps: 0, or no --assistant' });
  // The student's directory is checked first, so a refused run starts no assistant.
  refuseTeacherInside(options.teacher, options.outDir);
  if (c.student.from !== null) refuseInsideOutput(c.student.from, options.outDir, 'student', '--student', RUN_KEEPS);
  const started = { student: existsSync(join(options.outDir, 'latest.json')), assistant: existsSync(join(dir, 'latest.json')) };
  if (options.resume === true && !started.student && !started.assistant) {
    throw new QkdError('IO', `nothing to resume: neither ${options.outDir} nor ${dir} holds a checkpoint (latest.json)`, { path: options.outDir, field: '--out', hint: 'the output directory of an earlier run with --assistant' });
  }
  prepareRunDirectory(options.outDir, { resume: options.resume === true && started.student, force: options.force, ignore: [...RUN_KEEPS] });
  const steps = a.steps ?? c.training.steps;
  const finished = options.force !== true && existsSync(join(dir, 'quantized')) && existsSync(join(dir, 'latest.json')) && readResumePoint(dir).state.step === steps;
  let assistantResult: TrainResult | null = null;
  if (!finished) {
    const assistantConfig: DistillConfig = {
      ...c,
      recipe: 'kd',
      assistant: null,
      training: { ...c.training, steps, seq_len: c.training.seq_len },
      quantization: { ...c.quantization, format: null },
      student: { ...c.student, preset: a.preset, model: a.model, from: null, tokenizer: null },
    };
    options.onNote?.(`teaching assistant: distilling the teacher into a ${a.preset ?? 'custom'}-shaped assistant (${steps} steps) → ${dir}`);
    const r = await distill({ ...options, outDir: dir, config: assistantConfig, resume: options.resume === true && started.assistant, exportGguf: undefined, viaAssistant: false });
    if (r.interrupted) return { ...r, recipe: c.recipe };
    assistantResult = r;
  } else options.onNote?.(`teaching assistant: reusing ${dir}`);
  const assistant = loadLlama(modelDirectory(dir));
  const tokenizer = loadModelTokenizer(assistant, dir);
  const done = assistantResult ?? { val_loss: NaN, val_ppl: NaN };
  options.onNote?.(`teaching assistant: ${assistant.parameterCount} parameters${Number.isNaN(done.val_loss) ? '' : `, val loss ${done.val_loss.toFixed(4)}`}; it now teaches the student`);
  const result = await distill({ ...options, teacher: assistant, tokenizer, resume: options.resume === true && existsSync(join(options.outDir, 'latest.json')), viaAssistant: true });
  return { ...result, assistant: { dir, val_loss: done.val_loss, val_ppl: done.val_ppl, params: assistant.parameterCount, steps } };
}

export { studentConfig };

export async function distill(options: DistillOptions): Promise<DistillResult> {
  // Recipe mohawk chains its own stages (train/mohawk.ts); its third stage comes back here as kd / kd-qat.
  if (options.config.recipe === 'mohawk') return distillMohawk(options, distill);
  const world = options.world ?? SINGLE_PROCESS;
  // Only rank 0 reports (the others would repeat its every line).
  if (!world.isRoot) options = { ...options, onNote: undefined, onStep: undefined, onCacheProgress: undefined };
  if (options.config.assistant !== null && options.viaAssistant !== true) return distillThroughAssistant(options);
  refuseTeacherInside(options.teacher, options.outDir);
  if (options.config.student.from !== null) refuseInsideOutput(options.config.student.from, options.outDir, 'student', '--student', RUN_KEEPS);
  const teachers = Array.isArray(options.teacher) ? (options.teacher.length === 1 ? null : (options.teacher as readonly (string | LlamaModel)[])) : null;
  const oneTeacher = (Array.isArray(options.teacher) ? (options.teacher.length === 1 ? options.teacher[0]! : null) : options.teacher) as string | LlamaModel | CacheTeacher | null;
  const noTeacher = oneTeacher === null && teachers === null;
  // A teacher on a server or in llama.cpp: no weights here; the student (student.from) bounds the context instead.
  const external = oneTeacher !== null && isCacheTeacher(oneTeacher) ? oneTeacher : null;
  // Stopped while the teacher was still filling its cache: no checkpoint yet, and --resume continues the filling.
  const fillingOnly = external !== null && !existsSync(join(options.outDir, 'latest.json')) && KEPT_FILES.some((f) => existsSync(join(options.outDir, f)));
  const resume = options.resume === true && !fillingOnly;
  const runDirectory = prepareRunDirectory(options.outDir, { resume, force: options.force, ignore: [...RUN_KEEPS] });
  // Several teachers: the first initialises the student and bounds the context; the mixture teaches.
  const ensemble = teachers !== null ? loadEnsemble(teachers, options.config, options.tokenizer, (typeof options.text === 'string' ? options.text : JSON.stringify(options.text.conversations.slice(0, 8))).slice(0, 4096)) : null;
  const givenTeacher =
    ensemble !== null ? ensemble.members[0]! : external !== null || noTeacher ? null : typeof oneTeacher === 'string' ? loadModelAny(oneTeacher, { precision: teacherPrecision(oneTeacher, options.config.distillation.teacher_precision) }) : (oneTeacher as LlamaModel);
  const teacherId = ensemble !== null ? ensemble.id : external !== null ? cacheTeacherFingerprint(external) : noTeacher ? 'none' : teacherFingerprint(givenTeacher!);
  const existingStudent = external !== null ? cacheTeacherStudent(options.config) : noTeacher && options.config.student.from !== null ? { path: options.config.student.from, config: peekConfig(options.config.student.from) } : null;
  // Without a teacher a fresh student's context is the run's sequence length.
  const c = resolveDistillConfig(options.config, (givenTeacher?.config ?? existingStudent?.config)?.max_position_embeddings ?? Number.MAX_SAFE_INTEGER);
  if (external !== null) refuseForCacheTeacher(c, external);
  if (c.training.dbwa.enabled && learnedStepSizes(c) && scaleInit(c) === 'gptq') {
    throw new QkdError('CONFIG', 'scale_init gptq replaces the student\'s weights with GPTQ\'s, which DBWA\'s packed storage does not allow mid-run', { field: 'quantization.scale_init', hint: 'scale_init rtn or clip-search with training.dbwa.enabled, or DBWA off' });
  }
  if (external !== null && world.size > 1) {
    throw new QkdError('CONFIG', `a teacher on a server or in llama.cpp is not yet supported in a data-parallel run (${world.size} ranks)`, { field: '--teacher', hint: 'fill its caches in one process first (the same command without mpirun, stopped once training starts), or a qkd / Hugging Face teacher' });
  }
  if (ensemble !== null) refuseForEnsemble(c);
  if (noTeacher) refuseWithoutTeacher(c);
  const correction = c.recipe === 'qat' ? 0 : c.distillation.teacher_correction.steps;
  if (correction > 0 && givenTeacher!.arena.released) {
    throw new QkdError('CONFIG', 'teacher correction fine-tunes the teacher, and this teacher is held in bf16 (frozen)', { field: 'distillation.teacher_correction.steps', hint: 'teacher_precision: float32, or steps: 0' });
  }
  if (options.exportGguf !== undefined && !GGUF_TYPE_NAMES.includes(options.exportGguf)) {
    throw new QkdError('ARGUMENT', `unknown GGUF type '${options.exportGguf}' to export`, { field: '--export', hint: `gguf:TYPE with TYPE one of ${GGUF_TYPE_NAMES.join(', ')}` });
  }
  if (resume) {
    const saved = savedRecipeState(options.outDir);
    // Nothing may change, not even training.steps: the phase schedule (warm-up, joint, fine-tune) is laid out over them.
    if (saved.config) refuseConfigChanges(saved.config, c, [], 'the given distillation config');
    if (saved.teacher !== null && saved.teacher !== teacherId) {
      throw new QkdError('CONFIG', `--resume: the teacher differs from the one the run distills (fingerprint ${saved.teacher.slice(0, 12)}…, given ${teacherId.slice(0, 12)}…)`, { path: typeof options.teacher === 'string' ? options.teacher : undefined, field: 'teacher', hint: 'the --teacher the run was started with' });
    }
  }
  const xtokSettings = c.distillation.cross_tokenizer;
  if (xtokSettings !== null) refuseForCrossTokenizer(c, options.text);
  const teacherTok =
    ensemble !== null
      ? ensemble.tokenizer
      : noTeacher
        ? teacherlessTokenizer(c, options.studentTokenizer ?? options.tokenizer)
        : external !== null
          ? xtokSettings !== null
            ? crossCacheTeacherTokenizer(external, options.tokenizer)
            : cacheTeacherTokenizer(existingStudent!, options.tokenizer)
          : teacherTokenizer(oneTeacher as string | LlamaModel, givenTeacher!, options.tokenizer);
  // The student's tokenizer: the teacher's, or across tokenizers its own.
  const tokenizer = xtokSettings !== null ? crossStudentTokenizer(c, options.studentTokenizer) : teacherTok;
  const shape = noTeacher
    ? (existingStudent?.config ?? llamaConfig({ ...(c.student.model ?? PRESETS[c.student.preset!]!.model), vocab_size: tokenizer.vocabSize, max_position_embeddings: c.training.seq_len }))
    : xtokSettings !== null
      ? crossStudentConfig(c, givenTeacher?.config ?? existingStudent!.config, tokenizer)
      : existingStudent !== null
        ? existingStudent.config
        : c.student.from !== null
          ? existingStudentConfig(c.student.from, givenTeacher!.config)
          : studentConfig(givenTeacher!.config, c);

  // The very token streams the training loop samples and validates on.
  const split = tokenizeSplit(tokenizer, options.text, c.training.validation_fraction);
  checkSplitFits(split, c.training.batch_size, c.training.seq_len, c.training.validation_fraction);
  // A server or llama.cpp teacher is always read through caches (top_k unless set: vLLM's default --max-logprobs, or the cache's default).
  const cacheSettings = external !== null ? (c.distillation.soft_target_cache ?? { top_k: isTeacherServer(external) ? SERVER_DEFAULT_TOP_K : LLAMA_CPP_DEFAULT_TOP_K }) : c.distillation.soft_target_cache;
  const useCache = cacheSettings !== null && c.recipe !== 'qat';
  if (useCache && c.distillation.kl !== 'forward') {
    throw new QkdError('CONFIG', `offline KD (distillation.soft_target_cache) keeps the teacher's top-k targets, which give the forward KL only; distillation.kl is '${c.distillation.kl}'`, { field: 'distillation.kl', hint: 'kl: forward, or soft_target_cache: null' });
  }
  if (useCache) {
    const featureKdOn = c.distillation.feature_weight > 0 && (c.distillation.feature_layers === 'all' || c.distillation.feature_layers.length > 0);
    if (featureKdOn || c.distillation.attention_weight > 0) {
      throw new QkdError('CONFIG', 'offline KD (distillation.soft_target_cache) caches logits only; feature and attention KD need the live teacher', { field: 'distillation.soft_target_cache', hint: 'set feature_layers: [] and attention_weight: 0, or soft_target_cache: null' });
    }
  }
  // Every check has passed: only now may --force delete the earlier run (rank 0's job; the others wait until it is done).
  if (world.isRoot) runDirectory.clear();
  world.barrier();
  // Teacher correction: a short fine-tune of the teacher on the distillation data before anything reads it.
  const loopSettings = loopConfig(c, { hidden_size: shape.hidden_size, intermediate_size: shape.intermediate_size, num_hidden_layers: shape.num_hidden_layers, num_attention_heads: shape.num_attention_heads, num_key_value_heads: shape.num_key_value_heads });
  const teacher = givenTeacher === null ? null : correction > 0 ? await correctTeacher(givenTeacher, tokenizer, options, c, correction) : givenTeacher;
  // What KD reads: the mixture of several teachers, or the one.
  const kdTeacher: TeacherModel | null = ensemble?.ensemble ?? teacher;
  const recipe = new DistillRecipe(c, kdTeacher, shape, teacherId, !noTeacher);
  if (xtokSettings !== null) {
    recipe.xtok = new CrossTokenizerKd(teacher, teacherTok, tokenizer, split.train, xtokSettings, c.distillation.temperature);
    const bytes = recipe.xtok.textBytes();
    options.onNote?.(
      `across tokenizers (${xtokSettings.method}${xtokSettings.method === 'aligned' ? `, top-${xtokSettings.top_k}, ${xtokSettings.mapping} mapping: ${(100 * recipe.xtok.mappedVocabularyShare()).toFixed(1)}% of the teacher's vocabulary reaches the student's` : ''}): ${split.train.length} student tokens, ${recipe.xtok.teacherTokens.length} teacher tokens over ${bytes.student} bytes${bytes.teacher !== bytes.student ? ` (the teacher's tokens spell ${bytes.teacher}: positions past the first difference rarely align)` : ''}`,
    );
  }
  // Across tokenizers, a cache holds windows of the teacher's own token stream, in its vocabulary (the training loop's seq_len teacher tokens each).
  let xtokCache: SoftTargetCache | null = null;
  if (external !== null && cacheSettings !== null) {
    const xtok = recipe.xtok;
    const T = c.training.seq_len;
    const starts = sampledStarts(split.train, loopSettings);
    const caches = await prepareCaches(
      external,
      { train: join(options.outDir, SOFT_TARGET_CACHE), validation: join(options.outDir, VALIDATION_CACHE) },
      xtok !== null ? { train: xtok.teacherTokens, validation: new Int32Array(0) } : split,
      {
        seqLen: T,
        topK: cacheSettings.top_k,
        V: xtok !== null ? xtok.teacherVocab : shape.vocab_size,
        temperature: c.distillation.temperature,
        // Across tokenizers there is no validation KL (the vocabularies differ): no validation cache.
        validationWindows: xtok !== null ? 0 : validationKlBatches(c) * c.training.batch_size,
        decode: (id: number) => teacherTok.decode([id]),
        // Every request costs the server a prompt: only the windows this run's batches read (the loop's sampler replayed).
        trainWindows:
          xtok !== null
            ? xtok.teacherWindows(starts, T, T, softTargetWindowCount(xtok.teacherTokens.length, T))
            : windowsTouched(starts, T, T, softTargetWindowCount(split.train.length, T)),
        ggufTokenizer: xtok !== null ? 'own' : 'check',
      },
      { onNote: options.onNote, onProgress: options.onCacheProgress, shouldStop: options.shouldStop },
    );
    if (caches === null) return { ...interruptedBeforeTraining(), recipe: c.recipe, teacher_entropy: NaN, quantized_dir: '', quantized_avg_bits: NaN, quantized_bytes: 0 };
    if (xtok !== null) {
      xtok.useCache((xtokCache = caches.train));
    } else {
      recipe.cache = caches.train;
      recipe.validationCache = caches.validation;
    }
  } else if (useCache && cacheSettings !== null && recipe.xtok !== null) {
    const T = Math.min(c.training.seq_len, teacher!.config.max_position_embeddings);
    recipe.xtok.useCache((xtokCache = prepareSoftTargetCache(join(options.outDir, SOFT_TARGET_CACHE), teacher!, teacher === givenTeacher ? teacherId : teacherFingerprint(teacher!), recipe.xtok.teacherTokens, T, cacheSettings.top_k, c.distillation.temperature, world, options.onNote)));
  } else if (useCache && cacheSettings !== null) {
    recipe.cache = prepareSoftTargetCache(join(options.outDir, SOFT_TARGET_CACHE), kdTeacher!, teacher === givenTeacher ? teacherId : teacherFingerprint(teacher!), split.train, c.training.seq_len, cacheSettings.top_k, c.distillation.temperature, world, options.onNote);
  }
  if (ensemble !== null) {
    const e = ensemble.ensemble;
    options.onNote?.(`${e.members.length} teachers, mix ${e.mix}, weights ${e.weights.map((w) => w.toFixed(3)).join(' / ')}${e.mix === 'confidence' ? " (× each teacher's top probability per position)" : ''}`);
  }
  const entropy = kdTeacher !== null ? teacherEntropy(kdTeacher, recipe.xtok?.teacherTokens ?? split.train, c.training.batch_size, c.training.seq_len, c.distillation.temperature) : null;
  options.onNote?.(describeRun(c, !noTeacher));
  if (entropy !== null) {
    options.onNote?.(`teacher soft-target entropy at τ=${c.distillation.temperature}: mean ${entropy.mean.toFixed(3)} nats (min ${entropy.min.toFixed(3)}, max ${entropy.max.toFixed(3)}, log V = ${entropy.logV.toFixed(3)})`);
    const warning = entropyWarning(entropy);
    if (warning) options.onNote?.(`warning: ${warning}`);
  }
  recipe.trainTokens = split.train;
  if (kdTeacher !== null && c.recipe !== 'qat' && c.distillation.kl === 'confidence') {
    recipe.confidence = teacherConfidence(kdTeacher, split.train, c.training.batch_size, c.training.seq_len, split.trainMask);
    options.onNote?.(`confidence-aware KL: the teacher's mean probability of the next token is c = ${recipe.confidence.toFixed(4)}; L_kd = c·KL(T‖S) + (1 − c)·KL(S‖T)`);
  }

  let studentModel: LlamaModel | null = null;
  const result = await train({
    text: options.text,
    outDir: options.outDir,
    config: loopSettings,
    resume,
    force: options.force,
    keepFiles: [...KEPT_FILES, TEACHER_CORRECTED, ASSISTANT, MOHAWK_DIR],
    tokenizer,
    recipe: {
      name: recipe.name,
      extra: recipe.extra,
      beginStep: (step, model) => {
        // Hooks and fake quantization go on the model the loop trains (created or resumed).
        if (studentModel !== model) {
          studentModel = model;
          recipe.attach(model);
        }
        recipe.beginStep(step);
      },
      loss: (model, batch, step) => recipe.loss(model, batch, step),
      afterEval: (step, averages, model, validation, validationMask) => recipe.afterEval(step, averages, model, validation, validationMask),
      getState: () => recipe.getState(),
      setState: (s) => recipe.setState(s),
    },
    createModel: () => {
      if (c.student.from !== null) return loadModelAny(c.student.from);
      // Across tokenizers nothing of the teacher's fits the student's vocabulary, and without a teacher there is nothing to copy: a fresh student.
      if (xtokSettings !== null || noTeacher) return createLlama({ ...shape }, c.training.seed);
      const m = c.student.minitron;
      const calibration = c.student.init === 'minitron' ? { tokens: split.train, batch: c.training.batch_size, seqLen: c.training.seq_len, batches: m.calibration_batches, aggregation: m.aggregation, depth: m.depth } : undefined;
      const student = initStudent(teacher!, shape, c.student.init, c.training.seed, calibration);
      if (c.student.init === 'minitron') options.onNote?.(`minitron: pruned the teacher to ${student.parameterCount} parameters (importance from ${m.calibration_batches} calibration batches, depth by ${m.depth})`);
      return student;
    },
    onStep: options.onStep,
    shouldStop: options.shouldStop,
    onStopAgreed: options.onStopAgreed,
    onNote: options.onNote,
    world,
  });
  recipe.detach();
  recipe.cache?.close();
  recipe.validationCache?.close();
  xtokCache?.close();
  if (result.interrupted || !world.isRoot) {
    // A half-trained student is not a deployable artefact: no quantized/ and no report until the run ends.
    // The artefacts are rank 0's to write.
    return { ...result, recipe: c.recipe, teacher_entropy: entropy?.mean ?? NaN, quantized_dir: '', quantized_avg_bits: NaN, quantized_bytes: 0 };
  }

  // The deployable artefact: the trained student packed at the deployment width.
  const student = loadLlama(modelDirectory(options.outDir));
  const plan = uniformPlan(
    student.arena.entries.filter((e) => e.shape.length === 2),
    c.quantization.bits,
    deploymentScheme(c),
  );
  const quantizedDir = join(options.outDir, 'quantized');
  // Learned step sizes pack with their own scales (exactly the last forward's ŵ); otherwise RTN of the trained weights.
  const packed = learnedStepSizes(c) ? packLearned(student, plan, (name) => recipe.learnedScalesOf(name)) : quantizeLlama(student, plan, { method: 'rtn' });
  const storage = saveQuantizedLlama(quantizedDir, packed, { qkd_recipe: c.recipe });
  copyTokenizerFiles(options.outDir, quantizedDir);
  let sakdReport: SakdReport | undefined;
  if (c.recipe === 'sakd' && c.sakd.report) {
    const valPpl = (m: LlamaModel) => Math.exp(validationLoss(m, split.validation, c.training.batch_size, c.training.seq_len, c.training.eval_batches, split.validationMask));
    const coefficients = recipe.sakd ? Object.fromEntries([...recipe.sakd.coefficient.entries()].filter(([, v]) => v > 1)) : {};
    sakdReport = {
      teacher: profileModel(modelSource(teacher!, typeof options.teacher === 'string' ? options.teacher : 'teacher')),
      student: profileModel(modelSource(student, options.outDir)),
      fp32_student_val_ppl: valPpl(student),
      quantized_student: { bits: c.quantization.bits, avg_bits: storage.avgBits, bytes: storage.bytes, val_ppl: valPpl(loadLlama(quantizedDir)) },
      swdl_weights: c.sakd.swdl.enabled ? { first: recipe.featureWeights(1), last: recipe.featureWeights(c.training.steps) } : null,
      tdni_modules: recipe.sakd ? [...recipe.sakd.noisyModules] : [],
      feedback_coefficients: coefficients,
    };
    writeBytesAtomic(join(options.outDir, 'sakd-report.json'), JSON.stringify(sakdReport, null, 2) + '\n');
  }
  // The deployable GGUF: with quantization.format, exactly the weights QAT trained on.
  const ggufType = options.exportGguf ?? c.quantization.format;
  let gguf: DistillResult['gguf'];
  if (ggufType) {
    const path = join(options.outDir, `model-${ggufType}.gguf`);
    try {
      const r = exportGguf(modelDirectory(options.outDir), { out: path, type: ggufType, force: true, name: `qkd ${c.recipe} student` });
      for (const note of r.fallbacks) options.onNote?.(note);
      gguf = { path, type: ggufType, bytes: r.bytes, bits_per_weight: r.bitsPerWeight };
    } catch (err) {
      // The trained student is saved; a failed export must not lose the run's result.
      if (!(err instanceof QkdError)) throw err;
      options.onNote?.(`warning: the GGUF export failed (${err.message}); the student is in ${options.outDir}, retry with qkd export`);
    }
  }
  return { ...result, recipe: c.recipe, teacher_entropy: entropy?.mean ?? NaN, quantized_dir: quantizedDir, quantized_avg_bits: storage.avgBits, quantized_bytes: storage.bytes, sakd_report: sakdReport, gguf };
}
