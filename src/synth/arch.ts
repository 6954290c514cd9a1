// The architectures `mathneuro synth` writes: one table each, with the tensor names, shapes and
// metadata keys that the bundled llama.cpp's loader reads for that architecture (src/models/<arch>.cpp
// load_arch_hparams / load_arch_tensors, names from src/llama-arch.cpp). synth.ts turns a table
// and a shape into a GGUF; nothing here is architecture-specific code, only data.
import { GGML_TYPE, GGUF_VALUE } from '../gguf/types.ts';

/** Hyperparameters of a synthesized model (shape presets fill them; unused ones are ignored). */
export interface SynthShape {
  nEmbd: number; nFf: number; nLayer: number; nHead: number; nHeadKv: number; nCtx: number;
  /** vocabulary GGUF in llama.cpp's models/ (tokenizer metadata copied from it) */
  vocab: 'llama-spm' | 'llama-bpe' | 'qwen2' | 'phi-3' | 'deepseek-llm' | 'gemma-4';
  /** experts per MoE layer (0 = dense) and experts used per token */
  nExpert: number; nExpertUsed: number;
  /** a separate output head (true) or tied to token_embd (false) */
  untiedOutput: boolean;
  /** attention head size when it is not nEmbd / nHead (Qwen3, Gemma) */
  headDim?: number;
  /** MoE: feed-forward size of one routed expert (default nFf), of the shared expert(s) (0: none) */
  nFfExp?: number; nFfShexp?: number; nExpertShared?: number;
  /** MLA (DeepSeek-V2/V3): q and kv low ranks, RoPE and no-RoPE head parts, value head size, leading dense blocks */
  qLoraRank?: number; kvLoraRank?: number; ropeDim?: number; nopeDim?: number; vHeadDim?: number; nDenseLead?: number;
  /** Mamba-2 mixer: conv kernel, state size, groups, SSM heads; which layers are recurrent */
  ssmDConv?: number; ssmDState?: number; ssmNGroup?: number; ssmNHead?: number; recurrentLayers?: number[];
}

/** A shape with every field set, and the vocabulary size of its tokenizer. */
export type ResolvedShape = Required<SynthShape> & { nVocab: number };

export type TensorRole = 'matrix' | 'norm' | 'embd' | 'router' | 'gate' | 'bias' | 'ssm';

/** One tensor of a table: `{i}` in the name is the block number. */
export interface TensorRule {
  name: string;
  shape: (h: ResolvedShape, i: number) => number[];
  role: TensorRole;
  /** which weight it is for --type mixed (attn_v, ffn_down and output get Q6_K, like Q4_K_M) */
  kind?: string;
  /** present in block i (default: every block) */
  when?: (h: ResolvedShape, i: number) => boolean;
  /** initial values: mean and standard deviation (default by role) */
  init?: { mean: number; std: number };
}

export type MetaValue = { type: number; value: number | string | number[]; arrayType?: number };

export interface ArchTable {
  /** general.architecture */
  arch: string;
  /** what it stands for (help text, README) */
  family: string;
  /** values of the shape not given by the preset */
  defaults: Partial<SynthShape>;
  /** size presets of --shape (tiny: a few MB, the tests' size) */
  shapes: Record<string, Partial<SynthShape>>;
  /** `<arch>.<key>` metadata, in order */
  metadata: (h: ResolvedShape) => [string, MetaValue][];
  /** metadata written after mathneuro.synth.* (kept where the llama table always had it) */
  lateMetadata?: (h: ResolvedShape) => [string, MetaValue][];
  /** tensors before the blocks, per block, after the blocks */
  pre: TensorRule[]; block: TensorRule[]; post: TensorRule[];
  /** the token embedding is multiplied by this before block 0 (Gemma: sqrt(n_embd)) */
  embedScale?: (h: ResolvedShape) => number;
  /** block-0 matrices whose input is RMSNorm(embedding) x attn_norm: the float64 reference checks them */
  layer0Inputs: string[];
}

const u32 = (value: number): MetaValue => ({ type: GGUF_VALUE.UINT32, value });
const f32 = (value: number): MetaValue => ({ type: GGUF_VALUE.FLOAT32, value });
const u32s = (value: number[]): MetaValue => ({ type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.UINT32, value });
const bool = (value: boolean): MetaValue => ({ type: GGUF_VALUE.BOOL, value } as unknown as MetaValue);

type H = ResolvedShape;
const headDim = (h: H) => h.headDim || h.nEmbd / h.nHead;
const qDim = (h: H) => headDim(h) * h.nHead;
const kvDim = (h: H) => headDim(h) * h.nHeadKv;
const isMoe = (h: H, i: number) => h.nExpert > 0 && i >= h.nDenseLead;
const isDense = (h: H, i: number) => !isMoe(h, i);
const isRecurrent = (h: H, i: number) => h.recurrentLayers.includes(i);
const isAttention = (h: H, i: number) => !isRecurrent(h, i);

// building blocks shared by the tables (each is a list of rules, not code)
const r = (name: string, role: TensorRole, shape: TensorRule['shape'], extra: Partial<TensorRule> = {}): TensorRule => ({ name, role, shape, ...extra });
const norm = (name: string, size: (h: H) => number, extra: Partial<TensorRule> = {}) => r(`blk.{i}.${name}.weight`, 'norm', (h) => [size(h)], extra);
const mat = (name: string, shape: TensorRule['shape'], extra: Partial<TensorRule> = {}) => r(`blk.{i}.${name}.weight`, 'matrix', shape, { kind: name, ...extra });
const bias = (name: string, size: (h: H) => number, extra: Partial<TensorRule> = {}) => r(`blk.{i}.${name}.bias`, 'bias', (h) => [size(h)], extra);

const EMBD = r('token_embd.weight', 'embd', (h) => [h.nEmbd, h.nVocab]);
const OUTPUT_NORM = r('output_norm.weight', 'norm', (h) => [h.nEmbd]);
const OUTPUT = r('output.weight', 'matrix', (h) => [h.nEmbd, h.nVocab], { kind: 'output', when: (h) => h.untiedOutput });

const QKV = (w: Partial<TensorRule> = {}): TensorRule[] => [
  mat('attn_q', (h) => [h.nEmbd, qDim(h)], w), mat('attn_k', (h) => [h.nEmbd, kvDim(h)], w), mat('attn_v', (h) => [h.nEmbd, kvDim(h)], w),
];
const QKV_BIAS = [bias('attn_q', qDim), bias('attn_k', kvDim), bias('attn_v', kvDim)];
const ATTN_OUT = (w: Partial<TensorRule> = {}) => mat('attn_output', (h) => [qDim(h), h.nEmbd], w);
const QK_NORM = [norm('attn_q_norm', headDim), norm('attn_k_norm', headDim)];
const FFN = (when?: TensorRule['when']): TensorRule[] => [
  mat('ffn_gate', (h) => [h.nEmbd, h.nFf], { when }), mat('ffn_up', (h) => [h.nEmbd, h.nFf], { when }), mat('ffn_down', (h) => [h.nFf, h.nEmbd], { when }),
];
const ROUTER = r('blk.{i}.ffn_gate_inp.weight', 'router', (h) => [h.nEmbd, h.nExpert], { when: isMoe });
const EXPERTS: TensorRule[] = [
  mat('ffn_gate_exps', (h) => [h.nEmbd, h.nFfExp, h.nExpert], { kind: 'ffn_gate', when: isMoe }),
  mat('ffn_up_exps', (h) => [h.nEmbd, h.nFfExp, h.nExpert], { kind: 'ffn_up', when: isMoe }),
  mat('ffn_down_exps', (h) => [h.nFfExp, h.nEmbd, h.nExpert], { kind: 'ffn_down', when: isMoe }),
];
const SHARED_EXPERT: TensorRule[] = [
  mat('ffn_gate_shexp', (h) => [h.nEmbd, h.nFfShexp], { kind: 'ffn_gate', when: isMoe }),
  mat('ffn_up_shexp', (h) => [h.nEmbd, h.nFfShexp], { kind: 'ffn_up', when: isMoe }),
  mat('ffn_down_shexp', (h) => [h.nFfShexp, h.nEmbd], { kind: 'ffn_down', when: isMoe }),
];

const BASE_META = (h: H): [string, MetaValue][] => [
  ['context_length', u32(h.nCtx)], ['embedding_length', u32(h.nEmbd)], ['block_count', u32(h.nLayer)], ['feed_forward_length', u32(h.nFf)],
  ['attention.head_count', u32(h.nHead)], ['attention.head_count_kv', u32(h.nHeadKv)],
];
const HEAD_META = (h: H): [string, MetaValue][] => (h.headDim ? [['attention.key_length', u32(h.headDim)], ['attention.value_length', u32(h.headDim)]] : []);
const ROPE_EPS = (h: H, base = 10000): [string, MetaValue][] => [
  ['rope.dimension_count', u32(headDim(h))], ['rope.freq_base', f32(base)], ['attention.layer_norm_rms_epsilon', f32(1e-5)],
];
const MOE_META = (h: H): [string, MetaValue][] => (h.nExpert > 0 ? [['expert_count', u32(h.nExpert)], ['expert_used_count', u32(h.nExpertUsed)]] : []);

const TINY: Partial<SynthShape> = { nEmbd: 64, nFf: 128, nLayer: 2, nHead: 4, nHeadKv: 2, nCtx: 512, vocab: 'llama-spm' };

export const archTables: Record<string, ArchTable> = {
  llama: {
    arch: 'llama', family: 'Llama 2/3, Mistral, SmolLM, TinyLlama (and a llama MoE, Mixtral-style)',
    defaults: {},
    shapes: {
      tiny: { nEmbd: 256, nFf: 512, nLayer: 2, nHead: 4, nHeadKv: 2, nCtx: 512, vocab: 'llama-spm', nExpert: 0, nExpertUsed: 0, untiedOutput: true },
      'moe-tiny': { nEmbd: 256, nFf: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nCtx: 512, vocab: 'llama-spm', nExpert: 4, nExpertUsed: 2, untiedOutput: true },
      // Qwen2.5-0.5B's shape (on the llama architecture, without q/k/v biases), with Qwen2's tokenizer
      'qwen-0.5b': { nEmbd: 896, nFf: 4864, nLayer: 24, nHead: 14, nHeadKv: 2, nCtx: 4096, vocab: 'qwen2', nExpert: 0, nExpertUsed: 0, untiedOutput: false },
      // Llama-3.2-1B's shape and tokenizer
      'llama-1b': { nEmbd: 2048, nFf: 8192, nLayer: 16, nHead: 32, nHeadKv: 8, nCtx: 4096, vocab: 'llama-bpe', nExpert: 0, nExpertUsed: 0, untiedOutput: false },
    },
    metadata: (h) => [...BASE_META(h), ...ROPE_EPS(h), ['vocab_size', u32(h.nVocab)]],
    lateMetadata: MOE_META,
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), ...QKV(), ATTN_OUT(), norm('ffn_norm', (h) => h.nEmbd),
      ROUTER, ...EXPERTS, ...FFN(isDense),
    ],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  qwen2: {
    arch: 'qwen2', family: 'Qwen2 / Qwen2.5: q/k/v biases, tied head on the small sizes',
    defaults: { untiedOutput: false },
    shapes: { tiny: { ...TINY }, 'qwen2.5-0.5b': { nEmbd: 896, nFf: 4864, nLayer: 24, nHead: 14, nHeadKv: 2, nCtx: 4096, vocab: 'qwen2' } },
    metadata: (h) => [...BASE_META(h), ...ROPE_EPS(h, 1e6)],
    pre: [EMBD],
    block: [norm('attn_norm', (h) => h.nEmbd), ...QKV(), ...QKV_BIAS, ATTN_OUT(), norm('ffn_norm', (h) => h.nEmbd), ...FFN()],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  qwen3: {
    arch: 'qwen3', family: 'Qwen3: q/k RMSNorm per head, head size independent of n_embd, tied head on the small sizes',
    defaults: { untiedOutput: false },
    shapes: { tiny: { ...TINY, headDim: 32 }, 'qwen3-0.6b': { nEmbd: 1024, nFf: 3072, nLayer: 28, nHead: 16, nHeadKv: 8, headDim: 128, nCtx: 4096, vocab: 'qwen2' } },
    metadata: (h) => [...BASE_META(h), ...HEAD_META(h), ...ROPE_EPS(h, 1e6)],
    pre: [EMBD],
    block: [norm('attn_norm', (h) => h.nEmbd), ...QKV(), ATTN_OUT(), ...QK_NORM, norm('ffn_norm', (h) => h.nEmbd), ...FFN()],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  gemma2: {
    arch: 'gemma2', family: 'Gemma 2: post-attention and post-FFN norms, attention and final logit soft-capping, sliding window, tied head',
    defaults: { untiedOutput: false },
    shapes: { tiny: { ...TINY, headDim: 32 }, 'gemma2-2b': { nEmbd: 2304, nFf: 9216, nLayer: 26, nHead: 8, nHeadKv: 4, headDim: 256, nCtx: 8192, vocab: 'llama-spm' } },
    metadata: (h) => [
      ...BASE_META(h), ...HEAD_META(h), ['attention.layer_norm_rms_epsilon', f32(1e-6)], ['attention.sliding_window', u32(4096)],
      ['attn_logit_softcapping', f32(50)], ['final_logit_softcapping', f32(30)],
    ],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), ...QKV(), ATTN_OUT(), norm('post_attention_norm', (h) => h.nEmbd),
      norm('ffn_norm', (h) => h.nEmbd), ...FFN(), norm('post_ffw_norm', (h) => h.nEmbd),
    ],
    post: [OUTPUT_NORM],
    embedScale: (h) => Math.sqrt(h.nEmbd),
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  // Alike in shape to gemma2 above by design: each table is data, written out whole so that it reads
  // against llama.cpp's loader for that architecture (`duplicates` pairs them).
  gemma3: {
    arch: 'gemma3', family: 'Gemma 3: Gemma 2\'s post-norms plus q/k norms, 5 sliding-window layers per global one, tied head',
    defaults: { untiedOutput: false },
    shapes: { tiny: { ...TINY, headDim: 32 }, 'gemma3-1b': { nEmbd: 1152, nFf: 6912, nLayer: 26, nHead: 4, nHeadKv: 1, headDim: 256, nCtx: 8192, vocab: 'llama-spm' } },
    metadata: (h) => [
      ...BASE_META(h), ...HEAD_META(h), ['rope.freq_base', f32(1e6)], ['attention.layer_norm_rms_epsilon', f32(1e-6)], ['attention.sliding_window', u32(512)],
    ],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), ...QKV(), ATTN_OUT(), norm('post_attention_norm', (h) => h.nEmbd), ...QK_NORM,
      norm('ffn_norm', (h) => h.nEmbd), ...FFN(), norm('post_ffw_norm', (h) => h.nEmbd),
    ],
    post: [OUTPUT_NORM],
    embedScale: (h) => Math.sqrt(h.nEmbd),
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  phi3: {
    arch: 'phi3', family: 'Phi-3 / Phi-3.5 / Phi-4-mini: one fused attn_qkv, gate and up fused in one ffn_up (2 x n_ff rows)',
    defaults: { untiedOutput: true },
    shapes: { tiny: { ...TINY, vocab: 'phi-3' }, 'phi3-mini': { nEmbd: 3072, nFf: 8192, nLayer: 32, nHead: 32, nHeadKv: 32, nCtx: 4096, vocab: 'phi-3' } },
    metadata: (h) => [...BASE_META(h), ...ROPE_EPS(h)],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), mat('attn_qkv', (h) => [h.nEmbd, qDim(h) + 2 * kvDim(h)], { kind: 'attn_q' }), ATTN_OUT(),
      norm('ffn_norm', (h) => h.nEmbd), mat('ffn_up', (h) => [h.nEmbd, 2 * h.nFf]), mat('ffn_down', (h) => [h.nFf, h.nEmbd]),
    ],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_qkv'],
  },
  qwen2moe: {
    arch: 'qwen2moe', family: 'Qwen1.5-MoE / Qwen2-MoE: routed experts, a shared expert with its own sigmoid gate, q/k/v biases',
    defaults: { untiedOutput: true, nExpert: 4, nExpertUsed: 2, nFfExp: 64, nFfShexp: 128 },
    shapes: { tiny: { ...TINY } },
    metadata: (h) => [
      ...BASE_META(h), ...ROPE_EPS(h, 1e6), ...MOE_META(h),
      ['expert_feed_forward_length', u32(h.nFfExp)], ['expert_shared_feed_forward_length', u32(h.nFfShexp)],
    ],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), ...QKV(), ...QKV_BIAS, ATTN_OUT(), norm('ffn_norm', (h) => h.nEmbd),
      ROUTER, ...EXPERTS, r('blk.{i}.ffn_gate_inp_shexp.weight', 'gate', (h) => [h.nEmbd], { when: isMoe }), ...SHARED_EXPERT,
    ],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  qwen3moe: {
    arch: 'qwen3moe', family: 'Qwen3-MoE (30B-A3B, 235B-A22B): routed experts (no shared expert), q/k norms',
    defaults: { untiedOutput: true, nExpert: 4, nExpertUsed: 2, nFfExp: 64, headDim: 32 },
    shapes: { tiny: { ...TINY } },
    metadata: (h) => [...BASE_META(h), ...HEAD_META(h), ...ROPE_EPS(h, 1e6), ...MOE_META(h), ['expert_feed_forward_length', u32(h.nFfExp)]],
    pre: [EMBD],
    block: [norm('attn_norm', (h) => h.nEmbd), ...QKV(), ATTN_OUT(), ...QK_NORM, norm('ffn_norm', (h) => h.nEmbd), ROUTER, ...EXPERTS],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_q', 'attn_k', 'attn_v'],
  },
  deepseek2: {
    arch: 'deepseek2', family: 'DeepSeek-V2/V3, Kimi-K2, GLM-4.7-Flash-style MLA: low-rank q (attn_q_a/q_b), compressed kv (attn_kv_a_mqa, per-head attn_k_b/attn_v_b), leading dense block, routed + shared experts',
    defaults: {
      untiedOutput: true, nExpert: 4, nExpertUsed: 2, nFfExp: 32, nExpertShared: 1, nDenseLead: 1,
      qLoraRank: 32, kvLoraRank: 32, ropeDim: 16, nopeDim: 16, vHeadDim: 16, nHeadKv: 1,
    },
    shapes: { tiny: { ...TINY, nHeadKv: 1 } },
    metadata: (h) => [
      ['context_length', u32(h.nCtx)], ['embedding_length', u32(h.nEmbd)], ['block_count', u32(h.nLayer)], ['feed_forward_length', u32(h.nFf)],
      ['attention.head_count', u32(h.nHead)], ['attention.head_count_kv', u32(1)],
      // MLA as llama.cpp's converter writes it: the cached "key" is the compressed kv plus the RoPE part
      ['attention.key_length', u32(h.kvLoraRank + h.ropeDim)], ['attention.value_length', u32(h.kvLoraRank)],
      ['attention.key_length_mla', u32(h.nopeDim + h.ropeDim)], ['attention.value_length_mla', u32(h.vHeadDim)],
      ['attention.q_lora_rank', u32(h.qLoraRank)], ['attention.kv_lora_rank', u32(h.kvLoraRank)],
      ['rope.dimension_count', u32(h.ropeDim)], ['rope.freq_base', f32(10000)], ['attention.layer_norm_rms_epsilon', f32(1e-6)],
      ['leading_dense_block_count', u32(h.nDenseLead)], ...MOE_META(h), ['expert_shared_count', u32(h.nExpertShared)],
      ['expert_feed_forward_length', u32(h.nFfExp)], ['expert_weights_scale', f32(1)], ['expert_weights_norm', bool(true)], ['expert_gating_func', u32(1)],
    ],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), norm('attn_q_a_norm', (h) => h.qLoraRank), norm('attn_kv_a_norm', (h) => h.kvLoraRank),
      mat('attn_q_a', (h) => [h.nEmbd, h.qLoraRank], { kind: 'attn_q' }),
      mat('attn_q_b', (h) => [h.qLoraRank, h.nHead * (h.nopeDim + h.ropeDim)], { kind: 'attn_q' }),
      mat('attn_kv_a_mqa', (h) => [h.nEmbd, h.kvLoraRank + h.ropeDim], { kind: 'attn_k' }),
      mat('attn_k_b', (h) => [h.nopeDim, h.kvLoraRank, h.nHead], { kind: 'attn_k' }),
      mat('attn_v_b', (h) => [h.kvLoraRank, h.vHeadDim, h.nHead], { kind: 'attn_v' }),
      mat('attn_output', (h) => [h.nHead * h.vHeadDim, h.nEmbd]),
      norm('ffn_norm', (h) => h.nEmbd),
      ...FFN(isDense), ROUTER, ...EXPERTS,
      ...SHARED_EXPERT.map((t) => ({ ...t, shape: (h: H, i: number) => t.shape({ ...h, nFfShexp: h.nFfExp * h.nExpertShared }, i) })),
    ],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_q_a', 'attn_kv_a_mqa'],
  },
  qwen3next: {
    arch: 'qwen3next', family: 'Qwen3-Next: gated delta-net linear-attention layers (3 of 4) mixed with gated full attention, routed + shared experts in every block (here block 0 linear, block 1 full attention)',
    defaults: {
      untiedOutput: true, nExpert: 4, nExpertUsed: 2, nFfExp: 32, nFfShexp: 64, headDim: 16, ropeDim: 8,
      // linear attention: ssmDState = head size of k and v, ssmNGroup = k heads, ssmNHead = v heads
      ssmDConv: 4, ssmDState: 16, ssmNGroup: 2, ssmNHead: 4, recurrentLayers: [0],
    },
    shapes: { tiny: { ...TINY } },
    metadata: (h) => [
      ...BASE_META(h), ...HEAD_META(h), ['rope.dimension_count', u32(h.ropeDim)], ['rope.freq_base', f32(1e7)], ['attention.layer_norm_rms_epsilon', f32(1e-6)],
      ...MOE_META(h), ['expert_feed_forward_length', u32(h.nFfExp)], ['expert_shared_feed_forward_length', u32(h.nFfShexp)],
      ['ssm.conv_kernel', u32(h.ssmDConv)], ['ssm.inner_size', u32(h.ssmDState * h.ssmNHead)], ['ssm.state_size', u32(h.ssmDState)],
      ['ssm.time_step_rank', u32(h.ssmNHead)], ['ssm.group_count', u32(h.ssmNGroup)],
      // every 2nd block is full attention (Qwen3-Next: every 4th)
      ['full_attention_interval', u32(h.nLayer)],
    ],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd), norm('post_attention_norm', (h) => h.nEmbd),
      // gated delta net: q, k, v in one matrix, the output gate z in another, beta/alpha per v head
      mat('attn_qkv', (h) => [h.nEmbd, 2 * h.ssmDState * h.ssmNGroup + h.ssmDState * h.ssmNHead], { kind: 'attn_q', when: isRecurrent }),
      mat('attn_gate', (h) => [h.nEmbd, h.ssmDState * h.ssmNHead], { kind: 'attn_q', when: isRecurrent }),
      r('blk.{i}.ssm_conv1d.weight', 'ssm', (h) => [h.ssmDConv, 2 * h.ssmDState * h.ssmNGroup + h.ssmDState * h.ssmNHead], { when: isRecurrent, init: { mean: 0, std: 0.3 } }),
      r('blk.{i}.ssm_dt.bias', 'bias', (h) => [h.ssmNHead], { when: isRecurrent, init: { mean: -1, std: 0.5 } }),
      r('blk.{i}.ssm_a', 'ssm', (h) => [h.ssmNHead], { when: isRecurrent, init: { mean: -1, std: 0.2 } }),
      mat('ssm_ba', (h) => [h.nEmbd, 2 * h.ssmNHead], { kind: 'attn_k', when: isRecurrent }),
      r('blk.{i}.ssm_norm.weight', 'norm', (h) => [h.ssmDState], { when: isRecurrent }),
      mat('ssm_out', (h) => [h.ssmDState * h.ssmNHead, h.nEmbd], { kind: 'attn_output', when: isRecurrent }),
      // full attention: q carries its output gate (2 x q)
      mat('attn_q', (h) => [h.nEmbd, 2 * qDim(h)], { when: isAttention }), mat('attn_k', (h) => [h.nEmbd, kvDim(h)], { when: isAttention }),
      mat('attn_v', (h) => [h.nEmbd, kvDim(h)], { when: isAttention }), ATTN_OUT({ when: isAttention }),
      norm('attn_q_norm', headDim, { when: isAttention }), norm('attn_k_norm', headDim, { when: isAttention }),
      ROUTER, ...EXPERTS, r('blk.{i}.ffn_gate_inp_shexp.weight', 'gate', (h) => [h.nEmbd], { when: isMoe }), ...SHARED_EXPERT,
    ],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['attn_qkv', 'attn_gate', 'ssm_ba'],
  },
  granitehybrid: {
    arch: 'granitehybrid', family: 'IBM Granite 4.0-H: Mamba-2 state-space layers mixed with attention layers (here block 0 is Mamba-2, block 1 attention)',
    defaults: { untiedOutput: false, ssmDConv: 4, ssmDState: 16, ssmNGroup: 1, ssmNHead: 8, recurrentLayers: [0] },
    shapes: { tiny: { ...TINY } },
    metadata: (h) => [
      ['context_length', u32(h.nCtx)], ['embedding_length', u32(h.nEmbd)], ['block_count', u32(h.nLayer)], ['feed_forward_length', u32(h.nFf)],
      ['attention.head_count', u32(h.nHead)],
      // a block is recurrent exactly when its head_count_kv is 0
      ['attention.head_count_kv', u32s(Array.from({ length: h.nLayer }, (_, i) => (isRecurrent(h, i) ? 0 : h.nHeadKv)))],
      ...ROPE_EPS(h),
      ['ssm.conv_kernel', u32(h.ssmDConv)], ['ssm.inner_size', u32(2 * h.nEmbd)], ['ssm.state_size', u32(h.ssmDState)],
      ['ssm.time_step_rank', u32(h.ssmNHead)], ['ssm.group_count', u32(h.ssmNGroup)],
    ],
    pre: [EMBD],
    block: [
      norm('attn_norm', (h) => h.nEmbd),
      // Mamba-2 mixer (d_inner = 2 n_embd, the only expansion llama.cpp supports)
      mat('ssm_in', (h) => [h.nEmbd, 4 * h.nEmbd + 2 * h.ssmNGroup * h.ssmDState + h.ssmNHead], { kind: 'attn_q', when: isRecurrent }),
      r('blk.{i}.ssm_conv1d.weight', 'ssm', (h) => [h.ssmDConv, 2 * h.nEmbd + 2 * h.ssmNGroup * h.ssmDState], { when: isRecurrent, init: { mean: 0, std: 0.3 } }),
      r('blk.{i}.ssm_conv1d.bias', 'bias', (h) => [2 * h.nEmbd + 2 * h.ssmNGroup * h.ssmDState], { when: isRecurrent }),
      r('blk.{i}.ssm_dt.bias', 'bias', (h) => [h.ssmNHead], { when: isRecurrent, init: { mean: -1, std: 0.5 } }),
      // A = -exp(A_log) is stored negative, so the state decays
      r('blk.{i}.ssm_a', 'ssm', (h) => [1, h.ssmNHead], { when: isRecurrent, init: { mean: -1, std: 0.2 } }),
      r('blk.{i}.ssm_d', 'ssm', (h) => [1, h.ssmNHead], { when: isRecurrent, init: { mean: 1, std: 0.1 } }),
      r('blk.{i}.ssm_norm.weight', 'norm', (h) => [2 * h.nEmbd / h.ssmNGroup, h.ssmNGroup], { when: isRecurrent }),
      mat('ssm_out', (h) => [2 * h.nEmbd, h.nEmbd], { kind: 'attn_output', when: isRecurrent }),
      ...QKV({ when: isAttention }), ATTN_OUT({ when: isAttention }),
      norm('ffn_norm', (h) => h.nEmbd), ...FFN(),
    ],
    post: [OUTPUT_NORM, OUTPUT],
    layer0Inputs: ['ssm_in'],
  },
};

export const ARCHITECTURES = Object.keys(archTables);

/** Every optional field of SynthShape, at its neutral value. */
export const SHAPE_DEFAULTS: Omit<Required<SynthShape>, 'nEmbd' | 'nFf' | 'nLayer' | 'nHead' | 'nHeadKv' | 'nCtx' | 'vocab' | 'nExpert' | 'nExpertUsed' | 'untiedOutput'> = {
  headDim: 0, nFfExp: 0, nFfShexp: 0, nExpertShared: 0, qLoraRank: 0, kvLoraRank: 0, ropeDim: 0, nopeDim: 0, vHeadDim: 0, nDenseLead: 0,
  ssmDConv: 0, ssmDState: 0, ssmNGroup: 0, ssmNHead: 0, recurrentLayers: [],
};

/**
 * Initial values per role ('weight': mean 0 and the synth's weight std). Norm gains are around 1
 * with spread, so a test that recomputes RMSNorm sees them matter; every non-matrix role is F32.
 */
export const ROLE_INIT: Record<TensorRole, { mean: number; std: number } | 'weight'> = {
  matrix: 'weight', embd: { mean: 0, std: 1 }, norm: { mean: 1, std: 0.2 }, router: { mean: 0, std: 0.5 }, gate: { mean: 0, std: 0.5 },
  bias: { mean: 0, std: 0.05 }, ssm: { mean: 0, std: 0.2 },
};
export const F32 = GGML_TYPE.F32;
