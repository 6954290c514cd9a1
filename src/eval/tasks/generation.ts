// The generation tasks' shared run (gsm8k, math500): each prompt tokenized (or rendered with the
// chat template), the context sized to the longest, greedy answers on the runtime's concurrent slots.
import type { Token } from 'node-llama-cpp';
import type { ChatTurn } from '../prompts.ts';
import { neededContext, onRuntime, openLlamaRuntime, runItems, type RunContext } from '../run.ts';

export interface GenerationJob { id: string; prompt: string | ChatTurn[] }
export interface GenerationRecord { output: string; tokens: number; stoppedBy: string }

/** Greedy answers to `jobs` on one model, cached per item. */
export async function runGenerations(ctx: RunContext, modelPath: string, modelKey: string, task: string, settings: Record<string, unknown>, jobs: GenerationJob[], stopStrings: string[], maxTokens: number) {
  const promptTokens = new Map<string, Token[]>();
  return runItems<GenerationJob, GenerationRecord>(ctx, modelKey, task, settings, jobs, onRuntime(openLlamaRuntime(modelPath, ctx.options,
    async (runtime, missing) => {
      for (const job of missing) {
        promptTokens.set(job.id, typeof job.prompt === 'string' ? runtime.tokenize(job.prompt) : await runtime.chatPromptTokens(job.prompt));
      }
      const lengths = [...promptTokens.values()].map((t) => t.length);
      return { parallel: ctx.options.parallel ?? 8, contextSize: neededContext(lengths, maxTokens, ctx.options.contextSize) };
    }),
    async (_runtime, slot, job) => {
      const generation = await slot.greedy(promptTokens.get(job.id)!, { maxTokens, stopStrings, signal: ctx.options.signal });
      return { result: { output: generation.text, tokens: generation.tokens, stoppedBy: generation.stoppedBy }, tokens: generation.tokens };
    }));
}
