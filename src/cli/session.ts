/**
 * What a training-loop command (train, distill) hands the loop: a progress
 * bar, notes on stderr that never collide with the bar, and a graceful
 * Ctrl-C (checkpoint first, then exit 130).
 */
import type { StepProgress } from '../train/trainer.js';
import { cacheFillProgress, stepProgress, type Progress } from './progress.js';
import type { FillProgress } from '../distill/cache-job.js';
import { gracefulInterrupt } from './interrupt.js';

export interface TrainingSession {
  onStep: (p: StepProgress) => void;
  onNote: (note: string) => void;
  shouldStop: () => boolean;
  /** The ranks stop because another rank was asked to (see interrupt.ts stopAgreed). */
  stopAgreed: () => void;
  /** Progress of a soft-target cache a server fills (one bar per cache). */
  onCacheProgress: (what: string, p: FillProgress) => void;
  /** Finishes the bar (before printing results); safe to call more than once. */
  stopProgress: () => void;
  /** Finishes the bar and restores the default Ctrl-C handling. */
  close: () => void;
}

export function trainingSession(label: string): TrainingSession {
  const progress = stepProgress(label);
  const interrupt = gracefulInterrupt('saving a checkpoint…');
  const caches = new Map<string, Progress<FillProgress>>();
  const stopCaches = (): void => {
    for (const bar of caches.values()) bar.stop();
  };
  return {
    onCacheProgress: (what, p) => {
      let bar = caches.get(what);
      if (bar === undefined) caches.set(what, (bar = cacheFillProgress(what)));
      bar.update(p);
      if (p.done === p.total) bar.stop();
    },
    onStep: (p) => progress.update(p),
    onNote: (note) => {
      progress.stop();
      stopCaches();
      process.stderr.write(`qkd: ${note}\n`);
    },
    shouldStop: interrupt.requested,
    stopAgreed: interrupt.stopAgreed,
    stopProgress: () => {
      progress.stop();
      stopCaches();
    },
    close: () => {
      progress.stop();
      stopCaches();
      interrupt.dispose();
    },
  };
}
