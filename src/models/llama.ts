/**
 * LLaMA-style decoder: token embedding → L × (RMSNorm → grouped-query
 * attention with RoPE → residual → RMSNorm → SwiGLU MLP → residual) →
 * RMSNorm → lm_head (optionally tied to the embedding).
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
import { add, swiglu } from '../tensor/ops/elementwise.js';
import { reshape } from '../tensor/ops/shape.js';
import { rope } from '../tensor/ops/rope.js';
import { attention } from '../tensor/ops/attention.js';
import { crossEntropy } from '../tensor/ops/loss.js';
import { QkdError } from '../errors.js';
import { headDim, llamaConfig, llamaParameterSpecs, type LlamaConfig } from './llama-config.js';

export interface ForwardOptions {
  /** When given, each layer's attention probabilities [B,H,T,T] are pushed here (graph tensors). */
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
 * [position, G, D] each, in buffers sized for the model's context. RoPE is
 * applied to the cached keys already (at their own positions).
 */
export class KvCache {
  /** Tokens held. */
  position = 0;
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  readonly capacity: number;
  private readonly rowSize: number;

  constructor(config: LlamaConfig) {
    this.capacity = config.max_position_embeddings;
    this.rowSize = config.num_key_value_heads * headDim(config);
    this.keys = Array.from({ length: config.num_hidden_layers }, () => new Float32Array(this.capacity * this.rowSize));
    this.values = Array.from({ length: config.num_hidden_layers }, () => new Float32Array(this.capacity * this.rowSize));
  }

  /** Appends T new rows of layer `layer` and returns all rows held, as [1, position + T, G, D] tensors viewing the cache (no copy). */
  extend(layer: number, k: Tensor, v: Tensor, T: number, G: number, D: number): { k: Tensor; v: Tensor } {
    const end = this.position + T;
    if (end > this.capacity) throw new QkdError('ARGUMENT', `the KV cache holds ${this.capacity} tokens (max_position_embeddings); ${end} asked`, { field: 'cache' });
    this.keys[layer]!.set(k.data as Float32Array, this.position * this.rowSize);
    this.values[layer]!.set(v.data as Float32Array, this.position * this.rowSize);
    return {
      k: new Tensor([1, end, G, D], this.keys[layer]!.subarray(0, end * this.rowSize)),
      v: new Tensor([1, end, G, D], this.values[layer]!.subarray(0, end * this.rowSize)),
    };
  }
}

export class LlamaAttention extends Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;

  constructor(
    name: string,
    arena: ParameterArena,
    private readonly config: LlamaConfig,
    /** This layer's index (its slot in a KV cache). */
    private readonly index = 0,
  ) {
    super(name);
    this.q = this.child(new Linear(`${name}.q_proj`, arena.get(`${name}.q_proj.weight`)));
    this.k = this.child(new Linear(`${name}.k_proj`, arena.get(`${name}.k_proj.weight`)));
    this.v = this.child(new Linear(`${name}.v_proj`, arena.get(`${name}.v_proj.weight`)));
    this.o = this.child(new Linear(`${name}.o_proj`, arena.get(`${name}.o_proj.weight`)));
  }

  /** x [B,T,C] → [B,T,C] */
  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const c = this.config;
    const D = headDim(c);
    const cache = options.cache;
    if (cache !== undefined && B !== 1) throw new QkdError('SHAPE', `a KV cache holds one sequence; the batch has ${B}`, { field: 'cache' });
    const ropeOptions = { theta: c.rope_theta, style: 'half' as const, startPos: cache?.position ?? 0 };
    const q = rope(reshape(this.q.forward(x), [B, T, c.num_attention_heads, D]), ropeOptions);
    let k = rope(reshape(this.k.forward(x), [B, T, c.num_key_value_heads, D]), ropeOptions);
    let v = reshape(this.v.forward(x), [B, T, c.num_key_value_heads, D]);
    if (cache !== undefined) ({ k, v } = cache.extend(this.index, k, v, T, c.num_key_value_heads, D));
    const { out, probs } = attention(q, k, v, { causal: true });
    options.attentionProbs?.push(probs);
    return this.emit(this.o.forward(reshape(out, [B, T, c.num_attention_heads * D])));
  }
}

export class LlamaMlp extends Module {
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;

  constructor(name: string, arena: ParameterArena) {
    super(name);
    this.gate = this.child(new Linear(`${name}.gate_proj`, arena.get(`${name}.gate_proj.weight`)));
    this.up = this.child(new Linear(`${name}.up_proj`, arena.get(`${name}.up_proj.weight`)));
    this.down = this.child(new Linear(`${name}.down_proj`, arena.get(`${name}.down_proj.weight`)));
  }

  /** SwiGLU: down(silu(gate(x)) ⊙ up(x)) */
  forward(x: Tensor): Tensor {
    return this.emit(this.down.forward(swiglu(this.gate.forward(x), this.up.forward(x))));
  }
}

export class LlamaDecoderLayer extends Module {
  readonly inputNorm: RMSNorm;
  readonly attn: LlamaAttention;
  readonly postNorm: RMSNorm;
  readonly mlp: LlamaMlp;

  constructor(name: string, arena: ParameterArena, config: LlamaConfig, index = 0) {
    super(name);
    this.inputNorm = this.child(new RMSNorm(`${name}.input_layernorm`, arena.get(`${name}.input_layernorm.weight`), config.rms_norm_eps));
    this.attn = this.child(new LlamaAttention(`${name}.self_attn`, arena, config, index));
    this.postNorm = this.child(new RMSNorm(`${name}.post_attention_layernorm`, arena.get(`${name}.post_attention_layernorm.weight`), config.rms_norm_eps));
    this.mlp = this.child(new LlamaMlp(`${name}.mlp`, arena));
  }

  forward(x: Tensor, options: ForwardOptions = {}): Tensor {
    const h = add(x, this.attn.forward(this.inputNorm.forward(x), options));
    return this.emit(add(h, this.mlp.forward(this.postNorm.forward(h))));
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
    this.norm = this.child(new RMSNorm('model.norm', this.arena.get('model.norm.weight'), this.config.rms_norm_eps));
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
    for (const layer of this.layers) x = layer.forward(x, options);
    if (options.cache !== undefined) options.cache.position += T;
    return this.emit(this.lmHead.forward(this.norm.forward(x)));
  }

  /** Mean next-token cross-entropy of logits [B,T,V] against targets [B*T]. */
  loss(logits: Tensor, targets: Int32Array): Tensor {
    return crossEntropy(reshape(logits, [logits.size / this.config.vocab_size, this.config.vocab_size]), targets);
  }
}

/**
 * Seeded initialisation: normal(0, initializer_range) for matrices and the
 * embedding, ones for norms; the two residual output projections (o_proj,
 * down_proj) get std / sqrt(2L) so the residual stream does not grow with
 * depth (GPT-2's choice; Hugging Face uses plain std).
 */
export function initLlamaParameters(model: LlamaModel, seed: number): void {
  const rng = new Rng(seed);
  const c = model.config;
  const residualStd = c.initializer_range / Math.sqrt(2 * c.num_hidden_layers);
  for (const e of model.arena.entries) {
    const data = e.tensor.data;
    if (e.shape.length === 1) {
      data.fill(1);
      continue;
    }
    const std = e.name.endsWith('o_proj.weight') || e.name.endsWith('down_proj.weight') ? residualStd : c.initializer_range;
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std;
  }
}

/** A new model with seeded random weights. */
export function createLlama(config: Partial<LlamaConfig> & Record<string, unknown>, seed = 0): LlamaModel {
  const model = new LlamaModel(llamaConfig(config));
  initLlamaParameters(model, seed);
  return model;
}
