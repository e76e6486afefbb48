/**
 * Configuration of `qkd distill` (docs/algorithms.md §3–4): a YAML file with
 * the sections training / quantization / distillation / optimizer / student,
 * validated by one zod schema whose errors name the field
 * (e.g. `distillation.temperature`). Unknown fields are errors. CLI flags
 * override single fields after parsing. Defaults follow docs/algorithms.md §4.
 */
import { z } from 'zod';
import { QkdError } from '../errors.js';
import { PRESETS, firstIssue, readYamlFile, satSchema, type TrainConfig } from './config.js';
import { GGUF_TYPE_NAMES } from '../compress/ggml-mixtures.js';
import { derivedConfig, type LlamaConfig } from '../models/llama-config.js';

export { GGUF_TYPE_NAMES };

/** The tuned default of quantization.fake_quant_start (issue 14's experiment). */
export const TUNED_FAKE_QUANT_START = 0.75;

/** The distillation recipes (docs/algorithms.md §4, §6; docs/synth.md). */
export const RECIPES = ['kd', 'qat', 'kd-qat', 'sakd', 'seqkd', 'seqkd-qat', 'mohawk'] as const;
export type Recipe = (typeof RECIPES)[number];

/** Whether a recipe trains with fake quantization (QAT); mohawk's third stage says for itself (mohawk.stage3). */
export function recipeQuantizes(recipe: Recipe): boolean {
  return recipe !== 'kd' && recipe !== 'seqkd' && recipe !== 'mohawk';
}

/** Whether a recipe can run without a teacher: qat, and sequence-level KD on teacher-generated text. */
export function recipeRunsWithoutTeacher(recipe: Recipe): boolean {
  return recipe === 'qat' || recipe === 'seqkd' || recipe === 'seqkd-qat';
}

/** A per-phase coefficient: one number for every phase, or one per phase. */
const phased = (warmup: number, joint: number, finetune: number) =>
  z
    .union([z.number().nonnegative(), z.object({ warmup: z.number().nonnegative(), joint: z.number().nonnegative(), finetune: z.number().nonnegative() }).strict()])
    .default({ warmup, joint, finetune });

const modelShape = z
  .object({
    hidden_size: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
    num_hidden_layers: z.number().int().positive(),
    num_attention_heads: z.number().int().positive(),
    num_key_value_heads: z.number().int().positive().optional(),
    /** Per-head width; default: hidden_size / heads, or the teacher's for svd and minitron (which keep heads whole). */
    head_dim: z.number().int().positive().optional(),
  })
  .strict();

export const distillConfigSchema = z
  .object({
    /**
     * kd: teacher only; qat: fake quantization, no teacher; kd-qat: both (docs/algorithms.md §4);
     * sakd: kd-qat + the sakd section (docs/algorithms.md §6); seqkd / seqkd-qat: sequence-level KD,
     * the task loss on teacher-generated text (qkd synth), with logit KD as in kd when a teacher is
     * given and none needed otherwise (a black-box teacher), without / with QAT (docs/synth.md).
     */
    recipe: z.enum(RECIPES).default('kd-qat'),
    /**
     * A teaching assistant between a large teacher and a small student: the teacher is first
     * distilled (recipe kd) into a student of this shape in DIR/assistant, which then teaches the
     * student (docs/synth.md). steps: the assistant's (default training.steps).
     */
    assistant: z
      .object({ preset: z.string().nullable().default(null), model: modelShape.nullable().default(null), steps: z.number().int().positive().nullable().default(null) })
      .strict()
      .nullable()
      .default(null),
    /**
     * MOHAWK (docs/mohawk.md), used by recipe mohawk: attention distilled into a state-space
     * student in three stages, each a resumable run of its own in DIR/mohawk/ (stages 1, 2) and DIR (3).
     */
    mohawk: z
      .object({
        /** Which stages run, ascending; stage 3 always (the ablations: [3], [2, 3], [1, 2, 3]). */
        stages: z.array(z.union([z.literal(1), z.literal(2), z.literal(3)])).min(1).default([1, 2, 3]),
        /**
         * Shares of training.steps for stage 1 (matrix orientation) and stage 2 (hidden-state
         * alignment); stage 3 gets the rest, so every stage selection trains on the same tokens.
         * Default: the published split, about 3% / 5% / 92%.
         */
        matrix_share: z.number().min(0).lt(1).default(0.03),
        hidden_share: z.number().min(0).lt(1).default(0.05),
        /** Stage 3: end-to-end logit KD, with QAT (kd-qat: a 4-bit SSM student) or without (kd). */
        stage3: z.enum(['kd', 'kd-qat']).default('kd'),
        /** Learning rate of stages 1 and 2 (null: optimizer.lr). */
        align_lr: z.number().positive().nullable().default(null),
        /** State width N per head (null: the head width, so B and C start as the teacher's K and Q). */
        state_size: z.number().int().positive().nullable().default(null),
        /** Depthwise causal convolution length over x, B, C. */
        conv_kernel: z.number().int().positive().default(4),
        /** Groups of heads sharing x and B (null: the teacher's key/value heads, so x and B start as exactly V and K; the head count: every head its own). */
        groups: z.number().int().positive().nullable().default(null),
      })
      .strict()
      .default({}),
    /** Sensitivity-guided distillation (docs/algorithms.md §6), used by recipe sakd; each mechanism switches off on its own. */
    sakd: z
      .object({
        /** SWDL: feature-KD layer weights softmax(S_l / T), T annealed from t0 to t_min (t0: null = ∞, uniform). */
        swdl: z
          .object({
            enabled: z.boolean().default(true),
            t0: z.number().positive().nullable().default(1),
            t_min: z.number().positive().default(0.05),
            schedule: z.enum(['exponential', 'linear']).default('exponential'),
          })
          .strict()
          .default({}),
        /** SGR: the SAT kurtosis ceiling and spectral penalties on the student. */
        sgr: z
          .object({
            enabled: z.boolean().default(true),
            kappa_max: z.number().positive().default(2.0),
            kurtosis_weight: z.number().nonnegative().default(0.01),
            spectral_weight: z.number().nonnegative().default(0.01),
          })
          .strict()
          .default({}),
        /** TDNI: b-bit step noise on the student layers aligned with the teacher's top layers. */
        tdni: z.object({ enabled: z.boolean().default(true), top_fraction: z.number().gt(0).max(1).default(0.2) }).strict().default({}),
        /** Optimiser feedback: a penalised weight whose κ rises at `patience` consecutive evals gets its coefficient × factor (≤ max_scale). */
        feedback: z
          .object({
            enabled: z.boolean().default(true),
            patience: z.number().int().positive().default(2),
            factor: z.number().gt(1).default(1.5),
            max_scale: z.number().gt(1).default(8),
          })
          .strict()
          .default({}),
        /** Post-distillation audit: teacher and student profiles (JSON + HTML) with the packed student's perplexity. */
        report: z.boolean().default(true),
      })
      .strict()
      .default({}),
    training: z
      .object({
        /** Master weights and math; only fp32 is implemented. */
        precision: z.literal('fp32').default('fp32'),
        steps: z.number().int().positive().default(1000),
        batch_size: z.number().int().positive().default(8),
        /** Tokens per sequence; null: 128, or the teacher's context when that is shorter. */
        seq_len: z.number().int().min(2).nullable().default(null),
        grad_accum: z.number().int().positive().default(1),
        gradient_clip_norm: z.number().positive().default(0.75),
        /** Warm-up phase share of the steps (no fake quantization). */
        warmup_share: z.number().min(0).lt(1).default(0.05),
        /** Fine-tune phase share at the end. */
        finetune_share: z.number().min(0).lt(1).default(0.1),
        eval_every: z.number().int().positive().default(200),
        eval_batches: z.number().int().positive().default(8),
        checkpoint_every: z.number().int().positive().default(200),
        validation_fraction: z.number().gt(0).lt(1).default(0.1),
        seed: z.number().int().default(1337),
        /**
         * DBWA parameter storage for the student (docs/algorithms.md §5): weights, gradients and AdamW moments
         * packed at 16 / 12 / 8 bits by sensitivity, re-tiered every `reprofile_every` steps. Works with every recipe.
         */
        dbwa: z
          .object({
            enabled: z.boolean().default(false),
            uniform_tier: z.union([z.literal(8), z.literal(12), z.literal(16)]).nullable().default(null),
            stochastic_rounding: z.boolean().default(true),
            reprofile_every: z.number().int().positive().default(1000),
          })
          .strict()
          .default({}),
      })
      .strict()
      .default({}),
    quantization: z
      .object({
        /** Deployment width: what QAT simulates and the packed checkpoint stores. */
        bits: z.union([z.literal(2), z.literal(3), z.literal(4), z.literal(8)]).default(4),
        scheme: z.enum(['asymmetric', 'symmetric']).default('asymmetric'),
        granularity: z.enum(['channel', 'group']).default('channel'),
        group_size: z.number().int().positive().default(128),
        /**
         * Step share where fake quantization starts. Tuned default 0.75: FP32 distillation, then
         * KD+QAT over the last quarter (the kdqat experiment, BENCHMARKS.md); null: the end of warm-up
         * (docs/algorithms.md §4's schedule, the default before issue 14).
         */
        fake_quant_start: z.number().min(0).max(1).nullable().default(TUNED_FAKE_QUANT_START),
        /**
         * Train on a llama.cpp grid instead of the uniform b-bit one: a ggml format (Q4_0, Q4_K, Q6_K, …)
         * or a llama.cpp file type (Q4_K_M, …, with llama-quantize's per-tensor types). The student's GGUF
         * in that type is written at the end (DIR/model-<format>.gguf): exactly the weights QAT trained on.
         */
        format: z.string().nullable().default(null),
        /**
         * Learned step sizes: LSQ on a symmetric grid, LSQ+ (a learned zero point as well) on an
         * asymmetric one, per channel or per group, trained with the student (docs/qat.md).
         * null (tuned default): on for the uniform grid, off with a ggml format.
         */
        learned_step_size: z.boolean().nullable().default(null),
        /**
         * Where learned step sizes start, when fake quantization switches on: rtn (min/max, as RTN
         * PTQ), clip-search (per group, the clip ratio with the least reconstruction error) or gptq
         * (GPTQ on calibration windows of the training split; the weights start at GPTQ's ŵ).
         * null (tuned default): clip-search.
         */
        scale_init: z.enum(['rtn', 'clip-search', 'gptq']).nullable().default(null),
      })
      .strict()
      .default({}),
    distillation: z
      .object({
        temperature: z.number().positive().default(4),
        /**
         * The logit-KD divergence: forward KL(teacher ‖ student); reverse KL(student ‖ teacher);
         * confidence: c·forward + (1 − c)·reverse with c the teacher's mean probability of the
         * next token on the training split (confidence-aware KL, docs/qat.md).
         */
        kl: z.enum(['forward', 'reverse', 'confidence']).default('forward'),
        /**
         * Weight of the task loss (cross-entropy on the next token); 0: logit-only KD. null (default):
         * 1, or 0 for a minitron-pruned student (logit-only KD is the published best retraining).
         */
        task_weight: z.number().nonnegative().nullable().default(null),
        /**
         * How the frozen teacher is held: float32, bf16 (weights as bfloat16 in
         * memory, half the bytes, run on the bf16 GEMM; activations rounded to
         * bf16 at each matrix product), or auto: float32 when it fits in the
         * available memory, else bf16.
         */
        teacher_precision: z.enum(['auto', 'float32', 'bf16']).default('auto'),
        lambda_distill: phased(0.9, 0.5, 0.2),
        gamma_quant: phased(0.1, 0.3, 0.1),
        /** Student modules whose outputs are matched to the aligned teacher module ('all' = every decoder layer). */
        feature_layers: z.union([z.literal('all'), z.array(z.string())]).default([]),
        feature_loss: z.enum(['mse', 'cosine', 'kl']).default('mse'),
        feature_weight: z.number().nonnegative().default(1),
        attention_weight: z.number().nonnegative().default(0),
        /**
         * Teacher correction (Minitron): fine-tune the teacher this many steps by the task loss on the
         * distillation data before distilling (0: off); lr null = a tenth of optimizer.lr.
         */
        teacher_correction: z.object({ steps: z.number().int().nonnegative().default(0), lr: z.number().positive().nullable().default(null) }).strict().default({}),
        /** Ratio monitor: after warm-up, when L_distill / L_task > threshold at an eval, λ −= step (floor). */
        ratio_threshold: z.number().positive().default(3),
        lambda_step: z.number().nonnegative().default(0.05),
        lambda_floor: z.number().nonnegative().default(0.05),
        /**
         * Several teachers of one vocabulary (--teacher A --teacher B): mean: their distributions
         * averaged with fixed weights; confidence: weighted per position by each teacher's top
         * probability as well; alternate: each batch from one teacher, drawn by the weights
         * (docs/synth.md). weights: one per teacher (default equal), normalised.
         */
        teachers: z
          .object({ mix: z.enum(['mean', 'confidence', 'alternate']).default('mean'), weights: z.array(z.number().positive()).min(1).nullable().default(null) })
          .strict()
          .default({}),
        /** Offline KD from a top-k soft-target cache (null: run the teacher every step). */
        soft_target_cache: z.object({ top_k: z.number().int().positive().default(32) }).strict().nullable().default(null),
        /**
         * Distillation across tokenizers (docs/cross-tokenizer.md), when the student's tokenizer is
         * not the teacher's: at positions where both tokenizations end a token at the same byte,
         * uld (sorted-probability Wasserstein-1) or aligned: the teacher's distribution carried
         * into the student's vocabulary by text (prefix: also inside the teacher's next token, the
         * student token that continues the text; first-token: at aligned positions, the first
         * student token of each teacher token's text, over its top_k; identity: tokens of the same
         * bytes), top_k student tokens kept. null: the tokenizers must be the same.
         */
        cross_tokenizer: z
          .object({ method: z.enum(['uld', 'aligned']).default('aligned'), top_k: z.number().int().positive().default(32), mapping: z.enum(['prefix', 'first-token', 'identity']).default('prefix') })
          .strict()
          .nullable()
          .default(null),
      })
      .strict()
      .default({}),
    optimizer: z
      .object({
        lr: z.number().positive().default(2e-3),
        min_lr: z.number().nonnegative().default(2e-4),
        weight_decay: z.number().nonnegative().default(0.01),
        betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.95]),
        /** Learning-rate warm-up steps (default: the warm-up phase). */
        warmup_steps: z.number().int().nonnegative().nullable().default(null),
      })
      .strict()
      .default({}),
    student: z
      .object({
        /** A preset name (tiny, small, reference) or an explicit shape. */
        preset: z.string().nullable().default(null),
        model: modelShape.nullable().default(null),
        init: z.enum(['pruned', 'svd', 'random', 'minitron']).default('pruned'),
        /** init minitron: how importance is measured on the training split (docs/minitron.md). */
        minitron: z
          .object({
            /** Per sequence mean (or l2) of the per-position score, then over the batch l2 (or mean). */
            aggregation: z.object({ sequence: z.enum(['mean', 'l2']).default('mean'), batch: z.enum(['l2', 'mean']).default('l2') }).strict().default({}),
            /** Layers dropped by lowest block influence, or the contiguous block whose removal costs least loss. */
            depth: z.enum(['block-influence', 'ppl']).default('block-influence'),
            /** Calibration batches (training batch size × seq_len tokens each, from the start of the training split). */
            calibration_batches: z.number().int().positive().default(8),
          })
          .strict()
          .default({}),
        /**
         * An existing student to go on from (a model directory, run directory or file qkd loads):
         * its shape and weights replace preset, model and init. With recipe qat or kd-qat this is
         * QAT fine-tuning of a trained student.
         */
        from: z.string().nullable().default(null),
        /**
         * The student's own tokenizer when it is not the teacher's (a tokenizer.json, a model
         * directory, a GGUF or a llama2.c tokenizer.bin): distillation across tokenizers, with
         * distillation.cross_tokenizer. null: the teacher's, or student.from's.
         */
        tokenizer: z.string().nullable().default(null),
        /**
         * recipe mohawk: student layers that keep the teacher's attention (a hybrid): a list of
         * layer indices, or { most_sensitive: k }: the k layers whose teacher attention weights
         * score highest in the data-free sensitivity profile (docs/algorithms.md §1). []: all SSM.
         */
        attention_layers: z
          .union([z.array(z.number().int().nonnegative()), z.object({ most_sensitive: z.number().int().nonnegative() }).strict()])
          .default([]),
      })
      .strict()
      .default({}),
  })
  .strict();

export type DistillConfig = z.infer<typeof distillConfigSchema>;
/** A config whose teacher-dependent defaults are filled in (resolveDistillConfig). */
export type ResolvedDistillConfig = DistillConfig & { training: DistillConfig['training'] & { seq_len: number } };

/** The default sequence length when the teacher's context allows it. */
export const DEFAULT_DISTILL_SEQ_LEN = 128;

/**
 * Fills in what depends on the teacher: the sequence length follows the
 * teacher's context when none is set, and an explicit one beyond it is refused.
 */
export function resolveDistillConfig(c: DistillConfig, teacherContext: number): ResolvedDistillConfig {
  const set = c.training.seq_len;
  if (set !== null && set > teacherContext) {
    throw new QkdError('CONFIG', `training.seq_len ${set} exceeds the teacher's context (max_position_embeddings ${teacherContext})`, { field: 'training.seq_len', hint: `at most ${teacherContext} (--seq-len), or leave it unset to follow the teacher` });
  }
  return { ...c, training: { ...c.training, seq_len: set ?? Math.min(DEFAULT_DISTILL_SEQ_LEN, teacherContext) } };
}
export type DistillConfigInput = z.input<typeof distillConfigSchema>;

export function parseDistillConfig(input: unknown, source = 'config'): DistillConfig {
  const result = distillConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    const issue = firstIssue(result.error);
    const field = issue.path.join('.') || '(root)';
    const hints: Record<string, string> = { 'quantization.bits': '2, 3, 4 or 8 (the packed widths)', recipe: RECIPES.join(', '), 'student.init': 'pruned, svd, random or minitron' };
    throw new QkdError('CONFIG', `invalid distillation config: ${field}: ${issue.message}`, { path: source, field, hint: hints[field] });
  }
  const c = result.data;
  if (c.optimizer.min_lr > c.optimizer.lr) {
    throw new QkdError('CONFIG', `invalid distillation config: optimizer.min_lr ${c.optimizer.min_lr} is above optimizer.lr ${c.optimizer.lr} (the cosine schedule would rise; a config that sets only lr keeps the default min_lr 2e-4)`, { path: source, field: 'optimizer.min_lr', hint: `at most lr (${c.optimizer.lr})` });
  }
  if (c.training.warmup_share + c.training.finetune_share >= 1) {
    throw new QkdError('CONFIG', 'invalid distillation config: training.warmup_share + training.finetune_share must be below 1', { path: source, field: 'training.finetune_share' });
  }
  if (c.quantization.format !== null && !GGUF_TYPE_NAMES.includes(c.quantization.format)) {
    throw new QkdError('CONFIG', `invalid distillation config: quantization.format: unknown ggml type '${c.quantization.format}'`, { path: source, field: 'quantization.format', hint: GGUF_TYPE_NAMES.join(', ') });
  }
  if (c.quantization.learned_step_size === true && c.quantization.format !== null) {
    throw new QkdError('CONFIG', 'invalid distillation config: quantization.learned_step_size: learned step sizes apply to the uniform b-bit grid, and quantization.format trains on a llama.cpp grid whose block scales are refit at every step', { path: source, field: 'quantization.learned_step_size', hint: 'learned_step_size: false, or format: null' });
  }
  if (c.quantization.scale_init !== null && c.quantization.scale_init !== 'rtn' && !learnedStepSizes(c)) {
    throw new QkdError('CONFIG', `invalid distillation config: quantization.scale_init: '${c.quantization.scale_init}' sets where learned step sizes start, and learned_step_size is false`, { path: source, field: 'quantization.scale_init', hint: 'learned_step_size: true, or scale_init: rtn' });
  }
  if (c.recipe === 'qat' && taskWeight(c) === 0) {
    throw new QkdError('CONFIG', 'invalid distillation config: distillation.task_weight: recipe qat has no teacher, so without the task loss nothing is learned', { path: source, field: 'distillation.task_weight', hint: 'a positive task_weight, or recipe kd-qat' });
  }
  if (c.student.from !== null && (c.student.preset !== null || c.student.model !== null)) {
    throw new QkdError('CONFIG', 'invalid distillation config: student.from gives the student (its shape too); student.preset and student.model must be unset', { path: source, field: 'student.from' });
  }
  if (c.recipe === 'mohawk') checkMohawk(c, source);
  else if (c.mohawk.stages.join() !== '1,2,3' || !(Array.isArray(c.student.attention_layers) && c.student.attention_layers.length === 0)) {
    throw new QkdError('CONFIG', 'invalid distillation config: mohawk.stages and student.attention_layers belong to recipe mohawk', { path: source, field: 'recipe', hint: 'recipe: mohawk' });
  }
  const a = c.assistant;
  if (a !== null) {
    if ((a.preset === null) === (a.model === null)) throw new QkdError('CONFIG', 'invalid distillation config: assistant: give its shape as preset or as model (one of them)', { path: source, field: 'assistant.preset', hint: Object.keys(PRESETS).join(', ') });
    if (a.preset !== null && !(a.preset in PRESETS)) throw new QkdError('CONFIG', `invalid distillation config: assistant.preset: unknown preset '${a.preset}'`, { path: source, field: 'assistant.preset', hint: Object.keys(PRESETS).join(', ') });
    if (c.recipe === 'qat') throw new QkdError('CONFIG', 'invalid distillation config: assistant: recipe qat has no teacher to pass through an assistant', { path: source, field: 'assistant' });
  }
  if (c.student.preset !== null && !(c.student.preset in PRESETS)) {
    throw new QkdError('CONFIG', `invalid distillation config: student.preset: unknown preset '${c.student.preset}'`, { path: source, field: 'student.preset', hint: Object.keys(PRESETS).join(', ') });
  }
  return c;
}

/** What recipe mohawk needs of the rest of the config (docs/mohawk.md). */
function checkMohawk(c: DistillConfig, source: string): void {
  const m = c.mohawk;
  const bad = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `invalid distillation config: ${field}: ${what}`, { path: source, field, hint });
  };
  if (!m.stages.every((s, i) => i === 0 || s > m.stages[i - 1]!) || m.stages[m.stages.length - 1] !== 3) bad('mohawk.stages', `${JSON.stringify(m.stages)} is not an ascending selection ending in stage 3`, '[3], [2, 3], [1, 3] or [1, 2, 3]');
  if (m.matrix_share + m.hidden_share >= 1) bad('mohawk.hidden_share', 'stages 1 and 2 take all the steps', 'matrix_share + hidden_share below 1');
  if (c.assistant !== null) bad('assistant', 'a teaching assistant with recipe mohawk is not supported', 'no assistant');
  if (c.student.from !== null) bad('student.from', 'recipe mohawk builds its student from the teacher', 'no student.from (stage 3 resumes from DIR/mohawk/ itself)');
  if (c.student.init !== 'pruned') bad('student.init', `recipe mohawk keeps the teacher's widths and copies its layers; init '${c.student.init}' does not`, 'pruned');
  if (c.distillation.cross_tokenizer !== null) bad('distillation.cross_tokenizer', 'recipe mohawk compares attention per token of one tokenizer', 'null');
  if (c.distillation.soft_target_cache !== null) bad('distillation.soft_target_cache', 'stages 1 and 2 read the live teacher (its layer inputs and attention)', 'null');
}

/** Whether QAT learns its step sizes: as set, else on for the uniform grid and off with a ggml format (tuned default). */
export function learnedStepSizes(c: DistillConfig): boolean {
  return recipeQuantizes(c.recipe) && (c.quantization.learned_step_size ?? c.quantization.format === null);
}

/** Where learned step sizes start: as set, else the clip search (tuned default). */
export function scaleInit(c: DistillConfig): 'rtn' | 'clip-search' | 'gptq' {
  return c.quantization.scale_init ?? 'clip-search';
}

/** The task loss's weight: as set, else 0 for a minitron student (logit-only KD) and 1 otherwise (always 1 for seqkd, whose point is the task loss on teacher text). */
export function taskWeight(c: DistillConfig): number {
  return c.distillation.task_weight ?? (c.student.init === 'minitron' && c.student.from === null && c.recipe !== 'qat' && c.recipe !== 'seqkd' && c.recipe !== 'seqkd-qat' ? 0 : 1);
}

export function loadDistillConfig(path: string): DistillConfig {
  return parseDistillConfig(readYamlFile(path), path);
}

export type Phase = 'warmup' | 'joint' | 'finetune';

/** The phase of a step (1-based) under docs/algorithms.md §4's schedule. */
export function phaseAt(c: DistillConfig, step: number): Phase {
  const s = c.training.steps;
  if (step <= Math.round(c.training.warmup_share * s)) return 'warmup';
  if (step > s - Math.round(c.training.finetune_share * s)) return 'finetune';
  return 'joint';
}

/** λ or γ in a phase. */
export function coefficient(value: DistillConfig['distillation']['lambda_distill'], phase: Phase): number {
  return typeof value === 'number' ? value : value[phase];
}

/** Whether fake quantization is on at a step. */
export function fakeQuantActive(c: DistillConfig, step: number): boolean {
  if (!recipeQuantizes(c.recipe)) return false;
  const start = c.quantization.fake_quant_start ?? c.training.warmup_share;
  return step > Math.round(start * c.training.steps);
}

/** SWDL temperature at a step (1-based): t0 → t_min, exponential or linear; null t0 = ∞. */
export function swdlTemperature(c: DistillConfig, step: number): number {
  const s = c.sakd.swdl;
  if (s.t0 === null) return Infinity;
  const progress = Math.min(1, Math.max(0, (step - 1) / Math.max(1, c.training.steps - 1)));
  return s.schedule === 'linear' ? s.t0 + (s.t_min - s.t0) * progress : s.t0 * (s.t_min / s.t0) ** progress;
}

/** The plain training-loop settings implied by a distillation config. */
export function loopConfig(c: ResolvedDistillConfig, model: TrainConfig['model']): TrainConfig {
  const t = c.training;
  return {
    recipe: 'standard',
    // Only DBWA of the SAT settings applies to a distillation's loop: its parameter storage.
    sat: satSchema.parse({ reprofile_every: t.dbwa.reprofile_every, dbwa: { enabled: t.dbwa.enabled, uniform_tier: t.dbwa.uniform_tier, stochastic_rounding: t.dbwa.stochastic_rounding } }),
    model,
    tokenizer: { kind: 'byte' },
    batch_size: t.batch_size,
    seq_len: t.seq_len,
    grad_accum: t.grad_accum,
    steps: t.steps,
    lr: c.optimizer.lr,
    min_lr: c.optimizer.min_lr,
    warmup_steps: c.optimizer.warmup_steps ?? Math.round(t.warmup_share * t.steps),
    weight_decay: c.optimizer.weight_decay,
    beta1: c.optimizer.betas[0],
    beta2: c.optimizer.betas[1],
    grad_clip: t.gradient_clip_norm,
    eval_every: t.eval_every,
    eval_batches: t.eval_batches,
    checkpoint_every: t.checkpoint_every,
    validation_fraction: t.validation_fraction,
    seed: t.seed,
  };
}

/** The student's shape: an explicit shape, a preset, or (default) the teacher with half its layers. */
export function studentConfig(teacher: LlamaConfig, c: DistillConfig): LlamaConfig {
  const shape = c.student.model ?? (c.student.preset !== null ? PRESETS[c.student.preset]!.model : null);
  // The student is of the teacher's family (model_type, activation, RoPE, windows), in the shape asked for.
  if (shape === null) return derivedConfig(teacher, { num_hidden_layers: Math.max(1, Math.ceil(teacher.num_hidden_layers / 2)) });
  // svd and minitron keep whole heads of the teacher's width.
  const keepHeads = (c.student.init === 'svd' || c.student.init === 'minitron') && (shape as { head_dim?: number }).head_dim === undefined ? { head_dim: teacher.head_dim } : {};
  return derivedConfig(teacher, { ...shape, ...keepHeads } as Partial<LlamaConfig> & Record<string, unknown>);
}
