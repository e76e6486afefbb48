/**
 * Tensor names of a llama model in llama.cpp's GGUF convention
 * (token_embd, blk.N.attn_q, …) and in Hugging Face's (model.embed_tokens,
 * model.layers.N.self_attn.q_proj, …), and the two-way mapping between them
 * from one table of name parts. Names only: no file is read or written here.
 */

/** Per-layer tensor names: llama.cpp's blk.N.<part> ↔ Hugging Face model.layers.N.<part>. */
const LAYER_PARTS: readonly [string, string][] = [
  ['attn_q', 'self_attn.q_proj'],
  ['attn_k', 'self_attn.k_proj'],
  ['attn_v', 'self_attn.v_proj'],
  ['attn_output', 'self_attn.o_proj'],
  ['ffn_gate', 'mlp.gate_proj'],
  ['ffn_up', 'mlp.up_proj'],
  ['ffn_down', 'mlp.down_proj'],
  ['attn_norm', 'input_layernorm'],
  ['ffn_norm', 'post_attention_layernorm'],
  ['attn_q_norm', 'self_attn.q_norm'],
  ['attn_k_norm', 'self_attn.k_norm'],
];
/** Where an architecture names a part differently (looked up before LAYER_PARTS). */
const ARCH_LAYER_PARTS: Readonly<Record<string, readonly [string, string][]>> = {
  // Gemma's post_attention_layernorm follows attention; its MLP has a norm before and after.
  gemma2: [
    ['post_attention_norm', 'post_attention_layernorm'],
    ['ffn_norm', 'pre_feedforward_layernorm'],
    ['post_ffw_norm', 'post_feedforward_layernorm'],
  ],
  gemma3: [
    ['post_attention_norm', 'post_attention_layernorm'],
    ['ffn_norm', 'pre_feedforward_layernorm'],
    ['post_ffw_norm', 'post_feedforward_layernorm'],
  ],
  // Phi-3's fused matrices; llama.cpp's ffn_up holds gate and up.
  phi3: [
    ['attn_qkv', 'self_attn.qkv_proj'],
    ['ffn_up', 'mlp.gate_up_proj'],
  ],
};
const GLOBAL_PARTS: readonly [string, string][] = [
  ['token_embd', 'model.embed_tokens'],
  ['output_norm', 'model.norm'],
  ['output', 'lm_head'],
];

function mapName(name: string, from: 0 | 1, arch: string): string {
  const to = 1 - from;
  const layerPattern = from === 0 ? /^blk\.(\d+)\.(.+)\.(weight|bias)$/ : /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/;
  const layer = layerPattern.exec(name);
  if (layer !== null) {
    const part = (ARCH_LAYER_PARTS[arch] ?? []).find((p) => p[from] === layer[2]) ?? LAYER_PARTS.find((p) => p[from] === layer[2]);
    if (part === undefined) return name;
    return from === 0 ? `model.layers.${layer[1]}.${part[to]}.${layer[3]}` : `blk.${layer[1]}.${part[to]}.${layer[3]}`;
  }
  const global = /^(.+)\.(weight|bias)$/.exec(name);
  const part = global === null ? undefined : GLOBAL_PARTS.find((p) => p[from] === global[1]);
  return part === undefined ? name : `${part[to]}.${global![2]}`;
}

/**
 * The Hugging Face name of a llama.cpp tensor of a llama model
 * (token_embd.weight → model.embed_tokens.weight, blk.3.attn_q.weight →
 * model.layers.3.self_attn.q_proj.weight, …); other names are returned as
 * they are.
 *
 * llama.cpp's converter also permutes the rows of each head of attn_q and
 * attn_k (Hugging Face's rotate-half RoPE pairs → adjacent pairs). Names
 * are mapped but the rows are left as stored: a row permutation changes no
 * metric qkd audits (kurtosis, singular values, the per-row quantization
 * error and noise amplification are all invariant under reordering rows).
 * Code that runs the model from a GGUF must undo the permutation.
 */
export function ggufToHfName(name: string, arch = 'llama'): string {
  return mapName(name, 0, arch);
}

/** The llama.cpp name of a Hugging Face tensor of a model of llama.cpp architecture `arch` (inverse of ggufToHfName). */
export function hfToGgufName(name: string, arch = 'llama'): string {
  return mapName(name, 1, arch);
}
