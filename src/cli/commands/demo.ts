/** `qkd demo` and `qkd info`: the first run on a fresh machine, and what backend it uses. */
import type { Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { DEMO_CONFIG, cachedDemoTeacher } from '../../train/demo.js';
import { runDeployDemo } from '../../train/deploy-demo.js';
import { DEFAULT_CORPUS_NAME, loadDefaultCorpus } from '../../data/corpus.js';
import { currentBackend, nativeStatus } from '../../tensor/backend.js';
import { VERSION } from '../../version.js';
import { integer, positiveInt } from '../options.js';

/** Where `qkd demo` caches its teachers: $QKD_CACHE, else $XDG_CACHE_HOME/qkd, else ~/.cache/qkd (empty values count as unset). */
export function qkdCacheDirectory(): string {
  return process.env.QKD_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'qkd');
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(`train a small teacher on the embedded corpus (${DEFAULT_CORPUS_NAME}; cached), distil it into a half-depth student in FP32 and by KD+QAT on llama.cpp's Q4_0 grid, and compare the 4-bit GGUFs (in llama.cpp too when node-llama-cpp is installed)`)
    .option('--steps <n>', 'teacher training steps', positiveInt('--steps'), 1500)
    .option('--student-steps <n>', 'distillation steps of each student', positiveInt('--student-steps'), 400)
    .option('--seed <n>', 'random seed', integer('--seed'), 1337)
    .option('--retrain', 'train the teacher even when a cached one exists')
    .option('--no-deploy', 'stop after training the teacher (skip the students and the GGUFs)')
    .action(async (o: { steps: number; studentSteps: number; seed: number; deploy: boolean; retrain?: boolean }) => {
      const c = DEMO_CONFIG;
      console.log(`qkd demo: a LLaMA-style teacher (byte vocabulary, ${c.num_hidden_layers} layers, width ${c.hidden_size}) on ${DEFAULT_CORPUS_NAME}, ${o.steps} steps, backend ${currentBackend()}`);
      const every = Math.max(1, Math.floor(o.steps / 10));
      const teacher = cachedDemoTeacher({ steps: o.steps, seed: o.seed, refresh: o.retrain, cacheDir: qkdCacheDirectory() }, (p) => {
        if (p.step % every === 0 || p.step === 1 || p.step === p.steps) {
          console.log(`step ${String(p.step).padStart(4)}/${p.steps}  loss ${p.loss.toFixed(4)}  ${Math.round(p.tokensPerSecond)} tok/s`);
        }
      });
      const { result } = teacher;
      if (teacher.note !== undefined) process.stderr.write(`qkd: ${teacher.note}\n`);
      if (teacher.cached) console.log(`reusing the teacher trained earlier with these settings (${teacher.dir}; --retrain to train it again)`);
      console.log(`validation loss ${result.val_loss_before.toFixed(4)} → ${result.val_loss_after.toFixed(4)} (${result.params} parameters)`);
      if (!o.deploy) {
        console.log(JSON.stringify({ ...result, teacher_dir: teacher.dir, teacher_cached: teacher.cached }));
        return;
      }
      console.log(`\ndistilling into a ${Math.max(1, Math.floor(c.num_hidden_layers! / 2))}-layer student, ${o.studentSteps} steps each: in FP32 (then PTQ to Q4_0) and by KD+QAT on the Q4_0 grid…`);
      const d = await runDeployDemo(teacher.dir, teacher.model.config, loadDefaultCorpus(), { studentSteps: o.studentSteps, seed: o.seed });
      console.log(`files in ${d.dir}; scored on 32K characters of held-out text`);
      console.log('model                 file bytes  bits/weight  ppl (qkd)  KL to teacher  ppl (llama.cpp)');
      for (const r of d.rows) {
        console.log(`${r.method.padEnd(21)} ${String(r.file_bytes ?? '—').padStart(10)}  ${r.bits_per_weight.toFixed(3).padStart(11)}  ${r.ppl.toFixed(4).padStart(9)}  ${r.kld.toFixed(5).padStart(13)}  ${(r.ppl_llamacpp?.toFixed(4) ?? '—').padStart(15)}`);
      }
      if (d.llamacpp_note) console.log(d.llamacpp_note);
      console.log(JSON.stringify({ ...result, teacher_dir: teacher.dir, teacher_cached: teacher.cached, deploy: d }));
    });

  program
    .command('info')
    .description('show the kernel backend and native addon status')
    .action(() => {
      console.log(JSON.stringify({ version: VERSION, backend: currentBackend(), native: nativeStatus() }));
    });
}
