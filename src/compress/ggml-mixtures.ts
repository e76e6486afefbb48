/**
 * llama.cpp's file types (general.file_type) and the type llama.cpp's
 * quantizer (llama-quantize, no importance matrix) gives each tensor of a
 * LLaMA model under each, so `qkd export --type Q4_K_M` writes the file
 * people know under that name. docs/ggml-formats.md lists the rules.
 * (Q2_K_S and the IQ types need an importance matrix and are not offered.)
 */
import type { GgufWriteType } from '../io/gguf-writer.js';
import { GGML_WRITABLE } from '../quant/ggml-formats.js';
import type { LlamaConfig } from '../models/llama-config.js';

/** llama.cpp's LLAMA_FTYPE_* values (include/llama.h). */
export const FILE_TYPES = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q8_0: 7,
  Q5_0: 8,
  Q5_1: 9,
  Q2_K: 10,
  Q3_K_S: 11,
  Q3_K_M: 12,
  Q3_K_L: 13,
  Q4_K_S: 14,
  Q4_K_M: 15,
  Q5_K_S: 16,
  Q5_K_M: 17,
  Q6_K: 18,
  BF16: 32,
} as const;

export type MixtureName = keyof typeof FILE_TYPES;

/** Every name qkd export, quantization.format and --export take: llama.cpp file types, then the other ggml formats. */
export const GGUF_TYPE_NAMES: readonly string[] = [...new Set([...Object.keys(FILE_TYPES), ...GGML_WRITABLE])];

/** The file type a pure K-quant export reports (llama.cpp has no pure Q3_K/Q4_K/Q5_K file type). */
export const PURE_FILE_TYPE: Partial<Record<GgufWriteType, number>> = { Q3_K: FILE_TYPES.Q3_K_S, Q4_K: FILE_TYPES.Q4_K_S, Q5_K: FILE_TYPES.Q5_K_S };

/**
 * llama.cpp's use_more_bits: the first and last eighth of the layers, and
 * every third layer in between, get the larger type in the _M mixtures.
 */
export function useMoreBits(i: number, n: number): boolean {
  const eighth = Math.floor(n / 8);
  return i < eighth || i >= Math.floor((7 * n) / 8) || (i - eighth) % 3 === 2;
}

function layerOf(hfName: string): number {
  const m = /^model\.layers\.(\d+)\./.exec(hfName);
  return m ? Number(m[1]) : -1;
}

/**
 * The type llama.cpp's quantizer gives one 2-D weight (Hugging Face name)
 * of a LLaMA model (no experts, no importance matrix) under a file type:
 * - lm_head (or the tied embedding table) → Q6_K (Q8_0 for a Q8_0 file, or
 *   when the width is not a multiple of the base type's block);
 * - attn_v (and a fused attn_qkv), attn_output and ffn_down get more bits in the K mixtures
 *   (use_more_bits layers in _M, the first layers in Q3_K_M / Q4_K_S, a
 *   larger type throughout in Q3_K_L, and Q4_K for attn_v of Q2_K when
 *   there are ≥ 4 query heads per KV head); an 80-layer GQA model (70B) gets
 *   Q5_K for a Q3_K/Q4_K attn_v;
 * - everything else the file type's base format.
 * The row-length fallback is applied afterwards (fallbackType).
 */
export function mixtureType(file: MixtureName, hfName: string, c: LlamaConfig): GgufWriteType {
  const base = baseType(file);
  if (base === 'F16' || base === 'BF16' || base === 'F32') return base;
  const L = c.num_hidden_layers;
  const i = layerOf(hfName);
  const isOutput = hfName === 'lm_head.weight' || (c.tie_word_embeddings && hfName === 'model.embed_tokens.weight');
  if (isOutput) {
    const qk = base.endsWith('_K') ? 256 : 32;
    return c.hidden_size % qk !== 0 || base === 'Q8_0' ? 'Q8_0' : 'Q6_K';
  }
  // llama.cpp treats a fused qkv matrix (Phi-3) as it treats attn_v.
  if (hfName.endsWith('self_attn.v_proj.weight') || hfName.endsWith('self_attn.qkv_proj.weight')) {
    const gqa = Math.floor(c.num_attention_heads / c.num_key_value_heads);
    let t: GgufWriteType = base;
    if (file === 'Q2_K') t = gqa >= 4 ? 'Q4_K' : 'Q3_K';
    else if (file === 'Q3_K_M') t = i < 2 ? 'Q5_K' : 'Q4_K';
    else if (file === 'Q3_K_L') t = 'Q5_K';
    else if ((file === 'Q4_K_M' || file === 'Q5_K_M') && useMoreBits(i, L)) t = 'Q6_K';
    else if (file === 'Q4_K_S' && i < 4) t = 'Q5_K';
    const is70B = L === 80 && c.num_attention_heads !== c.num_key_value_heads;
    return is70B && (t === 'Q3_K' || t === 'Q4_K') ? 'Q5_K' : t;
  }
  if (hfName.endsWith('mlp.down_proj.weight')) {
    if (file === 'Q2_K') return 'Q3_K';
    if (file === 'Q3_K_M') return i < Math.floor(L / 16) ? 'Q5_K' : 'Q4_K';
    if (file === 'Q3_K_L') return 'Q5_K';
    if (file === 'Q4_K_M') return useMoreBits(i, L) ? 'Q6_K' : 'Q4_K';
    if (file === 'Q5_K_M') return useMoreBits(i, L) ? 'Q6_K' : 'Q5_K';
    if (file === 'Q4_K_S' && i < Math.floor(L / 8)) return 'Q5_K';
    return base;
  }
  if (hfName.endsWith('self_attn.o_proj.weight')) {
    if (file === 'Q2_K') return 'Q3_K';
    if (file === 'Q3_K_M') return 'Q4_K';
    if (file === 'Q3_K_L') return 'Q5_K';
  }
  return base;
}

/** The format most tensors of a file type get (llama.cpp's default_type). */
export function baseType(file: MixtureName): GgufWriteType {
  switch (file) {
    case 'Q2_K':
      return 'Q2_K';
    case 'Q3_K_S':
    case 'Q3_K_M':
    case 'Q3_K_L':
      return 'Q3_K';
    case 'Q4_K_S':
    case 'Q4_K_M':
      return 'Q4_K';
    case 'Q5_K_S':
    case 'Q5_K_M':
      return 'Q5_K';
    default:
      return file;
  }
}
