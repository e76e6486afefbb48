/** `qkd audit`: the data-free sensitivity profile of every weight, with a mixed-precision bit plan. */
import { Option, type Command } from 'commander';
import { auditAndPlan } from '../../swan/plan.js';
import type { AuditReport } from '../../swan/types.js';
import { renderAuditHtml } from '../../report/audit-html.js';
import { writeBytesAtomic } from '../../io/atomic.js';
import { ensureReplaceableFile, ensureWritableFile } from '../../io/output-dir.js';
import { readFileSync, statSync } from 'node:fs';
import { decimal, integer, integerIn, positiveInt } from '../options.js';
import { countProgress } from '../progress.js';

interface AuditFlags {
  json?: string;
  html?: string;
  bits: number;
  probes: number;
  budget: number;
  group: number;
  seed: number;
  products: 'auto' | 'int8' | 'bf16';
  krylovDepth: number;
  krylovDims: number;
  force?: boolean;
  weighting: 'composite' | 'uniform';
  weightPower: number;
}

export function registerAudit(program: Command): void {
  program
    .command('audit')
    .description('data-free sensitivity profile of every weight tensor, with a mixed-precision bit plan')
    .argument('<model>', 'a .safetensors file, a model directory, a qkd run directory, a .gguf file, or a llama2.c .bin')
    .option('--json <out>', "write the full report as JSON ('-' for stdout)")
    .option('--html <out>', 'write a self-contained HTML report')
    .option('--bits <b>', 'bit width of the noise and reconstruction metrics (2 to 8)', integerIn('--bits', 2, 8), 4)
    .option('--probes <k>', 'Gaussian probes for noise amplification', positiveInt('--probes'), 8)
    .option('--budget <bits>', 'average bits per weight of the bit plan shown in the report', decimal('--budget', { min: 0, exclusiveMin: true, max: 16 }), 4.5)
    .option('--group <g>', 'group size of the bit plan (0 = per channel)', integerIn('--group', 0), 128)
    .addOption(new Option('--weighting <kind>', "the plan's damage weight per tensor: composite (S^p) or uniform (error only)").choices(['composite', 'uniform']).default('composite'))
    .option('--weight-power <p>', 'sharpness p of the composite weighting S^p (tuned on one corpus; see README)', decimal('--weight-power', { min: 0, max: 16 }), 4)
    .option('--seed <n>', 'random seed of the sketches and probes', integer('--seed'), 1234)
    .addOption(new Option('--products <kind>', "what the SVD's products run on: int8, bf16, or auto (int8 where the CPU has AVX-512 VNNI)").choices(['auto', 'int8', 'bf16']).default('auto'))
    .option('--krylov-depth <q>', 'depth of the SVD\'s block Krylov pass (1 to 64): more steps of narrower blocks, the same products', integerIn('--krylov-depth', 1, 64), 8)
    .option('--krylov-dims <x>', 'Krylov dimensions per singular value wanted (0.25 to 16): the products scale with it; lower is faster and less accurate (README, "Speed and accuracy of audit")', decimal('--krylov-dims', { min: 0.25, max: 16 }), 0.7)
    .option('--force', 'replace an existing --json/--html file that is not an earlier qkd audit report')
    .action((model: string, o: AuditFlags) => {
      if (o.json !== undefined && o.json !== '-') {
        ensureWritableFile(o.json, '--json');
        ensureReplaceableFile(o.json, '--json', { model, force: o.force === true, ours: isAuditJson, what: 'a qkd audit JSON report' });
      }
      if (o.html !== undefined) {
        ensureWritableFile(o.html, '--html');
        ensureReplaceableFile(o.html, '--html', { model, force: o.force === true, ours: isAuditHtml, what: 'a qkd audit HTML report' });
      }
      const progress = countProgress('audit', 'tensors');
      let planned;
      try {
        planned = auditAndPlan(model, { scheme: { groupSize: o.group, symmetric: false }, budgetBits: o.budget, weighting: o.weighting, weightPower: o.weightPower }, { bits: o.bits, probes: o.probes, seed: o.seed, products: o.products, krylovDepth: o.krylovDepth, krylovDimensions: o.krylovDims, onTensor: (p) => progress.update(p) });
      } finally {
        progress.stop();
      }
      const { report, plan } = planned;
      const json = { ...report, plan: { budget_bits: o.budget, group_size: o.group, weighting: o.weighting, weight_power: o.weighting === 'composite' ? o.weightPower : null, avg_bits: planned.avgBits, bytes: planned.bytes, bits: plan.bits } };
      if (o.json === '-') console.log(JSON.stringify(json, null, 2));
      else if (o.json) writeBytesAtomic(o.json, JSON.stringify(json, null, 2) + '\n');
      if (o.html) writeBytesAtomic(o.html, renderAuditHtml(report, { plan, planSummary: { avgBits: planned.avgBits, bytes: planned.bytes } }));
      if (o.json !== '-') {
        printAuditTable(report, plan.bits);
        console.log(`${report.tensors.length} tensors, ${(report.params / 1e6).toFixed(2)}M params in ${report.seconds.toFixed(2)} s (${(report.params / report.seconds / 1e6).toFixed(1)}M params/s); plan at ${o.budget} bits: ${planned.avgBits.toFixed(3)} avg bits, ${planned.bytes} bytes`);
        console.log(JSON.stringify({ model, params: report.params, seconds: report.seconds, tensors: report.tensors.length, plan_avg_bits: planned.avgBits, plan_bytes: planned.bytes, json: o.json ?? null, html: o.html ?? null }));
      }
    });
}

/** The most sensitive tensors first. */
function printAuditTable(report: AuditReport, bits: Record<string, number>): void {
  const rows = report.tensors.filter((t) => t.composite !== null).sort((a, b) => b.composite! - a.composite!);
  const fmt = (v: number | null, d = 3): string => (v === null ? '—' : v.toFixed(d));
  console.log(['tensor'.padEnd(44), 'kurt'.padStart(8), 'spec'.padStart(6), 'σ/F'.padStart(6), 'noise'.padStart(6), 'err'.padStart(6), 'S'.padStart(6), 'bits'.padStart(5)].join(' '));
  const shown = rows.length > 24 ? [...rows.slice(0, 12), null, ...rows.slice(-8)] : rows;
  for (const t of shown) {
    if (t === null) {
      console.log(`  ... ${rows.length - 20} more ...`);
      continue;
    }
    console.log([t.name.slice(-44).padEnd(44), fmt(t.kurtosis, 2).padStart(8), fmt(t.spectral_concentration).padStart(6), fmt(t.sigma_max_over_fro).padStart(6), fmt(t.noise_amplification).padStart(6), fmt(t.reconstruction_error).padStart(6), fmt(t.composite).padStart(6), String(bits[t.name] ?? '—').padStart(5)].join(' '));
  }
}

/** Reports are rewritten in place; anything else at the path is kept (ensureReplaceableFile). */
const REPORT_MAX_BYTES = 256 << 20;

function isAuditJson(path: string): boolean {
  if (statSync(path).size > REPORT_MAX_BYTES) return false;
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return r !== null && typeof r === 'object' && 'tensors' in r && 'settings' in r && 'model' in r;
  } catch {
    return false;
  }
}

function isAuditHtml(path: string): boolean {
  return statSync(path).size <= REPORT_MAX_BYTES && readFileSync(path, 'utf8').includes('<div id="qkd-error"');
}
