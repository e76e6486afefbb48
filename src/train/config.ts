/**
 * Training configuration: presets and YAML files, validated by one schema
 * (zod) whose errors name the offending field. Unknown fields are errors,
 * so a typo never silently falls back to a default.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { MODEL_TYPES } from '../models/llama-config.js';
import { QkdError } from '../errors.js';

const modelSchema = z
  .object({
    hidden_size: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
    num_hidden_layers: z.number().int().positive(),
    num_attention_heads: z.number().int().positive(),
    num_key_value_heads: z.number().int().positive().optional(),
    rms_norm_eps: z.number().positive().optional(),
    rope_theta: z.number().positive().optional(),
    tie_word_embeddings: z.boolean().optional(),
    initializer_range: z.number().positive().optional(),
    /** The family and its switches (docs/model-families.md); llamaConfig checks them. Default: LLaMA. */
    model_type: z.enum(MODEL_TYPES).optional(),
    head_dim: z.number().int().positive().optional(),
    hidden_act: z.enum(['silu', 'gelu_pytorch_tanh']).optional(),
    sliding_window: z.number().int().positive().nullable().optional(),
    layer_types: z.array(z.enum(['full_attention', 'sliding_attention'])).nullable().optional(),
    rope_local_base_freq: z.number().positive().nullable().optional(),
    query_pre_attn_scalar: z.number().positive().nullable().optional(),
    attn_logit_softcapping: z.number().positive().nullable().optional(),
    final_logit_softcapping: z.number().positive().nullable().optional(),
    rope_scaling: z
      .object({
        rope_type: z.enum(['linear', 'dynamic', 'llama3']),
        factor: z.number().positive(),
        low_freq_factor: z.number().positive().optional(),
        high_freq_factor: z.number().positive().optional(),
        original_max_position_embeddings: z.number().int().positive().optional(),
      })
      .strict()
      .nullable()
      .optional(),
  })
  .strict();

/**
 * Sensitivity-aware training (docs/algorithms.md §5), used by `recipe: sat`. Every
 * mechanism switches off on its own, so ablations are one key each.
 */
export const satSchema = z
  .object({
    /** Re-profile the weights (data-free) every N steps: refreshes TQNI targets and DBWA tiers. */
    reprofile_every: z.number().int().positive().default(1000),
    /** KDS: Σ max(0, κ_l − κ_max)² over 2-D weights, times `weight`. */
    kurtosis: z.object({ enabled: z.boolean().default(true), kappa_max: z.number().positive().default(2.0), weight: z.number().nonnegative().default(0.01) }).strict().default({}),
    /** SC: Σ σ_max(W)/‖W‖_F with persistent power-iteration vectors, times `weight`. */
    spectral: z.object({ enabled: z.boolean().default(true), weight: z.number().nonnegative().default(0.01), iterations: z.number().int().positive().default(1) }).strict().default({}),
    /** TQNI: uniform noise at the b-bit step on the top `top_fraction` layers by composite score. */
    noise: z.object({ enabled: z.boolean().default(true), bits: z.number().int().min(2).max(8).default(4), top_fraction: z.number().gt(0).max(1).default(0.2) }).strict().default({}),
    /** DBWA: weights, gradients and AdamW moments stored at 16 / 12 / 8 bits by sensitivity tier. */
    dbwa: z
      .object({
        enabled: z.boolean().default(false),
        /** Force one tier for every tensor (16 = the all-bf16 baseline); null = by sensitivity. */
        uniform_tier: z.union([z.literal(8), z.literal(12), z.literal(16)]).nullable().default(null),
        stochastic_rounding: z.boolean().default(true),
      })
      .strict()
      .default({}),
  })
  .strict();

export type SatConfig = z.infer<typeof satSchema>;

export const trainConfigSchema = z
  .object({
    /** 'standard' (cross-entropy) or 'sat' (sensitivity-aware training, section `sat`). */
    recipe: z.enum(['standard', 'sat']).default('standard'),
    sat: satSchema.default({}),
    /** Model shape (vocab_size comes from the tokenizer). */
    model: modelSchema,
    tokenizer: z
      .object({
        /** 'byte' (256 ids) or 'bpe' (trained on the training split). */
        kind: z.enum(['byte', 'bpe']).default('byte'),
        vocab_size: z.number().int().min(512).max(32768).optional(),
      })
      .strict()
      .default({}),
    /** Sequences per micro-batch and their length. */
    batch_size: z.number().int().positive(),
    seq_len: z.number().int().min(2),
    /** Micro-batches per optimiser step. */
    grad_accum: z.number().int().positive().default(1),
    steps: z.number().int().positive(),
    lr: z.number().positive(),
    /** Final learning rate of the cosine schedule. */
    min_lr: z.number().nonnegative().default(0),
    warmup_steps: z.number().int().nonnegative().default(0),
    weight_decay: z.number().nonnegative().default(0.01),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.95),
    grad_clip: z.number().positive().default(1.0),
    /** Validate every N steps on eval_batches batches of the held-out tail. */
    eval_every: z.number().int().positive().default(100),
    eval_batches: z.number().int().positive().default(8),
    /** Write a checkpoint every N steps (and at the end). */
    checkpoint_every: z.number().int().positive().default(100),
    validation_fraction: z.number().gt(0).lt(1).default(0.1),
    seed: z.number().int().default(1337),
  })
  .strict();

export type TrainConfig = z.infer<typeof trainConfigSchema>;
export type TrainConfigInput = z.input<typeof trainConfigSchema>;

/** Presets from "runs in a minute" to the benchmark reference config. */
export const PRESETS: Record<string, TrainConfigInput> = {
  tiny: {
    model: { hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
    batch_size: 8, seq_len: 64, steps: 300, lr: 3e-3, min_lr: 3e-4, warmup_steps: 20, eval_every: 100, checkpoint_every: 100,
  },
  small: {
    model: { hidden_size: 128, intermediate_size: 352, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2 },
    batch_size: 8, seq_len: 128, steps: 1000, lr: 2e-3, min_lr: 2e-4, warmup_steps: 50, eval_every: 200, checkpoint_every: 200,
  },
  reference: {
    model: { hidden_size: 256, intermediate_size: 704, num_hidden_layers: 6, num_attention_heads: 8, num_key_value_heads: 8 },
    batch_size: 8, seq_len: 256, steps: 2000, lr: 1e-3, min_lr: 1e-4, warmup_steps: 100, eval_every: 250, checkpoint_every: 250,
  },
};

/** The issue to report first: an unknown key (usually a typo that explains the rest), else the first. */
export function firstIssue(error: z.ZodError): z.ZodIssue {
  return error.issues.find((i) => i.code === 'unrecognized_keys') ?? error.issues[0]!;
}

/** Validates a config object; `source` names the file for errors. */
export function parseTrainConfig(input: unknown, source = 'config'): TrainConfig {
  const result = trainConfigSchema.safeParse(input);
  if (!result.success) {
    const issue = firstIssue(result.error);
    const field = issue.path.join('.') || '(root)';
    throw new QkdError('CONFIG', `invalid training config: ${field}: ${issue.message}`, { path: source, field });
  }
  const c = result.data;
  if (c.min_lr > c.lr) {
    // The cosine schedule would rise from lr to min_lr instead of decaying.
    throw new QkdError('CONFIG', `invalid training config: min_lr ${c.min_lr} is above lr ${c.lr} (a config that sets only lr keeps its preset's min_lr)`, { path: source, field: 'min_lr', hint: `at most lr (${c.lr}), e.g. ${c.lr / 10}` });
  }
  return c;
}

export function presetConfig(name: string): TrainConfig {
  const preset = PRESETS[name];
  if (preset === undefined) throw new QkdError('CONFIG', `unknown preset '${name}'`, { field: 'preset', hint: Object.keys(PRESETS).join(', ') });
  return parseTrainConfig(preset, `preset ${name}`);
}

/**
 * Reads a YAML config file. The file may be partial: what it leaves out
 * comes from a preset (default `tiny`) or a given config (a resumed run's),
 * merged key by key, so
 * `{ steps: 500 }` alone is a complete config. A `model` section is a shape
 * and replaces the preset's whole (a half-merged shape would surprise).
 */
export function loadTrainConfig(path: string, preset: string | TrainConfigInput = 'tiny'): TrainConfig {
  const base = typeof preset === 'string' ? PRESETS[preset] : preset;
  if (base === undefined) throw new QkdError('CONFIG', `unknown preset '${String(preset)}'`, { field: 'preset', hint: Object.keys(PRESETS).join(', ') });
  const file = readYamlFile(path);
  if (file !== null && (typeof file !== 'object' || Array.isArray(file))) {
    throw new QkdError('CONFIG', 'a training config must be a YAML mapping of fields (e.g. `steps: 500`)', { path, hint: 'key: value lines' });
  }
  const over = (file ?? {}) as Record<string, unknown>;
  const merged = mergeDeep(base, over) as Record<string, unknown>;
  if (over.model !== undefined) merged.model = over.model;
  return parseTrainConfig(merged, path);
}

/** `over` laid over `base`: nested mappings merge key by key; anything else replaces. */
export function mergeDeep(base: unknown, over: unknown): unknown {
  const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isMap(base) || !isMap(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base ? mergeDeep(base[k], v) : v;
  return out;
}

/** The parsed contents of a YAML file; read and syntax errors name the file. */
export function readYamlFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new QkdError('IO', `cannot read config: ${(err as Error).message}`, { path });
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    throw new QkdError('CONFIG', `config is not valid YAML: ${(err as Error).message}`, { path });
  }
  return value;
}

/** Learning rate at a step: linear warm-up, then cosine decay to min_lr. */
export function learningRate(c: Pick<TrainConfig, 'lr' | 'min_lr' | 'warmup_steps' | 'steps'>, step: number): number {
  if (step <= c.warmup_steps) return (c.lr * step) / Math.max(1, c.warmup_steps);
  const progress = Math.min(1, (step - c.warmup_steps) / Math.max(1, c.steps - c.warmup_steps));
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + Math.cos(Math.PI * progress));
}
