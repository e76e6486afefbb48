/**
 * Progress for long commands: on a terminal a bar (cli-progress) with rate
 * and ETA that fits the terminal's width; otherwise plain lines (CI logs).
 *
 * One bar is active at a time: starting a bar finishes the previous one, and
 * every bar is finished (final state drawn, newline written, cursor shown)
 * before a command prints its result or an error, so no output line is
 * overwritten by a bar.
 */
import cliProgress from 'cli-progress';
import type { StepProgress } from '../train/trainer.js';

interface ActiveBar {
  finish(): void;
}

let active: ActiveBar | null = null;

/** Finishes the bar on screen, if any (before printing results, errors or an interrupt notice). */
export function stopAllProgress(): void {
  const bar = active;
  active = null;
  bar?.finish();
}

function terminalWidth(): number {
  return process.stderr.columns || 80;
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '--';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * Seconds left, from the rate since this bar started (not since 0, so a
 * resumed run's ETA is right). Infinity until one unit is done.
 */
export function etaSeconds(startValue: number, value: number, total: number, elapsed: number): number {
  const done = value - startValue;
  return done > 0 ? (elapsed / done) * (total - value) : Infinity;
}

/**
 * `label [bar] value/total | fields` fitted to `width` columns (default: the
 * terminal's, less one so the cursor never wraps): the bar shrinks, then
 * fields drop from the end.
 */
export function fitLine(label: string, value: number, total: number, fields: string[], width = terminalWidth() - 1): string {
  const counter = `${value}/${total}`;
  const shown = [...fields];
  for (;;) {
    const text = [`${label} `, ` ${counter}`, ...shown.map((f) => ` | ${f}`)];
    const textLength = text.reduce((n, t) => n + t.length, 0);
    const barWidth = Math.min(30, width - textLength);
    if (barWidth >= 8 || shown.length === 0) {
      const w = Math.max(0, barWidth);
      const filled = total > 0 ? Math.round((Math.min(value, total) / total) * w) : 0;
      const bar = w > 0 ? '█'.repeat(filled) + '░'.repeat(w - filled) : '';
      return (text[0] + bar + text.slice(1).join('')).slice(0, width);
    }
    shown.pop();
  }
}

interface Bar {
  update(value: number, total: number, fields: string[]): void;
  finish(): void;
}

/** A cli-progress bar whose whole line comes from fitLine. */
function terminalBar(label: string): Bar {
  let line = '';
  const bar = new cliProgress.SingleBar({ format: () => line, stream: process.stderr, hideCursor: true, linewrap: false, gracefulExit: false, fps: 5 });
  let started = false;
  const self: Bar & ActiveBar = {
    update(value, total, fields) {
      line = fitLine(label, value, total, fields);
      if (!started) {
        if (active !== self) stopAllProgress();
        active = self;
        bar.start(total, value);
        started = true;
      } else bar.update(value);
    },
    finish() {
      if (started) bar.stop();
      started = false;
      if (active === self) active = null;
    },
  };
  return self;
}

export interface Progress<T> {
  update(p: T): void;
  stop(): void;
}

/** Training steps: loss, validation loss, tokens/s and ETA. */
export function stepProgress(label = 'train'): Progress<StepProgress> {
  const started = performance.now();
  let startStep: number | null = null;
  if (process.stderr.isTTY) {
    const bar = terminalBar(label);
    let val = '-';
    return {
      update(p) {
        startStep ??= p.step - 1;
        if (p.valLoss !== undefined) val = p.valLoss.toFixed(4);
        const eta = etaSeconds(startStep, p.step, p.steps, (performance.now() - started) / 1000);
        bar.update(p.step, p.steps, [`loss ${p.loss.toFixed(4)}`, `ETA ${formatSeconds(eta)}`, `val ${val}`, `${Math.round(p.tokensPerSecond)} tok/s`]);
      },
      stop: () => bar.finish(),
    };
  }
  let every = 0;
  return {
    update(p) {
      every ||= Math.max(1, Math.floor(p.steps / 20));
      if (p.step % every === 0 || p.valLoss !== undefined || p.step === p.steps) {
        console.error(`${label} step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)}${p.valLoss !== undefined ? ` val_loss ${p.valLoss.toFixed(4)}` : ''} lr ${p.lr.toExponential(2)} ${Math.round(p.tokensPerSecond)} tok/s`);
      }
    },
    stop() {},
  };
}

export interface CountReport {
  done: number;
  total: number;
  /** Parameters processed so far (0 when not known). */
  params: number;
}

/** Counting work (tensors): rate, parameters/s when known, ETA. */
export function countProgress(label: string, unit: string): Progress<CountReport> {
  const started = performance.now();
  const rates = (p: CountReport) => {
    const s = Math.max(1e-9, (performance.now() - started) / 1000);
    const fields = [`${(p.done / s).toFixed(1)} ${unit}/s`];
    if (p.params > 0) fields.push(`${(p.params / s / 1e6).toFixed(1)}M params/s`);
    return { s, fields };
  };
  if (process.stderr.isTTY) {
    const bar = terminalBar(label);
    return {
      update(p) {
        const { s, fields } = rates(p);
        bar.update(p.done, p.total, [`ETA ${formatSeconds(etaSeconds(0, p.done, p.total, s))}`, ...fields]);
      },
      stop: () => bar.finish(),
    };
  }
  let lastTenth = -1;
  return {
    update(p) {
      const tenth = Math.floor((10 * p.done) / Math.max(1, p.total));
      if (tenth === lastTenth && p.done !== p.total) return;
      lastTenth = tenth;
      const { s, fields } = rates(p);
      console.error(`${label} ${p.done}/${p.total} ${unit}, ${fields.join(', ')}, ETA ${formatSeconds(etaSeconds(0, p.done, p.total, s))}`);
    },
    stop() {},
  };
}
