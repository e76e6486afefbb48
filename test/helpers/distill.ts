/** What the distillation tests share: a small random byte-level teacher on disk, a slice of Moby-Dick, and a short run's config. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLlama } from '../../src/models/llama.js';
import { saveLlama } from '../../src/models/llama-io.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { loadDefaultCorpus } from '../../src/data/corpus.js';
import { parseDistillConfig, type DistillConfig } from '../../src/train/distill-config.js';

export const teacherConfig = { vocab_size: 256, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32 };

/** A fresh temporary directory holding `teacher/` (seed 11, byte tokenizer). */
export function distillFixture(prefix: string): { dir: string; teacherDir: string; text: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const teacherDir = join(dir, 'teacher');
  saveLlama(teacherDir, createLlama(teacherConfig, 11));
  writeFileSync(join(teacherDir, 'tokenizer.json'), JSON.stringify(new ByteTokenizer().toTokenizerJson()));
  return { dir, teacherDir, text: loadDefaultCorpus().slice(0, 60_000) };
}

/** 12 steps of batch 2 × 16 tokens, evaluated every 4, checkpointed every 6; `extra` overrides sections. */
export function shortConfig(extra: Record<string, unknown> = {}): DistillConfig {
  return parseDistillConfig({
    training: { steps: 12, batch_size: 2, seq_len: 16, eval_every: 4, eval_batches: 2, checkpoint_every: 6 },
    optimizer: { lr: 3e-3, min_lr: 3e-4 },
    ...extra,
  });
}

/** Every line of a run's metrics.jsonl (steps and evaluations). */
export function runMetrics(out: string): Record<string, number>[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
}

/** The training steps of a run's metrics.jsonl (lines with a loss). */
export function stepMetrics(out: string): Record<string, number>[] {
  return runMetrics(out).filter((m) => 'loss' in m);
}
