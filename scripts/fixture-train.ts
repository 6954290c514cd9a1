// `npm run fixture:train`: trains the arithmetic + text fixture model from scratch with llama.cpp's
// training API (through the source build), evaluates it on its held-out sets, and writes the GGUF,
// its figures (figures.json) and its card (CARD.md). Seeded: the same seed gives the same data and
// the same initial weights. Two presets: `arith` (default; two-digit addition, learned to 99.8%) and
// `headroom` (the same lines, fewer steps: two-digit addition learned only partly, room for boost to
// help; 1,000 held-out problems; src/fixture/headroom.ts).
//
//   npm run fixture:train -- [--preset arith|headroom] [--out test/fixtures/<preset>/model.gguf] [--seed 1] [--steps N] [--threads 2] [--no-card]
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { evaluateFixture, type FixtureHeldOutFigures } from '../src/eval/tasks/arithmetic.ts';
import { evaluateHeadroomFixture, type HeadroomFigures } from '../src/eval/tasks/headroom.ts';
import { buildHeadroomHeldOutSets, headroomGrammarFloor, headroomLineSampler, HEADROOM_HELD_OUT_SIZES } from '../src/fixture/headroom.ts';
import { ARITHMETIC_MIX, ARITHMETIC_SHARE, buildHeldOutSets, buildTrainingWindows, grammarFloorNatsPerToken, HELD_OUT_SIZES, SENTENCE_TEMPLATES } from '../src/fixture/data.ts';
import { DEFAULT_HYPERPARAMETERS, writeInitialModel } from '../src/fixture/model.ts';
import { trainModel, type TrainOptions, type TrainResult } from '../src/fixture/train.ts';
import { buildFixtureVocab } from '../src/fixture/vocab.ts';
import { buildPaths, nativeBuild, packageRoot } from '../src/native.ts';

// Training needs the source build (its llama.cpp has the K/V-gradient patch).
if (!process.env.MATHNEURO_BUILD && existsSync(buildPaths.source)) process.env.MATHNEURO_BUILD = 'source';
// The source build uses OpenMP; its spin-waiting threads are ~20x slower on a busy machine
// (measured here: 0.26 vs 6.1 steps/s). Set before the addon (and libgomp) loads.
process.env.OMP_WAIT_POLICY ??= 'passive';

export const FIXTURE_TRAINING = {
  seed: 1,
  steps: 12000,
  learningRate: 3e-3,
  minLearningRate: 3e-5,
  warmupSteps: 200,
  beta1: 0.9,
  beta2: 0.99,
  weightDecay: 0.01,
} as const;

/** The headroom preset: the arith preset's optimizer and schedule, fewer steps (see its card). */
export const HEADROOM_TRAINING = { ...FIXTURE_TRAINING, steps: 2700 } as const;

const PRESETS = { arith: FIXTURE_TRAINING, headroom: HEADROOM_TRAINING } as const;
type Preset = keyof typeof PRESETS;

const { values: args } = parseArgs({
  options: {
    preset: { type: 'string', default: 'arith' },
    out: { type: 'string' },
    seed: { type: 'string' },
    steps: { type: 'string' },
    threads: { type: 'string', default: '2' },
    'no-card': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log('usage: npm run fixture:train -- [--preset arith|headroom] [--out PATH] [--seed N] [--steps N] [--threads N] [--no-card]');
  process.exit(0);
}
if (!(args.preset! in PRESETS)) { console.error(`--preset must be one of ${Object.keys(PRESETS).join(', ')}`); process.exit(2); }
const preset = args.preset as Preset;
const training = PRESETS[preset];
args.out ??= path.join(packageRoot, 'test', 'fixtures', preset, 'model.gguf');
const seed = Number(args.seed ?? training.seed);
const steps = Number(args.steps ?? training.steps);
const threads = Number(args.threads);
for (const [name, v] of [['seed', seed], ['steps', steps], ['threads', threads]] as const) {
  if (!Number.isInteger(v) || v < (name === 'seed' ? 0 : 1)) { console.error(`--${name} must be a ${name === 'seed' ? 'non-negative' : 'positive'} integer`); process.exit(2); }
}

const h = DEFAULT_HYPERPARAMETERS;
const started = Date.now();
const heldOut = buildHeldOutSets(seed);
const headroomHeldOut = preset === 'headroom' ? buildHeadroomHeldOutSets(seed) : undefined;
const vocab = buildFixtureVocab();
const tokens = buildTrainingWindows({ seed, windows: steps, nCtx: h.nCtx, vocab, heldOut, lineSampler: headroomHeldOut && headroomLineSampler(seed, 'train', headroomHeldOut) });
if (headroomHeldOut) console.log(`data: ${steps} windows of ${h.nCtx} tokens (${((Date.now() - started) / 1000).toFixed(1)} s to generate); held out ${headroomHeldOut.twoDigit.length} two-digit problems (with their commuted forms), ${headroomHeldOut.sentences.length} sentences`);
else console.log(`data: ${steps} windows of ${h.nCtx} tokens (${((Date.now() - started) / 1000).toFixed(1)} s to generate); held out ${heldOut.twoDigit.length} two-digit and ${heldOut.singleDigit.length} single-digit problems (with their commuted forms), ${heldOut.sentences.length} sentences`);

const work = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-fixture-'));
const initPath = path.join(work, 'init.gguf');
const { parameters } = writeInitialModel({ path: initPath, seed, name: preset === 'arith' ? undefined : `mathneuro-${preset}-fixture` });
console.log(`model: ${parameters} parameters, random init written to ${initPath} (native ${nativeBuild().kind} build)`);

const out = path.resolve(args.out);
mkdirSync(path.dirname(out), { recursive: true });
const options: TrainOptions = {
  modelPath: initPath, outputPath: out, tokens, nCtx: h.nCtx, threads,
  learningRate: training.learningRate, minLearningRate: training.minLearningRate,
  warmupSteps: training.warmupSteps, beta1: training.beta1, beta2: training.beta2,
  weightDecay: training.weightDecay, reportEvery: 500,
  onProgress: (p) => console.log(`step ${p.step}/${p.steps}  loss ${p.loss.toFixed(4)}  lr ${p.learningRate.toExponential(2)}  ${p.elapsedSeconds.toFixed(0)} s  ${((p.step * h.nCtx) / p.elapsedSeconds).toFixed(0)} tokens/s`),
};
const result: TrainResult = await trainModel(options);
rmSync(work, { recursive: true, force: true });
console.log(`trained ${result.steps} steps (${result.tokens} tokens) in ${result.seconds.toFixed(1)} s; ${result.trainedTensors} tensors received gradients; wrote ${out}`);

if (headroomHeldOut) {
  await finishHeadroom(headroomHeldOut);
  console.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.exit(0);
}

const figures = await evaluateFixture(out, heldOut, { threads });
const floor = grammarFloorNatsPerToken(heldOut.sentences);
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
console.log(`held-out two-digit addition: ${figures.twoDigit.correct}/${figures.twoDigit.total} (${pct(figures.twoDigit.accuracy)})`);
console.log(`held-out single-digit addition: ${figures.singleDigit.correct}/${figures.singleDigit.total} (${pct(figures.singleDigit.accuracy)})`);
console.log(`held-out text loss: ${figures.text.meanLossPerToken.toFixed(4)} nats/token over ${figures.text.tokens} tokens (grammar floor ${floor.toFixed(4)})`);

if (!args['no-card']) {
  const dir = path.dirname(out);
  const summary = {
    seed, steps: result.steps, nCtx: h.nCtx, threads, trainingSeconds: Math.round(result.seconds),
    parameters, trainedTensors: result.trainedTensors, finalTrainingLoss: round(result.finalLoss, 4),
    heldOut: {
      twoDigitCorrect: figures.twoDigit.correct, twoDigitTotal: figures.twoDigit.total,
      singleDigitCorrect: figures.singleDigit.correct, singleDigitTotal: figures.singleDigit.total,
      textLossPerToken: round(figures.text.meanLossPerToken, 4), textTokens: figures.text.tokens,
      grammarFloorPerToken: round(floor, 4),
    },
  };
  writeFileSync(path.join(dir, 'figures.json'), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(path.join(dir, 'CARD.md'), card(summary, figures, statSync(out).size));
  console.log(`wrote ${path.join(dir, 'figures.json')} and CARD.md`);
}
console.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s`);

function round(x: number, digits: number): number { return Number(x.toFixed(digits)); }

function card(summary: { trainingSeconds: number; finalTrainingLoss: number; trainedTensors: number; threads: number }, f: FixtureHeldOutFigures, bytes: number): string {
  const floor = grammarFloorNatsPerToken(heldOut.sentences);
  return `# Arithmetic + text fixture model (\`model.gguf\`)

A tiny llama-architecture model trained from scratch here, so that MathNeuro has skills to isolate
without a downloaded model. Made by \`npm run fixture:train\` (scripts/fixture-train.ts), which
writes this card and \`figures.json\`.

## Model
- llama architecture, all F32, ${parameters} parameters, ${(bytes / 1e6).toFixed(2)} MB: n_embd ${h.nEmbd}, n_ff ${h.nFf},
  ${h.nLayer} layers, ${h.nHead} heads (${h.nHeadKv} KV heads), context ${h.nCtx}, separate \`output.weight\`.
- Vocabulary (src/fixture/vocab.ts): ${vocab.tokens.length} SPM-style tokens: \`<unk>\`, \`<s>\`, \`</s>\`, the 256 byte tokens,
  the SPM space piece and ${vocab.tokens.length - 260} single characters (digits, \`+-*=\`, letters, \`.,?!'():;\`);
  add_space_prefix false, BOS added; a newline is its byte token \`<0x0A>\`.
- Initialization (src/fixture/model.ts): N(0, ${h.initStd}^2) matrices, attn_output/ffn_down scaled by 1/sqrt(2 x layers), norms 1.

## Data (src/fixture/data.ts, seed ${seed})
- Lines: ${100 * ARITHMETIC_SHARE}% addition facts \`a+b=c\` (${100 * ARITHMETIC_MIX.singleDigit}% both operands one digit, ${100 * ARITHMETIC_MIX.twoDigit}% both two digits,
  ${100 * ARITHMETIC_MIX.mixed}% one of each) and ${Math.round(100 * (1 - ARITHMETIC_SHARE))}% sentences from a ${SENTENCE_TEMPLATES.length}-template grammar. Multiplication was left out
  to keep the run inside its time budget.
- Held out, never trained on (nor their commuted forms): ${HELD_OUT_SIZES.singleDigit} single-digit and ${HELD_OUT_SIZES.twoDigit} two-digit problems,
  ${HELD_OUT_SIZES.sentences} sentences.
- Training windows: BOS then whole lines, ${h.nCtx} tokens; one window per optimizer step, every position a target.
- Calibration samples for statistics (\`calibrationSamples\`) come from the training distribution,
  so they are disjoint from the held-out sets.

## Training
- llama.cpp's training API (llama_opt_init / llama_opt_epoch) from native/train.cpp, source build
  (\`npm run build:source\`) with the three fixes of shared/docs/training-notes.md: gradients zeroed
  after every step, token_embd made a parameter, and native/patches/kv-gradient.diff so attn_k/attn_v
  get gradients (${summary.trainedTensors} tensors trained).
- AdamW (beta ${FIXTURE_TRAINING.beta1}/${FIXTURE_TRAINING.beta2}, weight decay ${FIXTURE_TRAINING.weightDecay}), learning rate ${FIXTURE_TRAINING.learningRate} after ${FIXTURE_TRAINING.warmupSteps} warm-up steps,
  cosine to ${FIXTURE_TRAINING.minLearningRate} over ${steps} steps (${steps * h.nCtx} tokens). Step-based, so the schedule does not
  depend on machine speed.
- ${summary.trainingSeconds} s on ${summary.threads} threads; final training loss ${summary.finalTrainingLoss} nats/token.

## Held-out figures (src/eval/tasks/arithmetic.ts)
| set | result |
|---|---|
| two-digit addition, exact match of the greedy completion | ${f.twoDigit.correct}/${f.twoDigit.total} (${(100 * f.twoDigit.accuracy).toFixed(1)}%) |
| single-digit addition | ${f.singleDigit.correct}/${f.singleDigit.total} (${(100 * f.singleDigit.accuracy).toFixed(1)}%) |
| sentence loss, "sentence\\n" after BOS | ${f.text.meanLossPerToken.toFixed(4)} nats/token (${f.text.tokens} tokens) |
| grammar floor of that loss | ${floor.toFixed(4)} nats/token |

The grammar floor is the exact entropy of the generator per token (line-type choice plus word
choices): no model can do better on average.

## Reproducing
\`npm run build:source && npm run fixture:train\`. The data and the initial weights depend only on
the seed. See the README's fixture section for whether the trained weights are bit-identical across
runs and thread counts.
`;
}

async function finishHeadroom(held: NonNullable<typeof headroomHeldOut>): Promise<void> {
  const f = await evaluateHeadroomFixture(out, held, { threads });
  const floor = headroomGrammarFloor(held.sentences);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  console.log(`held-out two-digit addition: ${f.twoDigit.correct}/${f.twoDigit.total} (${pct(f.twoDigit.accuracy)}); by carries: ${f.byCarries.map((r) => `${r.carries}: ${r.correct}/${r.total}`).join(', ')}`);
  console.log(`held-out text loss: ${f.text.meanLossPerToken.toFixed(4)} nats/token over ${f.text.tokens} tokens (grammar floor ${floor.toFixed(4)})`);
  if (args['no-card']) return;
  const dir = path.dirname(out);
  const summary = {
    preset, seed, steps: result.steps, nCtx: h.nCtx, threads, trainingSeconds: Math.round(result.seconds),
    parameters, trainedTensors: result.trainedTensors, finalTrainingLoss: round(result.finalLoss, 4),
    heldOut: {
      twoDigitCorrect: f.twoDigit.correct, twoDigitTotal: f.twoDigit.total,
      byCarries: f.byCarries,
      textLossPerToken: round(f.text.meanLossPerToken, 4), textTokens: f.text.tokens,
      grammarFloorPerToken: round(floor, 4),
    },
  };
  writeFileSync(path.join(dir, 'figures.json'), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(path.join(dir, 'CARD.md'), headroomCard(summary, f, floor, statSync(out).size));
  console.log(`wrote ${path.join(dir, 'figures.json')} and CARD.md`);
}

function headroomCard(summary: { trainingSeconds: number; finalTrainingLoss: number; trainedTensors: number; threads: number }, f: HeadroomFigures, floor: number, bytes: number): string {
  const pct = (k: number, n: number) => `${k}/${n} (${(100 * k / n).toFixed(1)}%)`;
  return `# Headroom fixture model (\`model.gguf\`): two-digit addition, learned partly

The second trained fixture (issue 17). The arith fixture answers 99.8% of its held-out problems, so
it cannot show whether boost raises accuracy. This one is the same network trained on the same kind
of lines for ${steps} steps instead of ${FIXTURE_TRAINING.steps}, so that it learns two-digit addition only partly while its
sentence loss comes near the grammar floor, and it is scored on 1,000 held-out problems. Made by
\`npm run fixture:train -- --preset headroom\` (scripts/fixture-train.ts), which writes this card
and \`figures.json\`.

## Model
- The arith fixture's architecture, vocabulary and initialization (src/fixture/model.ts, vocab.ts), same seed:
  llama, all F32, ${parameters} parameters, ${(bytes / 1e6).toFixed(2)} MB: n_embd ${h.nEmbd}, n_ff ${h.nFf}, ${h.nLayer} layers, ${h.nHead} heads, context ${h.nCtx}.

## Data (src/fixture/headroom.ts, seed ${seed})
- Lines as the arith fixture's (src/fixture/data.ts): ${100 * ARITHMETIC_SHARE}% addition facts \`a+b=c\` (${100 * ARITHMETIC_MIX.singleDigit}% both operands one digit,
  ${100 * ARITHMETIC_MIX.twoDigit}% both two digits, ${100 * ARITHMETIC_MIX.mixed}% one of each) and ${Math.round(100 * (1 - ARITHMETIC_SHARE))}% sentences from its ${SENTENCE_TEMPLATES.length}-template grammar,
  drawn on this preset's own streams (\`headroom-train\`).
- Held out, never trained on (nor their commuted forms): ${HEADROOM_HELD_OUT_SIZES.twoDigit} two-digit problems and ${HEADROOM_HELD_OUT_SIZES.sentences} sentences
  (stream \`headroom-heldout\`).
- The answer is written most significant digit first, so its first digit already needs the carry
  out of the ones column: the step the partly trained model gets wrong (accuracy by carries below).
- Training windows: BOS then whole lines, ${h.nCtx} tokens; one window per optimizer step, every position a target.
- Calibration samples (\`headroomCalibrationSamples\`) come from the training distribution.

## Training
- As the arith fixture (native/train.cpp, source build with the K/V-gradient patch; ${summary.trainedTensors} tensors trained):
  AdamW (beta ${training.beta1}/${training.beta2}, weight decay ${training.weightDecay}), learning rate ${training.learningRate} after ${training.warmupSteps} warm-up steps,
  cosine to ${training.minLearningRate} over ${steps} steps (${steps * h.nCtx} tokens). Step-based: the schedule does not depend on machine speed.
- ${summary.trainingSeconds} s on ${summary.threads} threads (the 2-core machine was shared with other jobs); final training loss ${summary.finalTrainingLoss} nats/token.
- The step count was chosen for held-out accuracy between 30% and 70% by runs of this preset with
  other \`--steps\` (two-digit accuracy on these 1,000 problems): 6000 steps 98.8%, 3300 steps 85.0%
  (\`--threads 1\`), 2700 steps 68.6% (this model). Learning is steep there: a few hundred steps more
  or less move accuracy by 15 points. A pilot of three-digit addition (80% of the addition lines
  three-digit) reached 0.4% on three-digit problems after 3000 steps, too little for this budget.

## Held-out figures (src/eval/tasks/headroom.ts)
| set | result |
|---|---|
| two-digit addition, exact match of the greedy completion | ${pct(f.twoDigit.correct, f.twoDigit.total)} |
${f.byCarries.map((r) => `| of which with ${r.carries} carr${r.carries === 1 ? 'y' : 'ies'} | ${pct(r.correct, r.total)} |`).join('\n')}
| sentence loss, "sentence\\n" after BOS | ${f.text.meanLossPerToken.toFixed(4)} nats/token (${f.text.tokens} tokens) |
| grammar floor of that loss | ${floor.toFixed(4)} nats/token |

## Reproducing
\`npm run build:source && npm run fixture:train -- --preset headroom\`. The data and the initial
weights depend only on the seed; see the README's fixture section on bit-identity across runs and
thread counts.
`;
}
