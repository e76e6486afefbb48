/** `qkd tokenize`: what a tokenizer does to a text. */
import type { Command } from 'commander';
import { QkdError } from '../../errors.js';
import { readUtf8Text } from '../../io/text-file.js';
import { loadTokenizerAt } from '../../data/tokenizer-io.js';
import { HfTokenizer } from '../../data/tokenizer-hf.js';

interface TokenizeFlags {
  tokenizer: string;
  text?: string;
  file?: string;
  ids?: boolean;
  json?: boolean;
  special: boolean;
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description("show how a tokenizer splits a text: each token's id and text, or just the ids")
    .requiredOption('--tokenizer <path>', 'a tokenizer.json, a model directory, a llama2.c tokenizer.bin or a .gguf')
    .option('--text <string>', 'the text to tokenize')
    .option('--file <path>', 'a UTF-8 text file to tokenize')
    .option('--ids', 'print only the ids, separated by spaces')
    .option('--json', 'print one JSON object: {"count", "ids", "tokens"}')
    .option('--no-special', "the text's tokens only, without the BOS/EOS the model's tokenizer adds")
    .action((o: TokenizeFlags) => {
      if ((o.text === undefined) === (o.file === undefined)) throw new QkdError('ARGUMENT', 'give the text with --text or --file (one of them)', { field: '--text', hint: "--text 'Hello world' or --file notes.txt" });
      if (o.ids && o.json) throw new QkdError('ARGUMENT', '--ids and --json are two output formats; choose one', { field: '--ids' });
      let text = o.text;
      if (o.file !== undefined) {
        // Strict UTF-8: Latin-1 bytes became U+FFFD before, and their ids were printed as if they were the text's.
        text = readUtf8Text(o.file, { field: '--file', what: 'the text' });
      }
      const tokenizer = loadTokenizerAt(o.tokenizer);
      const ids = tokenizer instanceof HfTokenizer && o.special ? tokenizer.encodeForModel(text!) : tokenizer.encode(text!);
      if (o.ids) {
        console.log(Array.from(ids).join(' '));
        return;
      }
      // Each token on its own: a token that is part of a multi-byte character shows as U+FFFD.
      const pieces = Array.from(ids, (id) => (tokenizer instanceof HfTokenizer ? tokenizer.tokenString(id) ?? '' : tokenizer.decode([id])));
      if (o.json) {
        console.log(JSON.stringify({ count: ids.length, ids: Array.from(ids), tokens: pieces }));
        return;
      }
      console.log(`${ids.length} tokens (${tokenizer.kind} tokenizer, ${tokenizer.vocabSize} in the vocabulary)`);
      ids.forEach((id, i) => console.log(`${String(id).padStart(7)}  ${JSON.stringify(pieces[i])}`));
    });
}
