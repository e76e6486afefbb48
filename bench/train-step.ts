/**
 * One full training step (forward, backward, AdamW) of the reference config:
 * vocab 256, hidden 256, 6 layers, 8 heads, 8 kv heads, intermediate 704,
 * sequence 256, batch 8, untied embeddings. Last stdout line: one JSON object.
 */
import { createLlama } from '../src/models/llama.js';
import { AdamW, clipGradNorm } from '../src/optim/adamw.js';
import { Rng, backward, currentBackend } from '../src/tensor/index.js';
import { runTorch, timeMedian } from './_util.js';

export const REFERENCE_CONFIG = {
  vocab_size: 256, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 6,
  num_attention_heads: 8, num_key_value_heads: 8, tie_word_embeddings: false, max_position_embeddings: 256,
};
const B = 8;
const T = 256;
const steps = Number(process.argv[2] ?? 5);

const model = createLlama(REFERENCE_CONFIG, 1);
const opt = new AdamW(model.arena, { lr: 1e-3 });
const rng = new Rng(2);
const inputs = Int32Array.from({ length: B * T }, () => rng.int(256));
const targets = Int32Array.from({ length: B * T }, () => rng.int(256));

function step(): void {
  model.arena.zeroGrad();
  const loss = model.loss(model.forward(inputs, B, T), targets);
  backward(loss);
  clipGradNorm(model.arena.grad, 1);
  opt.update();
}

for (let i = 0; i < 3; i++) step(); // warm-up outside the counters below: the first steps map the process's working memory
// Page faults and kernel time per timed step: what an activation pool would
// save, given what malloc keeps (QKD_MALLOC; docs/architecture.md, "Memory").
const before = process.resourceUsage();
const seconds = timeMedian(step, steps, 0);
const after = process.resourceUsage();
const faultsPerStep = (after.minorPageFault - before.minorPageFault) / steps;
const systemMsPerStep = (after.systemCPUTime - before.systemCPUTime) / 1000 / steps;
const tokensPerSecond = (B * T) / seconds;
console.log(`train-step (${currentBackend()}): ${model.parameterCount} params, ${(seconds * 1000).toFixed(1)} ms/step, ${Math.round(tokensPerSecond)} tokens/s; per step ${Math.round(faultsPerStep)} page faults, ${systemMsPerStep.toFixed(1)} ms system time`);
const torch = process.env.QKD_BENCH_NO_TORCH ? null : runTorch(`import runpy, sys\nsys.argv = ['torch_llama.py', 'train-step', '${steps}']\nrunpy.run_path('bench/torch_llama.py', run_name='__main__')`);
if (torch) console.log(`PyTorch ${torch.torch} (${torch.threads} threads): ${Math.round(torch.tokens_per_s as number)} tokens/s → qkd/PyTorch = ${(tokensPerSecond / (torch.tokens_per_s as number)).toFixed(2)}x`);
console.log(JSON.stringify({ name: 'train-step', params: model.parameterCount, tokens_per_s: tokensPerSecond, ms_per_step: seconds * 1000, page_faults_per_step: faultsPerStep, system_ms_per_step: systemMsPerStep, torch_tokens_per_s: torch?.tokens_per_s ?? null }));
