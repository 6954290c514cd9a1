// Ollama output: a Modelfile next to the patched GGUF (FROM it), carrying the source's template,
// parameters, system prompt, license and messages when the source was an Ollama model, or a
// template for the GGUF's chat template family when it was a plain GGUF. `ollama create` reads it.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomically } from './core/atomic-file.ts';
import { MathneuroError } from './errors.ts';
import type { GgufInfo } from './gguf/reader.ts';
import type { OllamaModel } from './ollama.ts';

/** Chat template families recognized in a GGUF's tokenizer.chat_template (Jinja). */
export type ChatTemplateFamily = 'llama3' | 'chatml' | 'gemma' | 'phi3' | 'mistral';

interface FamilyTemplate { signature: (jinja: string) => boolean; template: string; stop: string[] }

// Ollama's Go templates for the common families (the forms Ollama's own library uses). Checked in
// order: chatml before mistral because some chatml templates mention [INST] in comments. The entries
// are alike in shape by design (data, one per family: `duplicates` pairs them).
const families: Record<ChatTemplateFamily, FamilyTemplate> = {
  llama3: {
    signature: (j) => j.includes('<|start_header_id|>') && j.includes('<|eot_id|>'),
    template: '{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>',
    stop: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
  },
  chatml: {
    signature: (j) => j.includes('<|im_start|>'),
    template: '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n',
    stop: ['<|im_start|>', '<|im_end|>'],
  },
  gemma: {
    signature: (j) => j.includes('<start_of_turn>'),
    template: '<start_of_turn>user\n{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n{{ .Response }}<end_of_turn>\n',
    stop: ['<start_of_turn>', '<end_of_turn>'],
  },
  phi3: {
    signature: (j) => j.includes('<|user|>') && j.includes('<|end|>'),
    template: '{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>\n',
    stop: ['<|end|>', '<|user|>', '<|assistant|>'],
  },
  mistral: {
    signature: (j) => j.includes('[INST]'),
    template: '[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]',
    stop: ['[INST]', '[/INST]'],
  },
};

/** The family of a Jinja chat template, or undefined when it is not one of the known ones. */
export function chatTemplateFamily(jinja: string | undefined): ChatTemplateFamily | undefined {
  if (!jinja) return undefined;
  return (Object.keys(families) as ChatTemplateFamily[]).find((f) => families[f].signature(jinja));
}

export interface ModelfileSource {
  /** the source was an Ollama model: its layers are carried over verbatim */
  ollama?: OllamaModel;
  /** the source GGUF's header (for tokenizer.chat_template when there is no Ollama template) */
  gguf?: GgufInfo;
}

export interface ModelfileOptions extends ModelfileSource {
  /** the GGUF the Modelfile names in FROM */
  modelPath: string;
  /** where the Modelfile goes (default: the model path with .gguf replaced by .Modelfile) */
  modelfilePath?: string;
  /** comment lines written at the top (provenance: source, method, K, scale) */
  comments?: string[];
  /** extra or overriding PARAMETER values */
  parameters?: Record<string, string | number | boolean | (string | number)[]>;
}

export interface ModelfileResult {
  path: string;
  text: string;
  /** where the TEMPLATE came from: the Ollama manifest, a recognized GGUF chat template family, or none (Ollama derives it) */
  templateFrom: 'ollama' | `gguf:${ChatTemplateFamily}` | 'none';
}

/** Default Modelfile path for a model: tiny.boosted.gguf -> tiny.boosted.Modelfile */
export function modelfilePathFor(modelPath: string): string {
  return modelPath.replace(/\.gguf$/i, '') + '.Modelfile';
}

function quoted(value: string, what: string): string {
  if (!value.includes('\n') && !value.includes('"') && !/^\s|\s$/.test(value) && value !== '') return `"${value}"`;
  if (value.includes('"""')) throw new MathneuroError('EDATA', `the ${what} contains """, which a Modelfile cannot quote`);
  return `"""${value}"""`;
}

function parameterLines(params: Record<string, unknown>): string[] {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (!/^[a-z_][a-z0-9_]*$/i.test(key)) throw new MathneuroError('EDATA', `bad Modelfile parameter name "${key}"`);
    for (const v of Array.isArray(value) ? value : [value]) {
      if (typeof v === 'string') lines.push(`PARAMETER ${key} ${quoted(v, `parameter ${key}`)}`);
      else if (typeof v === 'number' || typeof v === 'boolean') lines.push(`PARAMETER ${key} ${v}`);
      else throw new MathneuroError('EDATA', `Modelfile parameter ${key} has an unsupported value ${JSON.stringify(v)}`);
    }
  }
  return lines;
}

/** The Modelfile text; FROM is relative to the Modelfile's folder when the model sits beside it. */
export function modelfileText(options: ModelfileOptions): Omit<ModelfileResult, 'path'> {
  const modelfilePath = path.resolve(options.modelfilePath ?? modelfilePathFor(options.modelPath));
  const modelPath = path.resolve(options.modelPath);
  const rel = path.relative(path.dirname(modelfilePath), modelPath);
  const from = !rel.startsWith('..') && !path.isAbsolute(rel) ? `./${rel.split(path.sep).join('/')}` : modelPath;
  const lines: string[] = (options.comments ?? []).map((c) => `# ${c.replace(/\n/g, ' ')}`);
  lines.push(`FROM ${/\s/.test(from) ? quoted(from, 'model path') : from}`);
  const ollama = options.ollama;
  let templateFrom: ModelfileResult['templateFrom'] = 'none';
  let params: Record<string, unknown> = {};
  if (ollama) {
    for (const adapter of ollama.adapters) lines.push(`ADAPTER ${adapter}`);
    if (ollama.template !== undefined) { lines.push(`TEMPLATE ${quoted(ollama.template, 'template')}`); templateFrom = 'ollama'; }
    if (ollama.system !== undefined) lines.push(`SYSTEM ${quoted(ollama.system, 'system prompt')}`);
    params = { ...(ollama.parameters ?? {}) };
  }
  if (templateFrom === 'none') {
    const jinja = options.gguf?.metadata.get('tokenizer.chat_template');
    const family = chatTemplateFamily(typeof jinja === 'string' ? jinja : undefined);
    if (family) {
      lines.push(`TEMPLATE ${quoted(families[family].template, 'template')}`);
      if (!('stop' in params)) params.stop = families[family].stop;
      templateFrom = `gguf:${family}`;
    } else {
      lines.push(typeof jinja === 'string'
        ? '# TEMPLATE: the GGUF chat template is not one of the known families; Ollama derives one from tokenizer.chat_template'
        : '# TEMPLATE: the source has no chat template (a base model): prompts are passed as they are');
    }
  }
  Object.assign(params, options.parameters ?? {});
  lines.push(...parameterLines(params));
  for (const m of ollama?.messages ?? []) lines.push(`MESSAGE ${m.role} ${quoted(m.content, 'message')}`);
  for (const license of ollama?.license ?? []) lines.push(`LICENSE ${quoted(license, 'license')}`);
  return { text: lines.join('\n') + '\n', templateFrom };
}

/** Write the Modelfile (atomically); refuses to overwrite unless `overwrite`. */
export function writeModelfile(options: ModelfileOptions & { overwrite?: boolean }): ModelfileResult {
  const file = path.resolve(options.modelfilePath ?? modelfilePathFor(options.modelPath));
  if (existsSync(file) && !options.overwrite) throw new MathneuroError('EEXIST', `${file} exists (use --force to overwrite)`);
  const { text, templateFrom } = modelfileText({ ...options, modelfilePath: file });
  writeFileAtomically(file, text);
  return { path: file, text, templateFrom };
}
