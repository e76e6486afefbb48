/** `qkd demo` and `qkd info`: the first run on a fresh machine, and what backend it uses. */
import type { Command } from 'commander';
import { trainDemoModel } from '../../train/demo.js';
import { runDeployDemo } from '../../train/deploy-demo.js';
import { DEFAULT_CORPUS_NAME, loadDefaultCorpus } from '../../data/corpus.js';
import { currentBackend, nativeStatus } from '../../tensor/backend.js';
import { VERSION } from '../../index.js';
import { integer, positiveInt } from '../options.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(`train a tiny model on the embedded corpus (${DEFAULT_CORPUS_NAME}), then make it a 4-bit GGUF by PTQ and by KD+QAT and compare them (in llama.cpp too when node-llama-cpp is installed)`)
    .option('--steps <n>', 'training steps', positiveInt('--steps'), 60)
    .option('--seed <n>', 'random seed', integer('--seed'), 1337)
    .option('--no-deploy', 'stop after training (skip the 4-bit GGUF part)')
    .action(async (o: { steps: number; seed: number; deploy: boolean }) => {
      console.log(`qkd demo: tiny LLaMA (byte vocabulary) on ${DEFAULT_CORPUS_NAME}, ${o.steps} steps, backend ${currentBackend()}`);
      const every = Math.max(1, Math.floor(o.steps / 10));
      const { result, model } = trainDemoModel({ steps: o.steps, seed: o.seed }, (p) => {
        if (p.step % every === 0 || p.step === 1 || p.step === p.steps) {
          console.log(`step ${String(p.step).padStart(4)}/${p.steps}  loss ${p.loss.toFixed(4)}  ${Math.round(p.tokensPerSecond)} tok/s`);
        }
      });
      console.log(`validation loss ${result.val_loss_before.toFixed(4)} → ${result.val_loss_after.toFixed(4)} (${result.params} parameters)`);
      if (!o.deploy) {
        console.log(JSON.stringify(result));
        return;
      }
      console.log(`\ndeploying to llama.cpp: PTQ vs a ${o.steps}-step KD+QAT fine-tune on the Q4_0 grid (held-out text)…`);
      const d = await runDeployDemo(model, loadDefaultCorpus(), { qatSteps: o.steps, seed: o.seed });
      console.log(`files in ${d.dir}`);
      console.log('method        file bytes  bits/weight  ppl (qkd)  KL to FP32  ppl (llama.cpp)');
      for (const r of d.rows) {
        console.log(`${r.method.padEnd(13)} ${String(r.file_bytes ?? '—').padStart(10)}  ${r.bits_per_weight.toFixed(3).padStart(11)}  ${r.ppl.toFixed(4).padStart(9)}  ${r.kld.toFixed(5).padStart(10)}  ${(r.ppl_llamacpp?.toFixed(4) ?? '—').padStart(15)}`);
      }
      if (d.llamacpp_note) console.log(d.llamacpp_note);
      console.log(JSON.stringify({ ...result, deploy: d }));
    });

  program
    .command('info')
    .description('show the kernel backend and native addon status')
    .action(() => {
      console.log(JSON.stringify({ version: VERSION, backend: currentBackend(), native: nativeStatus() }));
    });
}
