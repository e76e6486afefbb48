/** `qkd generate`: sample text from a model, printed token by token. */
import type { Command } from 'commander';
import { setImmediate as tick } from 'node:timers/promises';
import { loadModelAny, loadModelTokenizer } from '../../models/load-any.js';
import { generateStream } from '../../models/generate.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import { decimal, integer, integerIn, positiveInt } from '../options.js';
import { CommandInterrupted, gracefulInterrupt } from '../interrupt.js';

interface GenerateFlags {
  model: string;
  tokenizer?: string;
  prompt: string;
  steps: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  ids?: boolean;
  ignoreEos?: boolean;
}

/**
 * Turns ids into text as they come. A token can end inside a multi-byte
 * character; such a tail is held back until the next token completes it.
 */
class TextStream {
  private pending: number[] = [];

  constructor(private readonly tokenizer: Tokenizer) {}

  push(id: number): string {
    this.pending.push(id);
    const text = this.tokenizer.decode(this.pending);
    if (text.endsWith('\uFFFD') && this.pending.length < 4) return '';
    this.pending = [];
    return text;
  }

  flush(): string {
    const text = this.pending.length > 0 ? this.tokenizer.decode(this.pending) : '';
    this.pending = [];
    return text;
  }
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('sample text from a model; tokens are printed as they come (Ctrl-C stops and keeps them)')
    .requiredOption('--model <path>', 'model directory, qkd run directory, or llama2.c .bin')
    .option('--tokenizer <path>', 'tokenizer.json, or a llama2.c tokenizer.bin (default: tokenizer.json beside --model)')
    .option('--prompt <text>', 'text to continue', '')
    .option('--steps <n>', 'at most this many new tokens (fewer when the end-of-sequence token comes)', positiveInt('--steps'), 128)
    .option('--temperature <t>', '0 = greedy', decimal('--temperature', { min: 0 }), 1)
    .option('--top-p <p>', 'nucleus sampling mass', decimal('--top-p', { min: 0, exclusiveMin: true, max: 1 }), 0.9)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)', integerIn('--top-k', 0), 0)
    .option('--seed <n>', 'random seed', integer('--seed'), 0)
    .option('--ids', 'print the generated token ids, separated by spaces, instead of text')
    .option('--ignore-eos', 'keep going past the end-of-sequence token')
    .action(async (o: GenerateFlags) => {
      const model = loadModelAny(o.model);
      const tokenizer = loadModelTokenizer(model, o.model, o.tokenizer);
      let prompt = tokenizer.encode(o.prompt, { bos: true });
      // A byte-level tokenizer has no BOS: start from a newline when the prompt is empty.
      if (prompt.length === 0) prompt = tokenizer.encode('\n');
      const interrupt = gracefulInterrupt('stopping');
      const text = new TextStream(tokenizer);
      let count = 0;
      try {
        if (!o.ids) process.stdout.write(o.prompt);
        const stream = generateStream(model, prompt, { steps: o.steps, temperature: o.temperature, topP: o.topP, topK: o.topK, seed: o.seed, eosId: o.ignoreEos ? null : tokenizer.eosId });
        for (const id of stream) {
          process.stdout.write(o.ids ? `${count > 0 ? ' ' : ''}${id}` : text.push(id));
          count++;
          await tick(); // lets Ctrl-C (and a closed pipe: the CLI then ends quietly) through between tokens
          if (interrupt.requested()) break;
        }
        process.stdout.write((o.ids ? '' : text.flush()) + '\n');
        if (interrupt.requested()) throw new CommandInterrupted(`stopped after ${count} tokens`);
      } finally {
        interrupt.dispose();
      }
    });
}
