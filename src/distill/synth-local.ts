/**
 * Data-free generation from a local teacher (docs/synth.md): a corpus the
 * teacher writes itself, for distillation when no training text may be used.
 * As published for data-free QAT of language models (LLM-QAT), sequence s
 * starts from one vocabulary entry, its first `greedy` generated tokens are
 * the teacher's most likely ones and the rest are sampled from its
 * distribution at `temperature`. Start tokens go through the vocabulary in a
 * seeded random order, so `sequences` ≥ the vocabulary's size starts from
 * every entry; entries that are special tokens or do not decode to text on
 * their own (a byte inside a UTF-8 sequence) are skipped.
 *
 * Every sequence has its own random stream (seed, s), so the corpus does not
 * depend on the order sequences are made in, and the job resumes after
 * kill -9 (io/jsonl-journal.ts) with the same rows it would have written.
 * Rows are `{"text": ..., "sequence": s, "start_id": id}`, which `--data`
 * reads as text.
 */
import { QkdError } from '../errors.js';
import { openJournal } from '../io/jsonl-journal.js';
import { KvCache, type LlamaModel } from '../models/llama.js';
import { sampleToken } from '../models/generate.js';
import { Rng } from '../tensor/random.js';
import { noGrad } from '../tensor/tape.js';
import type { Tokenizer } from '../data/tokenizer.js';

/** A teacher that continues a sequence one token at a time; `choose` picks each next id from its logits. */
export interface SequenceTeacher {
  readonly vocabSize: number;
  /** The `length` ids after `start` (start not included). */
  continue(start: number, length: number, choose: (logits: Float32Array, position: number) => number): Promise<Int32Array>;
}

/** A qkd model as a sequence teacher (its KV cache, one token per step, within its context). */
export function modelSequenceTeacher(model: LlamaModel): SequenceTeacher {
  const V = model.config.vocab_size;
  return {
    vocabSize: V,
    async continue(start, length, choose) {
      const window = model.config.max_position_embeddings;
      if (length + 1 > window) throw new QkdError('ARGUMENT', `sequences of ${length + 1} tokens exceed the teacher's context of ${window}`, { field: '--length', hint: `at most ${window - 1}` });
      const cache = new KvCache(model.config, Math.max(1, length));
      const out = new Int32Array(length);
      let next = start;
      noGrad(() => {
        for (let p = 0; p < length; p++) {
          const logits = model.forward(Int32Array.of(next), 1, 1, { cache }).data as Float32Array;
          next = choose(logits.subarray(0, V), p);
          out[p] = next;
        }
      });
      return out;
    },
  };
}

export interface DataFreeOptions {
  /** Sequences to write. */
  sequences: number;
  /** Generated tokens per sequence (after the start token). */
  length: number;
  /** Leading tokens taken greedily (default 3). */
  greedy?: number;
  /** Sampling temperature after them (default 1). */
  temperature?: number;
  seed?: number;
  /** Discard an unfinished job of other settings / replace an existing output. */
  force?: boolean;
  onProgress?: (p: { done: number; total: number; resumed: number; tokens: number; elapsedSeconds: number }) => void;
  onNote?: (s: string) => void;
  shouldStop?: () => boolean;
  /** What names the teacher in the job's settings (a path), so a journal of another teacher is not resumed. */
  teacherId: string;
}

/** Vocabulary entries a sequence may start from: not special, and decoding to text on their own. */
export function startTokens(tokenizer: Tokenizer, V: number): number[] {
  const special = new Set<number>((tokenizer as { specialIds?: ReadonlySet<number> }).specialIds ?? []);
  for (const id of [tokenizer.bosId, tokenizer.eosId]) if (id !== null) special.add(id);
  const out: number[] = [];
  for (let id = 0; id < Math.min(V, tokenizer.vocabSize); id++) {
    if (special.has(id)) continue;
    const text = tokenizer.decode([id]);
    if (text === '' || text.includes('\uFFFD')) continue;
    out.push(id);
  }
  if (out.length === 0) throw new QkdError('ARGUMENT', 'no vocabulary entry decodes to text on its own to start a sequence from', { field: 'tokenizer' });
  return out;
}

/** The start token of every sequence: the eligible entries in a seeded random order, repeated as needed. */
export function startOrder(eligible: readonly number[], sequences: number, seed: number): Int32Array {
  const perm = eligible.slice();
  const rng = new Rng(seed ^ 0x5eed);
  for (let i = perm.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  return Int32Array.from({ length: sequences }, (_, s) => perm[s % perm.length]!);
}

export interface DataFreeRow {
  text: string;
  sequence: number;
  start_id: number;
}

/**
 * Writes `out` (JSON Lines, one row per sequence, in sequence order).
 * Returns the rows written and whether the job was stopped (resumable).
 */
export async function generateDataFree(teacher: SequenceTeacher, tokenizer: Tokenizer, out: string, o: DataFreeOptions): Promise<{ rows: number; resumed: number; tokens: number; interrupted: boolean }> {
  const greedy = o.greedy ?? 3;
  const temperature = o.temperature ?? 1;
  const seed = o.seed ?? 0;
  if (!Number.isInteger(o.sequences) || o.sequences < 1) throw new QkdError('ARGUMENT', `sequences must be a whole number ≥ 1, got ${o.sequences}`, { field: '--sequences' });
  if (!Number.isInteger(o.length) || o.length < 1) throw new QkdError('ARGUMENT', `length must be a whole number ≥ 1, got ${o.length}`, { field: '--length' });
  if (!Number.isInteger(greedy) || greedy < 0) throw new QkdError('ARGUMENT', `greedy tokens must be a whole number ≥ 0, got ${greedy}`, { field: '--greedy-tokens' });
  if (!(temperature > 0)) throw new QkdError('ARGUMENT', `temperature must be > 0, got ${temperature}`, { field: '--temperature' });
  const starts = startOrder(startTokens(tokenizer, teacher.vocabSize), o.sequences, seed);
  const journal = openJournal(out, {
    label: 'synth',
    settings: { kind: 'data-free', teacher: o.teacherId, sequences: o.sequences, length: o.length, greedy, temperature, seed },
    total: o.sequences,
    keyOf: (r) => (typeof r.sequence === 'number' && typeof r.text === 'string' ? r.sequence : null),
    force: o.force,
    onNote: o.onNote,
  });
  const resumed = journal.resumed;
  let tokens = 0;
  const started = performance.now();
  const report = (): void => o.onProgress?.({ done: journal.count, total: o.sequences, resumed, tokens, elapsedSeconds: (performance.now() - started) / 1000 });
  report();
  try {
    for (let s = 0; s < o.sequences; s++) {
      if (journal.has(s)) continue;
      // A turn of the event loop per sequence, so a Ctrl-C handler can run between them.
      await new Promise((resolve) => setImmediate(resolve));
      if (o.shouldStop?.()) return { rows: journal.count, resumed, tokens, interrupted: true };
      // Each sequence's own stream: the row does not depend on which sequences were made before it.
      const rng = new Rng(seed * 1000003 + s);
      const ids = await teacher.continue(starts[s]!, o.length, (logits, p) => sampleToken(logits, p < greedy ? 0 : temperature, 1, rng));
      const row: DataFreeRow = { text: tokenizer.decode([starts[s]!, ...ids]), sequence: s, start_id: starts[s]! };
      journal.append(s, row);
      tokens += ids.length;
      report();
    }
    journal.finish();
    return { rows: o.sequences, resumed, tokens, interrupted: false };
  } finally {
    journal.close();
  }
}
