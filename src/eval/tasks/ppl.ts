// ppl: perplexity of a text file, chunked like llama-perplexity.
import type { Token } from 'node-llama-cpp';
import { MathneuroError } from '../../errors.ts';
import type { Interval } from '../confidence.ts';
import { itemId, loadText } from '../data.ts';
import { bothSides, dataPath, meanMetric, neededContext, onRuntime, openLlamaRuntime, runItems, screenForModels, type SideRun } from '../run.ts';
import { EvalModel } from '../runtime.ts';
import type { EvalResult, EvaluateOptions, Metric } from '../types.ts';

export interface PerplexityRecord { nll: number[] }

/** llama-perplexity's chunking: n-token chunks, BOS at the start of each (when the model uses one), the second half of each chunk scored. */
export async function evaluatePerplexity(options: EvaluateOptions, cacheDir: string): Promise<EvalResult> {
  const file = dataPath(options, undefined, 'text file');
  // each line with its line break (a vocabulary may lack '\n' too), checked before anything is loaded
  const lines = loadText(file).split('\n');
  const keptLines = screenForModels(options, lines.map((l, i) => ({ text: i + 1 < lines.length ? `${l}\n` : l, source: `${file}:${i + 1}` })), 'lines');
  const skippedUnencodable = lines.length - keptLines.length;
  const text = keptLines.map((l) => l.text).join('').replace(/\n$/, '');
  const chunkSize = options.chunkSize ?? 512;
  const first = Math.floor(chunkSize / 2);
  const settings = { format: 'ppl-v1', chunkSize, first, text: itemId(text) };
  let chunkCount = 0;
  const tokenized = new Map<string, Token[][]>();
  const sides = await bothSides<PerplexityRecord>(options, cacheDir, async (ctx, modelPath, key) => {
    // Chunks depend on the tokenizer, so the job list is made once the model is loaded; ids are content hashes.
    const probe = await EvalModel.load(modelPath, options);
    let chunks: Token[][];
    try {
      const tokens = probe.tokenize(text, false);
      const bos = probe.model.tokens.bos;
      const addBos = bos !== null && probe.model.tokens.shouldPrependBosToken;
      const count = Math.min(Math.floor(tokens.length / chunkSize), options.limit ?? Infinity);
      if (count < 1) throw new MathneuroError('EDATA', `${file} has ${tokens.length} tokens, fewer than one ${chunkSize}-token chunk; lower --chunk`);
      chunks = Array.from({ length: count }, (_, c) => {
        const chunk = tokens.slice(c * chunkSize, (c + 1) * chunkSize);
        if (addBos) chunk[0] = bos!;
        return chunk;
      });
    } finally {
      await probe.dispose();
    }
    tokenized.set(ctx.side, chunks);
    chunkCount = chunks.length;
    const jobs = chunks.map((chunk, c) => ({ id: `${c}-${itemId(chunk.join(','))}`, chunk }));
    return runItems<typeof jobs[number], PerplexityRecord>(ctx, key, 'ppl', settings, jobs, onRuntime(openLlamaRuntime(modelPath, options,
      async () => ({ parallel: Math.min(options.parallel ?? 8, jobs.length), contextSize: neededContext([chunkSize], 0, options.contextSize) })),
      async (_runtime, slot, job) => ({ result: { nll: await slot.tokenNegativeLogLikelihoods(job.chunk, first + 1) }, tokens: job.chunk.length })));
  });
  if (sides.reference && tokenized.get('model')!.some((c, i) => c.join(',') !== tokenized.get('reference')![i]?.join(','))) {
    throw new MathneuroError('EUSAGE', 'the two models tokenize the text differently; perplexities are not comparable token by token');
  }
  const collect = (results: Map<string, PerplexityRecord>) => [...results.values()].flatMap((r) => r.nll);
  const order = (side: 'model' | 'reference', run: SideRun<PerplexityRecord>) => tokenized.get(side)!.map((chunk, c) => run.results.get(`${c}-${itemId(chunk.join(','))}`)!);
  const modelNll = collect(new Map(order('model', sides.model).map((r, i) => [String(i), r])));
  const referenceNll = sides.reference ? collect(new Map(order('reference', sides.reference).map((r, i) => [String(i), r]))) : undefined;
  const nllMetric = meanMetric('mean NLL (nats/token)', 'main', 'mean', modelNll, referenceNll);
  const ppl = (m: { value: number; ci95: Interval }) => ({ value: Math.exp(m.value), ci95: { low: Math.exp(m.ci95.low), high: Math.exp(m.ci95.high) } });
  const pplMetric: Metric = { name: 'perplexity', group: 'main', kind: 'perplexity', ...ppl(nllMetric), count: nllMetric.count };
  if (nllMetric.reference) pplMetric.reference = ppl(nllMetric.reference);
  return {
    task: 'ppl', settings: { ...settings, data: file, chunks: chunkCount, ...(skippedUnencodable ? { skippedUnencodable } : {}) }, model: sides.model.info, reference: sides.reference?.info,
    items: chunkCount, metrics: [pplMetric, nllMetric],
    itemResults: order('model', sides.model).map((r, c) => ({ id: String(c), meanNll: r.nll.reduce((a, b) => a + b, 0) / r.nll.length })),
  };
}
