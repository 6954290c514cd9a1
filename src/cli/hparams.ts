// The hyperparameters llama.cpp reads from a model's metadata (llama-model.cpp's LLM_KV_* keys,
// `<arch>.` prefixed), for `mathneuro inspect`: context, layers, widths, heads, experts, rope,
// vocabulary and tokenizer, chat template.
import type { GgufInfo } from '../gguf/reader.ts';

export interface Hyperparameters {
  contextLength?: number;
  layers?: number;
  embedding?: number;
  feedForward?: number | number[];
  heads?: number | number[];
  headsKv?: number | number[];
  headDim?: number;
  experts?: number;
  expertsUsed?: number;
  vocabulary?: number;
  tokenizer?: string;
  tokenizerPre?: string;
  rope?: { dimensions?: number; freqBase?: number; scaling?: string; scalingFactor?: number; originalContext?: number };
  chatTemplate: boolean;
  /** other named chat templates (tokenizer.chat_template.<name>) */
  chatTemplates?: string[];
}

function num(v: unknown): number | number[] | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v) && v.every((x) => typeof x === 'number' || typeof x === 'bigint')) {
    const a = v.map(Number);
    return a.length && a.every((x) => x === a[0]) ? a[0] : a;
  }
  return undefined;
}
const scalar = (v: unknown) => { const n = num(v); return Array.isArray(n) ? Math.max(...n) : n; };

export function hyperparameters(info: Pick<GgufInfo, 'metadata'>): Hyperparameters {
  const m = info.metadata;
  const arch = String(m.get('general.architecture') ?? '');
  const k = (key: string) => m.get(`${arch}.${key}`);
  const tokens = m.get('tokenizer.ggml.tokens');
  const vocabulary = Array.isArray(tokens) ? tokens.length : scalar(k('vocab_size'));
  const rope = {
    dimensions: scalar(k('rope.dimension_count')), freqBase: scalar(k('rope.freq_base')),
    scaling: typeof k('rope.scaling.type') === 'string' ? String(k('rope.scaling.type')) : undefined,
    scalingFactor: scalar(k('rope.scaling.factor')), originalContext: scalar(k('rope.scaling.original_context_length')),
  };
  const named = [...m.keys()].filter((x) => x.startsWith('tokenizer.chat_template.')).map((x) => x.slice('tokenizer.chat_template.'.length));
  const tmpl = m.get('tokenizer.chat_template');
  const r: Hyperparameters = {
    contextLength: scalar(k('context_length')), layers: scalar(k('block_count')), embedding: scalar(k('embedding_length')),
    feedForward: num(k('feed_forward_length')), heads: num(k('attention.head_count')), headsKv: num(k('attention.head_count_kv')),
    headDim: scalar(k('attention.key_length')), experts: scalar(k('expert_count')), expertsUsed: scalar(k('expert_used_count')),
    vocabulary, tokenizer: typeof m.get('tokenizer.ggml.model') === 'string' ? String(m.get('tokenizer.ggml.model')) : undefined,
    tokenizerPre: typeof m.get('tokenizer.ggml.pre') === 'string' ? String(m.get('tokenizer.ggml.pre')) : undefined,
    rope: Object.values(rope).some((x) => x !== undefined) ? rope : undefined,
    chatTemplate: typeof tmpl === 'string' && tmpl.length > 0,
    chatTemplates: named.length ? named : undefined,
  };
  // llama.cpp: head_count_kv defaults to head_count
  if (r.headsKv === undefined && r.heads !== undefined) r.headsKv = r.heads;
  return r;
}

const list = (v: number | number[] | undefined) => (v === undefined ? '?' : Array.isArray(v) ? `${Math.min(...v)}-${Math.max(...v)} (per layer)` : String(v));

/** Two lines for the text view. */
export function hyperparameterLines(h: Hyperparameters): string[] {
  const rope = h.rope ? `rope ${h.rope.dimensions ?? '?'} dims, base ${h.rope.freqBase ?? '10000 (default)'}${h.rope.scaling && h.rope.scaling !== 'none' ? `, ${h.rope.scaling} x${h.rope.scalingFactor ?? '?'}${h.rope.originalContext ? ` from ${h.rope.originalContext}` : ''}` : ''}` : 'rope: -';
  return [
    `context ${h.contextLength ?? '?'}, ${h.layers ?? '?'} layers, embedding ${h.embedding ?? '?'}, feed-forward ${list(h.feedForward)}, heads ${list(h.heads)} (KV ${list(h.headsKv)})${h.experts ? `, ${h.experts} experts (${h.expertsUsed ?? '?'} used)` : ''}; ${rope}`,
    `vocabulary ${h.vocabulary ?? '?'} tokens, tokenizer ${h.tokenizer ?? '?'}${h.tokenizerPre ? ` (pre ${h.tokenizerPre})` : ''}; chat template ${h.chatTemplate ? 'present' : 'none'}${h.chatTemplates ? ` (+ ${h.chatTemplates.join(', ')})` : ''}`,
  ];
}
