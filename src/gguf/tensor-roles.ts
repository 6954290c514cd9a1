// What MathNeuro does with each tensor of a model, by name and shape, for every architecture:
// scored (a weight matrix a forward pass multiplies, so the statistics see its input and the
// selection may change it) or excluded, with the reason. The selection (src/select/select.ts) scores
// the 2D/3D block weights the statistics saw, never routers and norms; this module names the same
// set before any statistics exist (inspect, the README's per-architecture table, the tests that
// compare it with the matmuls the eval callback really saw).
import type { GgufInfo as FullInfo, GgufTensorInfo } from './reader.ts';

/** What the roles need of a model: its tensors (one file or every shard of a split model). */
type GgufInfo = Pick<FullInfo, 'tensors' | 'tensorByName'>;

export interface TensorRoleInfo {
  name: string;
  shape: number[];
  scored: boolean;
  /** the forward pass multiplies by it (src0 of a MUL_MAT / MUL_MAT_ID), so the statistics see its input */
  matmul: boolean;
  /** short label of the rule (scored tensors: "weight matrix") */
  rule: string;
  reason: string;
}

interface Rule { rule: string; test: (t: GgufTensorInfo, info: GgufInfo) => boolean; matmul: boolean | ((info: GgufInfo) => boolean); reason: string | ((info: GgufInfo) => string) }

const tied = (info: GgufInfo) => !info.tensorByName.has('output.weight');

/** The exclusions, in the order they are tried; the reasons are the README's. */
export const EXCLUSION_RULES: readonly Rule[] = [
  {
    rule: 'token embedding', test: (t) => t.name === 'token_embd.weight', matmul: tied,
    reason: (info) => tied(info)
      ? 'token embedding, also the output head (tied): the statistics see it as the head\'s matmul (with --include-output), but changing it would change every token\'s input embedding too'
      : 'token embedding: a row lookup (GET_ROWS), not a matmul',
  },
  { rule: 'output head', test: (t) => t.name === 'output.weight', matmul: true, reason: 'output head: its statistics are collected only with --include-output (by default a forward pass stops before the head), and only then is it scored (MathNeuro edits the blocks)' },
  { rule: 'bias', test: (t) => t.name.endsWith('.bias') || /(^|\.)exp_probs_b(\.|$)/.test(t.name), matmul: false, reason: 'bias: added, not multiplied' },
  { rule: 'norm', test: (t) => /_norm\.weight$|(^|\.)norm\.weight$/.test(t.name), matmul: false, reason: 'norm gain: an elementwise scale, not a matmul' },
  { rule: 'MoE router', test: (t) => /\.ffn_gate_inp\.weight$/.test(t.name), matmul: true, reason: 'MoE router: a matmul the statistics see, but changing it changes which experts run, not what they compute' },
  { rule: 'shared-expert gate', test: (t) => /\.ffn_gate_inp_shexp\.weight$/.test(t.name), matmul: true, reason: 'shared-expert gate: a one-row matmul giving one sigmoid gate per token; like the router it scales an expert, it computes no features' },
  { rule: 'SSM convolution', test: (t) => /\.ssm_conv1d\.weight$/.test(t.name), matmul: false, reason: 'Mamba depthwise causal convolution (SSM_CONV), not a matmul: there is no per-column input statistic to score it with' },
  { rule: 'SSM parameters', test: (t) => /\.ssm_(a|d)$/.test(t.name), matmul: false, reason: 'state-space decay (A) and skip (D), one value per head: elementwise' },
  { rule: 'RoPE factors', test: (t) => /rope_(freqs|factors_long|factors_short)\.weight$/.test(t.name), matmul: false, reason: 'RoPE frequency factors, not weights' },
  { rule: 'outside the blocks', test: (t) => !t.name.startsWith('blk.'), matmul: false, reason: 'outside the transformer blocks' },
  { rule: 'not a matrix', test: (t) => !t.name.endsWith('.weight') || t.shape.length < 2 || t.shape.length > 3, matmul: false, reason: 'not a 2D/3D weight' },
];

export function tensorRole(t: GgufTensorInfo, info: GgufInfo): TensorRoleInfo {
  for (const r of EXCLUSION_RULES) {
    if (!r.test(t, info)) continue;
    return {
      name: t.name, shape: t.shape, scored: false, rule: r.rule,
      matmul: typeof r.matmul === 'function' ? r.matmul(info) : r.matmul,
      reason: typeof r.reason === 'function' ? r.reason(info) : r.reason,
    };
  }
  return {
    name: t.name, shape: t.shape, scored: true, matmul: true, rule: 'weight matrix',
    reason: t.shape.length === 3 ? 'weight matrices, one per expert (or per head), each scored on its own' : 'weight matrix',
  };
}

/** Every tensor of the model with its role. */
export function tensorRoles(info: GgufInfo): TensorRoleInfo[] {
  return info.tensors.map((t) => tensorRole(t, info));
}

/** blk.12.attn_q.weight -> blk.*.attn_q.weight: one line per kind of tensor. */
export function tensorPattern(name: string): string {
  return name.replace(/^blk\.\d+\./, 'blk.*.');
}

/** Roles grouped by pattern (scored first), with the blocks each pattern appears in. */
export function tensorRoleSummary(info: GgufInfo): { pattern: string; scored: boolean; matmul: boolean; rule: string; reason: string; count: number }[] {
  const groups = new Map<string, { pattern: string; scored: boolean; matmul: boolean; rule: string; reason: string; count: number }>();
  for (const r of tensorRoles(info)) {
    const pattern = tensorPattern(r.name);
    const g = groups.get(pattern);
    if (g) g.count++;
    else groups.set(pattern, { pattern, scored: r.scored, matmul: r.matmul, rule: r.rule, reason: r.reason, count: 1 });
  }
  return [...groups.values()].sort((a, b) => Number(b.scored) - Number(a.scored));
}
