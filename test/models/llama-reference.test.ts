// A Hugging Face LLaMA checkpoint written to safetensors and loaded by qkd
// gives the logits of an independent, deliberately plain float64
// implementation of the Hugging Face forward pass (rotate_half RoPE, GQA
// by repeat, SwiGLU, RMSNorm), written here from the model definition.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { loadLlama } from '../../src/models/llama-io.js';
import { Rng, noGrad } from '../../src/tensor/index.js';

const cfg = { vocab_size: 23, hidden_size: 16, intermediate_size: 20, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5, rope_theta: 500, tie_word_embeddings: false };
const C = 16, H = 4, G = 2, D = 4, I = 20, V = 23, L = 2;

type W = Map<string, { shape: number[]; data: Float32Array }>;

function randomWeights(seed: number): W {
  const rng = new Rng(seed);
  const w: W = new Map();
  const add = (name: string, shape: number[], ones = false) => {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, { shape, data: Float32Array.from({ length: n }, () => (ones ? 1 + 0.1 * rng.normal() : 0.3 * rng.normal())) });
  };
  add('model.embed_tokens.weight', [V, C]);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [C], true);
    add(`${p}.self_attn.q_proj.weight`, [H * D, C]);
    add(`${p}.self_attn.k_proj.weight`, [G * D, C]);
    add(`${p}.self_attn.v_proj.weight`, [G * D, C]);
    add(`${p}.self_attn.o_proj.weight`, [C, H * D]);
    add(`${p}.post_attention_layernorm.weight`, [C], true);
    add(`${p}.mlp.gate_proj.weight`, [I, C]);
    add(`${p}.mlp.up_proj.weight`, [I, C]);
    add(`${p}.mlp.down_proj.weight`, [C, I]);
  }
  add('model.norm.weight', [C], true);
  add('lm_head.weight', [V, C]);
  return w;
}

/** y = W x for W [out, in]. */
const matvec = (W: Float32Array, x: number[], out: number): number[] =>
  Array.from({ length: out }, (_, o) => x.reduce((s, xi, i) => s + W[o * x.length + i]! * xi, 0));
const rms = (x: number[], w: Float32Array): number[] => {
  const r = 1 / Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + cfg.rms_norm_eps);
  return x.map((v, i) => v * r * w[i]!);
};
/** Hugging Face rotate_half RoPE on one head vector at position t. */
function ropeHead(v: number[], t: number): number[] {
  const half = D / 2;
  return v.map((_, i) => {
    const f = i % half;
    const angle = t * Math.pow(cfg.rope_theta, (-2 * f) / D);
    const rotated = i < half ? -v[i + half]! : v[i - half]!;
    return v[i]! * Math.cos(angle) + rotated * Math.sin(angle);
  });
}

function referenceLogits(w: W, tokens: number[]): number[][] {
  const g = (n: string) => w.get(n)!.data;
  let xs = tokens.map((tok) => Array.from(g('model.embed_tokens.weight').subarray(tok * C, (tok + 1) * C)));
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const hs = xs.map((x) => rms(x, g(`${p}.input_layernorm.weight`)));
    const qs = hs.map((h, t) => { const q = matvec(g(`${p}.self_attn.q_proj.weight`), h, H * D); return Array.from({ length: H }, (_, hh) => ropeHead(q.slice(hh * D, hh * D + D), t)); });
    const ks = hs.map((h, t) => { const k = matvec(g(`${p}.self_attn.k_proj.weight`), h, G * D); return Array.from({ length: G }, (_, gg) => ropeHead(k.slice(gg * D, gg * D + D), t)); });
    const vs = hs.map((h) => { const v = matvec(g(`${p}.self_attn.v_proj.weight`), h, G * D); return Array.from({ length: G }, (_, gg) => v.slice(gg * D, gg * D + D)); });
    xs = xs.map((x, t) => {
      const att: number[] = [];
      for (let hh = 0; hh < H; hh++) {
        const kv = Math.floor(hh / (H / G)); // repeat_kv: query head hh reads kv head hh / (H/G)
        const scores = Array.from({ length: t + 1 }, (_, s) => qs[t]![hh]!.reduce((a, qv, d) => a + qv * ks[s]![kv]![d]!, 0) / Math.sqrt(D));
        const m = Math.max(...scores);
        const e = scores.map((v) => Math.exp(v - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) att.push(e.reduce((a, p2, s) => a + (p2 / z) * vs[s]![kv]![d]!, 0));
      }
      const h1 = x.map((v, i) => v + matvec(g(`${p}.self_attn.o_proj.weight`), att, C)[i]!);
      const n2 = rms(h1, g(`${p}.post_attention_layernorm.weight`));
      const gate = matvec(g(`${p}.mlp.gate_proj.weight`), n2, I);
      const up = matvec(g(`${p}.mlp.up_proj.weight`), n2, I);
      const act = gate.map((a, i) => (a / (1 + Math.exp(-a))) * up[i]!);
      const down = matvec(g(`${p}.mlp.down_proj.weight`), act, C);
      return h1.map((v, i) => v + down[i]!);
    });
  }
  return xs.map((x) => matvec(g('lm_head.weight'), rms(x, g('model.norm.weight')), V));
}

describe('Hugging Face LLaMA checkpoint vs an independent forward', () => {
  it('logits agree to 1e-4', () => {
    const w = randomWeights(5);
    const dir = mkdtempSync(join(tmpdir(), 'qkd-hfref-'));
    writeSafetensors(join(dir, 'model.safetensors'), [...w].map(([name, t]) => ({ name, dtype: 'f32' as const, shape: t.shape, data: t.data })));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama', ...cfg }));
    const model = loadLlama(dir);
    const tokens = [3, 17, 0, 22, 9, 9, 11];
    const ours = noGrad(() => model.forward(Int32Array.from(tokens), 1, tokens.length)).data;
    const ref = referenceLogits(w, tokens);
    let worst = 0;
    ref.forEach((row, t) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - ours[t * V + j]!)))));
    assert.ok(worst < 1e-4, `max |Δ logit| = ${worst}`);
  });
});
