/**
 * The teacher side of distillation across tokenizers (docs/cross-tokenizer.md):
 * the training text in the teacher's tokens, and for each student batch the
 * teacher's next-token distributions at the positions where both
 * tokenizations end a token at the same byte (distill/xtok.ts). They come
 * from the teacher's forward over a window of the same bytes (a teacher in
 * qkd), or from a soft-target cache over the teacher's token stream (offline
 * KD, a server or llama.cpp: useCache), which holds each position's top-k
 * and tail in the teacher's own vocabulary.
 */
import { QkdError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { LlamaModel } from '../models/llama.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/tape.js';
import { reshape, selectRows } from '../tensor/ops/shape.js';
import { cachedKd, type SoftTargetCache, type SoftTargets } from '../distill/soft-targets.js';
import { lowerBound, mappedTargets, prefixTargets, tokenBytesOf, tokenEnds, uldLoss, vocabularyMap, type TokenMapping } from '../distill/xtok.js';
import type { MicroBatch } from './recipe.js';

export interface CrossTokenizerSettings {
  method: 'uld' | 'aligned';
  top_k: number;
  mapping: TokenMapping;
}

export interface CrossTokenizerStep {
  /** The distillation term (null: no position of the batch is aligned). */
  kd: Tensor | null;
  /** Aligned positions / student positions. */
  alignedShare: number;
  /** aligned: mean teacher probability carried into the student's vocabulary at aligned positions. */
  mappedMass: number;
}

/** A teacher position paired with a student position: both contexts end at byte `to` (aligned), or the teacher's `to − from` bytes earlier (prefix mapping). */
interface Pair {
  /** Row of the student's [B·T] logits. */
  student: number;
  /** Position in the teacher's token stream whose output is the target. */
  teacher: number;
  /** Live teacher: row of the teacher's [B·Tt] window logits. */
  row: number;
  from: number;
  to: number;
}

export class CrossTokenizerKd {
  /** The training text in the teacher's tokens. */
  readonly teacherTokens: Int32Array;
  /** The teacher's vocabulary (its logits' width; a cache's V). */
  readonly teacherVocab: number;
  private readonly studentEnds: Float64Array;
  private readonly teacherEnds: Float64Array;
  private readonly map: Int32Array | null;
  private readonly Tt: number;
  /** mapping 'prefix': the training text's bytes, the teacher's token bytes, and each teacher token's student token after a prefix. */
  private readonly text: Uint8Array | null = null;
  private readonly teacherBytes: Uint8Array[] = [];
  private readonly nextMemo = new Map<string, number>();
  /** The teacher's targets over its token stream, when they come from a cache (useCache). */
  private cache: SoftTargetCache | null = null;

  /** `teacher`: the model in qkd, or null when the targets will come from a cache (useCache before the first loss). */
  constructor(
    private readonly teacher: LlamaModel | null,
    teacherTokenizer: Tokenizer,
    private readonly studentTokenizer: Tokenizer,
    studentTrain: Int32Array,
    private readonly settings: CrossTokenizerSettings,
    private readonly temperature: number,
  ) {
    this.teacherVocab = teacher?.config.vocab_size ?? teacherTokenizer.vocabSize;
    this.studentEnds = tokenEnds(studentTokenizer, studentTrain);
    this.teacherTokens = teacherTokenizer.encode(studentTokenizer.decode(studentTrain));
    this.teacherEnds = tokenEnds(teacherTokenizer, this.teacherTokens);
    // The teacher's window may be longer than the student's when its tokens are shorter, up to its context.
    this.Tt = teacher?.config.max_position_embeddings ?? 0;
    if (this.teacherTokens.length < 2) throw new QkdError('ARGUMENT', `the training text is ${this.teacherTokens.length} teacher token(s)`, { field: 'data', hint: 'more text' });
    const prefix = settings.method === 'aligned' && settings.mapping === 'prefix';
    this.map = settings.method === 'aligned' && !prefix ? vocabularyMap(teacherTokenizer, studentTokenizer, settings.mapping) : null;
    if (prefix) {
      this.teacherBytes = Array.from({ length: teacherTokenizer.vocabSize }, (_, id) => tokenBytesOf(teacherTokenizer, id));
      const text = new Uint8Array(this.studentEnds[this.studentEnds.length - 1] ?? 0);
      for (let i = 0, at = 0; i < studentTrain.length; i++) {
        const b = tokenBytesOf(studentTokenizer, studentTrain[i]!);
        text.set(b, at);
        at += b.length;
      }
      this.text = text;
    }
  }

  /** Reads the teacher's targets from `cache` (windows over teacherTokens) instead of a forward. */
  useCache(cache: SoftTargetCache): void {
    if (cache.V !== this.teacherVocab) {
      throw new QkdError('CONFIG', `the soft-target cache holds ids of a ${cache.V}-token vocabulary, and the teacher's tokenizer has ${this.teacherVocab}`, { path: cache.path, field: 'vocab', hint: "the teacher's own tokenizer" });
    }
    this.cache = cache;
  }

  /**
   * The cache windows (of N teacher tokens, `count` of them) that the
   * student sequences of T tokens starting at `starts` read, sorted: the
   * teacher positions from the one before the first student boundary to
   * the one at the last.
   */
  teacherWindows(starts: Int32Array, T: number, N: number, count: number): Int32Array {
    const seen = new Uint8Array(count);
    for (const s0 of starts) {
      const firstEnd = this.studentEnds[s0];
      if (firstEnd === undefined) continue;
      const lo = Math.max(0, lowerBound(this.teacherEnds, firstEnd) - 1);
      const hi = Math.min(lowerBound(this.teacherEnds, this.studentEnds[Math.min(s0 + T, this.studentEnds.length) - 1]!), this.teacherEnds.length - 1);
      for (let w = Math.floor(lo / N); w <= Math.floor(hi / N) && w < count; w++) seen[w] = 1;
    }
    const out: number[] = [];
    for (let w = 0; w < count; w++) if (seen[w]) out.push(w);
    return Int32Array.from(out);
  }

  /** The student token that follows `n` bytes of teacher token t (prefix mapping): the byte after them, or the first token of the student's own tokenization of the rest. */
  private nextStudentToken(t: number, n: number): number {
    const b = this.teacherBytes[t]!;
    if (this.studentTokenizer.kind === 'byte') return b[n]!;
    const key = `${t}:${n}`;
    let s = this.nextMemo.get(key);
    if (s === undefined) {
      const ids = this.studentTokenizer.encode(Buffer.from(b.subarray(n)).toString('utf8'));
      this.nextMemo.set(key, (s = ids.length > 0 ? ids[0]! : -1));
    }
    return s;
  }

  /** Teacher ids the map sends somewhere, of the teacher's vocabulary (aligned KD). */
  mappedVocabularyShare(): number {
    if (this.map === null) return NaN;
    let n = 0;
    for (const s of this.map) if (s >= 0) n++;
    return n / this.map.length;
  }

  /** Bytes of the training text as the student's and the teacher's tokens spell them (equal unless a tokenizer changes the text). */
  textBytes(): { student: number; teacher: number } {
    return { student: this.studentEnds[this.studentEnds.length - 1] ?? 0, teacher: this.teacherEnds[this.teacherEnds.length - 1] ?? 0 };
  }

  /**
   * Pairs of a batch with a teacher in qkd: per row, a teacher window from
   * the first teacher token at or after the student's first byte, as long
   * as the longest row needs within the teacher's context (later positions
   * go unaligned). Returns the pairs and the windows' tokens.
   */
  private livePairs(batch: MicroBatch): { pairs: Pair[]; inputs: Int32Array; Tt: number } {
    const { B, T } = batch;
    const tEnds = this.teacherEnds;
    const sEnds = this.studentEnds;
    const first = new Int32Array(B);
    let need = 1;
    for (let b = 0; b < B; b++) {
      const s0 = batch.starts[b]!;
      const startByte = s0 === 0 ? 0 : sEnds[s0 - 1]!;
      first[b] = startByte === 0 ? 0 : lowerBound(tEnds, startByte) + 1;
      need = Math.max(need, lowerBound(tEnds, sEnds[s0 + T - 1]!) - first[b]! + 1);
    }
    const Tt = Math.min(need, this.Tt, this.teacherTokens.length);
    const inputs = new Int32Array(B * Tt);
    const prefix = this.text !== null;
    const pairs: Pair[] = [];
    for (let b = 0; b < B; b++) {
      const s0 = batch.starts[b]!;
      // Near the end of the stream the window starts earlier (more context for the teacher, never less).
      const j0 = Math.min(first[b]!, this.teacherTokens.length - Tt);
      inputs.set(this.teacherTokens.subarray(j0, j0 + Tt), b * Tt);
      // Positions whose contexts end at the same byte: both predict the text from there.
      let j = 0;
      for (let i = 0; i < T; i++) {
        const e = sEnds[s0 + i]!;
        while (j < Tt && tEnds[j0 + j]! < e) j++;
        if (j === Tt) break;
        if (tEnds[j0 + j] === e) pairs.push({ student: b * T + i, teacher: j0 + j, row: b * Tt + j, from: e, to: e });
        // Inside the teacher's next token: from its last boundary in the window (prefix mapping).
        else if (prefix && j > 0) pairs.push({ student: b * T + i, teacher: j0 + j - 1, row: b * Tt + j - 1, from: tEnds[j0 + j - 1]!, to: e });
      }
    }
    return { pairs, inputs, Tt };
  }

  /** Pairs of a batch with the targets in a cache: any teacher position whose window the cache holds (its context: that window's). */
  private cachedPairs(batch: MicroBatch, cache: SoftTargetCache): Pair[] {
    const { B, T } = batch;
    const tEnds = this.teacherEnds;
    const prefix = this.text !== null;
    const held = (p: number): boolean => cache.has(Math.floor(p / cache.seqLen));
    const pairs: Pair[] = [];
    for (let b = 0; b < B; b++) {
      const s0 = batch.starts[b]!;
      for (let i = 0; i < T; i++) {
        const e = this.studentEnds[s0 + i]!;
        const p = lowerBound(tEnds, e);
        if (p === tEnds.length) break;
        if (tEnds[p] === e) {
          if (held(p)) pairs.push({ student: b * T + i, teacher: p, row: -1, from: e, to: e });
        } else if (prefix && p > 0 && held(p - 1)) pairs.push({ student: b * T + i, teacher: p - 1, row: -1, from: tEnds[p - 1]!, to: e });
      }
    }
    return pairs;
  }

  loss(logits: Tensor, batch: MicroBatch): CrossTokenizerStep {
    const { B, T } = batch;
    const Vs = logits.shape[logits.rank - 1]!;
    const Vt = this.teacherVocab;
    const cache = this.cache;
    if (cache === null && this.teacher === null) throw new QkdError('STATE', 'across tokenizers: neither a teacher nor a soft-target cache to read its targets from', { field: 'teacher' });
    const live = cache === null ? this.livePairs(batch) : null;
    const pairs = live !== null ? live.pairs : this.cachedPairs(batch, cache!);
    if (pairs.length === 0) return { kd: null, alignedShare: 0, mappedMass: NaN };
    const teacherLogits = live !== null ? noGrad(() => this.teacher!.forward(live.inputs, B, live.Tt)).data : null;
    let N = pairs.length;
    // Teacher log-probabilities at τ = 1: ULD compares them as published; aligned KD maps them into
    // the student's vocabulary, and cachedKd tempers the mapped buckets as it does cached targets.
    // A cached row holds the top-k only (`known`); every other entry is −∞ and the tail is its mass.
    const logp = new Float32Array(Vt).fill(cache !== null ? -Infinity : 0);
    const windows = new Map<number, SoftTargets>();
    let known: Int32Array | undefined;
    let tail = -Infinity;
    const teacherRow = (n: number): Float32Array => {
      const pair = pairs[n]!;
      if (teacherLogits !== null) {
        const o = pair.row * Vt;
        let m = -Infinity;
        for (let v = 0; v < Vt; v++) m = Math.max(m, teacherLogits[o + v]!);
        let s = 0;
        for (let v = 0; v < Vt; v++) s += Math.exp(teacherLogits[o + v]! - m);
        const lse = m + Math.log(s);
        for (let v = 0; v < Vt; v++) logp[v] = teacherLogits[o + v]! - lse;
        return logp;
      }
      if (known !== undefined) for (const id of known) logp[id] = -Infinity;
      const w = Math.floor(pair.teacher / cache!.seqLen);
      let t = windows.get(w);
      if (t === undefined) windows.set(w, (t = cache!.window(w)));
      const r = pair.teacher - w * cache!.seqLen;
      known = t.ids.subarray(r * t.k, (r + 1) * t.k);
      for (let i = 0; i < t.k; i++) logp[known[i]!] = t.logp[r * t.k + i]!;
      tail = t.tailLogp[r]!;
      return logp;
    };
    const studentRows = (rows: readonly { student: number }[]): Tensor => selectRows(reshape(logits, [B * T, Vs]), Int32Array.from(rows, (p) => p.student));
    if (this.settings.method === 'uld') {
      const sorted = new Float32Array(N * Vt);
      for (let n = 0; n < N; n++) {
        const row = teacherRow(n);
        if (known === undefined) {
          // A typed array sorts numerically without a comparator; reversed, it is decreasing.
          sorted.set(Float32Array.from(row, Math.exp).sort().reverse(), n * Vt);
        } else {
          // The top-k, then the tail spread evenly over the ids outside it (cachedKd's assumption).
          const k = known.length;
          const top = Float32Array.from(known, (id) => Math.exp(row[id]!)).sort().reverse();
          sorted.set(top, n * Vt);
          if (Vt > k) sorted.fill(Math.exp(tail) / (Vt - k), n * Vt + k, (n + 1) * Vt);
        }
      }
      return { kd: uldLoss(studentRows(pairs), sorted, Vt), alignedShare: N / (B * T), mappedMass: NaN };
    }
    const width = Math.min(this.settings.top_k, Vs);
    const targets = { ids: new Int32Array(N * width), logp: new Float32Array(N * width), tailLogp: new Float32Array(N) };
    let mapped = 0;
    if (this.text !== null) {
      // Rows no teacher token continues are dropped.
      const kept: Pair[] = [];
      // Consecutive pairs often share a teacher row (a live window's row, or a cached position).
      let last = -1;
      for (let n = 0; n < N; n++) {
        const p = pairs[n]!;
        const key = live !== null ? p.row : p.teacher;
        if (key !== last) {
          teacherRow(n);
          last = key;
        }
        const n0 = p.to - p.from;
        if (prefixTargets(logp, this.teacherBytes, this.text.subarray(p.from, p.to), (t) => this.nextStudentToken(t, n0), width, Vs, targets, kept.length, known)) {
          mapped += 1 - Math.exp(targets.tailLogp[kept.length]!);
          kept.push(p);
        }
      }
      N = kept.length;
      if (N === 0) return { kd: null, alignedShare: 0, mappedMass: NaN };
      const cut = { ids: targets.ids.subarray(0, N * width), logp: targets.logp.subarray(0, N * width), tailLogp: targets.tailLogp.subarray(0, N) };
      return { kd: cachedKd(studentRows(kept), cut, this.temperature), alignedShare: N / (B * T), mappedMass: mapped / N };
    }
    for (let n = 0; n < N; n++) mapped += mappedTargets(teacherRow(n), this.map!, this.settings.top_k, width, Vs, targets, n, known);
    return { kd: cachedKd(studentRows(pairs), targets, this.temperature), alignedShare: N / (B * T), mappedMass: mapped / N };
  }
}
