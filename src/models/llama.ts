/**
 * LLaMA-style decoder: token embedding → L × (RMSNorm → grouped-query
 * attention with RoPE → residual → RMSNorm → SwiGLU MLP → residual) →
 * RMSNorm → lm_head (optionally tied to the embedding). The other families
 * are switches on this layout (config.model_type, docs/model-families.md):
 * q/k/v biases (Qwen2), per-head q/k norms (Qwen3, Gemma 3), fused qkv and
 * gate_up matrices (Phi-3), and Gemma's (1 + w) norms, √C embedding scale,
 * norms after attention and MLP, GeGLU, sliding-window layers with their
 * own RoPE base and soft-capped scores and logits.
 *
 * Legend: B batch, T time, C hidden, H query heads, G kv heads, D head dim,
 * I intermediate, V vocab. Parameters live in one ParameterArena under their
 * Hugging Face names; module names match too, so a forward hook on
 * "model.layers.3.mlp" sees that block's MLP output.
 */
import { Module } from '../nn/module.js';
import { Embedding, Linear, RMSNorm } from '../nn/layers.js';
import { ParameterArena } from '../tensor/arena.js';
import { Rng } from '../tensor/random.js';
import { Tensor } from '../tensor/tensor.js';
import { add, geglu, scale, softcap, swiglu } from '../tensor/ops/elementwise.js';
import { reshape, slice } from '../tensor/ops/shape.js';
import { rope } from '../tensor/ops/rope.js';
import { attention, attentionFused, type AttentionOptions } from '../tensor/ops/attention.js';
import { crossEntropy } from '../tensor/ops/loss.js';
import { QkdError } from '../errors.js';
import { familyTraits, headDim, isSlidingLayer, isSsmLayer, llamaConfig, llamaParameterSpecs, type LlamaConfig } from './llama-config.js';
import { Mamba2Mixer, SsmState, initMixerNeutral, type SsmMixerDims } from '../nn/ssm-mixer.js';

export interface ForwardOptions {
  /**
   * When given, each layer's attention probabilities [B,H,T,T] are pushed
   * here (graph tensors); the attention then runs as two ops that hold
   * them. Without it, the fused op (no [B,H,T,T] maps).
   */
  attentionProbs?: Tensor[];
  /**
   * Generation with a key/value cache (noGrad only): the ids continue the
   * sequence the cache holds; each layer attends to the cached keys and
   * values plus the new ones, and appends the new ones.
   */
  cache?: KvCache;
}

/**
 * The keys and values of the tokens seen so far, per layer, for batch 1:
 * [position, G, D] each, in buffers sized for the model's context or the
 * tokens the caller will hold. RoPE is
 * applied to the cached keys already (at their own positions).
 */
export class KvCache {
  /** Tokens held. */
  position = 0;
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** Per layer: the recurrent state of a state-space layer (docs/mohawk.md), null for an attention layer. */
  readonly ssmStates: (SsmState | null)[];
  readonly capacity: number;
  private readonly rowSize: number;

  /** `capacity` tokens (default the context, max_position_embeddings): a caller that knows how many it will hold asks for no more. */
  constructor(config: LlamaConfig, capacity = config.max_position_embeddings) {
    if (!(Number.isInteger(capacity) && capacity >= 1 && capacity <= config.max_position_embeddings)) {
      throw new QkdError('ARGUMENT', `a KV cache of ${capacity} tokens: expected 1 to the context (${config.max_position_embeddings})`, { field: 'capacity' });
    }
    this.capacity = capacity;
    this.rowSize = config.num_key_value_heads * headDim(config);
    const layers = Array.from({ length: config.num_hidden_layers }, (_, l) => l);
    // A state-space layer keeps a fixed-size state instead of keys and values.
    this.keys = layers.map((l) => new Float32Array(isSsmLayer(config, l) ? 0 : this.capacity * this.rowSize));
    this.values = layers.map((l) => new Float32Array(isSsmLayer(config, l) ? 0 : this.capacity * this.rowSize));
    this.ssmStates = layers.map((l) => (isSsmLayer(config, l) ? new SsmState(mixerDims(config)) : null));
  }

  /** Bytes the cache holds for the tokens seen so far: keys and values of the attention layers, plus the fixed recurrent states. */
  get bytesInUse(): number {
    let bytes = 0;
    for (let l = 0; l < this.keys.length; l++) {
      const state = this.ssmStates[l];
      bytes += state ? state.bytes : 2 * this.position * this.rowSize * 4;
    }
    return bytes;
  }

  /** Appends T new rows of layer `layer` and returns all rows held, as [1, position + T, G, D] tensors viewing the cache (no copy). */
  extend(layer: number, k: Tensor, v: Tensor, T: number, G: number, D: number): { k: Tensor; v: Tensor } {
    const end = this.position + T;
    if (end > this.capacity) throw new QkdError('ARGUMENT', `the KV cache holds ${this.capacity} tokens; ${end} asked`, { field: 'cache' });
    this.keys[layer]!.set(k.data as Float32Array, this.position * this.rowSize);
    this.values[layer]!.set(v.data as Float32Array, this.position * this.rowSize);
    return {
      k: new Tensor([1, end, G, D], this.keys[layer]!.subarray(0, end * this.rowSize)),
      v: new Tensor([1, end, G, D], this.values[layer]!.subarray(0, end * this.rowSize)),
    };
  }
}

export class LlamaAttention extends Module {
  /** Separate projections (every family but Phi-3) … */
  readonly q: Linear | null = null;
  readonly k: Linear | null = null;
  readonly v: Linear | null = null;
  /** … or one fused qkv_proj (Phi-3): rows q, then k, then v. */
  readonly qkv: Linear | null = null;
  readonly o: Linear;
  /** Per-head RMSNorms of q and k before RoPE (Qwen3, Gemma 3). */
  readonly qNorm: RMSNorm | null = null;
  readonly kNorm: RMSNorm | null = null;
  private readonly rope: { theta: number; invFreq?: Float64Array };
  private readonly window: number | undefined;
  private readonly scale: number;

  constructor(
    name: string,
    arena: ParameterArena,
    private readonly config: LlamaConfig,
    /** This layer's index (its slot in a KV cache, its window and RoPE base). */
    private readonly index = 0,
  ) {
    super(name);
    const f = familyTraits(config.model_type);
    const bias = (p: string) => (f.qkvBias ? arena.get(`${name}.${p}.bias`) : undefined);
    if (f.fused) this.qkv = this.child(new Linear(`${name}.qkv_proj`, arena.get(`${name}.qkv_proj.weight`)));
    else {
      this.q = this.child(new Linear(`${name}.q_proj`, arena.get(`${name}.q_proj.weight`), bias('q_proj')));
      this.k = this.child(new Linear(`${name}.k_proj`, arena.get(`${name}.k_proj.weight`), bias('k_proj')));
      this.v = this.child(new Linear(`${name}.v_proj`, arena.get(`${name}.v_proj.weight`), bias('v_proj')));
    }
    this.o = this.child(new Linear(`${name}.o_proj`, arena.get(`${name}.o_proj.weight`)));
    if (f.qkNorm) {
      const offset = f.gemma ? 1 : 0;
      this.qNorm = this.child(new RMSNorm(`${name}.q_norm`, arena.get(`${name}.q_norm.weight`), config.rms_norm_eps, offset));
      this.kNorm = this.child(new RMSNorm(`${name}.k_norm`, arena.get(`${name}.k_norm.weight`), config.rms_norm_eps, offset));
    }
    const sliding = isSlidingLayer(config, index);
    this.window = sliding ? config.sliding_window! : undefined;
    this.rope = ropeFrequencies(config, sliding);
    this.scale = 1 / Math.sqrt(config.query_pre_attn_scalar ?? headDim(config));
  }

  /** The projections that read the block's input (one GPTQ input group). */
  get inputProjections(): Linear[] {
    return this.qkv !== null ? [this.qkv] : [this.q!, this.k!, this.v!];
  }

  /** x [B,T,C] → [B,T,C] */
  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const c = this.config;
    const D = headDim(c);
    const H = c.num_attention_heads;
    const G = c.num_key_value_heads;
    const cache = options.cache;
    if (cache !== undefined && B !== 1) throw new QkdError('SHAPE', `a KV cache holds one sequence; the batch has ${B}`, { field: 'cache' });
    let qx: Tensor, kx: Tensor, vx: Tensor;
    if (this.qkv !== null) {
      const fused = this.qkv.forward(x); // [B,T,(H+2G)D]
      qx = slice(fused, 2, 0, H * D);
      kx = slice(fused, 2, H * D, (H + G) * D);
      vx = slice(fused, 2, (H + G) * D, (H + 2 * G) * D);
    } else {
      qx = this.q!.forward(x);
      kx = this.k!.forward(x);
      vx = this.v!.forward(x);
    }
    let q = reshape(qx, [B, T, H, D]);
    let k = reshape(kx, [B, T, G, D]);
    let v = reshape(vx, [B, T, G, D]);
    if (this.qNorm !== null) {
      q = this.qNorm.forward(q);
      k = this.kNorm!.forward(k);
    }
    const ropeOptions = { ...this.rope, style: 'half' as const, startPos: cache?.position ?? 0 };
    q = rope(q, ropeOptions);
    k = rope(k, ropeOptions);
    if (cache !== undefined) ({ k, v } = cache.extend(this.index, k, v, T, G, D));
    const attentionOptions: AttentionOptions = {
      causal: true,
      scale: this.scale,
      ...(this.window !== undefined ? { window: this.window } : {}),
      ...(c.attn_logit_softcapping !== null ? { softcap: c.attn_logit_softcapping } : {}),
    };
    // The maps P [B,H,T,S] exist only when a caller asks for them (attention
    // KD, MOHAWK's stage 1): then the two ops, whose P is a graph tensor;
    // otherwise the fused op, which never holds P (docs/attention.md).
    let out: Tensor;
    if (options.attentionProbs !== undefined) {
      const both = attention(q, k, v, attentionOptions);
      options.attentionProbs.push(both.probs);
      out = both.out;
    } else out = attentionFused(q, k, v, attentionOptions);
    return this.emit(this.o.forward(reshape(out, [B, T, H * D])));
  }
}

/**
 * RoPE of a layer: the sliding layers of Gemma 3 use rope_local_base_freq
 * unscaled; every other layer rope_theta with rope_scaling applied to its
 * inverse frequencies (docs/model-families.md).
 */
export function ropeFrequencies(c: LlamaConfig, sliding: boolean): { theta: number; invFreq?: Float64Array } {
  if (sliding && c.rope_local_base_freq !== null) return { theta: c.rope_local_base_freq };
  const s = c.rope_scaling;
  // dynamic NTK only changes the base past the trained context, which qkd never runs (generation re-runs the last window).
  if (s === null || s.rope_type === 'dynamic') return { theta: c.rope_theta };
  const D = headDim(c);
  const inv = new Float64Array(D / 2);
  for (let i = 0; i < D / 2; i++) inv[i] = Math.pow(c.rope_theta, (-2 * i) / D);
  if (s.rope_type === 'linear') {
    for (let i = 0; i < inv.length; i++) inv[i]! /= s.factor;
  } else {
    // llama3: long wavelengths slowed by factor, short ones kept, a smooth blend between.
    const old = s.original_max_position_embeddings!;
    const low = s.low_freq_factor!;
    const high = s.high_freq_factor!;
    for (let i = 0; i < inv.length; i++) {
      const wavelen = (2 * Math.PI) / inv[i]!;
      if (wavelen < old / high) continue;
      if (wavelen > old / low) inv[i]! /= s.factor;
      else {
        const smooth = (old / wavelen - low) / (high - low);
        inv[i] = ((1 - smooth) * inv[i]!) / s.factor + smooth * inv[i]!;
      }
    }
  }
  return { theta: c.rope_theta, invFreq: inv };
}

export class LlamaMlp extends Module {
  /** gate_proj and up_proj (every family but Phi-3) … */
  readonly gate: Linear | null = null;
  readonly up: Linear | null = null;
  /** … or one fused gate_up_proj (Phi-3): gate rows first, then up. */
  readonly gateUp: Linear | null = null;
  readonly down: Linear;
  private readonly act: LlamaConfig['hidden_act'];

  constructor(name: string, arena: ParameterArena, config: Pick<LlamaConfig, 'model_type' | 'hidden_act'> = { model_type: 'llama', hidden_act: 'silu' }) {
    super(name);
    if (familyTraits(config.model_type).fused) this.gateUp = this.child(new Linear(`${name}.gate_up_proj`, arena.get(`${name}.gate_up_proj.weight`)));
    else {
      this.gate = this.child(new Linear(`${name}.gate_proj`, arena.get(`${name}.gate_proj.weight`)));
      this.up = this.child(new Linear(`${name}.up_proj`, arena.get(`${name}.up_proj.weight`)));
    }
    this.down = this.child(new Linear(`${name}.down_proj`, arena.get(`${name}.down_proj.weight`)));
    this.act = config.hidden_act;
  }

  /** The projections that read the block's input (one GPTQ input group). */
  get inputProjections(): Linear[] {
    return this.gateUp !== null ? [this.gateUp] : [this.gate!, this.up!];
  }

  /** down(act(gate(x)) ⊙ up(x)): SwiGLU (silu) or GeGLU (gelu_pytorch_tanh). */
  forward(x: Tensor): Tensor {
    let g: Tensor, u: Tensor;
    if (this.gateUp !== null) {
      const both = this.gateUp.forward(x);
      const I = both.shape[both.rank - 1]! / 2;
      g = slice(both, both.rank - 1, 0, I);
      u = slice(both, both.rank - 1, I, 2 * I);
    } else {
      g = this.gate!.forward(x);
      u = this.up!.forward(x);
    }
    return this.emit(this.down.forward(this.act === 'silu' ? swiglu(g, u) : geglu(g, u)));
  }
}

/** The dimensions of a config's state-space mixers. */
export function mixerDims(c: LlamaConfig): SsmMixerDims {
  if (c.ssm === null) throw new QkdError('CONFIG', 'this model has no state-space layers', { field: 'ssm' });
  return { heads: c.num_attention_heads, headDim: headDim(c), stateSize: c.ssm.state_size, convKernel: c.ssm.conv_kernel, groups: c.ssm.groups };
}

export class LlamaDecoderLayer extends Module {
  readonly inputNorm: RMSNorm;
  /** The sequence mixer: attention, or a state-space mixer in an SSM layer (config.ssm). */
  readonly attn: LlamaAttention | Mamba2Mixer;
  /** LLaMA: the norm before the MLP. Gemma: the norm after attention (its pre-MLP norm is preMlpNorm). */
  readonly postNorm: RMSNorm;
  readonly mlp: LlamaMlp;
  /** Gemma's sandwich norms: before the MLP, and after it. */
  readonly preMlpNorm: RMSNorm | null = null;
  readonly postMlpNorm: RMSNorm | null = null;

  constructor(name: string, arena: ParameterArena, config: LlamaConfig, private readonly index = 0) {
    super(name);
    const gemma = familyTraits(config.model_type).gemma;
    const norm = (part: string) => new RMSNorm(`${name}.${part}`, arena.get(`${name}.${part}.weight`), config.rms_norm_eps, gemma ? 1 : 0);
    this.inputNorm = this.child(norm('input_layernorm'));
    this.attn = this.child(isSsmLayer(config, index) ? new Mamba2Mixer(`${name}.mixer`, arena, mixerDims(config)) : new LlamaAttention(`${name}.self_attn`, arena, config, index));
    this.postNorm = this.child(norm('post_attention_layernorm'));
    if (gemma) this.preMlpNorm = this.child(norm('pre_feedforward_layernorm'));
    this.mlp = this.child(new LlamaMlp(`${name}.mlp`, arena, config));
    if (gemma) this.postMlpNorm = this.child(norm('post_feedforward_layernorm'));
  }

  /** The sequence mixer's output on the normed input u. */
  mix(u: Tensor, options: ForwardOptions = {}): Tensor {
    if (this.attn instanceof Mamba2Mixer) {
      const state = options.cache?.ssmStates[this.index] ?? undefined;
      return this.attn.forward(u, state);
    }
    return this.attn.forward(u, options);
  }

  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    // The residual add and the norm the MLP reads run as one pass (addRmsNorm).
    if (this.preMlpNorm !== null) {
      const { sum: h, normed } = this.preMlpNorm.forwardAfterAdd(x, this.postNorm.forward(this.mix(this.inputNorm.forward(x), options)));
      return this.emit(add(h, this.postMlpNorm!.forward(this.mlp.forward(normed))));
    }
    const { sum: h, normed } = this.postNorm.forwardAfterAdd(x, this.mix(this.inputNorm.forward(x), options));
    return this.emit(add(h, this.mlp.forward(normed)));
  }

  /** The norm whose output the MLP reads. */
  get mlpInputNorm(): RMSNorm {
    return this.preMlpNorm ?? this.postNorm;
  }
}

export class LlamaModel extends Module {
  readonly config: LlamaConfig;
  readonly arena: ParameterArena;
  readonly embed: Embedding;
  readonly layers: LlamaDecoderLayer[];
  readonly norm: RMSNorm;
  readonly lmHead: Linear;

  /** Builds the modules over an arena that holds llamaParameterSpecs(config). */
  constructor(config: LlamaConfig, arena?: ParameterArena) {
    super('model');
    this.config = llamaConfig(config as LlamaConfig & Record<string, unknown>);
    this.arena = arena ?? new ParameterArena(llamaParameterSpecs(this.config));
    this.embed = this.child(new Embedding('model.embed_tokens', this.arena.get('model.embed_tokens.weight')));
    this.layers = [];
    for (let l = 0; l < this.config.num_hidden_layers; l++) {
      this.layers.push(this.child(new LlamaDecoderLayer(`model.layers.${l}`, this.arena, this.config, l)));
    }
    const gemma = familyTraits(this.config.model_type).gemma;
    this.norm = this.child(new RMSNorm('model.norm', this.arena.get('model.norm.weight'), this.config.rms_norm_eps, gemma ? 1 : 0));
    const headWeight = this.config.tie_word_embeddings ? this.arena.get('model.embed_tokens.weight') : this.arena.get('lm_head.weight');
    this.lmHead = this.child(new Linear('lm_head', headWeight));
  }

  /** Number of parameters (tied embeddings counted once). */
  get parameterCount(): number {
    return this.arena.size;
  }

  /** ids [B*T] (row-major B×T) → logits [B,T,V]. */
  forward(ids: Int32Array, B: number, T: number, options: ForwardOptions = {}): Tensor {
    if (ids.length !== B * T) throw new QkdError('SHAPE', `LlamaModel.forward: ${ids.length} ids for B=${B} × T=${T}`);
    let x = this.embed.forward(ids, [B, T]);
    // Gemma scales the embeddings by √hidden_size (the tied lm_head reads the table unscaled).
    if (familyTraits(this.config.model_type).gemma) x = scale(x, Math.sqrt(this.config.hidden_size));
    for (const layer of this.layers) x = layer.forward(x, options);
    if (options.cache !== undefined) options.cache.position += T;
    const logits = this.lmHead.forward(this.norm.forward(x));
    const cap = this.config.final_logit_softcapping;
    return this.emit(cap === null ? logits : softcap(logits, cap));
  }

  /** Mean next-token cross-entropy of logits [B,T,V] against targets [B*T]. */
  loss(logits: Tensor, targets: Int32Array): Tensor {
    return crossEntropy(reshape(logits, [logits.size / this.config.vocab_size, this.config.vocab_size]), targets);
  }
}

/**
 * Seeded initialisation: normal(0, initializer_range) for matrices and the
 * embedding, the identity for norms (ones; zeros for Gemma's 1 + w), zero
 * biases; the two residual output projections (o_proj,
 * down_proj) get std / sqrt(2L) so the residual stream does not grow with
 * depth (GPT-2's choice; Hugging Face uses plain std).
 */
export function initLlamaParameters(model: LlamaModel, seed: number): void {
  const rng = new Rng(seed);
  const c = model.config;
  const residualStd = c.initializer_range / Math.sqrt(2 * c.num_hidden_layers);
  // Gemma's norms scale by (1 + w): w = 0 is the identity.
  const normInit = familyTraits(c.model_type).gemma ? 0 : 1;
  for (const e of model.arena.entries) {
    const data = e.tensor.data;
    if (e.shape.length === 1) {
      data.fill(e.name.endsWith('.bias') ? 0 : normInit);
      continue;
    }
    const std = e.name.endsWith('o_proj.weight') || e.name.endsWith('out_proj.weight') || e.name.endsWith('down_proj.weight') ? residualStd : c.initializer_range;
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
  }
  // State-space mixers: identity convolutions, unit gate, slow decays, no skip (docs/mohawk.md).
  for (const layer of model.layers) if (layer.attn instanceof Mamba2Mixer) initMixerNeutral(layer.attn);
}

/** A new model with seeded random weights. */
export function createLlama(config: Partial<LlamaConfig> & Record<string, unknown>, seed = 0): LlamaModel {
  const model = new LlamaModel(llamaConfig(config));
  initLlamaParameters(model, seed);
  return model;
}
