/**
 * Ctrl-C. Commands that can stop cleanly (train, distill, generate) ask for
 * a graceful stop: the first Ctrl-C sets a flag the job polls at its next
 * safe point (after a step's checkpoint, after a token); a second one exits
 * at once. Every other command exits at once, after finishing the progress
 * bar so the terminal is left tidy. Either way the exit code is 130, the
 * shell convention for "ended by SIGINT".
 *
 * SIGTERM (what a process manager, a batch scheduler or `kill` sends) is a
 * stop request too: a command with a safe point stops there as on Ctrl-C
 * (checkpoint, resume hint, 130), and a second SIGTERM ends it at once; any
 * other command keeps Node's default and ends at once with 143 (128 + 15).
 */
import { stopAllProgress } from './progress.js';
import { exitOnSigint } from '../tensor/backend.js';
import { currentWorld } from '../parallel/world.js';

export const EXIT_INTERRUPTED = 130;

/** Thrown by a command that stopped early on request, after printing what it did; the CLI exits with 130. */
export class CommandInterrupted extends Error {
  constructor(readonly hint: string) {
    super(hint);
    this.name = 'CommandInterrupted';
  }
}

function exitNow(): void {
  stopAllProgress();
  process.stderr.write('\nqkd: interrupted\n');
  process.exit(EXIT_INTERRUPTED);
}

export const EXIT_TERMINATED = 143;

function terminateNow(): void {
  stopAllProgress();
  process.stderr.write('\nqkd: terminated (SIGTERM)\n');
  process.exit(EXIT_TERMINATED);
}

/**
 * The addon's SIGINT handler (exit 130 at once), where the addon is in use: not on the reference backend
 * (loading the addon there would change its malloc settings), nor when the addon refuses to load (a bad
 * QKD_* variable, which the command then reports when it needs the kernels).
 */
function nativeExitOnSigint(): boolean {
  if (process.env.QKD_BACKEND === 'reference') return false;
  const cursor = process.stderr.isTTY ? '\x1b[?25h' : '';
  try {
    return exitOnSigint(`${cursor}\nqkd: interrupted\n`);
  } catch {
    return false;
  }
}

/** How Ctrl-C ends a command without a safe point: natively (at once), by a JavaScript listener, or not set up. */
let defaultStop: 'native' | 'listener' | 'none' = 'none';

/**
 * From now on, Ctrl-C ends the process at once with 130 (the default for commands without a safe point).
 * It is the addon's signal handler where there is one: a JavaScript listener runs only when the event loop
 * does, so eval, export, quantize or prune, busy in one synchronous pass, ignored Ctrl-C until they were
 * done. The handler shows the cursor again (a progress bar hides it) and says so. Without the addon it is a
 * listener. SIGTERM keeps Node's default there (the process ends at once, 143).
 */
export function exitOnInterrupt(): void {
  if (defaultStop === 'none') {
    const native = nativeExitOnSigint();
    if (native) defaultStop = 'native';
    else {
      process.on('SIGINT', exitNow);
      defaultStop = 'listener';
    }
  }
  // Node's own SIGUSR1 action opens the inspector. For qkd SIGUSR1 is a stop request (what an MPI launcher
  // forwards): one that arrives before a command can stop gracefully is kept for it, not lost to the inspector.
  if (!process.listeners('SIGUSR1').includes(keepEarlyUsr1)) process.on('SIGUSR1', keepEarlyUsr1);
}

/** A SIGUSR1 that came before any graceful stop was set up. */
let earlyUsr1 = false;
function keepEarlyUsr1(): void {
  earlyUsr1 = true;
}

/** A graceful stop request: `requested()` turns true at the first Ctrl-C; the second exits at once. */
export function gracefulInterrupt(notice: string): { requested: () => boolean; stopAgreed: () => void; dispose: () => void } {
  let requested = false;
  const onSigint = (): void => {
    if (requested) return exitNow();
    requested = true;
    stopAllProgress();
    process.stderr.write(`\nqkd: interrupted, ${notice} (Ctrl-C again to quit at once)\n`);
    // The second Ctrl-C must quit also inside a long synchronous step or checkpoint write, where this
    // listener would not run: the addon's handler takes SIGINT from here (dispose hands it back).
    nativeExitOnSigint();
  };
  const onSigterm = (): void => {
    if (requested) return terminateNow();
    requested = true;
    stopAllProgress();
    if (currentWorld().isRoot) process.stderr.write(`\nqkd: SIGTERM, ${notice} (SIGTERM again to quit at once)\n`);
  };
  // The graceful listener takes SIGINT over (Node's listener replaces the addon's handler); dispose sets the default back.
  const hadDefault = defaultStop !== 'none';
  const keptEarly = process.listeners('SIGUSR1').includes(keepEarlyUsr1);
  process.removeListener('SIGINT', exitNow);
  defaultStop = 'none';
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  // SIGUSR1 asks for the same graceful stop, once: it is what an MPI launcher forwards to every rank
  // (Open MPI's mpirun passes SIGUSR1 on; a Ctrl-C to mpirun kills the job instead). See docs/parallel.md.
  const onUsr1 = (): void => {
    if (requested) return;
    requested = true;
    stopAllProgress();
    if (currentWorld().isRoot) process.stderr.write(`\nqkd: SIGUSR1, ${notice}\n`);
  };
  process.on('SIGUSR1', onUsr1);
  process.removeListener('SIGUSR1', keepEarlyUsr1);
  if (earlyUsr1) {
    earlyUsr1 = false;
    onUsr1();
  }
  return {
    requested: () => requested,
    // The ranks agreed to stop on another rank's request before this rank's own SIGUSR1 ran (mpirun forwards
    // the signal to one rank after the other). Only a launcher's SIGUSR1 reaches a running rank, so the job
    // was asked to stop by one: rank 0 says so once, and its own copy of the signal, when it comes, is quiet.
    stopAgreed: () => onUsr1(),
    dispose: () => {
      process.removeListener('SIGINT', onSigint);
      process.removeListener('SIGTERM', onSigterm);
      process.removeListener('SIGUSR1', onUsr1);
      if (hadDefault) exitOnInterrupt();
      if (keptEarly && !process.listeners('SIGUSR1').includes(keepEarlyUsr1)) process.on('SIGUSR1', keepEarlyUsr1);
    },
  };
}
