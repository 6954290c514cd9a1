// gsm8k on a generated model: batched generation equals one-at-a-time and an independent
// LlamaCompletion run (greedy), the cache only evaluates new items, exemplars come from train.
import t from 'tap';
import { getLlama, LlamaCompletion } from 'node-llama-cpp';
import path from 'node:path';
import { defaultDataDir, loadGsm8k } from '../../src/eval/data.ts';
import { drawGsm8kExemplars, evaluate } from '../../src/eval/evaluate.ts';
import { gsm8kPrompt } from '../../src/eval/prompts.ts';
import { evalTestModel, tempCacheDir } from './helpers.ts';

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

t.test('batched generation equals sequential and an independent LlamaCompletion run', async (t) => {
  const model = await evalTestModel();
  const batched = await evaluate({ ...common, model, limit: 6, parallel: 4, cache: false });
  const sequential = await evaluate({ ...common, model, limit: 6, parallel: 1, cache: false });
  t.equal(batched.itemResults.length, 6);
  t.same(batched.itemResults.map((r) => r.output), sequential.itemResults.map((r) => r.output), 'same greedy outputs');
  t.ok(batched.itemResults.every((r) => (r.tokens as number) > 0));

  // Independent: node-llama-cpp's own completion API on a fresh one-sequence context.
  const llama = await getLlama({ gpu: false, build: 'never' });
  const m = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
  const context = await m.createContext({ contextSize: 2048, threads: 1, flashAttention: false });
  const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
  const test = loadGsm8k(path.join(data, 'gsm8k_test.jsonl')).slice(0, 3);
  const exemplars = drawGsm8kExemplars(path.join(data, 'gsm8k_train.jsonl'), 1, 1234, new Set(loadGsm8k(path.join(data, 'gsm8k_test.jsonl')).map((i) => i.question.trim())));
  for (let i = 0; i < test.length; i++) {
    // Token input: LlamaCompletion would otherwise drop SPM's leading space, which llama.cpp's own tools keep.
    let text = await completion.generateCompletion(m.tokenize(gsm8kPrompt(exemplars, test[i]!.question), false), { maxTokens: 12, temperature: 0, repeatPenalty: false });
    const stop = text.indexOf('Q:');
    if (stop >= 0) text = text.slice(0, stop);
    t.equal(batched.itemResults[i]!.output, text, `item ${i} matches LlamaCompletion`);
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
