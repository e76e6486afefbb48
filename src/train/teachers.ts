/**
 * Who teaches a distillation run (train/distill.ts): one teacher's
 * tokenizer, precision and fingerprint; several teachers loaded and mixed
 * (distill/ensemble.ts); and what a run without a teacher (recipe seqkd on
 * text a teacher wrote) or with several cannot do, refused by field before
 * anything runs (docs/synth.md).
 */
import { createHash } from 'node:crypto';
import { QkdError } from '../errors.js';
import { loadModelAny, loadModelTokenizer, peekConfig } from '../models/load-any.js';
import type { LlamaModel } from '../models/llama.js';
import { availableMemory, parameterBytes, type Precision } from '../models/precision.js';
import { Bf16Store } from '../tensor/bf16-store.js';
import { ByteTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { loadTokenizerAt } from '../data/tokenizer-io.js';
import { TeacherEnsemble } from '../distill/ensemble.js';
import { recipeRunsWithoutTeacher, taskWeight, type DistillConfig, type ResolvedDistillConfig } from './distill-config.js';

/** The teacher's tokenizer: the given one (checked against its vocabulary), else the one beside it (bytes for an in-memory byte-level teacher). */
export function teacherTokenizer(path: string | LlamaModel, teacher: LlamaModel, given: Tokenizer | undefined): Tokenizer {
  if (given) {
    if (given.vocabSize !== teacher.config.vocab_size) {
      throw new QkdError('CONFIG', `the tokenizer has ${given.vocabSize} tokens but the teacher's vocab_size is ${teacher.config.vocab_size}`, { field: 'vocab_size', hint: "the teacher's tokenizer; a student with its own tokenizer: studentTokenizer with distillation.cross_tokenizer" });
    }
    return given;
  }
  if (typeof path === 'string') return loadModelTokenizer(teacher, path);
  if (teacher.config.vocab_size === 256) return new ByteTokenizer();
  throw new QkdError('ARGUMENT', `a teacher given in memory with a ${teacher.config.vocab_size}-token vocabulary needs its tokenizer`, { field: 'tokenizer' });
}


/** SHA-256 of a model's config and weights (hex): the teacher's identity for resume and the cache. */
export function teacherFingerprint(model: LlamaModel): string {
  const hash = createHash('sha256').update(JSON.stringify(model.config));
  if (!model.arena.released) {
    const data = model.arena.data;
    return hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest('hex');
  }
  // A frozen bf16 teacher: its stored bits, tensor by tensor.
  for (const e of model.arena.entries) {
    const bits = e.tensor.source instanceof Bf16Store ? e.tensor.source.bitsOf(e.tensor) : undefined;
    if (bits === undefined) throw new QkdError('STATE', `teacher parameter ${e.name} has no stored values to fingerprint`, { field: e.name });
    hash.update(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
  }
  return hash.digest('hex');
}

/** The precision the teacher is loaded in: as configured, or (auto) float32 when it fits, else bf16. */
export function teacherPrecision(path: string, setting: 'auto' | 'float32' | 'bf16'): Precision {
  if (setting !== 'auto') return setting;
  return parameterBytes(peekConfig(path), 'float32') <= availableMemory() ? 'float32' : 'bf16';
}


/** Loads several teachers and mixes them (distillation.teachers); their tokenizers must agree on the text. */
export function loadEnsemble(given: readonly (string | LlamaModel)[], c: DistillConfig, tokenizer: Tokenizer | undefined, probe: string): { members: LlamaModel[]; ensemble: TeacherEnsemble; tokenizer: Tokenizer; id: string } {
  const members = given.map((t) => (typeof t === 'string' ? loadModelAny(t, { precision: teacherPrecision(t, c.distillation.teacher_precision) }) : t));
  const ensemble = new TeacherEnsemble(members, c.distillation.teachers.mix, c.distillation.teachers.weights, c.training.seed);
  const tokenizers = members.map((m, i) => teacherTokenizer(given[i]!, m, tokenizer));
  const reference = tokenizers[0]!.encode(probe);
  tokenizers.forEach((t, i) => {
    const ids = t.encode(probe);
    if (ids.length !== reference.length || ids.some((v, j) => v !== reference[j])) {
      throw new QkdError('CONFIG', `teacher ${i + 1}'s tokenizer encodes the training text differently from teacher 1's; several teachers must share one tokenizer`, { path: typeof given[i] === 'string' ? (given[i] as string) : undefined, field: '--teacher', hint: 'teachers of one tokenizer' });
    }
  });
  const hash = createHash('sha256').update(JSON.stringify({ mix: ensemble.mix, weights: ensemble.weights }));
  for (const m of members) hash.update(teacherFingerprint(m));
  return { members, ensemble, tokenizer: tokenizers[0]!, id: hash.digest('hex') };
}

/** What several teachers cannot do (yet): whatever reads one teacher's hidden states or weights, or offline targets of teachers taking turns. */
export function refuseForEnsemble(c: ResolvedDistillConfig): void {
  const refuse = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `with several teachers, ${what}`, { field, hint });
  };
  const featureKdOn = c.distillation.feature_weight > 0 && (c.distillation.feature_layers === 'all' || c.distillation.feature_layers.length > 0);
  if (featureKdOn) refuse('distillation.feature_layers', 'feature KD is not supported (whose hidden states?)', 'feature_layers: []');
  if (c.distillation.attention_weight > 0) refuse('distillation.attention_weight', 'attention KD is not supported', 'attention_weight: 0');
  if (c.recipe === 'sakd') refuse('recipe', "SAKD scores one teacher's layers", 'recipe kd or kd-qat');
  if (c.distillation.teacher_correction.steps > 0) refuse('distillation.teacher_correction.steps', 'teacher correction is not supported', 'steps: 0');
  if (c.distillation.cross_tokenizer !== null) refuse('distillation.cross_tokenizer', 'distillation across tokenizers is not supported', 'one teacher');
  if (c.distillation.teachers.mix === 'alternate' && c.distillation.soft_target_cache !== null) refuse('distillation.soft_target_cache', 'teachers taking turns (mix alternate) have no one cache of targets', "mix: mean or confidence, or soft_target_cache: null");
}

/** What a run without a teacher (seqkd on teacher-generated text) cannot do. */
export function refuseWithoutTeacher(c: ResolvedDistillConfig): void {
  const refuse = (field: string, what: string, hint: string): never => {
    throw new QkdError('CONFIG', `without a teacher, ${what}`, { field, hint });
  };
  if (!recipeRunsWithoutTeacher(c.recipe)) refuse('--teacher', `recipe ${c.recipe} distills from a teacher`, "--teacher PATH, or recipe seqkd / seqkd-qat on teacher-generated text (qkd synth)");
  if (c.distillation.cross_tokenizer !== null) refuse('distillation.cross_tokenizer', 'there is no teacher tokenizer to cross', 'cross_tokenizer: null');
  if (c.distillation.soft_target_cache !== null) refuse('distillation.soft_target_cache', 'there are no soft targets to cache', 'soft_target_cache: null');
  if (c.distillation.teacher_correction.steps > 0) refuse('distillation.teacher_correction.steps', 'there is no teacher to correct', 'steps: 0');
  if (taskWeight(c) === 0) refuse('distillation.task_weight', 'the task loss on the teacher-generated text is all there is to learn', 'a positive task_weight');
  if (c.student.from === null && c.student.init !== 'random') refuse('student.init', `student init '${c.student.init}' copies a teacher's weights`, '--init random with --student-preset, or --student PATH');
  if (c.student.from === null && c.student.preset === null && c.student.model === null) refuse('student.preset', "the student's shape comes from no teacher", '--student-preset NAME (or student.model), or --student PATH');
}

/** The student's tokenizer without a teacher: the given one, student.tokenizer, student.from's own, else qkd's byte-level one (as qkd train). */
export function teacherlessTokenizer(c: DistillConfig, given: Tokenizer | undefined): Tokenizer {
  if (given !== undefined) return given;
  if (c.student.tokenizer !== null) return loadTokenizerAt(c.student.tokenizer);
  if (c.student.from !== null) return loadModelTokenizer({ config: peekConfig(c.student.from) }, c.student.from);
  return new ByteTokenizer();
}

