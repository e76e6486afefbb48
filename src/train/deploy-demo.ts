/**
 * The deployment half of `qkd demo`: the demo's trained model becomes a
 * 4-bit GGUF twice, by quantizing afterwards (PTQ) and by a short KD+QAT
 * fine-tune on llama.cpp's Q4_0 grid, and the table compares them with the
 * FP32 model on held-out text: perplexity and KL to the FP32 model in qkd,
 * file size, and perplexity in llama.cpp itself when node-llama-cpp is
 * installed. Files go to a fresh temporary directory (printed).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QkdError } from '../errors.js';
import type { LlamaModel } from '../models/llama.js';
import { saveLlama } from '../models/llama-io.js';
import { saveTokenizerJson } from '../data/bpe.js';
import { ByteTokenizer } from '../data/tokenizer.js';
import { splitText } from '../data/corpus.js';
import { exportGguf } from '../compress/export-gguf.js';
import { compareModels } from '../eval/compare.js';
import { evaluateModel, evaluateModelInLlamaCpp } from '../eval/perplexity.js';
import { distill } from './distill.js';
import { parseDistillConfig } from './distill-config.js';

export interface DeployDemoRow {
  method: string;
  /** The GGUF's size (null for the in-memory FP32 model). */
  file_bytes: number | null;
  bits_per_weight: number;
  ppl: number;
  /** Mean KL(FP32 ‖ row) per token. */
  kld: number;
  /** llama.cpp's perplexity on the GGUF (null: no GGUF, or node-llama-cpp not installed). */
  ppl_llamacpp: number | null;
}

export interface DeployDemoResult {
  dir: string;
  format: string;
  rows: DeployDemoRow[];
  /** Why the llama.cpp column is empty, when it is. */
  llamacpp_note: string | null;
}

const FORMAT = 'Q4_0';
/** Held-out bytes scored (the first of the validation tail): enough for stable figures in seconds. */
const HELD_OUT_BYTES = 32_768;

export async function runDeployDemo(model: LlamaModel, text: string, options: { qatSteps?: number; seed?: number; seqLen?: number } = {}): Promise<DeployDemoResult> {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-demo-'));
  const teacherDir = join(dir, 'fp32');
  saveLlama(teacherDir, model);
  saveTokenizerJson(join(teacherDir, 'tokenizer.json'), new ByteTokenizer());
  const heldOut = join(dir, 'held-out.txt');
  writeFileSync(heldOut, splitText(text).validation.slice(0, HELD_OUT_BYTES));
  const seqLen = options.seqLen ?? 64;
  const evalOptions = { data: heldOut, wholeText: true, seqLen };

  const ptq = exportGguf(teacherDir, { out: join(dir, `ptq-${FORMAT}.gguf`), type: FORMAT });
  const c = model.config;
  const config = parseDistillConfig({
    recipe: 'kd-qat',
    training: { steps: options.qatSteps ?? 60, batch_size: 8, seq_len: seqLen, eval_every: options.qatSteps ?? 60, checkpoint_every: options.qatSteps ?? 60, warmup_share: 0, seed: options.seed ?? 1337 },
    optimizer: { lr: 1e-3, min_lr: 1e-4, warmup_steps: 0 },
    quantization: { format: FORMAT },
    distillation: { gamma_quant: 0 },
    student: { model: { hidden_size: c.hidden_size, intermediate_size: c.intermediate_size, num_hidden_layers: c.num_hidden_layers, num_attention_heads: c.num_attention_heads, num_key_value_heads: c.num_key_value_heads }, init: 'pruned' },
  }, 'the demo');
  const qat = await distill({ teacher: teacherDir, text, outDir: join(dir, 'kd-qat'), config });
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
  const fp32 = evaluateModel(teacherDir, evalOptions);
  const rows: DeployDemoRow[] = [{ method: 'fp32', file_bytes: null, bits_per_weight: 32, ppl: fp32.ppl, kld: 0, ppl_llamacpp: null }];
  for (const [method, path, bytes, bpw] of [[`ptq-${FORMAT}`, ptq.out, ptq.bytes, ptq.bitsPerWeight], [`kd-qat-${FORMAT}`, qat.gguf.path, qat.gguf.bytes, qat.gguf.bits_per_weight]] as const) {
    const r = compareModels(path, teacherDir, evalOptions);
    rows.push({ method, file_bytes: bytes, bits_per_weight: bpw, ppl: r.ppl, kld: r.kld.mean, ppl_llamacpp: await inLlamaCpp(path) });
  }
  return { dir, format: FORMAT, rows, llamacpp_note: llamacppNote };
}
