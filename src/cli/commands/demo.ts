/** `qkd demo` and `qkd info`: the first run on a fresh machine, and what backend it uses. */
import type { Command } from 'commander';
import { runDemo } from '../../train/demo.js';
import { DEFAULT_CORPUS_NAME } from '../../data/corpus.js';
import { currentBackend, nativeStatus } from '../../tensor/backend.js';
import { VERSION } from '../../index.js';
import { integer, positiveInt } from '../options.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(`train a tiny model on the embedded corpus (${DEFAULT_CORPUS_NAME}) and show the loss falling`)
    .option('--steps <n>', 'training steps', positiveInt('--steps'), 60)
    .option('--seed <n>', 'random seed', integer('--seed'), 1337)
    .action((o: { steps: number; seed: number }) => {
      console.log(`qkd demo: tiny LLaMA (byte vocabulary) on ${DEFAULT_CORPUS_NAME}, ${o.steps} steps, backend ${currentBackend()}`);
      const every = Math.max(1, Math.floor(o.steps / 10));
      const result = runDemo({ steps: o.steps, seed: o.seed }, (p) => {
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
      console.log(JSON.stringify({ version: VERSION, backend: currentBackend(), native: nativeStatus() }));
    });
}
