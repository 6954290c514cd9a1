// Loading the statistics a selection needs, with the checks that make mistakes visible.
import { MathneuroError } from '../errors.ts';
import type { GgufInfo } from '../gguf/reader.ts';
import { loadStats, modelIdentity, type LoadedStats } from '../stats/index.ts';
import type { SelectionMethod } from './select.ts';

export interface LoadedStatistics { stats: LoadedStats; warnings: string[] }

/**
 * Loads a statistics file for `model`. MathNeuro scores need the per-sample norms, which a plain
 * llama.cpp imatrix lacks (wanda-row only needs the sums of squares).
 */
export async function loadStatisticsFor(file: string, role: 'math' | 'general', model: GgufInfo, method: SelectionMethod): Promise<LoadedStatistics> {
  const stats = await loadStats(file);
  const warnings: string[] = [];
  if (!stats.hasNormSum && method !== 'wanda-row') {
    throw new MathneuroError('ESTATS', `${file} is a plain importance matrix without per-sample norms (in_norm_sum): MathNeuro scores need them; collect with mathneuro stats, or use --method wanda-row`);
  }
  const identity = modelIdentity(model);
  if (stats.model.headerSha256 && stats.model.headerSha256 !== identity.headerSha256) {
    warnings.push(`the ${role} statistics were collected on ${stats.model.fileName || 'another file'}, not on ${identity.fileName} (different header); fine for the same weights in another format, wrong otherwise`);
  }
  return { stats, warnings };
}
