// Prompt formats: the paper's GSM8K chain of thought ("Q: ... A: ... The answer is N."),
// MATH few-shot with exemplar solutions written for this project, and MMLU 0-shot.
import type { Gsm8kItem, Math500Item, MmluItem } from './data.ts';
import { gsm8kGoldAnswer } from './gsm8k-answer.ts';

export interface ChatTurn { user: string; assistant?: string }

/** A GSM8K worked solution as chain-of-thought text: calculator annotations dropped, lines joined, "The answer is N." appended. */
export function gsm8kChainOfThought(solution: string): string {
  const [reasoning] = solution.split('####');
  const text = reasoning!.replace(/<<[^>]*>>/g, '').split('\n').map((l) => l.trim()).filter(Boolean).join(' ');
  return `${text} The answer is ${gsm8kGoldAnswer(solution)}.`;
}

/** The paper's few-shot prompt: "Q: <question>\nA: <chain of thought> The answer is N.\n\n" per exemplar, then the question. */
export function gsm8kPrompt(exemplars: readonly Gsm8kItem[], question: string): string {
  const shots = exemplars.map((e) => `Q: ${e.question.trim()}\nA: ${gsm8kChainOfThought(e.answer)}\n\n`).join('');
  return `${shots}Q: ${question.trim()}\nA:`;
}

/** The instruct variant: exemplars as earlier chat turns, the question as the last user turn. */
export function gsm8kChat(exemplars: readonly Gsm8kItem[], question: string): ChatTurn[] {
  const instruction = 'Solve the math problem step by step. End with "The answer is N." where N is the final number.';
  const turns: ChatTurn[] = exemplars.map((e, i) => ({ user: (i === 0 ? instruction + '\n\n' : '') + e.question.trim(), assistant: gsm8kChainOfThought(e.answer) }));
  turns.push({ user: (turns.length === 0 ? instruction + '\n\n' : '') + question.trim() });
  return turns;
}

/** Few-shot MATH exemplars written for this project (not drawn from MATH), each ending in \boxed{}. */
export const mathExemplars: ReadonlyArray<{ problem: string; solution: string }> = [
  {
    problem: 'What is the value of $\\frac{3}{4} + \\frac{5}{6}$? Express your answer as a common fraction.',
    solution: 'The least common denominator of 4 and 6 is 12, so $\\frac{3}{4} + \\frac{5}{6} = \\frac{9}{12} + \\frac{10}{12} = \\frac{19}{12}$. The answer is $\\boxed{\\frac{19}{12}}$.',
  },
  {
    problem: 'Solve for $x$: $2x - 7 = 11$.',
    solution: 'Adding 7 to both sides gives $2x = 18$, and dividing by 2 gives $x = 9$. The answer is $\\boxed{9}$.',
  },
  {
    problem: 'Simplify $\\sqrt{50} + \\sqrt{8}$.',
    solution: 'We have $\\sqrt{50} = \\sqrt{25 \\cdot 2} = 5\\sqrt{2}$ and $\\sqrt{8} = \\sqrt{4 \\cdot 2} = 2\\sqrt{2}$, so the sum is $7\\sqrt{2}$. The answer is $\\boxed{7\\sqrt{2}}$.',
  },
  {
    problem: 'A fair six-sided die is rolled twice. What is the probability that the two numbers rolled add up to 7? Express your answer as a common fraction.',
    solution: 'There are $6 \\cdot 6 = 36$ equally likely outcomes. The pairs that add up to 7 are $(1,6), (2,5), (3,4), (4,3), (5,2), (6,1)$: 6 of them. The probability is $\\frac{6}{36} = \\frac{1}{6}$. The answer is $\\boxed{\\frac{1}{6}}$.',
  },
];

/** "Problem:\n...\n\nSolution:\n..." per exemplar, then the problem; the model's solution ends in \boxed{}. */
export function mathPrompt(problem: Math500Item['problem'], shots = mathExemplars.length): string {
  const used = mathExemplars.slice(0, shots);
  return used.map((e) => `Problem:\n${e.problem}\n\nSolution:\n${e.solution}\n\n`).join('') + `Problem:\n${problem.trim()}\n\nSolution:\n`;
}

export function mathChat(problem: string, shots = mathExemplars.length): ChatTurn[] {
  const instruction = 'Solve the problem. Put the final answer in \\boxed{}.';
  const turns: ChatTurn[] = mathExemplars.slice(0, shots).map((e, i) => ({ user: (i === 0 ? instruction + '\n\n' : '') + e.problem, assistant: e.solution }));
  turns.push({ user: (turns.length === 0 ? instruction + '\n\n' : '') + problem.trim() });
  return turns;
}

/** MMLU 0-shot, the usual header and "Answer:" cue. */
export function mmluPrompt(item: MmluItem): string {
  const subject = item.subject.replace(/_/g, ' ');
  const options = item.choices.map((c, i) => `${'ABCD'[i]}. ${c}`).join('\n');
  return `The following are multiple choice questions (with answers) about ${subject}.\n\n${item.question.trim()}\n${options}\nAnswer:`;
}

/** What each choice is scored as: the letter (" A") or the choice text (" <choice>"). */
export function mmluContinuations(item: MmluItem, mode: 'letter' | 'choice'): string[] {
  return mode === 'letter' ? [' A', ' B', ' C', ' D'] : item.choices.map((c) => ` ${c}`);
}
