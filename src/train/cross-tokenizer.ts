/**
 * The teacher side of distillation across tokenizers (docs/cross-tokenizer.md):
 * the training text in the teacher's tokens, and for each student batch the
 * teacher's window over the same bytes, its forward, and the loss at the
 * positions where both tokenizations end a token at the same byte
 * (distill/xtok.ts).
 */
import { QkdError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { LlamaModel } from '../models/llama.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/tape.js';
import { reshape, selectRows } from '../tensor/ops/shape.js';
import { cachedKd } from '../distill/soft-targets.js';
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

export class CrossTokenizerKd {
  /** The training text in the teacher's tokens. */
  readonly teacherTokens: Int32Array;
  private readonly studentEnds: Float64Array;
  private readonly teacherEnds: Float64Array;
  private readonly map: Int32Array | null;
  private readonly Tt: number;
  /** mapping 'prefix': the training text's bytes, the teacher's token bytes, and each teacher token's student token after a prefix. */
  private readonly text: Uint8Array | null = null;
  private readonly teacherBytes: Uint8Array[] = [];
  private readonly nextMemo = new Map<string, number>();

  constructor(
    private readonly teacher: LlamaModel,
    teacherTokenizer: Tokenizer,
    private readonly studentTokenizer: Tokenizer,
    studentTrain: Int32Array,
    private readonly settings: CrossTokenizerSettings,
    private readonly temperature: number,
  ) {
    this.studentEnds = tokenEnds(studentTokenizer, studentTrain);
    this.teacherTokens = teacherTokenizer.encode(studentTokenizer.decode(studentTrain));
    this.teacherEnds = tokenEnds(teacherTokenizer, this.teacherTokens);
    // The teacher's window may be longer than the student's when its tokens are shorter, up to its context.
    this.Tt = teacher.config.max_position_embeddings;
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

  loss(logits: Tensor, batch: MicroBatch): CrossTokenizerStep {
    const { B, T } = batch;
    const Vs = logits.shape[logits.rank - 1]!;
    const Vt = this.teacher.config.vocab_size;
    const tEnds = this.teacherEnds;
    const sEnds = this.studentEnds;
    // Per row: the first teacher token that starts at or after the student's first byte, and the
    // teacher tokens up to the student's last boundary. The window is as long as the longest row
    // needs, within the teacher's context (then the later positions go unaligned).
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
    const pairs: { student: number; teacher: number; from: number; to: number }[] = [];
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
        if (tEnds[j0 + j] === e) pairs.push({ student: b * T + i, teacher: b * Tt + j, from: e, to: e });
        // Inside the teacher's next token: from its last boundary in the window (prefix mapping).
        else if (prefix && j > 0) pairs.push({ student: b * T + i, teacher: b * Tt + j - 1, from: tEnds[j0 + j - 1]!, to: e });
      }
    }
    if (pairs.length === 0) return { kd: null, alignedShare: 0, mappedMass: NaN };
    const teacherLogits = noGrad(() => this.teacher.forward(inputs, B, Tt)).data;
    let N = pairs.length;
    // Teacher log-probabilities at τ = 1: ULD compares them as published; aligned KD maps them into
    // the student's vocabulary, and cachedKd tempers the mapped buckets as it does cached targets.
    const logp = new Float32Array(Vt);
    const teacherRow = (n: number): Float32Array => {
      const o = pairs[n]!.teacher * Vt;
      let m = -Infinity;
      for (let v = 0; v < Vt; v++) m = Math.max(m, teacherLogits[o + v]!);
      let s = 0;
      for (let v = 0; v < Vt; v++) s += Math.exp(teacherLogits[o + v]! - m);
      const lse = m + Math.log(s);
      for (let v = 0; v < Vt; v++) logp[v] = teacherLogits[o + v]! - lse;
      return logp;
    };
    const studentRows = (rows: readonly { student: number }[]): Tensor => selectRows(reshape(logits, [B * T, Vs]), Int32Array.from(rows, (p) => p.student));
    if (this.settings.method === 'uld') {
      const sorted = new Float32Array(N * Vt);
      for (let n = 0; n < N; n++) {
        const row = teacherRow(n);
        // A typed array sorts numerically without a comparator; reversed, it is decreasing.
        const p = Float32Array.from(row, Math.exp).sort().reverse();
        sorted.set(p, n * Vt);
      }
      return { kd: uldLoss(studentRows(pairs), sorted, Vt), alignedShare: N / (B * T), mappedMass: NaN };
    }
    const width = Math.min(this.settings.top_k, Vs);
    const targets = { ids: new Int32Array(N * width), logp: new Float32Array(N * width), tailLogp: new Float32Array(N) };
    let mapped = 0;
    if (prefix) {
      // Rows no teacher token continues are dropped.
      const kept: typeof pairs = [];
      let lastRow = -1;
      for (let n = 0; n < N; n++) {
        const p = pairs[n]!;
        if (p.teacher !== lastRow) {
          teacherRow(n);
          lastRow = p.teacher;
        }
        const n0 = p.to - p.from;
        if (prefixTargets(logp, this.teacherBytes, this.text!.subarray(p.from, p.to), (t) => this.nextStudentToken(t, n0), width, Vs, targets, kept.length)) {
          mapped += 1 - Math.exp(targets.tailLogp[kept.length]!);
          kept.push(p);
        }
      }
      N = kept.length;
      if (N === 0) return { kd: null, alignedShare: 0, mappedMass: NaN };
      const cut = { ids: targets.ids.subarray(0, N * width), logp: targets.logp.subarray(0, N * width), tailLogp: targets.tailLogp.subarray(0, N) };
      return { kd: cachedKd(studentRows(kept), cut, this.temperature), alignedShare: N / (B * T), mappedMass: mapped / N };
    }
    for (let n = 0; n < N; n++) mapped += mappedTargets(teacherRow(n), this.map!, this.settings.top_k, width, Vs, targets, n);
    return { kd: cachedKd(studentRows(pairs), targets, this.temperature), alignedShare: N / (B * T), mappedMass: mapped / N };
  }
}
