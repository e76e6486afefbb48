/**
 * Process memory of training with DBWA vs an all-bf16 baseline vs plain
 * float32, on a model big enough (default ≈ 26M parameters) that the
 * training state, not the Node runtime, dominates the peak RSS. Each row is
 * `qkd train` in its own child process (so each peak RSS is its own) for a
 * few steps at batch 1 × 64 tokens on the embedded corpus:
 *
 *   fp32   recipe standard: float32 weights, gradients, AdamW m and v
 *   bf16   recipe sat, mechanisms off, DBWA with every tensor at 16 bits
 *   dbwa   recipe sat, mechanisms off, DBWA tiers 16 / 12 / 8
 *
 * Also measured: the runtime alone (a Node process that loads qkd), so the
 * table shows peak RSS above the runtime. Figures are ratios within one run.
 * Usage: npm run bench -- dbwa-memory [hidden=512] [layers=8] [steps=3].
 * Last stdout line: JSON.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const hidden = Number(process.argv[2] ?? 512);
const layers = Number(process.argv[3] ?? 8);
const steps = Number(process.argv[4] ?? 3);
const dir = mkdtempSync(join(tmpdir(), 'qkd-bench-dbwa-'));
const off = 'kurtosis: {enabled: false}, spectral: {enabled: false}, noise: {enabled: false}';
const variants: [string, string][] = [
  ['fp32', 'recipe: standard'],
  ['bf16', `recipe: sat\nsat: {${off}, dbwa: {enabled: true, uniform_tier: 16}}`],
  ['dbwa', `recipe: sat\nsat: {${off}, dbwa: {enabled: true}}`],
];

const runtime = spawnSync(process.execPath, ['-e', "await import('./dist/src/index.js'); console.log(process.resourceUsage().maxRSS * 1024)"], { encoding: 'utf8' });
if (runtime.status !== 0) throw new Error(runtime.stderr);
const runtimeRss = Number(runtime.stdout.trim());

interface Row {
  name: string;
  params: number;
  peak_rss_bytes: number;
  above_runtime_bytes: number;
  state_bytes: number;
  state_resident_bytes: number;
  tokens_per_s: number;
}
const rows: Row[] = [];
for (const [name, recipe] of variants) {
  const yaml = join(dir, `${name}.yaml`);
  writeFileSync(yaml, `model: {hidden_size: ${hidden}, intermediate_size: ${Math.round((hidden * 8) / 3 / 32) * 32}, num_hidden_layers: ${layers}, num_attention_heads: 8}\nbatch_size: 1\nseq_len: 64\nlr: 0.001\nsteps: ${steps}\neval_every: ${steps}\neval_batches: 1\ncheckpoint_every: ${steps}\nwarmup_steps: 1\n${recipe}\n`);
  const r = spawnSync(process.execPath, ['bin/qkd.js', 'train', '--config', yaml, '--out', join(dir, name)], { encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, CI: 'true' } });
  if (r.status !== 0) throw new Error(`${name}: ${r.stderr}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { params?: number; peak_rss_bytes: number; state_bytes?: number; state_resident_bytes?: number; tokens_per_s: number };
  const params = j.params ?? 0;
  rows.push({
    name,
    params,
    peak_rss_bytes: j.peak_rss_bytes,
    above_runtime_bytes: j.peak_rss_bytes - runtimeRss,
    state_bytes: j.state_bytes ?? 16 * params,
    state_resident_bytes: j.state_resident_bytes ?? 16 * params,
    tokens_per_s: j.tokens_per_s,
  });
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
console.log(`model: hidden ${hidden}, ${layers} layers, ${(rows[0]!.params / 1e6).toFixed(1)}M parameters; runtime alone ${mib(runtimeRss)}`);
console.log('row    peak RSS   above runtime   accounted state   resident state   tokens/s');
for (const r of rows) {
  console.log(`${r.name.padEnd(6)} ${mib(r.peak_rss_bytes).padStart(8)}   ${mib(r.above_runtime_bytes).padStart(13)}   ${mib(r.state_bytes).padStart(15)}   ${mib(r.state_resident_bytes).padStart(14)}   ${r.tokens_per_s.toFixed(0).padStart(8)}`);
}
const by = (n: string) => rows.find((r) => r.name === n)!;
const ratios = {
  dbwa_vs_bf16_above_runtime: by('dbwa').above_runtime_bytes / by('bf16').above_runtime_bytes,
  dbwa_vs_fp32_above_runtime: by('dbwa').above_runtime_bytes / by('fp32').above_runtime_bytes,
  bf16_vs_fp32_above_runtime: by('bf16').above_runtime_bytes / by('fp32').above_runtime_bytes,
  dbwa_vs_bf16_accounted: by('dbwa').state_bytes / by('bf16').state_bytes,
};
console.log(`peak RSS above runtime: dbwa/bf16 ${ratios.dbwa_vs_bf16_above_runtime.toFixed(3)}, dbwa/fp32 ${ratios.dbwa_vs_fp32_above_runtime.toFixed(3)}, bf16/fp32 ${ratios.bf16_vs_fp32_above_runtime.toFixed(3)}; accounted dbwa/bf16 ${ratios.dbwa_vs_bf16_accounted.toFixed(3)}`);
console.log(JSON.stringify({ runtime_rss_bytes: runtimeRss, rows, ratios }));
