// The shim's evaluation engines, beside node-llama-cpp's (runtime.ts). Each is used where its own
// arithmetic is the reference: full-vocabulary logits from the collector's llama.cpp context for kl
// (native/collector.cpp), and the trainer's greedy completion and text loss for the arithmetic
// fixture (native/train.cpp: a fresh context per call, batch of one, its own log-softmax).
import { existsSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { validateModelFile } from '../gguf/model-check.ts';
import { loadNative } from '../native.ts';
import type { ModelOptions, StatsModel } from '../stats/collect.ts';

/** Logits of every position of a prompt, on both models of a pair (row i predicts token i + 1). */
export interface PairLogits { tokens: Int32Array; model: Float32Array; reference: Float32Array; nVocab: number }

/** A model and its reference open together in the collector's llama.cpp, one prompt at a time. */
export class NativeModelPair {
  private constructor(private readonly model: StatsModel, private readonly reference: StatsModel) {}

  /** Open both (the same vocabulary size, or EUSAGE); nothing stays open when one fails. */
  static async open(modelPath: string, referencePath: string, options: ModelOptions): Promise<NativeModelPair> {
    const { StatsModel } = await import('../stats/collect.ts');
    const model = await StatsModel.open(modelPath, options);
    let reference: StatsModel | undefined;
    try {
      reference = await StatsModel.open(referencePath, options);
      if (model.info().nVocab !== reference.info().nVocab) throw new MathneuroError('EUSAGE', 'the two models have different vocabularies; kl needs the same one');
    } catch (e) {
      reference?.dispose();
      model.dispose();
      throw e;
    }
    return new NativeModelPair(model, reference);
  }

  /** The first `maxTokens` tokens of `text` (the same on both, or EUSAGE) and, from two of them on, both models' logits. */
  async logits(text: string, maxTokens: number): Promise<PairLogits> {
    const tokens = this.model.tokenize(text).slice(0, maxTokens);
    const referenceTokens = this.reference.tokenize(text).slice(0, maxTokens);
    if (tokens.join(',') !== referenceTokens.join(',')) throw new MathneuroError('EUSAGE', 'the two models tokenize differently; kl needs the same vocabulary');
    if (tokens.length < 2) return { tokens, model: new Float32Array(0), reference: new Float32Array(0), nVocab: 0 };
    const q = await this.model.logits(tokens);
    const p = await this.reference.logits(tokens);
    return { tokens, model: q.logits, reference: p.logits, nVocab: p.nVocab };
  }

  dispose(): void {
    this.reference.dispose();
    this.model.dispose();
  }
}

/** Options of the trainer's evaluation (greedy completion, text loss). */
export interface NativeEvalOptions {
  /** CPU threads. Default 1 (the fixture is tiny; more threads only wait on each other on a busy machine). */
  threads?: number;
}

function checkModel(modelPath: string): void {
  if (!existsSync(modelPath)) throw new MathneuroError('ENOENT', `model not found: ${modelPath}`);
  validateModelFile(modelPath); // nothing reaches llama.cpp before the validator says yes
}

function asEvalError(e: unknown): MathneuroError {
  const err = e as Error & { code?: string };
  return new MathneuroError(err.code === 'EUSAGE' ? 'EUSAGE' : 'EEVAL', err.message, { cause: e });
}

/** Greedy completions (after BOS + prompt) up to the first newline, at most maxNewTokens tokens. */
export async function greedyCompletions(modelPath: string, prompts: string[], options: NativeEvalOptions & { maxNewTokens?: number } = {}): Promise<string[]> {
  checkModel(modelPath);
  try {
    return await loadNative().greedyComplete(modelPath, prompts, { threads: options.threads ?? 1, maxNewTokens: options.maxNewTokens ?? 6, stop: '\n' });
  } catch (e) { throw asEvalError(e); }
}

/** Negative log-likelihood and token count of each text, every token after BOS scored. */
export async function textNegativeLogLikelihoods(modelPath: string, texts: string[], options: NativeEvalOptions = {}): Promise<{ negativeLogLikelihood: Float64Array; tokenCounts: Float64Array }> {
  checkModel(modelPath);
  try {
    return await loadNative().textLoss(modelPath, texts, { threads: options.threads ?? 1 });
  } catch (e) { throw asEvalError(e); }
}
