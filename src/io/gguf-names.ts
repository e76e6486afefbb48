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
];
const GLOBAL_PARTS: readonly [string, string][] = [
  ['token_embd', 'model.embed_tokens'],
  ['output_norm', 'model.norm'],
  ['output', 'lm_head'],
];

function mapName(name: string, from: 0 | 1): string {
  const to = 1 - from;
  const layerPattern = from === 0 ? /^blk\.(\d+)\.(.+)\.(weight|bias)$/ : /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/;
  const layer = layerPattern.exec(name);
  if (layer !== null) {
    const part = LAYER_PARTS.find((p) => p[from] === layer[2]);
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
export function ggufToHfName(name: string): string {
  return mapName(name, 0);
}

/** The llama.cpp name of a Hugging Face llama tensor (inverse of ggufToHfName). */
export function hfToGgufName(name: string): string {
  return mapName(name, 1);
}
