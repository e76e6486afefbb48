/**
 * Chat data: JSON Lines rows `{"messages": [{"role", "content"}, ...]}`
 * rendered with the tokenizer's own chat template (Jinja, through the
 * official `@huggingface/jinja`), tokenized, and marked so that only the
 * assistant's tokens count in the task loss and in distillation
 * (docs/chat-data.md).
 *
 * Which characters of a rendering are the assistant's: each conversation is
 * rendered once; then, in order, every message's content (trimmed, as most
 * templates trim it) is found in the rendering, searching from where the
 * previous message ended, or for an assistant turn from the end of the
 * template's own generation prompt when that prompt is a prefix of the
 * rendering. An assistant span is its content plus the special token that
 * closes the turn (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, `</s>`, after
 * optional white space), so the student learns to stop. Everything else
 * (system and user turns, role headers, BOS) is context only.
 */
import { Template } from '@huggingface/jinja';
import { QkdError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export type Conversation = ChatMessage[];

/**
 * A corpus of conversations (JSON Lines chat rows), in file order. Prompt /
 * completion rows `{"prompt", "completion"}` (what `qkd synth` writes from a
 * completions endpoint) are conversations of two messages with the roles
 * `prompt` and `completion`: they render as the prompt's text followed by the
 * completion's, with no template, and only the completion counts.
 */
export interface ChatCorpus {
  kind: 'chat';
  conversations: Conversation[];
  /** Where the rows came from (error messages). */
  source: string;
}

/** The roles of a prompt / completion row's two messages. */
export const PROMPT_ROLE = 'prompt';
export const COMPLETION_ROLE = 'completion';

/** Whether a conversation is a prompt / completion row. */
export function isCompletionRow(c: Conversation): boolean {
  return c.length === 2 && c[0]!.role === PROMPT_ROLE && c[1]!.role === COMPLETION_ROLE;
}

/** A `{"prompt", "completion"}` row as a conversation, or a message naming what is wrong. */
export function parseCompletionRow(row: Record<string, unknown>): Conversation | string {
  if (typeof row.prompt !== 'string') return '"prompt" is not a string';
  if (typeof row.completion !== 'string') return '"completion" is not a string';
  if (row.completion === '') return '"completion" is empty (nothing to learn from)';
  return [
    { role: PROMPT_ROLE, content: row.prompt },
    { role: COMPLETION_ROLE, content: row.completion },
  ];
}

export function isChatCorpus(x: unknown): x is ChatCorpus {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'chat';
}

/** What rendering needs from a tokenizer: its template and its special tokens' spellings. */
export interface ChatTokenizer extends Tokenizer {
  readonly chatTemplate: string | null;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly specialIds: ReadonlySet<number>;
  tokenString(id: number): string | undefined;
}

/** The tokenizer as a chat tokenizer, or an error naming why chat rows cannot be rendered with it. */
export function chatTokenizer(tokenizer: Tokenizer, source: string): ChatTokenizer {
  const t = tokenizer as Partial<ChatTokenizer>;
  if (typeof t.chatTemplate !== 'string' || t.chatTemplate === '' || typeof t.tokenString !== 'function') {
    throw new QkdError('CONFIG', `chat rows are rendered with the tokenizer's chat template, and this ${tokenizer.kind} tokenizer has none`, {
      path: source,
      field: 'chat_template',
      hint: 'a Hugging Face tokenizer whose tokenizer_config.json has a chat_template (or a GGUF with tokenizer.chat_template), or {"text"} rows',
    });
  }
  return tokenizer as ChatTokenizer;
}

/**
 * One JSON Lines row as a conversation, or a message naming what is wrong.
 * Content must be a string (multimodal content lists are refused).
 */
export function parseChatRow(row: Record<string, unknown>): Conversation | string {
  const messages = row.messages;
  if (!Array.isArray(messages) || messages.length === 0) return '"messages" must be a non-empty array';
  const out: Conversation = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as Record<string, unknown> | null;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) return `messages[${i}] is not an object`;
    if (typeof m.role !== 'string' || m.role === '') return `messages[${i}] has no string "role"`;
    if (typeof m.content !== 'string') return `messages[${i}].content is not a string (content lists are not supported)`;
    out.push({ role: m.role, content: m.content });
  }
  if (!out.some((m) => m.role === 'assistant')) return 'the conversation has no assistant message (nothing to learn from)';
  return out;
}

/** A rendered conversation and the character spans [start, end) that count in the losses. */
export interface RenderedChat {
  text: string;
  spans: [number, number][];
}

/** What turns a conversation into text and its counted spans. */
export interface ConversationRenderer {
  render(messages: Conversation, where: string): RenderedChat;
}

/**
 * Prompt / completion rows: the prompt's text, then the completion's, then
 * the tokenizer's end-of-sequence token when it has one that its encoder
 * reads back as itself, else a blank line (as text rows are joined), so the
 * student learns where a completion ends; the completion and that end count.
 * No template: any tokenizer reads them.
 */
export class CompletionRenderer implements ConversationRenderer {
  private readonly eos: string;

  constructor(tokenizer: Tokenizer) {
    const t = tokenizer as Partial<ChatTokenizer>;
    const id = t.eosId ?? null;
    const spelled = id !== null && typeof t.tokenString === 'function' ? (t.tokenString(id) ?? '') : '';
    const ids = spelled !== '' ? tokenizer.encode(spelled) : [];
    this.eos = ids.length === 1 && ids[0] === id ? spelled : '\n\n';
  }

  render(messages: Conversation, where: string): RenderedChat {
    if (!isCompletionRow(messages)) throw new QkdError('STATE', 'a conversation of chat messages among prompt / completion rows', { field: where });
    const prompt = messages[0]!.content;
    const text = prompt + messages[1]!.content + this.eos;
    return { text, spans: [[prompt.length, text.length]] };
  }
}

export class ChatRenderer implements ConversationRenderer {
  private readonly template: Template;
  private readonly bos: string;
  private readonly eos: string;
  /** Special-token spellings, longest first (the closing token of a turn is matched against them). */
  private readonly specials: string[];

  constructor(
    tokenizer: ChatTokenizer,
    private readonly source: string,
  ) {
    try {
      this.template = new Template(tokenizer.chatTemplate!);
    } catch (err) {
      throw new QkdError('CONFIG', `the tokenizer's chat template does not parse: ${(err as Error).message}`, { path: source, field: 'chat_template' });
    }
    const spell = (id: number | null): string => (id === null ? '' : (tokenizer.tokenString(id) ?? ''));
    this.bos = spell(tokenizer.bosId);
    this.eos = spell(tokenizer.eosId);
    this.specials = [...tokenizer.specialIds].map((id) => spell(id)).filter((s) => s !== '');
    if (this.eos !== '') this.specials.push(this.eos);
    this.specials.sort((a, b) => b.length - a.length);
  }

  private renderRaw(messages: Conversation, addGenerationPrompt: boolean): string {
    return this.template.render({ messages, bos_token: this.bos, eos_token: this.eos, add_generation_prompt: addGenerationPrompt });
  }

  /** The conversation as the template writes it, and its assistant spans. `where` names the row in errors. */
  render(messages: Conversation, where: string): RenderedChat {
    let text: string;
    try {
      text = this.renderRaw(messages, false);
    } catch (err) {
      throw new QkdError('IO', `the chat template refuses the conversation: ${(err as Error).message}`, { path: this.source, field: where, hint: 'messages in the roles and order the model was trained on' });
    }
    const spans: [number, number][] = [];
    let cursor = 0;
    messages.forEach((m, i) => {
      const content = m.content.trim();
      if (content === '') return;
      if (m.role === 'assistant' && i > 0) {
        // The template's own generation prompt ends where the answer starts (when it is a prefix of the rendering).
        let prompt: string | null = null;
        try {
          prompt = this.renderRaw(messages.slice(0, i), true);
        } catch {
          prompt = null;
        }
        if (prompt !== null && text.startsWith(prompt)) cursor = Math.max(cursor, prompt.length);
      }
      const start = text.indexOf(content, cursor);
      if (start < 0) {
        throw new QkdError('IO', `messages[${i}] (${m.role}) does not appear in the chat template's rendering, so its tokens cannot be found`, { path: this.source, field: `${where}, messages[${i}].content`, hint: 'content the template writes out unchanged (apart from surrounding white space)' });
      }
      let end = start + content.length;
      if (m.role === 'assistant') {
        const rest = text.slice(end);
        const ws = /^[ \t\r\n]*/.exec(rest)![0].length;
        const close = this.specials.find((s) => rest.startsWith(s, ws));
        if (close !== undefined) end += ws + close.length;
        spans.push([start, end]);
      }
      cursor = end;
    });
    return { text, spans };
  }
}

/** Tokens of conversations and their loss mask (1: an assistant token, counted). */
export interface MaskedTokens {
  tokens: Int32Array;
  mask: Uint8Array;
}

/**
 * The conversations rendered and tokenized, one after another. Each
 * assistant span and each stretch between spans is encoded on its own (no
 * token straddles a boundary), without added BOS/EOS: the template writes
 * the special tokens the model expects.
 */
export function encodeChats(renderer: ConversationRenderer, tokenizer: Tokenizer, conversations: readonly Conversation[], firstRow = 0): MaskedTokens {
  const tokens: number[] = [];
  const mask: number[] = [];
  const push = (text: string, counted: 0 | 1): void => {
    if (text === '') return;
    for (const id of tokenizer.encode(text)) {
      tokens.push(id);
      mask.push(counted);
    }
  };
  conversations.forEach((c, k) => {
    const { text, spans } = renderer.render(c, `conversation ${firstRow + k + 1}`);
    let at = 0;
    for (const [s, e] of spans) {
      push(text.slice(at, s), 0);
      push(text.slice(s, e), 1);
      at = e;
    }
    push(text.slice(at), 0);
  });
  return { tokens: Int32Array.from(tokens), mask: Uint8Array.from(mask) };
}

/**
 * Training and held-out tokens of a chat corpus: the last ⌈fraction·n⌉
 * conversations are held out (whole conversations, so no answer is split
 * across the two).
 */
export function tokenizeChatSplit(tokenizer: Tokenizer, corpus: ChatCorpus, fraction: number): { train: MaskedTokens; validation: MaskedTokens } {
  const n = corpus.conversations.length;
  const held = Math.max(1, Math.ceil(n * fraction));
  if (n - held < 1) {
    throw new QkdError('ARGUMENT', `the chat corpus has ${n} conversation${n === 1 ? '' : 's'}; holding out ${held} for validation leaves none to train on`, { path: corpus.source, field: 'validation_fraction', hint: 'more conversations' });
  }
  const renderer = rendererFor(tokenizer, corpus);
  return {
    train: encodeChats(renderer, tokenizer, corpus.conversations.slice(0, n - held)),
    validation: encodeChats(renderer, tokenizer, corpus.conversations.slice(n - held), n - held),
  };
}

/** The held-out conversations (or all of them) tokenized with their mask, for evaluation. */
export function tokenizeChatEval(tokenizer: Tokenizer, corpus: ChatCorpus, split: 'validation' | 'all', fraction = 0.1): MaskedTokens {
  if (split === 'validation') {
    const n = corpus.conversations.length;
    if (n - Math.max(1, Math.ceil(n * fraction)) < 1) {
      // The split's own error speaks of training, which an evaluation does not do.
      throw new QkdError('ARGUMENT', `the chat corpus has ${n} conversation${n === 1 ? '' : 's'}: its held-out part (the last ${Math.round(fraction * 100)}% of the conversations, at least one) would be all of it, so no model could have trained on the rest`, {
        path: corpus.source,
        field: 'held-out split',
        hint: 'score every conversation with --whole-file (API: wholeText), or more conversations',
      });
    }
    return tokenizeChatSplit(tokenizer, corpus, fraction).validation;
  }
  return encodeChats(rendererFor(tokenizer, corpus), tokenizer, corpus.conversations);
}

/** Prompt / completion rows render without a template; chat rows with the tokenizer's (which it must have). */
export function rendererFor(tokenizer: Tokenizer, corpus: ChatCorpus): ConversationRenderer {
  const first = corpus.conversations[0];
  if (first !== undefined && isCompletionRow(first)) return new CompletionRenderer(tokenizer);
  return new ChatRenderer(chatTokenizer(tokenizer, corpus.source), corpus.source);
}
