// Shared by the patch tests: synthetic statistics for a model's block weights, a brute-force
// reference selection, and byte helpers.
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import path from 'node:path';
import { readGgufSync, type GgufInfo, type GgufTensorInfo } from '../../src/gguf/reader.ts';
import { dequantize } from '../../src/core/codec.ts';
import type { ColumnStatistics, StatisticsSource } from '../../src/select/select.ts';
import { modelIdentity, saveStats } from '../../src/stats/index.ts';
import { main } from '../../src/cli/main.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';

export const workDir = path.join(repoRoot, '.cache', 'test-patch');
mkdirSync(workDir, { recursive: true });

function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

/** Random positive column statistics for every 2D/3D block weight (and output.weight). */
export function syntheticStats(info: GgufInfo, seed: number): StatisticsSource & { weights: Map<string, ColumnStatistics> } {
  const r = rng(seed);
  const weights = new Map<string, ColumnStatistics>();
  for (const t of info.tensors) {
    if (!(t.name.startsWith('blk.') || t.name === 'output.weight') || t.shape.length < 2) continue;
    const nIn = t.shape[0], nMat = t.shape[2] ?? 1;
    const normSum = new Float64Array(nIn * nMat).map(() => 0.1 + r() * (r() < 0.05 ? 50 : 5));
    const sum2 = new Float64Array(nIn * nMat).map(() => 0.01 + r() * 3);
    weights.set(t.name, { name: t.name, nIn, nMat, normSum, sum2, counts: new Float64Array(nMat).fill(100) });
  }
  return { weights };
}

/** Writes synthetic statistics as a statistics file (the format mathneuro stats writes). */
export async function syntheticStatsFile(modelPath: string, seed: number, file: string): Promise<string> {
  const info = readGgufSync(modelPath);
  const { weights } = syntheticStats(info, seed);
  await saveStats({ model: modelIdentity(info), samples: 10, tokens: 1000, datasets: [`synthetic-${seed}`], weights }, file);
  return file;
}

export function sha256(file: string): string { return createHash('sha256').update(readFileSync(file)).digest('hex'); }

export function readRange(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try { const b = Buffer.alloc(length); readSync(fd, b, 0, length, offset); return b; } finally { closeSync(fd); }
}

export function tensorBytes(info: GgufInfo, t: GgufTensorInfo): Buffer { return readRange(info.path, t.absoluteOffset, t.byteSize); }

/** Brute-force MathNeuro set of one 2D tensor: full sort of float64 scores (desc, index asc). */
export function referenceMathNeuro(values: Float32Array, nIn: number, math: Float64Array, general: Float64Array, k: number): Set<number> {
  const top = (col: Float64Array) => {
    const items: { s: number; i: number }[] = [];
    for (let i = 0; i < values.length; i++) { const s = Math.abs(values[i]) * col[i % nIn]; if (s > 0) items.push({ s, i }); }
    items.sort((a, b) => (b.s - a.s) || (a.i - b.i));
    return new Set(items.slice(0, k).map((x) => x.i));
  };
  const g = top(general);
  return new Set([...top(math)].filter((i) => !g.has(i)));
}

export function dequantizedTensor(info: GgufInfo, t: GgufTensorInfo): Float32Array {
  return dequantize(t.type, tensorBytes(info, t), t.numel);
}

/** The cache folder of the patch tests' CLI runs (the hash memo: not the user's). */
export const testCacheDir = path.join(workDir, 'cache');

/** Runs the CLI in process; stdout and stderr collected as strings. */
export async function cli(args: string[], env: NodeJS.ProcessEnv = { MATHNEURO_CACHE_DIR: testCacheDir }): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  const io = { stdout: { write: (s: string) => { stdout += s; return true; } } as any, stderr: { write: (s: string) => { stderr += s; return true; } } as any, env };
  const code = await main(args, io);
  return { code, stdout, stderr };
}

/** `dir` emptied, with a copy of the tiny generated model of every codec type ('cycle') in it, and its math statistics. */
export async function cycleModelIn(dir: string, mathSeed: number): Promise<{ model: string; math: string }> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const model = path.join(dir, 'model.gguf');
  copyFileSync(await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 }), model);
  return { model, math: await syntheticStatsFile(model, mathSeed, path.join(dir, 'math.stats.gguf')) };
}
