/** Shared helpers for benchmarks: timing with warm-up, a python3+torch probe, and the synthetic ~156M-parameter model. */
import { spawnSync } from 'node:child_process';
import { Rng, kernels, nativeStatus, withBackend, type Kernels } from '../src/tensor/index.js';
import { llamaConfig, type LlamaConfig } from '../src/models/llama-config.js';

/** The benchmarks' LLaMA shape: width 1024, 16 heads (4 KV), 32k vocabulary; 8 layers is about 156M parameters. */
export function benchLlamaConfig(layers: number): LlamaConfig {
  return llamaConfig({ vocab_size: 32000, hidden_size: 1024, intermediate_size: 2816, num_hidden_layers: layers, num_attention_heads: 16, num_key_value_heads: 4, max_position_embeddings: 2048 });
}

/** Trained-looking weights: Gaussian bulk scaled like 1/√fan_in, a few heavy outlier input columns in every third tensor; norms are ones. */
export function trainedLookingWeights(shape: readonly number[], rng: Rng, index: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const w = new Float32Array(n);
  if (shape.length === 1) return w.fill(1);
  const cols = shape[1]!;
  const scale = 1 / Math.sqrt(cols);
  for (let i = 0; i < n; i++) w[i] = rng.normal() * scale;
  const outlierCols = index % 3 === 0 ? 4 : 0;
  for (let k = 0; k < outlierCols; k++) {
    const c = rng.int(cols);
    for (let r = 0; r < shape[0]!; r++) w[r * cols + c]! *= 12;
  }
  return w;
}

/** Median seconds per call of fn over `repeats` timed runs after `warmup` runs. */
/** The native addon's status; the process exits with a message when the bench needs the addon and it did not load. */
export function requireNative(): ReturnType<typeof nativeStatus> {
  const status = nativeStatus();
  if (!status.loaded) {
    console.error(`native addon not loaded: ${status.reason}`);
    process.exit(1);
  }
  return status;
}

export function timeMedian(fn: () => void, repeats = 5, warmup = 1): number {
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    fn();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/**
 * The first python that can import torch: Debian's /usr/bin/python3 (where
 * the python3-torch package installs) before whatever python3 is on PATH.
 */
export function torchPython(): string | null {
  for (const python of ['/usr/bin/python3', 'python3']) {
    const probe = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
    if (probe.status === 0) return python;
  }
  return null;
}

/** Runs a python snippet when torch is importable; returns its last stdout line parsed as JSON, or null. */
export function runTorch(script: string): Record<string, unknown> | null {
  const python = torchPython();
  if (python === null) return null;
  const r = spawnSync(python, ['-c', script], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) {
    process.stderr.write(`torch reference failed:\n${r.stderr}\n`);
    return null;
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
}

/** A kernel benchmark case: fresh inputs and outputs from the seeded generator, and the call to time. */
export interface KernelBenchCase {
  name: string;
  setup(): { run(k: Kernels): void; outputs: Float32Array[] };
}

/**
 * v0 (reference) against v1 (native) for one case: first the native outputs
 * are checked against the reference on identical fresh inputs (the largest
 * difference relative to each output's largest magnitude, since elementwise
 * relative error means nothing where results cancel to ~0; above 1e-5
 * throws), then each is timed (median of 3 and 7 runs). v1 is null when the
 * addon does not run the case's kernels.
 */
export function referenceAgainstNative(c: KernelBenchCase, rng: Rng, isNative: boolean): { v0_ms: number; v1_ms: number | null; max_rel_diff: number | null } {
  let maxRel: number | null = null;
  if (isNative) {
    const saved = rng.getState();
    const a = c.setup();
    rng.setState(saved);
    const b = c.setup();
    withBackend('reference', () => a.run(kernels()));
    withBackend('native', () => b.run(kernels()));
    let worst = 0;
    a.outputs.forEach((o, k) => {
      let scale = 1e-30;
      for (let i = 0; i < o.length; i++) scale = Math.max(scale, Math.abs(o[i]!));
      for (let i = 0; i < o.length; i++) worst = Math.max(worst, Math.abs(o[i]! - b.outputs[k]![i]!) / scale);
    });
    if (worst > 1e-5) throw new Error(`${c.name}: native disagrees with reference (max relative difference ${worst})`);
    maxRel = worst;
  }
  const s0 = c.setup();
  const v0 = withBackend('reference', () => timeMedian(() => s0.run(kernels()), 3)) * 1000;
  const s1 = c.setup();
  const v1 = isNative ? withBackend('native', () => timeMedian(() => s1.run(kernels()), 7)) * 1000 : null;
  return { v0_ms: v0, v1_ms: v1, max_rel_diff: maxRel };
}
