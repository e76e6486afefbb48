/**
 * The types of a distillation run's options and result (distill.ts), in
 * their own file so that recipes which chain distillations (mohawk.ts) can
 * name them without importing distill.ts back.
 */
import type { LlamaModel } from '../models/llama.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { ChatCorpus } from '../data/chat.js';
import type { AuditReport } from '../swan/types.js';
import type { FillProgress } from '../distill/cache-job.js';
import type { World } from '../parallel/world.js';
import type { CacheTeacher } from './server-teacher.js';
import type { DistillConfig } from './distill-config.js';
import type { StepProgress, TrainResult } from './trainer.js';

export interface DistillOptions {
  /**
   * Teacher: any model qkd loads (model dir, run dir, llama2.c .bin), a
   * model in memory, a model on an inference server (vLLM or SGLang), or a
   * GGUF run by llama.cpp (train/server-teacher.ts: the last two by offline
   * KD from caches they fill). Several teachers of one tokenizer (an array,
   * mixed by distillation.teachers), or none (null: recipes seqkd and
   * seqkd-qat, which learn from teacher-generated text alone, and qat).
   */
  teacher: string | LlamaModel | CacheTeacher | readonly (string | LlamaModel)[] | null;
  /** The student's tokenizer when it is not the teacher's (distillation.cross_tokenizer; default: student.tokenizer, else student.from's). */
  studentTokenizer?: Tokenizer;
  /**
   * The teacher's tokenizer (CLI --teacher-tokenizer). Default: the teacher
   * dir's tokenizer.json (bytes for an in-memory byte-level teacher), a
   * GGUF's own; a server teacher's is the student's, except across
   * tokenizers, where a server teacher's must be given.
   */
  tokenizer?: Tokenizer;
  /**
   * Training text (the teacher's tokenizer encodes it), or chat
   * conversations, rendered with the teacher tokenizer's chat template: the
   * task loss and logit / feature KD then count the assistant's tokens only.
   */
  text: string | ChatCorpus;
  outDir: string;
  /** The run's settings; when resuming, they must agree with the checkpoint's (see savedDistillConfig). */
  config: DistillConfig;
  resume?: boolean;
  /** Start a new run in a non-empty outDir, removing the old run's files. */
  force?: boolean;
  /** Also write the student as DIR/model-<TYPE>.gguf in this ggml type or llama.cpp file type (default: quantization.format, if set). */
  exportGguf?: string;
  onStep?: (p: StepProgress) => void;
  /** Progress of filling the caches of a teacher on a server or in llama.cpp (what: 'training targets' or 'validation targets'). */
  onCacheProgress?: (what: string, p: FillProgress) => void;
  shouldStop?: () => boolean;
  /** Called when the ranks stop on another rank's request (see TrainOptions.onStopAgreed). */
  onStopAgreed?: () => void;
  /** Reports and warnings (teacher entropy, λ monitor actions). */
  onNote?: (note: string) => void;
  /** Internal: set on the student's run of a chain through a teaching assistant (config.assistant), whose teacher is then the assistant. */
  viaAssistant?: boolean;
  /**
   * The processes the run spans (default one; see TrainOptions.world). Every
   * rank calls distill() with the same options; rank 0 alone reports and
   * writes files (the soft-target cache it builds with the others, the
   * quantized student, reports, the GGUF). The other ranks return when
   * training ends, with the training figures only.
   */
  world?: World;
}

/** The post-distillation audit of recipe sakd (docs/algorithms.md §6): both profiles and the packed student's perplexity. */
export interface SakdReport {
  teacher: AuditReport;
  student: AuditReport;
  fp32_student_val_ppl: number;
  quantized_student: { bits: number; avg_bits: number; bytes: number; val_ppl: number };
  /** SWDL weights per student feature layer at the first and the last step. */
  swdl_weights: { first: number[]; last: number[] } | null;
  /** TDNI: student modules that trained with noise. */
  tdni_modules: string[];
  /** SGR coefficients raised by the feedback monitor (name → multiplier > 1). */
  feedback_coefficients: Record<string, number>;
}

export interface DistillResult extends TrainResult {
  recipe: DistillConfig['recipe'];
  /** Mean teacher soft-target entropy at τ (nats) over the first training batches. */
  teacher_entropy: number;
  /** Packed checkpoint of the student at the deployment width ('' when interrupted: not written). */
  quantized_dir: string;
  quantized_avg_bits: number;
  quantized_bytes: number;
  /** recipe sakd: the post-distillation audit, also written to DIR/sakd-report.json. */
  sakd_report?: SakdReport;
  /** The student's GGUF (quantization.format, or DistillOptions.exportGguf), and its size. */
  gguf?: { path: string; type: string; bytes: number; bits_per_weight: number };
  /** With a teaching assistant (config.assistant): its run directory and result. */
  assistant?: { dir: string; val_loss: number; val_ppl: number; params: number; steps: number };
}
