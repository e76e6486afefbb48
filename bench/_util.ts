/** Shared helpers for benchmarks: timing with warm-up, and a python3+torch probe. */
import { spawnSync } from 'node:child_process';

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
