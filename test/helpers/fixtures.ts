// Generated test models, cached under .cache/fixtures (git-ignored) by their options.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { synthModel, type SynthOptions } from '../../src/synth.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixtureDir = path.join(repoRoot, '.cache', 'fixtures');
/** ../shared/data beside the repository (CI lays shared/ there), or MATHNEURO_DATA_DIR */
export const dataDir = process.env.MATHNEURO_DATA_DIR ?? path.resolve(repoRoot, '..', 'shared', 'data');

export type FixtureOptions = Omit<SynthOptions, 'out' | 'onProgress' | 'overwrite'>;

/** Path of a generated model with these options; made once, then reused. */
export async function fixtureModel(options: FixtureOptions = {}): Promise<string> {
  const shape = typeof options.shape === 'object' ? Object.entries(options.shape).map(([k, v]) => `${k}${v}`).join('-') : options.shape ?? 'tiny';
  const name = `${options.arch && options.arch !== 'llama' ? `${options.arch}-` : ''}${shape}-${options.type ?? 'mixed'}-s${options.seed ?? 0}${options.untiedOutput === undefined ? '' : options.untiedOutput ? '-untied' : '-tied'}${options.weightStd ? `-std${options.weightStd}` : ''}.gguf`;
  const out = path.join(fixtureDir, name);
  if (!existsSync(out)) {
    mkdirSync(fixtureDir, { recursive: true });
    await synthModel({ ...options, out, overwrite: true });
  }
  return out;
}
