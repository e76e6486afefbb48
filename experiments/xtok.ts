/**
 * Distillation across tokenizers (issue 16).
 *
 *   npm run experiment -- xtok [--data PATH|default] [--budget small|full] [--out DIR] [--seed N]
 *
 * One teacher with a 4096-token byte-level BPE (trained by qkd's trainer,
 * or reused from OUT). Students of one shape, the same steps, batch and
 * sequence length (the same token budget), the same data. Rows:
 *   no-kd                 byte-level student, task loss only
 *   uld                   byte-level student, + λ·ULD at aligned positions
 *   aligned-kd            byte-level student, + λ·KL of the teacher's distribution
 *                         carried to the next byte (prefix mapping: at every byte
 *                         inside the teacher's next token too), top-32 bytes
 *   aligned-kd-cache      aligned-kd from a soft-target cache over the teacher's
 *                         tokens (top-32 per position, the context of the cache's
 *                         windows): what a server or a GGUF teacher in llama.cpp gives
 *   aligned-kd-first-token  the same at aligned positions only (first-token
 *                         mapping of the teacher's top-32)
 *   same-tokenizer-no-kd  student with the teacher's BPE, task loss only
 *   same-tokenizer-kd     student with the teacher's BPE, + λ·KL (the upper reference)
 * Every KD row at τ = 1 (see the comment at the config). Measured on the held-out 10% in bits per byte (comparable across
 * tokenizers), with each student's perplexity over its own tokens. The
 * gain of a method is no-kd's bpb minus its bpb (same tokenizer: the
 * same-tokenizer rows'). Last stdout line:
 * {"rows":[{"method","bpb","ppl"}],"recovered":{...}}.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { splitText } from '../src/data/corpus.js';
import { ByteTokenizer, type Tokenizer } from '../src/data/tokenizer.js';
import { loadTokenizer } from '../src/data/tokenizer-io.js';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { loadLlama } from '../src/models/llama-io.js';
import { modelDirectory } from '../src/models/load-any.js';
import { presetConfig } from '../src/train/config.js';
import { distill } from '../src/train/distill.js';
import { parseDistillConfig, type DistillConfigInput } from '../src/train/distill-config.js';
import { setupExperiment, trainedTeacher } from './_common.js';

const BUDGETS = {
  small: { teacherPreset: 'small', teacherSteps: 1000, studentPreset: 'tiny', studentSteps: 600, batch: 8, seqLen: 128 },
  full: { teacherPreset: 'reference', teacherSteps: 2000, studentPreset: 'small', studentSteps: 1500, batch: 8, seqLen: 256 },
};
const { budget, budgetName, data, seed, text, root, log } = setupExperiment('runs/xtok', BUDGETS);

interface Row {
  method: string;
  bpb: number;
  ppl: number;
  params: number;
}

function teacherDir(): Promise<string> {
  const config = { ...presetConfig(budget.teacherPreset), seed, steps: budget.teacherSteps, seq_len: budget.seqLen, checkpoint_every: budget.teacherSteps, tokenizer: { kind: 'bpe' as const, vocab_size: 4096 } };
  return trainedTeacher(root, text, config, `${budget.teacherPreset}, BPE 4096, ${config.steps} steps`, log);
}

async function main(): Promise<void> {
  const tDir = await teacherDir();
  const teacher = loadLlama(tDir);
  const teacherTok = loadTokenizer(join(tDir, 'tokenizer.json'));
  const heldOut = splitText(text).validation;
  const bytes = new ByteTokenizer();
  const student = presetConfig(budget.studentPreset).model;
  const p = presetConfig(budget.studentPreset);
  const specs: { method: string; tokenizer: Tokenizer; kd: 'none' | 'uld' | 'aligned' | 'aligned-cache' | 'aligned-first-token' | 'same' }[] = [
    { method: 'no-kd', tokenizer: bytes, kd: 'none' },
    { method: 'uld', tokenizer: bytes, kd: 'uld' },
    { method: 'aligned-kd', tokenizer: bytes, kd: 'aligned' },
    { method: 'aligned-kd-cache', tokenizer: bytes, kd: 'aligned-cache' },
    { method: 'aligned-kd-first-token', tokenizer: bytes, kd: 'aligned-first-token' },
    { method: 'same-tokenizer-no-kd', tokenizer: teacherTok, kd: 'none' },
    { method: 'same-tokenizer-kd', tokenizer: teacherTok, kd: 'same' },
  ];
  const rows: Row[] = [];
  const teacherEval = evaluatePerplexity(teacher, teacherTok, heldOut, budget.seqLen);
  log(`teacher: ${teacher.parameterCount} parameters, held-out ${teacherEval.bits_per_byte.toFixed(4)} bits/byte (ppl ${teacherEval.ppl.toFixed(3)} over BPE tokens)`);
  for (const spec of specs) {
    const dir = join(root, spec.method);
    const across = spec.tokenizer !== teacherTok;
    if (!existsSync(join(dir, 'quantized', 'config.json'))) {
      const input: DistillConfigInput = {
        recipe: 'kd',
        training: { seed, steps: budget.studentSteps, batch_size: budget.batch, seq_len: budget.seqLen, eval_every: Math.max(1, Math.floor(budget.studentSteps / 6)), checkpoint_every: budget.studentSteps },
        optimizer: { lr: p.lr, min_lr: p.min_lr },
        student: { init: 'random', model: student },
        distillation: {
          // τ = 1 for every row: at qkd's default τ = 4, KD across tokenizers lost to no-kd on Moby-Dick
          // (aligned-kd 2.880 against 2.817 bits/byte), at τ = 1 it gained (2.771); chosen there, checked on SOTU.
          temperature: 1,
          // no-kd: the same run with λ = 0 (the teacher's term is computed and weighted by nothing).
          ...(spec.kd === 'none' ? { lambda_distill: 0 } : {}),
          ...(across ? { cross_tokenizer: { method: spec.kd === 'uld' ? 'uld' : 'aligned', top_k: 32, mapping: spec.kd === 'aligned-first-token' ? 'first-token' : 'prefix' } } : {}),
          ...(spec.kd === 'aligned-cache' ? { soft_target_cache: { top_k: 32 } } : {}),
        },
      };
      log(`training ${spec.method} (${budget.studentSteps} steps of ${budget.batch} × ${budget.seqLen} tokens)`);
      await distill({ teacher: tDir, ...(across ? { studentTokenizer: spec.tokenizer } : {}), text, outDir: dir, config: parseDistillConfig(input, spec.method), force: true, onNote: (n) => log(`  ${spec.method}: ${n}`) });
    } else log(`reusing ${spec.method}`);
    const model = loadLlama(modelDirectory(dir));
    const r = evaluatePerplexity(model, spec.tokenizer, heldOut, budget.seqLen);
    const row = { method: spec.method, bpb: r.bits_per_byte, ppl: r.ppl, params: model.parameterCount };
    rows.push(row);
    log(`${row.method.padEnd(22)} ${String(row.params).padStart(8)} params  ${row.bpb.toFixed(4)} bits/byte  ppl ${row.ppl.toFixed(3)}`);
  }
  const bpb = (m: string) => rows.find((r) => r.method === m)!.bpb;
  const sameGain = bpb('same-tokenizer-no-kd') - bpb('same-tokenizer-kd');
  const recovered = { uld: (bpb('no-kd') - bpb('uld')) / sameGain, aligned_kd: (bpb('no-kd') - bpb('aligned-kd')) / sameGain, aligned_kd_cache: (bpb('no-kd') - bpb('aligned-kd-cache')) / sameGain, aligned_kd_first_token: (bpb('no-kd') - bpb('aligned-kd-first-token')) / sameGain };
  console.log(`\nteacher: ${teacherEval.bits_per_byte.toFixed(4)} bits/byte`);
  console.log('method                  params    bits/byte   ppl (own tokens)');
  for (const r of rows) console.log(`${r.method.padEnd(22)} ${String(r.params).padStart(8)}   ${r.bpb.toFixed(4).padStart(9)}   ${r.ppl.toFixed(3)}`);
  console.log(`same-tokenizer KD gain: ${sameGain.toFixed(4)} bits/byte; recovered across tokenizers: uld ${(100 * recovered.uld).toFixed(0)}%, aligned-kd ${(100 * recovered.aligned_kd).toFixed(0)}%, aligned-kd-cache ${(100 * recovered.aligned_kd_cache).toFixed(0)}%, aligned-kd-first-token ${(100 * recovered.aligned_kd_first_token).toFixed(0)}%`);
  log('done');
  console.log(JSON.stringify({ budget: budgetName, data, seed, teacher_bpb: teacherEval.bits_per_byte, rows: rows.map(({ method, bpb, ppl }) => ({ method, bpb, ppl })), same_tokenizer_gain_bpb: sameGain, recovered }));
}

await main();
