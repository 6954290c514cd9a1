// Generated models for the eval tests (random weights: garbage text, real mechanics), made once
// per machine under the OS temp dir, and a fresh result cache per test.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { synthModel } from '../../src/synth.ts';
import { sharedLlama } from '../../src/eval/runtime.ts';

const modelDir = path.join(os.tmpdir(), 'mathneuro-eval-test-models');

/**
 * A small generated llama model (tiny shape, F32 by default), cached by (type, seed, std).
 * weightStd 0.5 (default here) gives peaked next-token distributions: greedy choices then have
 * clear margins, so batch-dependent rounding in llama.cpp's kernels cannot flip them (with
 * the synth default the distributions are nearly flat and near-ties make greedy text batch-dependent).
 */
export async function evalTestModel(options: { type?: 'f32' | 'q8_0'; seed?: number; weightStd?: number } = {}): Promise<string> {
  const type = options.type ?? 'f32';
  const seed = options.seed ?? 7;
  const weightStd = options.weightStd ?? 0.5;
  const file = path.join(modelDir, `tiny-${type}-seed${seed}-std${weightStd}.gguf`);
  if (!existsSync(file)) {
    mkdirSync(modelDir, { recursive: true });
    await synthModel({ out: file, shape: 'tiny', type, seed, weightStd, overwrite: true });
  }
  return file;
}

/**
 * How far one token's log-probability may move between two correct computations of it, in nats.
 * Batched and one-at-a-time decoding run other kernels (llama.cpp picks them by batch size, and by
 * CPU variant: MATHNEURO_CPU_VARIANT), so logits differ by float rounding; with node-llama-cpp's F16
 * K/V cache an element of Q/K/V can also round to the neighbouring f16 (one step = 2^-10 relative)
 * and the attention moves with it. Measured worst |log p(batched) - log p(sequential)| over the top
 * tokens (p > 1e-4) of 4 gsm8k prompts, teacher-forced one token per step on 1 vs 4 sequences, with
 * evalTestModel(): x64 and sse42 0, haswell 7.7e-3, zen4 6.7e-3; MMLU choices against the
 * one-token-at-a-time computation: 8.9e-3 (zen4). The bound leaves a factor of 5 over the worst.
 * Two greedy choices can only differ where the top-2 margin is under 2 x this.
 */
export const LOGPROB_TOLERANCE = 0.05;

/** A temporary cache directory removed when the test ends. */
export function tempCacheDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-eval-cache-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** node-llama-cpp on the CPU, through mathneuro's runtime: with MATHNEURO_CPU_VARIANT set, the variant
 * is loaded before node-llama-cpp starts, so the independent computations use the same CPU kernels. */
export function sharedLlamaForTests() {
  return sharedLlama({ gpu: false });
}
