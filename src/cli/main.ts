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
import { registerAudit } from './commands/audit.js';
import { registerDemo } from './commands/demo.js';
import { registerDistill } from './commands/distill.js';
import { registerEval } from './commands/eval.js';
import { registerExport } from './commands/export.js';
import { registerGenerate } from './commands/generate.js';
import { registerPrune } from './commands/prune.js';
import { registerQuantize } from './commands/quantize.js';
import { registerSynth } from './commands/synth.js';
import { registerTokenize } from './commands/tokenize.js';
import { registerTrain } from './commands/train.js';

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;

function buildProgram(): Command {
  const program = new Command();
  program
    .name('qkd')
    .description('Distill, quantize and profile small language models in one training run.')
    .version(VERSION)
    .showSuggestionAfterError(true)
    .option('--backend <name>', "kernel backend: 'native' (C++ addon, default when built) or 'reference' (TypeScript)", choice('--backend', ['native', 'reference'] as const))
    .configureOutput({ outputError: (text, write) => write(`qkd: ${text}`) })
    .addHelpText('after', '\nExit codes: 0 done, 1 error, 130 interrupted (Ctrl-C).')
    .hook('preAction', (cmd) => {
      checkNativeEnvironment();
      const backend = cmd.opts().backend as BackendName | undefined;
      if (backend) useBackend(backend);
    });
  registerDemo(program);
  registerTrain(program);
  registerEval(program);
  registerGenerate(program);
  registerDistill(program);
  registerSynth(program);
  registerAudit(program);
  registerQuantize(program);
  registerPrune(program);
  registerExport(program);
  registerTokenize(program);
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

/** Runs the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  exitOnInterrupt();
  quietOnClosedPipe();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    stopAllProgress();
    if (err instanceof CommandInterrupted) {
      process.stderr.write(`qkd: interrupted: ${err.hint}\n`);
      return EXIT_INTERRUPTED;
    }
    if (err instanceof QkdError) {
      process.stderr.write(`qkd: error: ${err.message}\n`);
      return EXIT_ERROR;
    }
    const code = (err as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander already printed its message (help, version, usage errors)
      return (err as { exitCode?: number }).exitCode ?? EXIT_ERROR;
    }
    // Not a user error: a bug in qkd. Keep the stack, it is what a bug report needs.
    process.stderr.write(`qkd: internal error (please report it): ${(err as Error).stack ?? String(err)}\n`);
    return EXIT_ERROR;
  }
}
