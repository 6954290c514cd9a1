// Generated models for the eval tests (random weights: garbage text, real mechanics), made once
// per machine under the OS temp dir, and a fresh result cache per test.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { synthModel } from '../../src/synth.ts';

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

/** A temporary cache directory removed when the test ends. */
export function tempCacheDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-eval-cache-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
