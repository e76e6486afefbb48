/**
 * What DBWA costs in training speed: the `small` preset trained for N steps
 * (default 150) on the embedded corpus with plain float32 training and with
 * DBWA alone (SAT's penalties and noise off, one re-profile at step 1), in
 * one process, alternating twice. Prints tokens/s and the DBWA / float32
 * ratio of the better run of each. Usage: npm run bench -- dbwa-speed [steps].
 * Last stdout line: JSON.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { train } from '../src/train/trainer.js';
import { PRESETS, parseTrainConfig } from '../src/train/config.js';
import { loadDefaultCorpus } from '../src/data/corpus.js';
import { currentBackend } from '../src/tensor/index.js';

const steps = Number(process.argv[2] ?? 150);
const text = loadDefaultCorpus();
const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-dbwa-speed-'));
const base = { ...PRESETS.small, steps, eval_every: steps, eval_batches: 1, checkpoint_every: steps };
const configs = {
  fp32: parseTrainConfig(base),
  dbwa: parseTrainConfig({ ...base, recipe: 'sat', sat: { reprofile_every: steps + 1, kurtosis: { enabled: false }, spectral: { enabled: false }, noise: { enabled: false }, dbwa: { enabled: true } } }),
};
const best: Record<string, number> = { fp32: 0, dbwa: 0 };
for (let round = 0; round < 2; round++) {
  for (const [name, config] of Object.entries(configs)) {
    const r = await train({ text, outDir: join(dir, `${name}-${round}`), config, force: true }); // scratch runs
    best[name] = Math.max(best[name]!, r.tokens_per_s);
    console.log(`${name} (round ${round + 1}): ${Math.round(r.tokens_per_s)} tokens/s, val_loss ${r.val_loss.toFixed(4)}`);
  }
}
const ratio = best.dbwa! / best.fp32!;
console.log(`backend ${currentBackend()}: DBWA ${Math.round(best.dbwa!)} tokens/s vs float32 ${Math.round(best.fp32!)} → ${ratio.toFixed(3)}x`);
console.log(JSON.stringify({ name: 'dbwa-speed', backend: currentBackend(), steps, tokens_per_s: best, dbwa_vs_fp32: ratio }));
