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
import type { FillProgress } from '../distill/cache-job.js';

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

export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** 1234567 → '1.2M', 45600 → '45.6k', 12 → '12'. */
export function formatCount(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n.toFixed(0);
}

/**
 * Seconds left, from the rate since the first report (not since 0, so a
 * resumed run's ETA is right, and set-up time before the first unit does not
 * count). Infinity until a unit is done after the first report.
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
  let first: { step: number; at: number } | null = null;
  if (process.stderr.isTTY) {
    const bar = terminalBar(label);
    let val = '-';
    return {
      update(p) {
        first ??= { step: p.step, at: performance.now() };
        if (p.valLoss !== undefined) val = p.valLoss.toFixed(4);
        const eta = etaSeconds(first.step, p.step, p.steps, (performance.now() - first.at) / 1000);
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

/** A soft-target cache filled by a server: windows, prompt tokens/s, retries and ETA. */
export function cacheFillProgress(label: string): Progress<FillProgress> {
  let first: { done: number; at: number } | null = null;
  const fields = (p: FillProgress): string[] => {
    first ??= { done: p.done, at: performance.now() };
    const s = (performance.now() - first.at) / 1000;
    const done = p.done - first.done;
    const out = [`ETA ${formatSeconds(etaSeconds(first.done, p.done, p.total, s))}`];
    if (s > 0 && done > 0) out.push(`${formatCount((done * p.windowTokens) / s)} tok/s`);
    if (p.retries > 0) out.push(`${p.retries} retries`);
    return out;
  };
  if (process.stderr.isTTY) {
    const bar = terminalBar(label);
    return { update: (p) => bar.update(p.done, p.total, fields(p)), stop: () => bar.finish() };
  }
  let lastTenth = -1;
  let lastDone = -1;
  return {
    update(p) {
      const tenth = Math.floor((10 * p.done) / Math.max(1, p.total));
      if ((tenth === lastTenth && p.done !== p.total) || p.done === lastDone) return;
      lastTenth = tenth;
      lastDone = p.done;
      console.error([`${label} ${p.done}/${p.total} windows`, ...fields(p)].join(', '));
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
  // Rates count from the first report, so time spent before the work starts (loading, another phase) is not in them.
  let first: { report: CountReport; at: number } | null = null;
  const rates = (p: CountReport) => {
    first ??= { report: p, at: performance.now() };
    const s = (performance.now() - first.at) / 1000;
    const done = p.done - first.report.done;
    const fields = s > 0 && done > 0 ? [`${(done / s).toFixed(1)} ${unit}/s`] : [];
    if (s > 0 && p.params > first.report.params) fields.push(`${formatCount((p.params - first.report.params) / s)} params/s`);
    return { s, fields, eta: etaSeconds(first.report.done, p.done, p.total, s) };
  };
  if (process.stderr.isTTY) {
    const bar = terminalBar(label);
    return {
      update(p) {
        const { fields, eta } = rates(p);
        bar.update(p.done, p.total, [`ETA ${formatSeconds(eta)}`, ...fields]);
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
      const { fields, eta } = rates(p);
      console.error([`${label} ${p.done}/${p.total} ${unit}`, ...fields, `ETA ${formatSeconds(eta)}`].join(', '));
    },
    stop() {},
  };
}
