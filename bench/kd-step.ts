/**
 * One knowledge-distillation step: a frozen teacher (hidden 512, 6 layers)
 * forward under noGrad, then the student (hidden 256, 3 layers) forward,
 * backward and AdamW on task cross-entropy + 0.5·τ²·KL at τ = 4 (klDivergence
 * already includes τ²). Other settings as the train-step reference config.
 * The step is timed twice in one run: with the teacher in float32 (as the
 * PyTorch reference holds it) and as a frozen bf16 teacher
 * (distillation.teacher_precision: bf16; its matrix products on the bf16
 * GEMM). Last stdout line: one JSON object.
 */
import { createLlama, type LlamaModel } from '../src/models/llama.js';
import { newModel, putParameter } from '../src/models/precision.js';
import { AdamW, clipGradNorm } from '../src/optim/adamw.js';
import { Rng, add, backward, currentBackend, klDivergence, noGrad, reshape, scale } from '../src/tensor/index.js';
import { runTorch, timeMedian } from './_util.js';

const base = { vocab_size: 256, intermediate_size: 704, num_attention_heads: 8, num_key_value_heads: 8, tie_word_embeddings: false, max_position_embeddings: 256 };
const B = 8;
const T = 256;
const V = 256;
const steps = Number(process.argv[2] ?? 5);

const teacher = createLlama({ ...base, hidden_size: 512, num_hidden_layers: 6 }, 1);
const student = createLlama({ ...base, hidden_size: 256, num_hidden_layers: 3 }, 2);
const opt = new AdamW(student.arena, { lr: 1e-3 });
const rng = new Rng(3);
const inputs = Int32Array.from({ length: B * T }, () => rng.int(V));
const targets = Int32Array.from({ length: B * T }, () => rng.int(V));

/** The same teacher held as bf16 (rounded once, as loading it with teacher_precision bf16 would). */
function asBf16(model: LlamaModel): LlamaModel {
  const out = newModel(model.config, 'bf16');
  for (const e of model.arena.entries) putParameter(out, e.name, e.tensor.shape, e.tensor.data);
  return out;
}
const teacherBf16 = asBf16(teacher);

function step(teacher: LlamaModel): void {
  const teacherLogits = noGrad(() => teacher.forward(inputs, B, T));
  student.arena.zeroGrad();
  const logits = student.forward(inputs, B, T);
  const task = student.loss(logits, targets);
  const kd = klDivergence(reshape(teacherLogits, [B * T, V]), reshape(logits, [B * T, V]), { temperature: 4 });
  backward(add(task, scale(kd, 0.5)));
  clipGradNorm(student.arena.grad, 1);
  opt.update();
}

const seconds = timeMedian(() => step(teacher), steps, 1);
const tokensPerSecond = (B * T) / seconds;
console.log(`kd-step (${currentBackend()}): teacher ${teacher.parameterCount} / student ${student.parameterCount} params, ${(seconds * 1000).toFixed(1)} ms/step, ${Math.round(tokensPerSecond)} tokens/s`);
const secondsBf16 = timeMedian(() => step(teacherBf16), steps, 1);
const tokensPerSecondBf16 = (B * T) / secondsBf16;
console.log(`kd-step with a bf16 teacher: ${(secondsBf16 * 1000).toFixed(1)} ms/step, ${Math.round(tokensPerSecondBf16)} tokens/s`);
const torch = process.env.QKD_BENCH_NO_TORCH ? null : runTorchBench('kd-step', steps);
if (torch) {
  const t = torch.tokens_per_s as number;
  console.log(`PyTorch ${torch.torch} (${torch.threads} threads, float32 teacher): ${Math.round(t)} tokens/s → qkd/PyTorch = ${(tokensPerSecond / t).toFixed(2)}x (float32 teacher), ${(tokensPerSecondBf16 / t).toFixed(2)}x (bf16 teacher)`);
}
console.log(JSON.stringify({ name: 'kd-step', tokens_per_s: tokensPerSecond, ms_per_step: seconds * 1000, bf16_teacher_tokens_per_s: tokensPerSecondBf16, bf16_teacher_ms_per_step: secondsBf16 * 1000, torch_tokens_per_s: torch?.tokens_per_s ?? null }));

function runTorchBench(which: string, n: number) {
  return runTorch(`import runpy, sys\nsys.argv = ['torch_llama.py', '${which}', '${n}']\nrunpy.run_path('bench/torch_llama.py', run_name='__main__')`);
}
