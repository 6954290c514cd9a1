// Built-in calibration sets, so the tool works with no data file: `math` (grade-school word
// problems with worked solutions, GSM8K-style) and `general` (passages and reading questions on
// non-math topics, RACE-style). A (version, seed) pair names an exact list of texts; sample i
// does not depend on how many are drawn, so [0, n) and [n, 2n) are disjoint subsets.
import { MathneuroError } from '../errors.ts';
import type { Sample } from '../stats/data.ts';
import { generalPassage, generalText, type GeneralPassage } from './general.ts';
import { mathProblem, type MathProblem } from './math.ts';

export { MATH_PROBLEM_KINDS, mathProblem, type MathProblem, type MathProblemKind } from './math.ts';
export { GENERAL_TOPICS, generalPassage, generalText, type GeneralPassage, type GeneralTopicName } from './general.ts';
export { evaluateArithmetic } from './arithmetic.ts';

/** Version of the built-in texts; bumped whenever a template, list or the generator changes. */
export const CALIBRATION_VERSION = '1';
export const CALIBRATION_VERSIONS: readonly string[] = ['1'];

export type BuiltinSetName = 'math' | 'general';

export interface BuiltinSetOptions {
  /** samples to generate (default 100) */
  count?: number;
  /** seed of the templates' draws (default 0) */
  seed?: number;
  /** index of the first sample (default 0); disjoint subsets use disjoint ranges */
  start?: number;
  /** texts of this version (default CALIBRATION_VERSION) */
  version?: string;
}

export interface BuiltinSample extends Sample {
  /** the structured problem or passage the text was written from */
  math?: MathProblem;
  general?: GeneralPassage;
}

/** The text of a math problem as calibration text: question then worked answer, like GSM8K train. */
export function mathText(p: MathProblem): string {
  return `${p.question}\n${p.solution}`;
}

/** `count` samples of a built-in set; `source` is "builtin:<set>@<version>/seed<seed>#<index>". */
export function builtinSamples(set: BuiltinSetName, options: BuiltinSetOptions = {}): BuiltinSample[] {
  const count = options.count ?? 100, seed = options.seed ?? 0, start = options.start ?? 0;
  const version = options.version ?? CALIBRATION_VERSION;
  if (!CALIBRATION_VERSIONS.includes(version)) throw new MathneuroError('EUSAGE', `unknown calibration version "${version}" (known: ${CALIBRATION_VERSIONS.join(', ')})`);
  if (set !== 'math' && set !== 'general') throw new MathneuroError('EUSAGE', `unknown built-in set "${set}" (math or general)`);
  for (const [name, v] of [['count', count], ['seed', seed], ['start', start]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new MathneuroError('EUSAGE', `built-in set ${name} must be a non-negative integer, got ${v}`);
  }
  const out: BuiltinSample[] = [];
  for (let i = start; i < start + count; i++) {
    const source = `builtin:${set}@${version}/seed${seed}#${i}`;
    if (set === 'math') {
      const p = mathProblem(i, seed, version);
      out.push({ text: mathText(p), source, math: p });
    } else {
      const p = generalPassage(i, seed, version);
      out.push({ text: generalText(p), source, general: p });
    }
  }
  return out;
}

/** Name of a built-in set as stored in statistics files' dataset list. */
export function builtinDatasetName(set: BuiltinSetName, options: BuiltinSetOptions = {}): string {
  return `builtin:${set}@${options.version ?? CALIBRATION_VERSION}/seed${options.seed ?? 0}`;
}
