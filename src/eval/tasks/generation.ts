// The generation tasks' shared run (gsm8k, math500): each prompt tokenized (or rendered with the
// chat template), the context sized to the longest, greedy answers on concurrent sequences.
import type { Token } from 'node-llama-cpp';
import type { ChatTurn } from '../prompts.ts';
import { neededContext, onSequences, runItems, type RunContext } from '../run.ts';
import { generateGreedy } from '../runtime.ts';

export interface GenerationJob { id: string; prompt: string | ChatTurn[] }
export interface GenerationRecord { output: string; tokens: number; stoppedBy: string }

/** Greedy answers to `jobs` on one model, cached per item. */
export async function runGenerations(ctx: RunContext, modelPath: string, modelKey: string, task: string, settings: Record<string, unknown>, jobs: GenerationJob[], stopStrings: string[], maxTokens: number) {
  const promptTokens = new Map<string, Token[]>();
  return runItems<GenerationJob, GenerationRecord>(ctx, modelKey, task, settings, jobs, onSequences(modelPath, ctx.options,
    async (model, missing) => {
      for (const job of missing) {
        promptTokens.set(job.id, typeof job.prompt === 'string' ? model.tokenize(job.prompt) : await model.chatPromptTokens(job.prompt));
      }
      const lengths = [...promptTokens.values()].map((t) => t.length);
      return { parallel: ctx.options.parallel ?? 8, contextSize: neededContext(lengths, maxTokens, ctx.options.contextSize) };
    },
    async (model, sequence, job) => {
      const generation = await generateGreedy(model, sequence, promptTokens.get(job.id)!, { maxTokens, stopStrings, signal: ctx.options.signal });
      return { result: { output: generation.text, tokens: generation.tokens, stoppedBy: generation.stoppedBy }, tokens: generation.tokens };
    }));
}
