/**
 * Distillation across tokenizers (docs/cross-tokenizer.md): teacher and
 * student cut the same text into different tokens, so their next-token
 * distributions are compared where both sequences have a token boundary at
 * the same byte of the text, and over vocabularies that differ.
 *
 * - Alignment: every token's end, in bytes of the decoded text; a student
 *   position (its context ends at byte e) is aligned with the teacher
 *   position whose context ends at the same byte. Both then predict the
 *   text that starts at e.
 * - ULD (universal logit distillation): the Wasserstein-1 distance between
 *   the two distributions with their tokens forgotten, which in closed form
 *   is Σ_r |a_r − b_r| over the probabilities sorted in decreasing order,
 *   the shorter vector padded with zeros.
 * - Aligned KD: the teacher's top-k tokens mapped into the student's
 *   vocabulary by their text, then KL over those buckets and the rest
 *   (cachedKd). 'identity' keeps a teacher token only when the student has
 *   a token of exactly its bytes; 'first-token' gives its probability to
 *   the first token of the student's own tokenization of its text (the
 *   student's next token when the teacher's is emitted), summing the
 *   teacher tokens that share it.
 */
import { QkdError } from '../errors.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { Tensor } from '../tensor/tensor.js';
import { record } from '../tensor/tape.js';
import { TopK } from './soft-targets.js';

/** The bytes of one token as decoding writes them (BPE and Hugging Face tokenizers know them; otherwise the UTF-8 of its decoded text). */
export function tokenBytesOf(tokenizer: Tokenizer, id: number): Uint8Array {
  if (tokenizer.kind === 'byte') return Uint8Array.of(id);
  const withBytes = tokenizer as Tokenizer & { tokenBytes?: (id: number) => Uint8Array };
  return withBytes.tokenBytes ? withBytes.tokenBytes(id) : new Uint8Array(Buffer.from(tokenizer.decode([id]), 'utf8'));
}

/** End of every token of `ids` in bytes of the concatenated token bytes (ends[i] = bytes of tokens 0..i). */
export function tokenEnds(tokenizer: Tokenizer, ids: Int32Array): Float64Array {
  const length = new Map<number, number>();
  const ends = new Float64Array(ids.length);
  let at = 0;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    let n = length.get(id);
    if (n === undefined) length.set(id, (n = tokenBytesOf(tokenizer, id).length));
    at += n;
    ends[i] = at;
  }
  return ends;
}

/** First index i with a[i] ≥ x (a sorted ascending; a.length when none). */
export function lowerBound(a: Float64Array, x: number, from = 0): number {
  let lo = from;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The closed-form Wasserstein-1 distance of ULD, mean over rows: student
 * logits [N, Vs] (softmax at τ = 1) against teacher probabilities already
 * sorted in decreasing order, [N, K] (K: the teacher's vocabulary, or any
 * prefix of it). Gradient: at sorted rank r the student probability gets
 * sign(a_r − b_r), then through the softmax.
 */
export function uldLoss(studentLogits: Tensor, teacherSorted: Float32Array, K: number): Tensor {
  const Vs = studentLogits.shape[studentLogits.rank - 1] ?? 0;
  const N = Vs > 0 ? studentLogits.size / Vs : 0;
  if (N === 0 || !Number.isInteger(N) || teacherSorted.length !== N * K || K < 1) {
    throw new QkdError('SHAPE', `uldLoss: student logits of ${studentLogits.size} values and ${teacherSorted.length} sorted teacher probabilities do not make rows of ${Vs} and ${K}`, { hint: '[N, Vs] logits and N × K teacher probabilities' });
  }
  const z = studentLogits.data;
  const probs = new Float64Array(N * Vs);
  const order = new Int32Array(N * Vs);
  let total = 0;
  const L = Math.max(Vs, K);
  for (let r = 0; r < N; r++) {
    const o = r * Vs;
    let m = -Infinity;
    for (let j = 0; j < Vs; j++) m = Math.max(m, z[o + j]!);
    let s = 0;
    for (let j = 0; j < Vs; j++) s += probs[o + j] = Math.exp(z[o + j]! - m);
    for (let j = 0; j < Vs; j++) probs[o + j]! /= s;
    const idx = Array.from({ length: Vs }, (_, j) => j).sort((a, b) => probs[o + b]! - probs[o + a]!);
    order.set(idx, o);
    let d = 0;
    for (let i = 0; i < L; i++) d += Math.abs((i < Vs ? probs[o + idx[i]!]! : 0) - (i < K ? teacherSorted[r * K + i]! : 0));
    total += d;
  }
  const out = new Tensor([]);
  out.data[0] = total / N;
  return record(out, 'uldLoss', [studentLogits], (dy) => {
    const dz = studentLogits.ensureGrad();
    const g = dy[0]! / N;
    const sign = new Float64Array(Vs);
    for (let r = 0; r < N; r++) {
      const o = r * Vs;
      let dot = 0;
      for (let i = 0; i < Vs; i++) {
        const j = order[o + i]!;
        const diff = probs[o + j]! - (i < K ? teacherSorted[r * K + i]! : 0);
        sign[j] = diff > 0 ? 1 : diff < 0 ? -1 : 0;
        dot += probs[o + j]! * sign[j]!;
      }
      for (let j = 0; j < Vs; j++) dz[o + j]! += g * probs[o + j]! * (sign[j]! - dot);
    }
  });
}

/**
 * How teacher tokens reach the student's vocabulary in aligned KD:
 * identity and first-token at aligned positions, prefix also inside the
 * teacher's next token (prefixTargets).
 */
export type TokenMapping = 'identity' | 'first-token' | 'prefix';

/**
 * The student id each teacher id's probability goes to (−1: none), for
 * aligned KD. Computed once per tokenizer pair.
 */
export function vocabularyMap(teacher: Tokenizer, student: Tokenizer, mapping: TokenMapping): Int32Array {
  const map = new Int32Array(teacher.vocabSize).fill(-1);
  const studentByBytes = new Map<string, number>();
  for (let id = 0; id < student.vocabSize; id++) {
    const key = Buffer.from(tokenBytesOf(student, id)).toString('latin1');
    if (key.length > 0 && !studentByBytes.has(key)) studentByBytes.set(key, id);
  }
  for (let id = 0; id < teacher.vocabSize; id++) {
    const bytes = tokenBytesOf(teacher, id);
    if (bytes.length === 0) continue;
    const same = studentByBytes.get(Buffer.from(bytes).toString('latin1'));
    if (same !== undefined) map[id] = same;
    else if (mapping === 'first-token') {
      // The student's own first token of this text: for byte-level students, the first byte.
      const ids = student.kind === 'byte' ? Int32Array.of(bytes[0]!) : student.encode(Buffer.from(bytes).toString('utf8'));
      if (ids.length > 0 && ids[0]! >= 0 && ids[0]! < student.vocabSize) map[id] = ids[0]!;
    }
  }
  return map;
}

/**
 * The teacher's next-token distribution at one aligned position carried
 * into the student's vocabulary: its top-k tokens (by probability) mapped
 * by `map`, the probabilities of teacher tokens sharing a student id
 * summed; the mass of unmapped tokens and of those outside the top k goes
 * to the tail. Writes the row as cachedKd reads it (k' ≤ k ids, padded to
 * `width`) and returns the mapped mass. `known`: the teacher ids the row
 * holds, by decreasing probability (a cached row: its top-k, every other
 * entry −∞); default every id.
 */
export function mappedTargets(teacherLogp: Float32Array, map: Int32Array, k: number, width: number, Vs: number, out: { ids: Int32Array; logp: Float32Array; tailLogp: Float32Array }, row: number, known?: ArrayLike<number>): number {
  const top = known !== undefined ? Array.from(known).slice(0, k) : new TopK(Math.min(k, teacherLogp.length)).select(teacherLogp);
  const mass = new Map<number, number>();
  for (const t of top) {
    const s = map[t]!;
    if (s >= 0) mass.set(s, (mass.get(s) ?? 0) + Math.exp(teacherLogp[t]!));
  }
  let mapped = 0;
  let i = 0;
  for (const [s, p] of mass) {
    out.ids[row * width + i] = s;
    out.logp[row * width + i] = Math.log(p);
    mapped += p;
    i++;
  }
  // Pads: ids of the student vocabulary not used in this row, each with the share of the rest a
  // token gets when the rest is spread evenly over the Vs − k' tokens outside the row (as cachedKd
  // assumes at τ ≠ 1), so padding does not change the targets.
  if (width > Vs) throw new QkdError('ARGUMENT', `mappedTargets: width ${width} exceeds the student's vocabulary of ${Vs}`, { field: 'top_k' });
  const rest = Math.max(0, 1 - mapped);
  const outside = Vs - mass.size;
  const pads = width - mass.size;
  for (let pad = 0; i < width; pad++) {
    if (mass.has(pad)) continue;
    out.ids[row * width + i] = pad;
    out.logp[row * width + i] = Math.log(rest / outside);
    i++;
  }
  out.tailLogp[row] = Math.log((rest * (outside - pads)) / outside);
  return mapped;
}

/**
 * Aligned KD inside a teacher token (mapping 'prefix'): the student's
 * context ends `prefix.length` bytes after the teacher's last boundary,
 * with those bytes. The teacher's distribution at that boundary, kept to
 * the tokens whose bytes start with the prefix and go on past it, and
 * renormalised, is its distribution of how the text goes on; each such
 * token sends its probability to the student token that follows the
 * prefix (`next(t)`: for a byte-level student, the byte after the prefix).
 * At an aligned position (empty prefix) this is first-token mapping over
 * the whole vocabulary. Writes the `width` most probable student ids and
 * the rest as the tail (as mappedTargets); returns false when no teacher
 * token continues the prefix (then the row is not written). `known`: the
 * teacher ids the row holds (a cached row's top-k; the mass outside them is
 * unknown, so the renormalisation is over the known continuations);
 * default every id.
 */
export function prefixTargets(teacherLogp: Float32Array, teacherBytes: readonly Uint8Array[], prefix: Uint8Array, next: (t: number) => number, width: number, Vs: number, out: { ids: Int32Array; logp: Float32Array; tailLogp: Float32Array }, row: number, known?: ArrayLike<number>): boolean {
  const mass = new Float64Array(Vs);
  let z = 0;
  const n = prefix.length;
  const count = known !== undefined ? known.length : teacherLogp.length;
  for (let i0 = 0; i0 < count; i0++) {
    const t = known !== undefined ? known[i0]! : i0;
    // Ids past the tokenizer's (a model's padded vocabulary) have no text.
    const b = teacherBytes[t];
    if (b === undefined || b.length <= n) continue;
    let match = true;
    for (let i = 0; i < n && match; i++) match = b[i] === prefix[i];
    if (!match) continue;
    const s = next(t);
    if (s < 0 || s >= Vs) continue;
    const p = Math.exp(teacherLogp[t]!);
    mass[s]! += p;
    z += p;
  }
  if (!(z > 1e-12)) return false;
  const order = new TopK(width).select(mass);
  let kept = 0;
  for (let i = 0; i < width; i++) {
    const s = order[i]!;
    out.ids[row * width + i] = s;
    out.logp[row * width + i] = Math.log(mass[s]! / z);
    kept += mass[s]! / z;
  }
  out.tailLogp[row] = Math.log(Math.max(0, 1 - kept));
  return true;
}
