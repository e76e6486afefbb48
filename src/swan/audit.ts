/**
 * `qkd audit` as one API call: open any model file qkd reads, stream its
 * tensors through the profiler, and return the report (docs/algorithms.md §1).
 */
import { openTensorSource } from '../io/tensor-source.js';
import { profileModel, type ProfileOptions } from './profile.js';
import type { AuditReport } from './types.js';

/** Profiles every tensor of the model at `path` (safetensors, HF dir, qkd run dir, GGUF, llama2.c). */
export function auditModel(path: string, options: ProfileOptions = {}): AuditReport {
  const source = openTensorSource(path);
  try {
    return profileModel(source, options);
  } finally {
    source.close();
  }
}
