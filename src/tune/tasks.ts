// What `tune` measures a candidate on, per kind of model: the math objective (teacher-forced answer
// tokens of held-out problems given their question), the general prompts of the KL and NLL
// constraints (a search set, and a held-out set that the search never sees), the calibration sets
// of the statistics, and the generation check of --confirm. A task is a plain object, so another
// model (a new fixture) plugs in with registerTuneTask() or by passing its own TuneTask.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import path from 'node:path';
import { builtinSamples } from '../calibration/index.ts';
import { dataFile, loadGsm8k, packageDataDir } from '../eval/data.ts';
import { pairedAccuracy } from '../eval/confidence.ts';
import { arithmeticAccuracy } from '../eval/tasks/arithmetic.ts';
import { MathneuroError } from '../errors.ts';
import { buildHeldOutSets, calibrationSamples } from '../fixture/data.ts';
import { buildHeadroomHeldOutSets, headroomCalibrationSamples } from '../fixture/headroom.ts';
import type { CalibrationChoice } from '../pipeline.ts';
import { drawSamples, readSamples } from '../stats/data.ts';

/** One item of the objective: the model reads `prompt` (after BOS) and is scored on `answer`'s tokens. */
export interface ObjectiveSample { prompt: string; answer: string }

/** The generation check of --confirm: accuracy of the patched model and its source on the same items. */
export interface ConfirmResult {
  items: number;
  source: number;
  patched: number;
  difference: number;
  /** McNemar's exact p (src/eval/confidence.ts) */
  pValue: number;
  what: string;
}

export interface TaskSizes {
  /** objective samples of the search (and as many again held out) */
  objective: number;
  /** general prompts of the search (and as many again held out) */
  general: number;
  /** calibration samples per set (the statistics) */
  samples: number;
  seed: number;
}

export interface TuneData {
  objective: { search: ObjectiveSample[]; heldOut: ObjectiveSample[] };
  general: { search: string[]; heldOut: string[] };
  /** the statistics' calibration sets (passed to calibrationStats as boost does) */
  calibration: { math: CalibrationChoice; general: CalibrationChoice };
  /** where the objective came from, for the output */
  describe: string;
}

export interface TuneTask {
  name: string;
  /** the data of one run; `cacheDir` is where a task may write calibration files it generates */
  data(sizes: TaskSizes, cacheDir: string): TuneData;
  /** --confirm: generation accuracy on `n` held-out problems (never the search's or the objective's) */
  confirm?(patched: string, source: string, n: number, options: { threads?: number; seed: number; signal?: AbortSignal }): Promise<ConfirmResult>;
}

/** sha256 of a JSON value, for cache keys. */
export function digest(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

/** Built-in general passages, one prompt each (the KL check of boost uses seed 1_000_000 + seed; the search another range). */
function generalPrompts(count: number, seed: number): string[] {
  return builtinSamples('general', { count, seed }).map((s) => s.text);
}

/**
 * Real models: GSM8K train items (question, then the worked answer) that the calibration did not
 * use. With the built-in calibration set, any; with --math <the same GSM8K file>, the items after
 * the calibration's draw (the same seeded order calibrationStats draws from).
 */
export function gsm8kTask(options: { file?: string; math?: CalibrationChoice; general?: CalibrationChoice } = {}): TuneTask {
  return {
    name: 'gsm8k',
    data(sizes) {
      const file = dataFile(options.file ?? path.join(packageDataDir, 'gsm8k_train.jsonl'));
      const items = loadGsm8k(file);
      const math = options.math ?? { builtin: 'math' };
      let skip = 0;
      let seed = sizes.seed + 7_000_000;   // another order than any calibration draw of the built-in sets
      if ('file' in math && path.resolve(dataFile(math.file)) === path.resolve(file)) {
        // the calibration drew drawSamples(all, undefined, seed).slice(start, start + samples)
        seed = sizes.seed;
        skip = (math.start ?? 0) + sizes.samples;
        if (readSamples(file).length !== items.length) throw new MathneuroError('EDATA', `${file}: its samples and GSM8K items do not line up`);
      }
      const need = 2 * sizes.objective;
      if (items.length - skip < need) throw new MathneuroError('EUSAGE', `${file} has ${items.length} items: ${need} objective items are needed after the ${skip} the calibration uses (lower --objective-samples)`);
      const order = drawSamples(items, undefined, seed).slice(skip, skip + need);
      const toSample = (x: { question: string; answer: string }): ObjectiveSample => ({ prompt: `${x.question}\n`, answer: x.answer });
      return {
        objective: { search: order.slice(0, sizes.objective).map(toSample), heldOut: order.slice(sizes.objective).map(toSample) },
        general: { search: generalPrompts(sizes.general, 2_000_000 + sizes.seed), heldOut: generalPrompts(sizes.general, 1_000_000 + sizes.seed) },
        calibration: { math, general: options.general ?? { builtin: 'general' } },
        describe: `${path.basename(file)}: ${sizes.objective} worked solutions (+${sizes.objective} held out)${skip ? `, after the ${skip} calibration items` : ''}`,
      };
    },
    // boost's own check: built-in word problems from a seed no calibration or objective uses
    async confirm(patched, source, n, o) {
      const { checkPatched } = await import('../pipeline.ts');
      const r = await checkPatched(source, patched, { kl: false, gsm8k: n }, { seed: o.seed, nThreads: o.threads, signal: o.signal });
      const g = r.gsm8k!;
      return { items: g.items, source: g.source, patched: g.patched, difference: g.difference, pValue: g.pValue, what: `GSM8K-style accuracy on ${g.items} built-in word problems (greedy, 8-shot)` };
    },
  };
}

/** The held-out sets and calibration lines of a trained fixture (src/fixture). */
interface FixtureData {
  name: string;
  what: string;
  heldOut: () => { twoDigit: { prompt: string; answer: string }[]; sentences: string[] };
  calibration: (kind: 'math' | 'general', count: number, seed: number) => string[];
}

/**
 * A trained fixture (test/fixtures/arith or test/fixtures/headroom, src/fixture): the objective is
 * the answer "c\n" of held-out two-digit problems "a+b=" (never trained on), the general prompts are
 * held-out sentences, the statistics come from its calibration lines (as the surgery experiment's
 * do), and --confirm is exact-match accuracy of greedy completions on the second half of the
 * held-out problems, which the objective never reads.
 */
function fixtureTask(fixture: FixtureData, options: { calibrationSeed?: number; sentencesPerPrompt?: number }): TuneTask {
  const perPrompt = options.sentencesPerPrompt ?? 8;
  return {
    name: fixture.name,
    data(sizes, cacheDir) {
      const h = fixture.heldOut();
      const need = 2 * sizes.objective;
      if (need > h.twoDigit.length / 2) throw new MathneuroError('EUSAGE', `the fixture holds out ${h.twoDigit.length} two-digit problems: at most ${Math.floor(h.twoDigit.length / 4)} objective samples (half stays for --confirm)`);
      if (2 * sizes.general * perPrompt > h.sentences.length) throw new MathneuroError('EUSAGE', `the fixture holds out ${h.sentences.length} sentences: at most ${Math.floor(h.sentences.length / perPrompt / 2)} general prompts`);
      const toSample = (p: { prompt: string; answer: string }): ObjectiveSample => ({ prompt: p.prompt, answer: `${p.answer}\n` });
      const prompts = Array.from({ length: 2 * sizes.general }, (_, i) => h.sentences.slice(i * perPrompt, (i + 1) * perPrompt).map((s) => `${s}\n`).join(''));
      // calibration lines as data files, so the statistics go through boost's cache (calibrationStats)
      const calSeed = options.calibrationSeed ?? 11;
      const calibration = (kind: 'math' | 'general'): CalibrationChoice => {
        const texts = fixture.calibration(kind, sizes.samples, calSeed);
        const file = path.join(cacheDir, 'tune-data', `${fixture.name}-${kind}-${digest(texts).slice(0, 16)}.jsonl`);
        if (!existsSync(file)) {
          mkdirSync(path.dirname(file), { recursive: true });
          writeFileSync(file, texts.map((text) => JSON.stringify({ text })).join('\n') + '\n');
        }
        return { file };
      };
      return {
        objective: { search: h.twoDigit.slice(0, sizes.objective).map(toSample), heldOut: h.twoDigit.slice(sizes.objective, need).map(toSample) },
        general: { search: prompts.slice(0, sizes.general), heldOut: prompts.slice(sizes.general) },
        calibration: { math: calibration('math'), general: calibration('general') },
        describe: `${fixture.what}: ${sizes.objective} held-out two-digit problems (+${sizes.objective} held out)`,
      };
    },
    async confirm(patched, source, n) {
      const h = fixture.heldOut();
      const items = h.twoDigit.slice(h.twoDigit.length / 2).slice(0, n);
      if (items.length < n) throw new MathneuroError('EUSAGE', `--confirm: the fixture has ${items.length} problems for it, not ${n}`);
      const a = await arithmeticAccuracy(patched, items, { threads: 1 });
      const b = await arithmeticAccuracy(source, items, { threads: 1 });
      const cmp = pairedAccuracy(a.completions.map((c, i) => c === items[i].answer), b.completions.map((c, i) => c === items[i].answer));
      return { items: n, source: b.accuracy, patched: a.accuracy, difference: cmp.difference, pValue: cmp.pValue, what: `exact match of greedy completions on ${n} held-out two-digit problems` };
    },
  };
}

/** The arithmetic fixture (test/fixtures/arith: 500 held-out two-digit problems, 99.8% answered). */
export function arithFixtureTask(options: { seed?: number; calibrationSeed?: number; sentencesPerPrompt?: number } = {}): TuneTask {
  const seed = options.seed ?? 1;
  return fixtureTask({
    name: 'arith-fixture', what: `arith fixture (seed ${seed})`,
    heldOut: () => buildHeldOutSets(seed),
    calibration: (kind, count, calSeed) => calibrationSamples(kind, buildHeldOutSets(seed), { seed: calSeed, count }),
  }, options);
}

/** The headroom fixture (test/fixtures/headroom: 1,000 held-out two-digit problems, 68.6% answered). */
export function headroomFixtureTask(options: { seed?: number; calibrationSeed?: number; sentencesPerPrompt?: number } = {}): TuneTask {
  const seed = options.seed ?? 1;
  return fixtureTask({
    name: 'headroom-fixture', what: `headroom fixture (seed ${seed})`,
    heldOut: () => buildHeadroomHeldOutSets(seed),
    calibration: (kind, count, calSeed) => headroomCalibrationSamples(kind, buildHeadroomHeldOutSets(seed), { seed: calSeed, count }),
  }, options);
}

/** An objective from a file: JSON lines {"prompt","answer"} or {"question","answer"} (the question then a newline); .gz read too. */
export function objectiveFromFile(file: string): ObjectiveSample[] {
  const found = dataFile(file);
  if (!existsSync(found)) throw new MathneuroError('ENOENT', `no such objective file: ${file}`);
  const bytes = readFileSync(found);
  const text = found.endsWith('.gz') ? gunzipSync(bytes).toString('utf8') : bytes.toString('utf8');
  const out: ObjectiveSample[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let row: Record<string, unknown>;
    try { row = JSON.parse(line); } catch { throw new MathneuroError('EDATA', `${file}:${i + 1}: not valid JSON`); }
    const answer = row?.answer;
    const prompt = typeof row?.prompt === 'string' ? row.prompt : typeof row?.question === 'string' ? `${row.question}\n` : undefined;
    if (prompt === undefined || typeof answer !== 'string' || !answer) throw new MathneuroError('EDATA', `${file}:${i + 1}: expected {"prompt","answer"} or {"question","answer"} strings`);
    out.push({ prompt, answer });
  });
  if (out.length === 0) throw new MathneuroError('EDATA', `${file}: no objective samples`);
  return out;
}

/** A task whose objective samples come from a file (the first N searched, the next N held out), the rest as `task` has it. */
export function withObjectiveFile(task: TuneTask, file: string): TuneTask {
  return {
    ...task,
    data(sizes, cacheDir) {
      const all = objectiveFromFile(file);
      if (all.length < 2 * sizes.objective) throw new MathneuroError('EUSAGE', `${file} has ${all.length} objective samples: ${2 * sizes.objective} are needed (lower --objective-samples)`);
      const base = task.data(sizes, cacheDir);
      return { ...base, objective: { search: all.slice(0, sizes.objective), heldOut: all.slice(sizes.objective, 2 * sizes.objective) }, describe: `${path.basename(file)}: ${sizes.objective} samples (+${sizes.objective} held out)` };
    },
  };
}

const registry = new Map<string, (options: Record<string, unknown>) => TuneTask>([
  ['gsm8k', (o) => gsm8kTask(o as Parameters<typeof gsm8kTask>[0])],
  ['arith-fixture', (o) => arithFixtureTask(o as Parameters<typeof arithFixtureTask>[0])],
  ['headroom-fixture', (o) => headroomFixtureTask(o as Parameters<typeof headroomFixtureTask>[0])],
]);

/** Adds a named task (e.g. a new fixture's) to the ones `--task` accepts. */
export function registerTuneTask(name: string, make: (options: Record<string, unknown>) => TuneTask): void {
  registry.set(name, make);
}

export function tuneTaskNames(): string[] { return [...registry.keys()]; }

export function tuneTask(name: string, options: Record<string, unknown> = {}): TuneTask {
  const make = registry.get(name);
  if (!make) throw new MathneuroError('EUSAGE', `unknown tune task "${name}" (${tuneTaskNames().join(', ')})`);
  return make(options);
}
