// MMLU log-likelihood scoring checked against an independent computation of the same
// log-probabilities: node-llama-cpp's evaluateWithMetadata on a fresh one-sequence context,
// one evaluation per scored token, tokenized separately here.
import t from 'tap';
import type { Token } from 'node-llama-cpp';
import path from 'node:path';
import { defaultDataDir, loadMmlu, parseCsv } from '../../src/eval/data.ts';
import { evaluate, mmluPrediction } from '../../src/eval/evaluate.ts';
import { mmluPrompt } from '../../src/eval/prompts.ts';
import { evalTestModel, LOGPROB_TOLERANCE, sharedLlamaForTests } from './helpers.ts';

t.test('CSV parsing', async (t) => {
  t.same(parseCsv('a,"b, c","say ""hi"""\r\n"multi\nline",x,y\n'), [['a', 'b, c', 'say "hi"'], ['multi\nline', 'x', 'y']]);
});

t.test('prediction is the argmax (choice mode: per token)', async (t) => {
  t.equal(mmluPrediction({ logLikelihoods: [-3, -1, -2, -5], tokenCounts: [1, 1, 1, 1] }, 'letter'), 1);
  t.equal(mmluPrediction({ logLikelihoods: [-3, -4, -2.5, -5], tokenCounts: [1, 4, 1, 1] }, 'choice'), 1);
});

const subjects = ['abstract_algebra', 'anatomy'];

t.test('log-likelihoods match an independent computation', async (t) => {
  const modelPath = await evalTestModel();
  const items = loadMmlu(path.join(defaultDataDir(), 'mmlu'), subjects).filter((i) => i.index < 2);
  const llama = await sharedLlamaForTests();
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 1024, threads: 1, flashAttention: false });
  const sequence = context.getSequence();
  const bos = model.tokens.bos!;
  /** log p(continuation | prompt): the generator is fed the continuation's own tokens one by one, each step yielding the next distribution. */
  async function independent(prompt: string, continuation: string): Promise<{ sum: number; tokens: number }> {
    const context = [bos, ...model.tokenize(prompt, false)];
    const full = [bos, ...model.tokenize(prompt + continuation, false)];
    let split = 0;
    while (split < context.length && full[split] === context[split]) split++;
    await sequence.clearHistory();
    const generator = sequence.evaluateWithMetadata(full.slice(0, split) as Token[], { probabilities: true }, { temperature: 0 });
    let step = await generator.next();
    let sum = 0;
    for (let k = split; k < full.length; k++) {
      sum += Math.log(step.value!.probabilities.get(full[k]!)!);
      if (k + 1 < full.length) step = await generator.next(full[k]!);
    }
    await generator.return();
    return { sum, tokens: full.length - split };
  }

  for (const mode of ['letter', 'choice'] as const) {
    const result = await evaluate({ model: modelPath, task: 'mmlu', subjects, limit: 2, mmluMode: mode, cache: false, parallel: 3, threads: 1 });
    t.equal(result.itemResults.length, items.length);
    for (const row of result.itemResults) {
      const item = items.find((i) => i.id === row.id)!;
      const continuations = mode === 'letter' ? [' A', ' B', ' C', ' D'] : item.choices.map((c) => ` ${c}`);
      const expected = [];
      for (const c of continuations) expected.push(await independent(mmluPrompt(item), c));
      const got = row.logLikelihoods as number[];
      // batched scoring against one token at a time: each scored token within LOGPROB_TOLERANCE
      for (let k = 0; k < 4; k++) t.ok(Math.abs(got[k]! - expected[k]!.sum) <= LOGPROB_TOLERANCE * expected[k]!.tokens, `${mode} ${item.subject}#${item.index} choice ${k}: ${got[k]} vs ${expected[k]!.sum} (${expected[k]!.tokens} tokens)`);
    }
    const overall = result.metrics.find((m) => m.name === 'overall')!;
    const correct = result.itemResults.filter((r) => r.correct).length;
    t.equal(overall.correct, correct);
    t.same(result.metrics.filter((m) => m.group === 'main').map((m) => m.name), ['overall', 'math subjects', 'other subjects']);
    t.equal(result.metrics.find((m) => m.name === 'math subjects')!.count, 2, 'abstract_algebra counted as math');
  }
  await context.dispose();
  await model.dispose();
});
