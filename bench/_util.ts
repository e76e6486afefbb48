/** Shared helpers for benchmarks: timing with warm-up, a python3+torch probe, and the synthetic ~156M-parameter model. */
import { spawnSync } from 'node:child_process';
import { Rng } from '../src/tensor/index.js';
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
