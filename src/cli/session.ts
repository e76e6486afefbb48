/**
 * What a training-loop command (train, distill) hands the loop: a progress
 * bar, notes on stderr that never collide with the bar, and a graceful
 * Ctrl-C (checkpoint first, then exit 130).
 */
import type { StepProgress } from '../train/trainer.js';
import { stepProgress } from './progress.js';
import { gracefulInterrupt } from './interrupt.js';

export interface TrainingSession {
  onStep: (p: StepProgress) => void;
  onNote: (note: string) => void;
  shouldStop: () => boolean;
  /** Finishes the bar (before printing results); safe to call more than once. */
  stopProgress: () => void;
  /** Finishes the bar and restores the default Ctrl-C handling. */
  close: () => void;
}

export function trainingSession(label: string): TrainingSession {
  const progress = stepProgress(label);
  const interrupt = gracefulInterrupt('saving a checkpoint…');
  return {
    onStep: (p) => progress.update(p),
    onNote: (note) => {
      progress.stop();
      process.stderr.write(`qkd: ${note}\n`);
    },
    shouldStop: interrupt.requested,
    stopProgress: () => progress.stop(),
    close: () => {
      progress.stop();
      interrupt.dispose();
    },
  };
}
