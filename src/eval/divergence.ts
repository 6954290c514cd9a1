// KL divergence between next-token distributions, in one place: the kl task (rows of logits from
// the native shim) and the exported klDivergence (dense probabilities) both sum through klOfLogRows.
import { safeLog } from './runtime.ts';

/** log(sum(exp(x))) of one row of logits, in float64. */
export function logSumExpRow(logits: Float32Array, offset: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[offset + i]! > max) max = logits[offset + i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[offset + i]! - max);
  return max + Math.log(sum);
}

/** log-softmax of one row of logits, in float64. */
export function logSoftmaxRow(logits: Float32Array, offset: number, n: number, out: Float64Array): void {
  const lse = logSumExpRow(logits, offset, n);
  for (let i = 0; i < n; i++) out[i] = logits[offset + i]! - lse;
}

/**
 * KL(P || Q) in nats between two rows of log-probabilities over the first `n` tokens, and whether
 * their top tokens agree. A token P gives no mass (log -Infinity) adds nothing.
 */
export function klOfLogRows(logP: ArrayLike<number>, logQ: ArrayLike<number>, n = logP.length): { kl: number; sameTop: boolean } {
  let kl = 0, topP = 0, topQ = 0;
  for (let i = 0; i < n; i++) {
    const lp = logP[i]!;
    if (lp !== -Infinity) kl += Math.exp(lp) * (lp - logQ[i]!);
    if (lp > logP[topP]!) topP = i;
    if (logQ[i]! > logQ[topQ]!) topQ = i;
  }
  return { kl: Math.max(0, kl), sameTop: topP === topQ };
}

/** KL(P || Q) in nats between two dense distributions over the same vocabulary (q floored like safeLog, so an underflowed 0 stays finite). */
export function klDivergence(p: Float32Array, q: Float32Array): number {
  const n = Math.min(p.length, q.length);
  const logP = new Float64Array(n), logQ = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    logP[i] = p[i]! > 0 ? Math.log(p[i]!) : -Infinity;
    logQ[i] = safeLog(q[i]);
  }
  return klOfLogRows(logP, logQ, n).kl;
}
