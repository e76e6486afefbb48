/**
 * The deployment half of `qkd demo`: the demo's teacher is distilled into a
 * student of half its depth twice, from the same initialisation and for the
 * same number of steps: in FP32 (then quantized afterwards: PTQ) and by
 * KD+QAT on llama.cpp's Q4_0 grid. The table compares the teacher, the FP32
 * student, its PTQ GGUF and the KD+QAT GGUF on held-out text: perplexity
 * and KL to the teacher in qkd, file size, and perplexity in llama.cpp itself
 * when node-llama-cpp is installed. Files go to a fresh temporary directory
 * (printed).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import { splitText } from '../data/corpus.js';
import { modelDirectory } from '../models/load-any.js';
import { exportGguf } from '../compress/export-gguf.js';
import { compareModels } from '../eval/compare.js';
import { evaluateModel, evaluateModelInLlamaCpp } from '../eval/perplexity.js';
import { distill } from './distill.js';
import { parseDistillConfig } from './distill-config.js';
import type { LlamaConfig } from '../models/llama-config.js';

export interface DeployDemoRow {
  method: string;
  /** The GGUF's size (null for the FP32 models). */
  file_bytes: number | null;
  bits_per_weight: number;
  ppl: number;
  /** Mean KL(teacher ‖ row) per token. */
  kld: number;
  /** llama.cpp's perplexity on the GGUF (null: no GGUF, or node-llama-cpp not installed). */
  ppl_llamacpp: number | null;
}

export interface DeployDemoResult {
  dir: string;
  format: string;
  /** The students' depth (half the teacher's) and their distillation steps. */
  student_layers: number;
  student_steps: number;
  rows: DeployDemoRow[];
  /** Why the llama.cpp column is empty, when it is. */
  llamacpp_note: string | null;
}

const FORMAT = 'Q4_0';
/** Held-out bytes scored (the first of the validation tail): enough for stable figures in seconds. */
const HELD_OUT_BYTES = 32_768;

export interface DeployDemoOptions {
  /** Distillation steps of each student (default 150; `qkd demo` uses 400). */
  studentSteps?: number;
  seed?: number;
  seqLen?: number;
}

/** Distils `teacherDir` into a half-depth student: recipe kd (FP32) or kd-qat on the demo's ggml format. */
async function student(teacherDir: string, teacher: LlamaConfig, text: string, outDir: string, qat: boolean, options: DeployDemoOptions): Promise<Awaited<ReturnType<typeof distill>>> {
  const steps = options.studentSteps ?? 150;
  const config = parseDistillConfig({
    recipe: qat ? 'kd-qat' : 'kd',
    training: { steps, batch_size: 8, seq_len: options.seqLen ?? 64, eval_every: steps, checkpoint_every: steps, warmup_share: 0, seed: options.seed ?? 1337 },
    optimizer: { lr: 2e-3, min_lr: 2e-4, warmup_steps: 0 },
    quantization: { format: qat ? FORMAT : null, fake_quant_start: null },
    distillation: { gamma_quant: 0 },
    student: {
      model: { hidden_size: teacher.hidden_size, intermediate_size: teacher.intermediate_size, num_hidden_layers: Math.max(1, Math.floor(teacher.num_hidden_layers / 2)), num_attention_heads: teacher.num_attention_heads, num_key_value_heads: teacher.num_key_value_heads },
      init: 'pruned',
    },
  }, 'the demo');
  return distill({ teacher: teacherDir, text, outDir, config });
}

export async function runDeployDemo(teacherDir: string, teacher: LlamaConfig, text: string, options: DeployDemoOptions = {}): Promise<DeployDemoResult> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-demo-'));
  const heldOut = join(dir, 'held-out.txt');
  writeFileSync(heldOut, splitText(text).validation.slice(0, HELD_OUT_BYTES));
  const evalOptions = { data: heldOut, wholeText: true, seqLen: options.seqLen ?? 64 };

  await student(teacherDir, teacher, text, join(dir, 'student-fp32'), false, options);
  const fp32Dir = modelDirectory(join(dir, 'student-fp32'));
  const ptq = exportGguf(fp32Dir, { out: join(dir, `student-ptq-${FORMAT}.gguf`), type: FORMAT });
  const qat = await student(teacherDir, teacher, text, join(dir, 'student-kd-qat'), true, options);
  if (!qat.gguf) throw new QkdError('STATE', 'the demo KD+QAT run wrote no GGUF', { path: dir });

  let llamacppNote: string | null = null;
  const inLlamaCpp = async (path: string): Promise<number | null> => {
    if (llamacppNote !== null) return null;
    try {
      return (await evaluateModelInLlamaCpp(path, evalOptions)).ppl;
    } catch (err) {
      if (!(err instanceof QkdError) || err.field !== '--engine') throw err;
      llamacppNote = 'node-llama-cpp is not installed (npm install node-llama-cpp to check the files in llama.cpp)';
      return null;
    }
  };
  const rows: DeployDemoRow[] = [{ method: 'teacher-fp32', file_bytes: null, bits_per_weight: 32, ppl: evaluateModel(teacherDir, evalOptions).ppl, kld: 0, ppl_llamacpp: null }];
  const studentFp32 = compareModels(fp32Dir, teacherDir, evalOptions);
  rows.push({ method: 'student-fp32', file_bytes: null, bits_per_weight: 32, ppl: studentFp32.ppl, kld: studentFp32.kld.mean, ppl_llamacpp: null });
  for (const [method, path, bytes, bpw] of [[`student-ptq-${FORMAT}`, ptq.out, ptq.bytes, ptq.bitsPerWeight], [`student-kd-qat-${FORMAT}`, qat.gguf.path, qat.gguf.bytes, qat.gguf.bits_per_weight]] as const) {
    const r = compareModels(path, teacherDir, evalOptions);
    rows.push({ method, file_bytes: bytes, bits_per_weight: bpw, ppl: r.ppl, kld: r.kld.mean, ppl_llamacpp: await inLlamaCpp(path) });
  }
  return { dir, format: FORMAT, student_layers: Math.max(1, Math.floor(teacher.num_hidden_layers / 2)), student_steps: options.studentSteps ?? 150, rows, llamacpp_note: llamacppNote };
}
