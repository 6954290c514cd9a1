// gsm8k on a generated model: batched generation equals one-at-a-time and an independent
// LlamaCompletion run (greedy, within the rounding bound EPS below), the cache only evaluates new
// items, exemplars come from train.
import t from 'tap';
import { LlamaCompletion } from 'node-llama-cpp';
import path from 'node:path';
import { defaultDataDir, loadGsm8k } from '../../src/eval/data.ts';
import { drawGsm8kExemplars, evaluate } from '../../src/eval/evaluate.ts';
import { gsm8kPrompt } from '../../src/eval/prompts.ts';
import { EvalModel } from '../../src/eval/runtime.ts';
import type { Token } from 'node-llama-cpp';
import { evalTestModel, LOGPROB_TOLERANCE, sharedLlamaForTests, tempCacheDir } from './helpers.ts';

const data = defaultDataDir();
const common = { task: 'gsm8k' as const, shots: 1, maxTokens: 12, threads: 1 };

t.test('exemplars are drawn from the train file, seeded, never from test', async (t) => {
  const test = loadGsm8k(path.join(data, 'gsm8k_test.jsonl'));
  const testQuestions = new Set(test.map((i) => i.question.trim()));
  const a = drawGsm8kExemplars(path.join(data, 'gsm8k_train.jsonl'), 8, 1234, testQuestions);
  const b = drawGsm8kExemplars(path.join(data, 'gsm8k_train.jsonl'), 8, 1234, testQuestions);
  const c = drawGsm8kExemplars(path.join(data, 'gsm8k_train.jsonl'), 8, 99, testQuestions);
  t.equal(a.length, 8);
  t.same(a.map((e) => e.id), b.map((e) => e.id), 'same seed, same exemplars');
  t.not(a.map((e) => e.id).join(), c.map((e) => e.id).join(), 'another seed, other exemplars');
  t.ok(a.every((e) => !testQuestions.has(e.question.trim())));
  const prompt = gsm8kPrompt(a, test[0]!.question);
  t.match(prompt, /^Q: [^]*\nA: [^]*The answer is -?\d+(\.\d+)?\.\n\nQ: /);
  t.ok(prompt.endsWith(`Q: ${test[0]!.question.trim()}\nA:`));
  t.notMatch(prompt, /<<|####/, 'calculator annotations and #### markers removed');
  await t.rejects(evaluate({ model: await evalTestModel(), task: 'gsm8k', train: path.join(data, 'gsm8k_test.jsonl'), limit: 1 }), /--train must not be the test file/);
});

// Greedy texts of batched and sequential decoding can only part where the top-2 log-probability
// margin is under 2 x EPS (each side's log-probabilities move by at most EPS: see LOGPROB_TOLERANCE).
const EPS = LOGPROB_TOLERANCE;

/** Sequential greedy decoding that records each step's margin log p(top1) - log p(top2). */
async function greedyWithMargins(modelPath: string, prompts: string[], maxTokens: number) {
  const em = await EvalModel.load(modelPath, { threads: 1 });
  await em.open({ parallel: 1, contextSize: 2048 });
  const seq = em.sequences[0]!;
  const out: { margins: number[]; stable: { text: string; complete: boolean } }[] = [];
  for (const prompt of prompts) {
    await seq.clearHistory();
    let pending = em.tokenize(prompt);
    const tokens: Token[] = [], margins: number[] = [];
    for (let step = 0; step < maxTokens; step++) {
      const r = await seq.controlledEvaluate(pending.map((tok, k) => (k === pending.length - 1 ? [tok, { generateNext: { probabilities: true } }] : tok)));
      const entries = r[pending.length - 1]!.next.probabilities!.entries(); // sorted, most probable first
      const [top, p1] = entries.next().value!;
      const [, p2] = entries.next().value!;
      margins.push(Math.log(p1) - Math.log(p2));
      if (em.model.isEogToken(top)) break;
      tokens.push(top);
      pending = [top];
    }
    out.push({ margins, stable: stableText(tokens, margins, (tok) => em.model.detokenize(tok)) });
  }
  await em.dispose();
  return out;
}

/** The part of a greedy output that rounding cannot change: the text before the first step with a margin under 2 x EPS. */
function stableText(tokens: Token[], margins: number[], detokenize: (t: Token[]) => string) {
  const tie = margins.findIndex((m) => m < 2 * EPS);
  let text = detokenize(tie < 0 ? tokens : tokens.slice(0, tie));
  const stop = text.indexOf('Q:');
  if (stop >= 0) text = text.slice(0, stop);
  return { text, complete: tie < 0 || stop >= 0 };
}

// Batched generation crossed tokens between sequences until the sampling race after a multi-sequence
// decode was fixed (src/eval/runtime.ts, serializeFirstSampleAfterDecode): node-llama-cpp sampled all
// sequences at once while llama.cpp's output_reorder was still swapping the logits rows. Before the
// fix this comparison failed in 4 of 5 runs with 6 sequences; with the fix it held in 20 of 20.
t.test('batched generation equals sequential', async (t) => {
  const model = await evalTestModel({ seed: 1, weightStd: 2 });
  const sequential = await evaluate({ ...common, model, limit: 6, parallel: 1, cache: false });
  for (const parallel of [6, 4]) {
    const batched = await evaluate({ ...common, model, limit: 6, parallel, cache: false });
    for (let i = 0; i < 6; i++) t.equal(batched.itemResults[i]!.output, sequential.itemResults[i]!.output, `item ${i}, ${parallel} sequences: same greedy output`);
  }
});

t.test('sequential generation equals an independent greedy decode and an independent LlamaCompletion run', async (t) => {
  // A fixture whose greedy decisions on these prompts all have clear margins (smallest 0.44 nats,
  // checked below): the synth default std gives near-flat distributions with near-ties.
  const model = await evalTestModel({ seed: 1, weightStd: 2 });
  const sequential = await evaluate({ ...common, model, limit: 6, parallel: 1, cache: false });
  t.equal(sequential.itemResults.length, 6);
  t.ok(sequential.itemResults.every((r) => (r.tokens as number) > 0));

  const all = loadGsm8k(path.join(data, 'gsm8k_test.jsonl'));
  const exemplars = drawGsm8kExemplars(path.join(data, 'gsm8k_train.jsonl'), 1, 1234, new Set(all.map((i) => i.question.trim())));
  const prompts = all.slice(0, 6).map((item) => gsm8kPrompt(exemplars, item.question));
  const greedy = await greedyWithMargins(model, prompts, common.maxTokens);
  let complete = 0;
  for (let i = 0; i < 6; i++) {
    const stable = greedy[i]!.stable;
    const minMargin = Math.min(...greedy[i]!.margins);
    if (stable.complete) {
      complete++;
      t.equal(sequential.itemResults[i]!.output, stable.text, `item ${i}: the margin check decoded the same text (smallest margin ${minMargin.toFixed(3)} nats > 2 x ${EPS})`);
    } else {
      t.ok(String(sequential.itemResults[i]!.output).startsWith(stable.text), `item ${i}: same text up to a near-tie (margin ${minMargin.toFixed(4)} nats)`);
    }
  }
  t.ok(complete >= 5, `the comparison is not vacuous: ${complete} of 6 items have no near-tie`);

  // Independent: node-llama-cpp's own completion API on a fresh one-sequence context.
  const llama = await sharedLlamaForTests();
  const m = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
  const context = await m.createContext({ contextSize: 2048, threads: 1, flashAttention: false });
  const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
  for (let i = 0; i < 3; i++) {
    // Token input: LlamaCompletion would otherwise drop SPM's leading space, which llama.cpp's own tools keep.
    let text = await completion.generateCompletion(m.tokenize(prompts[i]!, false), { maxTokens: 12, temperature: 0, repeatPenalty: false });
    const stop = text.indexOf('Q:');
    if (stop >= 0) text = text.slice(0, stop);
    const stable = greedy[i]!.stable;
    if (stable.complete) t.equal(sequential.itemResults[i]!.output, text, `item ${i} matches LlamaCompletion`);
    else t.ok(text.startsWith(stable.text), `item ${i} matches LlamaCompletion up to a near-tie`);
  }
  await context.dispose();
  await m.dispose();
});

t.test('cache: a bigger --limit only evaluates new items; --vs pairs the same items', async (t) => {
  const model = await evalTestModel();
  const cacheDir = tempCacheDir(t);
  const first = await evaluate({ ...common, model, limit: 3, cacheDir });
  t.equal(first.model.evaluated, 3);
  t.equal(first.model.cached, 0);
  const progress: number[] = [];
  const second = await evaluate({ ...common, model, limit: 5, cacheDir, onProgress: (p) => { if (p.phase === 'run') progress.push(p.done); } });
  t.equal(second.model.evaluated, 2, 'only the two new items');
  t.equal(second.model.cached, 3);
  t.same(second.itemResults.slice(0, 3).map((r) => r.output), first.itemResults.map((r) => r.output));
  t.ok(progress.length >= 2 && progress[progress.length - 1] === 5, 'progress reports');
  const other = await evaluate({ ...common, model, limit: 3, cacheDir, maxTokens: 8 });
  t.equal(other.model.evaluated, 3, 'other settings are not served from the cache');

  const paired = await evaluate({ ...common, model, vs: model, limit: 5, cacheDir });
  t.equal(paired.reference!.evaluated, 0, 'same file, same sha256: all cached');
  for (const m of paired.metrics) {
    t.equal(m.difference!.value, 0);
    t.equal(m.difference!.pValue, 1);
    t.equal(m.reference!.value, m.value);
  }
});
