/** `qkd prune`: Minitron-style structured pruning guided by activations on calibration text. */
import type { Command } from 'commander';
import { QkdError } from '../../errors.js';
import { prepareCorpus } from '../corpus.js';
import { pruneModelFile } from '../../compress/prune.js';
import type { PruneShape } from '../../distill/minitron.js';
import { choice, positiveInt } from '../options.js';

interface PruneFlags {
  model: string;
  out: string;
  targetParams?: number;
  hidden?: number;
  ffn?: number;
  heads?: number;
  kvHeads?: number;
  layers?: number;
  calibration: string;
  samples: number;
  seqLen: number;
  aggregation: 'l2-mean' | 'mean-mean' | 'l2-l2' | 'mean-l2';
  depth: 'block-influence' | 'ppl';
  force?: boolean;
}

export function registerPrune(program: Command): void {
  program
    .command('prune')
    .description('prune a model along width and depth by importance measured on calibration text (Minitron), keeping its family')
    .requiredOption('--model <path>', 'the model to prune: a model directory, run directory, safetensors, GGUF or llama2.c file')
    .requiredOption('--out <dir>', 'output model directory (config.json, model.safetensors, tokenizer, prune.json); must be empty unless --force')
    .option('--target-params <n>', 'a parameter budget: the widest shape of the same depth within it', positiveInt('--target-params'))
    .option('--hidden <n>', 'hidden size (embedding channels kept)', positiveInt('--hidden'))
    .option('--ffn <n>', 'MLP neurons kept per layer', positiveInt('--ffn'))
    .option('--heads <n>', 'query heads kept per layer', positiveInt('--heads'))
    .option('--kv-heads <n>', 'key/value heads kept per layer', positiveInt('--kv-heads'))
    .option('--layers <n>', 'layers kept', positiveInt('--layers'))
    .option('--calibration <path>', "calibration text: file, directory or 'default'", 'default')
    .option('--samples <n>', 'calibration sequences', positiveInt('--samples'), 32)
    .option('--seq-len <n>', 'tokens per calibration sequence', positiveInt('--seq-len'), 128)
    .option('--aggregation <how>', 'batch-sequence aggregation of importance: l2-mean (published best), mean-mean, l2-l2, mean-l2', choice('--aggregation', ['l2-mean', 'mean-mean', 'l2-l2', 'mean-l2'] as const), 'l2-mean')
    .option('--depth <how>', 'which layers go: block-influence (lowest 1 − cos(in, out)) or ppl (the contiguous block whose removal costs least)', choice('--depth', ['block-influence', 'ppl'] as const), 'block-influence')
    .option('--force', 'write into a non-empty --out')
    .action(async (o: PruneFlags) => {
      await prepareCorpus(o.calibration);
      const given: PruneShape = {
        ...(o.hidden !== undefined ? { hidden_size: o.hidden } : {}),
        ...(o.ffn !== undefined ? { intermediate_size: o.ffn } : {}),
        ...(o.heads !== undefined ? { num_attention_heads: o.heads } : {}),
        ...(o.kvHeads !== undefined ? { num_key_value_heads: o.kvHeads } : {}),
        ...(o.layers !== undefined ? { num_hidden_layers: o.layers } : {}),
      };
      const [batch, sequence] = o.aggregation.split('-') as ['l2' | 'mean', 'l2' | 'mean'];
      const r = withShapeFlags(o.model, () => pruneModelFile(o.model, {
        out: o.out,
        ...(o.targetParams !== undefined ? { targetParams: o.targetParams } : {}),
        ...(Object.keys(given).length > 0 ? { shape: given } : {}),
        calibration: o.calibration,
        samples: o.samples,
        seqLen: o.seqLen,
        aggregation: { batch, sequence },
        depth: o.depth,
        force: o.force,
      }));
      const s = r.shape;
      console.log(`pruned ${r.sourceParams} → ${r.params} parameters: hidden ${s.hidden_size}, MLP ${s.intermediate_size}, heads ${s.num_attention_heads}/${s.num_key_value_heads} kv, layers ${s.num_hidden_layers} (kept ${r.report.layers.join(', ')}) -> ${r.out}`);
      console.log(JSON.stringify({ out: r.out, params: r.params, source_params: r.sourceParams, shape: s, layers: r.report.layers }));
    });
}

/** The shape fields as the flags that set them, so an error about one names the flag the user gave. */
const SHAPE_FLAGS: Record<string, string> = { hidden_size: '--hidden', intermediate_size: '--ffn', num_attention_heads: '--heads', num_key_value_heads: '--kv-heads', num_hidden_layers: '--layers' };

function withShapeFlags<T>(model: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof QkdError && err.field !== undefined && SHAPE_FLAGS[err.field] !== undefined) {
      throw new QkdError(err.code, err.bare, { path: err.path ?? model, field: `${SHAPE_FLAGS[err.field]} (${err.field})`, hint: err.hint });
    }
    throw err;
  }
}
