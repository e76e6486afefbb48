/**
 * The qkd command line. Only this room knows about flags and terminals;
 * every command is one call of the typed API.
 */
import { Command, InvalidArgumentError } from 'commander';
import { QkdError } from '../errors.js';
import { nativeStatus, useBackend, currentBackend, type BackendName } from '../tensor/backend.js';
import { runDemo } from '../train/demo.js';
import { DEFAULT_CORPUS_NAME } from '../data/corpus.js';
import { VERSION } from '../index.js';

function positiveInt(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer, got '${value}'`);
    return n;
  };
}

function integer(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${flag} must be an integer, got '${value}'`);
    return n;
  };
}

function backendOption(value: string): BackendName {
  if (value !== 'reference' && value !== 'native') throw new InvalidArgumentError(`--backend must be 'reference' or 'native', got '${value}'`);
  return value;
}

function buildProgram(): Command {
  const program = new Command();
  program
    .name('qkd')
    .description('Distill, quantize and profile small language models in one training run.')
    .version(VERSION)
    .option('--backend <name>', "kernel backend: 'native' (C++ addon, default when built) or 'reference' (TypeScript)", backendOption)
    .hook('preAction', (cmd) => {
      const backend = cmd.opts().backend as BackendName | undefined;
      if (backend) useBackend(backend);
    });

  program
    .command('demo')
    .description(`train a tiny model on the embedded corpus (${DEFAULT_CORPUS_NAME}) and show the loss falling`)
    .option('--steps <n>', 'training steps', positiveInt('--steps'), 60)
    .option('--seed <n>', 'random seed', integer('--seed'), 1337)
    .action((opts: { steps: number; seed: number }) => {
      console.log(`qkd demo: tiny LLaMA (byte vocabulary) on ${DEFAULT_CORPUS_NAME}, ${opts.steps} steps, backend ${currentBackend()}`);
      const every = Math.max(1, Math.floor(opts.steps / 10));
      const result = runDemo({ steps: opts.steps, seed: opts.seed }, (p) => {
        if (p.step % every === 0 || p.step === 1 || p.step === p.steps) {
          console.log(`step ${String(p.step).padStart(4)}/${p.steps}  loss ${p.loss.toFixed(4)}  ${Math.round(p.tokensPerSecond)} tok/s`);
        }
      });
      console.log(`validation loss ${result.val_loss_before.toFixed(4)} → ${result.val_loss_after.toFixed(4)} (${result.params} parameters)`);
      console.log(JSON.stringify(result));
    });

  program
    .command('info')
    .description('show the kernel backend and native addon status')
    .action(() => {
      const status = nativeStatus();
      console.log(JSON.stringify({ version: VERSION, backend: currentBackend(), native: status }));
    });
  return program;
}

/** Runs the CLI; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof QkdError) {
      process.stderr.write(`qkd: error: ${err.message}\n`);
      return 1;
    }
    const code = (err as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander already printed its message (help, version, usage errors)
      return (err as { exitCode?: number }).exitCode ?? 1;
    }
    throw err;
  }
}
