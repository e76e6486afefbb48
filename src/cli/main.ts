/**
 * The qkd command line. Only this room knows about flags and terminals;
 * each command lives in commands/ and is one call of the typed API.
 *
 * Exit codes: 0 done, 1 error (one line on stderr, no stack trace, for
 * every error a user can cause), 130 interrupted (Ctrl-C; what was saved is
 * said on stderr).
 */
import { Command } from 'commander';
import { QkdError } from '../errors.js';
import { useBackend, type BackendName } from '../tensor/backend.js';
import { checkNativeEnvironment } from '../tensor/native/binding.js';
import { VERSION } from '../version.js';
import { choice } from './options.js';
import { stopAllProgress } from './progress.js';
import { CommandInterrupted, EXIT_INTERRUPTED, exitOnInterrupt } from './interrupt.js';
import { detectLaunch } from '../parallel/mpi.js';
import { joinWorld, leaveWorld, type World } from '../parallel/world.js';

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;

/**
 * Every command, in help order, loaded on demand: a run imports only its own
 * command's modules (a `qkd audit` never loads the trainer, the tokenizers'
 * libraries or the Parquet reader), which keeps start-up short. Help and
 * an unknown command load them all.
 */
const COMMANDS: Record<string, () => Promise<(program: Command) => void>> = {
  demo: async () => (await import('./commands/demo.js')).registerDemo,
  train: async () => (await import('./commands/train.js')).registerTrain,
  eval: async () => (await import('./commands/eval.js')).registerEval,
  generate: async () => (await import('./commands/generate.js')).registerGenerate,
  distill: async () => (await import('./commands/distill.js')).registerDistill,
  synth: async () => (await import('./commands/synth.js')).registerSynth,
  audit: async () => (await import('./commands/audit.js')).registerAudit,
  quantize: async () => (await import('./commands/quantize.js')).registerQuantize,
  prune: async () => (await import('./commands/prune.js')).registerPrune,
  export: async () => (await import('./commands/export.js')).registerExport,
  tokenize: async () => (await import('./commands/tokenize.js')).registerTokenize,
};

/** Global options that take a value (their value is not the command's name). */
const GLOBAL_OPTIONS_WITH_VALUE = new Set(['--backend']);

/** The command argv names, or null (help, version, a typo: every command is registered). */
function commandName(argv: readonly string[]): string | null {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (GLOBAL_OPTIONS_WITH_VALUE.has(a)) {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    return a in COMMANDS ? a : null;
  }
  return null;
}

/** The commands that run data-parallel under an MPI launcher (docs/parallel.md); the rest refuse to run N times over. */
const DATA_PARALLEL_COMMANDS = new Set(['train', 'distill']);

async function buildProgram(argv: readonly string[]): Promise<Command> {
  const program = new Command();
  program
    .name('qkd')
    .description('Distill, quantize and profile small language models in one training run.')
    .version(VERSION)
    .showSuggestionAfterError(true)
    .option('--backend <name>', "kernel backend: 'native' (C++ addon, default when built) or 'reference' (TypeScript)", choice('--backend', ['native', 'reference'] as const))
    .configureOutput({ outputError: (text, write) => write(`qkd: ${text}`) })
    .addHelpText('after', '\nExit codes: 0 done, 1 error, 130 interrupted (Ctrl-C).')
    .hook('preAction', (cmd, action) => {
      joinWorldFor(action.name());
      checkNativeEnvironment();
      const backend = cmd.opts().backend as BackendName | undefined;
      if (backend) useBackend(backend);
    });
  const wanted = commandName(argv);
  for (const name of wanted !== null ? [wanted] : Object.keys(COMMANDS)) (await COMMANDS[name]!())(program);
  return program;
}

/**
 * A reader that goes away (`qkd … | head`) ends the command quietly, as for
 * any Unix filter, instead of an unhandled EPIPE with a stack trace.
 */
function quietOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listenerCount('error') > 0) continue;
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
}

let world: World | null = null;

/**
 * Under an MPI launcher (mpirun, srun) a training command joins the job;
 * any other command is refused, since N copies of it would race on the same
 * outputs. Ranks other than 0 print nothing on stdout (rank 0 prints the
 * job's result) and only errors on stderr.
 */
function joinWorldFor(command: string): void {
  const launch = detectLaunch();
  if (launch === null) return;
  if (!DATA_PARALLEL_COMMANDS.has(command)) {
    if (launch.size === 1) return;
    throw new QkdError('ARGUMENT', `qkd ${command} does not run data-parallel, and an MPI launcher started it (${launch.variable} is set)`, { field: launch.variable, hint: `qkd ${command} without mpirun / srun (or QKD_MPI=0); only ${[...DATA_PARALLEL_COMMANDS].join(' and ')} run on several ranks` });
  }
  world = joinWorld();
  if (!world.isRoot) process.stdout.write = (() => true) as typeof process.stdout.write;
}

/** How a message names this process: "qkd" alone, or with its rank in a job. */
function who(): string {
  return world !== null && world.size > 1 ? `qkd[rank ${world.rank}]` : 'qkd';
}

/** Runs the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const code = await runProgram(argv);
  if (world !== null && world.size > 1 && code === EXIT_ERROR) {
    // A rank that fails alone would leave the others waiting in a collective: end the whole job.
    world.abort(EXIT_ERROR);
  }
  leaveWorld();
  return code;
}

async function runProgram(argv: string[]): Promise<number> {
  const program = await buildProgram(argv);
  program.exitOverride();
  exitOnInterrupt();
  quietOnClosedPipe();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    stopAllProgress();
    if (err instanceof CommandInterrupted) {
      if (world === null || world.isRoot) process.stderr.write(`qkd: interrupted: ${err.hint}\n`);
      return EXIT_INTERRUPTED;
    }
    if (err instanceof QkdError) {
      process.stderr.write(`${who()}: error: ${printable(err.message)}\n`);
      return EXIT_ERROR;
    }
    const code = (err as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander already printed its message (help, version, usage errors)
      return (err as { exitCode?: number }).exitCode ?? EXIT_ERROR;
    }
    // Not a user error: a bug in qkd. Keep the stack, it is what a bug report needs.
    process.stderr.write(`${who()}: internal error (please report it): ${(err as Error).stack ?? String(err)}\n`);
    return EXIT_ERROR;
  }
}

/**
 * A message as it may be written to a terminal: control characters other
 * than newline and tab (which a message quoting a binary file's bytes may
 * hold: CR, NUL, escape sequences) are shown as \xNN.
 */
export function printable(message: string): string {
  return message.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
