/** `qkd quantize`: a packed checkpoint at uniform bits, or a data-free mixed-precision plan under a budget. */
import { prepareCorpus } from '../corpus.js';
import type { Command } from 'commander';
import { QkdError } from '../../errors.js';
import { quantizeModelFile } from '../../compress/quantize.js';
import { PLAN_BITS, type PlanBits } from '../../quant/scheme.js';
import { choice, decimal, integer, integerIn, numberChoice, positiveInt } from '../options.js';
import { countProgress } from '../progress.js';
import { explicitly } from '../explicit.js';

/** The width when neither --bits nor --budget is given (stated in --help and README). */
const DEFAULT_BITS: PlanBits = 4;

interface QuantizeFlags {
  out: string;
  bits?: PlanBits;
  budget?: number;
  group: number;
  symmetric?: boolean;
  method: 'rtn' | 'gptq';
  plan?: string;
  calibration: string;
  calibrationBatches: number;
  seed?: number;
  force?: boolean;
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('quantize a model to a packed checkpoint: uniform bits, or a data-free mixed-precision plan under a size budget')
    .argument('<model>', 'a model directory, a qkd run directory, or a llama2.c .bin')
    .requiredOption('--out <dir>', 'output directory (packed model.safetensors, config.json, tokenizer.json, quantization.json); must be empty unless --force')
    .option('--bits <b>', `one width for every weight (${PLAN_BITS.join(', ')}); default ${DEFAULT_BITS} when --budget is not given`, numberChoice('--bits', PLAN_BITS))
    .option('--budget <bits>', 'average bits per weight, scales included: mixed precision from the sensitivity profile', decimal('--budget', { min: 0, exclusiveMin: true, max: 16 }))
    .option('--group <g>', 'input columns per group (0 = per output channel)', integerIn('--group', 0), 128)
    .option('--symmetric', 'symmetric quantization (no zero points)')
    .option('--method <m>', "'rtn' or 'gptq' (calibrated on --calibration text)", choice('--method', ['rtn', 'gptq'] as const), 'rtn')
    .option('--plan <file.json>', 'per-tensor widths (name → bits) overriding the computed plan')
    .option('--calibration <path>', "GPTQ calibration text: file, directory or 'default'", 'default')
    .option('--calibration-batches <n>', 'GPTQ calibration batches of 4 sequences', positiveInt('--calibration-batches'), 16)
    .option('--seed <n>', "seed of the sensitivity profile (--budget; default 1234, as qkd audit) and of GPTQ's calibration batches (default 0)", integer('--seed'))
    .option('--force', 'write into a non-empty --out, replacing the files qkd writes there')
    .action(async (model: string, o: QuantizeFlags, cmd: Command) => {
      const given = explicitly(cmd);
      for (const [key, flag] of [['calibration', '--calibration'], ['calibrationBatches', '--calibration-batches']] as const) {
        if (o.method !== 'gptq' && given.has(key)) throw new QkdError('ARGUMENT', `${flag} calibrates GPTQ, and --method ${o.method} uses no calibration`, { field: flag, hint: '--method gptq, or no calibration flags' });
      }
      if (o.method === 'gptq') await prepareCorpus(o.calibration);
      if (o.bits !== undefined && o.budget !== undefined) throw new QkdError('ARGUMENT', 'give either --bits (one width) or --budget (average bits, mixed precision), not both', { field: '--bits' });
      const bits = o.budget === undefined ? (o.bits ?? DEFAULT_BITS) : undefined;
      const profile = countProgress('profile', 'tensors');
      const quant = countProgress(o.method, 'tensors');
      let result;
      try {
        result = quantizeModelFile(model, {
          out: o.out, bits, budgetBits: o.budget, groupSize: o.group, symmetric: o.symmetric ?? false, method: o.method, force: o.force,
          planFile: o.plan, calibration: o.calibration, calibrationBatches: o.calibrationBatches, seed: o.seed,
          onProfile: (p) => profile.update(p),
          onQuantize: (p) => {
            profile.stop();
            quant.update(p);
          },
        });
      } finally {
        profile.stop();
        quant.stop();
      }
      const histogram: Record<string, number> = {};
      for (const b of Object.values(result.plan.bits)) histogram[b] = (histogram[b] ?? 0) + 1;
      const how = o.budget !== undefined ? `plan under ${o.budget} bits` : `${bits}-bit${o.bits === undefined ? ' (default)' : ''}`;
      console.log(`${result.method}, ${how}: ${Object.keys(result.plan.bits).length} weights (${Object.entries(histogram).map(([b, n]) => `${n}×${b}-bit`).join(', ')}), ${result.avgBits.toFixed(3)} avg bits, ${result.bytes} bytes -> ${result.out}`);
      console.log(JSON.stringify({ out: result.out, method: result.method, avg_bits: result.avgBits, bytes: result.bytes, params: result.params, bits_histogram: histogram }));
    });
}
