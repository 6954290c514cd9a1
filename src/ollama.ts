// Ollama models as input: `ollama:name[:tag]` -> the model's GGUF blob in the local Ollama store
// ($OLLAMA_MODELS or ~/.ollama/models), plus the template, parameters, system prompt and license
// layers a Modelfile carries over. Manifests and blobs are only read; nothing is written there.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MathneuroError } from './errors.ts';

export const OLLAMA_PREFIX = 'ollama:';
const DEFAULT_HOST = 'registry.ollama.ai';
const DEFAULT_NAMESPACE = 'library';
const DEFAULT_TAG = 'latest';

export const OLLAMA_MEDIA_TYPES = {
  model: 'application/vnd.ollama.image.model',
  template: 'application/vnd.ollama.image.template',
  params: 'application/vnd.ollama.image.params',
  system: 'application/vnd.ollama.image.system',
  license: 'application/vnd.ollama.image.license',
  adapter: 'application/vnd.ollama.image.adapter',
  projector: 'application/vnd.ollama.image.projector',
  messages: 'application/vnd.ollama.image.messages',
} as const;

export interface OllamaModelRef {
  /** registry host, default registry.ollama.ai */
  host: string;
  /** default "library" */
  namespace: string;
  name: string;
  /** default "latest" */
  tag: string;
}

export interface OllamaLayer { mediaType: string; digest: string; size: number }

export interface OllamaModel {
  ref: OllamaModelRef;
  /** the spec as the user wrote it, e.g. ollama:llama3.2:1b */
  spec: string;
  modelsDir: string;
  manifestPath: string;
  /** the GGUF blob (read it, never write it) */
  modelPath: string;
  modelDigest: string;
  modelBytes: number;
  /** Go template of the chat format, when the manifest has one */
  template?: string;
  system?: string;
  /** the params layer: {"stop": [...], "temperature": 0.6, ...} */
  parameters?: Record<string, unknown>;
  license?: string[];
  /** blob paths of LoRA adapters applied on top of the model, if any */
  adapters: string[];
  /** blob path of a vision projector, if any */
  projector?: string;
  /** MESSAGE pairs of the manifest's messages layer */
  messages?: { role: string; content: string }[];
  layers: OllamaLayer[];
}

export function isOllamaSpec(spec: string): boolean {
  return spec.startsWith(OLLAMA_PREFIX);
}

/** Parse `ollama:[host/][namespace/]name[:tag]`, the way `ollama run` names models. */
export function parseOllamaRef(spec: string): OllamaModelRef {
  const body = isOllamaSpec(spec) ? spec.slice(OLLAMA_PREFIX.length) : spec;
  const bad = (why: string): never => { throw new MathneuroError('EUSAGE', `bad Ollama model name "${spec}": ${why} (expected ollama:name[:tag], e.g. ollama:llama3.2:1b)`); };
  if (body === '') bad('empty');
  const slash = body.lastIndexOf('/');
  const colon = body.indexOf(':', slash + 1);
  const repo = colon >= 0 ? body.slice(0, colon) : body;
  const tag = colon >= 0 ? body.slice(colon + 1) : DEFAULT_TAG;
  const parts = repo.split('/');
  if (parts.length > 3) bad('too many "/" parts');
  const name = parts[parts.length - 1];
  const namespace = parts.length >= 2 ? parts[parts.length - 2] : DEFAULT_NAMESPACE;
  const host = parts.length === 3 ? parts[0] : DEFAULT_HOST;
  // names become path components under manifests/: refuse anything that could leave that folder
  const part = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
  for (const [what, v] of [['name', name], ['namespace', namespace], ['tag', tag]] as const) {
    if (!part.test(v) || v === '.' || v === '..') bad(`invalid ${what} "${v}"`);
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?$/.test(host)) bad(`invalid host "${host}"`);
  return { host, namespace, name, tag };
}

/** The Ollama model store: $OLLAMA_MODELS, else ~/.ollama/models. */
export function ollamaModelsDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OLLAMA_MODELS && env.OLLAMA_MODELS.trim() !== '') return path.resolve(env.OLLAMA_MODELS);
  return path.join(env.HOME && env.HOME !== '' ? env.HOME : os.homedir(), '.ollama', 'models');
}

export interface ResolveOllamaOptions {
  /** the store (default: ollamaModelsDir(env)) */
  modelsDir?: string;
  /** environment for OLLAMA_MODELS and HOME (default process.env) */
  env?: NodeJS.ProcessEnv;
}

function blobPath(modelsDir: string, digest: string): string {
  const m = /^sha256[:-]([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new MathneuroError('EDATA', `Ollama manifest has a bad digest "${digest}"`);
  const modern = path.join(modelsDir, 'blobs', `sha256-${m[1]}`);
  if (existsSync(modern)) return modern;
  const legacy = path.join(modelsDir, 'blobs', `sha256:${m[1]}`); // stores written by Ollama before 0.1.x on Linux
  if (existsSync(legacy)) return legacy;
  throw new MathneuroError('ENOENT', `the Ollama store has the manifest but not the blob ${modern} (re-pull the model with ollama pull)`);
}

function readText(file: string, limitBytes = 4 * 1024 * 1024): string {
  const size = statSync(file).size;
  if (size > limitBytes) throw new MathneuroError('EDATA', `${file}: ${size} bytes is too large for a text layer`);
  return readFileSync(file, 'utf8');
}

function tagsOf(dir: string): string[] {
  try { return readdirSync(dir).sort(); } catch { return []; }
}

/** Find the GGUF blob and the Modelfile layers of an Ollama model. Reads the store only. */
export function resolveOllamaModel(spec: string, options: ResolveOllamaOptions = {}): OllamaModel {
  const ref = parseOllamaRef(spec);
  const modelsDir = options.modelsDir ?? ollamaModelsDir(options.env);
  if (!existsSync(modelsDir)) throw new MathneuroError('ENOENT', `no Ollama model store at ${modelsDir} (set OLLAMA_MODELS, or pull a model with ollama pull ${ref.name}:${ref.tag})`);
  const repoDir = path.join(modelsDir, 'manifests', ref.host, ref.namespace, ref.name);
  const manifestPath = path.join(repoDir, ref.tag);
  if (!existsSync(manifestPath)) {
    const tags = tagsOf(repoDir);
    const hint = tags.length ? `; tags present: ${tags.map((t) => `ollama:${ref.name}:${t}`).join(', ')}` : `; run ollama pull ${ref.name}:${ref.tag}`;
    throw new MathneuroError('ENOENT', `Ollama model ${ref.name}:${ref.tag} is not in ${modelsDir}${hint}`);
  }
  let manifest: { layers?: OllamaLayer[] };
  try { manifest = JSON.parse(readText(manifestPath)); } catch (e) {
    throw new MathneuroError('EDATA', `${manifestPath}: not a valid Ollama manifest (${(e as Error).message})`);
  }
  if (!manifest || !Array.isArray(manifest.layers)) throw new MathneuroError('EDATA', `${manifestPath}: the manifest has no layers`);
  const layers = manifest.layers.filter((l) => l && typeof l.mediaType === 'string' && typeof l.digest === 'string');
  const models = layers.filter((l) => l.mediaType === OLLAMA_MEDIA_TYPES.model);
  if (models.length === 0) throw new MathneuroError('EDATA', `${manifestPath}: no ${OLLAMA_MEDIA_TYPES.model} layer (is this a model?)`);
  // several model layers happen for split or multimodal imports; the first is the language model, as Ollama loads it
  const modelLayer = models[0];
  const modelPath = blobPath(modelsDir, modelLayer.digest);
  const modelBytes = statSync(modelPath).size;
  if (typeof modelLayer.size === 'number' && modelLayer.size !== modelBytes) {
    throw new MathneuroError('EDATA', `${modelPath}: ${modelBytes} bytes, the manifest says ${modelLayer.size} (incomplete pull?)`);
  }
  const fd = openSync(modelPath, 'r');
  try {
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    if (magic.toString('latin1') !== 'GGUF') throw new MathneuroError('EBADGGUF', `${spec}: the model blob ${modelPath} is not a GGUF file`);
  } finally { closeSync(fd); }
  const text = (type: string) => {
    const l = layers.find((x) => x.mediaType === type);
    return l ? readText(blobPath(modelsDir, l.digest)) : undefined;
  };
  let parameters: Record<string, unknown> | undefined;
  const paramsText = text(OLLAMA_MEDIA_TYPES.params);
  if (paramsText !== undefined) {
    try { parameters = JSON.parse(paramsText); } catch { throw new MathneuroError('EDATA', `${spec}: the params layer is not JSON`); }
  }
  let messages: { role: string; content: string }[] | undefined;
  const messagesText = text(OLLAMA_MEDIA_TYPES.messages);
  if (messagesText !== undefined) {
    try { messages = JSON.parse(messagesText); } catch { throw new MathneuroError('EDATA', `${spec}: the messages layer is not JSON`); }
  }
  const licenses = layers.filter((l) => l.mediaType === OLLAMA_MEDIA_TYPES.license).map((l) => readText(blobPath(modelsDir, l.digest)));
  const projector = layers.find((l) => l.mediaType === OLLAMA_MEDIA_TYPES.projector);
  return {
    ref, spec, modelsDir, manifestPath, modelPath, modelDigest: modelLayer.digest.replace('-', ':'), modelBytes,
    template: text(OLLAMA_MEDIA_TYPES.template), system: text(OLLAMA_MEDIA_TYPES.system), parameters,
    license: licenses.length ? licenses : undefined,
    adapters: layers.filter((l) => l.mediaType === OLLAMA_MEDIA_TYPES.adapter).map((l) => blobPath(modelsDir, l.digest)),
    projector: projector ? blobPath(modelsDir, projector.digest) : undefined,
    messages, layers,
  };
}

function realOrResolved(p: string): string {
  // the nearest existing ancestor's real path, so symlinks into the store are seen through
  let dir = path.resolve(p);
  const rest: string[] = [];
  while (!existsSync(dir)) {
    const parent = path.dirname(dir);
    if (parent === dir) break;
    rest.unshift(path.basename(dir));
    dir = parent;
  }
  try { return path.join(realpathSync(dir), ...rest); } catch { return path.resolve(p); }
}

/** True when `file` is inside the Ollama store (where mathneuro never writes). */
export function isInsideOllamaStore(file: string, modelsDir: string): boolean {
  const store = realOrResolved(modelsDir);
  const target = realOrResolved(file);
  const rel = path.relative(store, target);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Throws EUSAGE when an output path points into the Ollama store. */
export function assertOutsideOllamaStore(file: string, modelsDir: string): void {
  if (isInsideOllamaStore(file, modelsDir)) {
    throw new MathneuroError('EUSAGE', `refusing to write ${file}: it is inside the Ollama store ${modelsDir}, which mathneuro only reads (write elsewhere, then ollama create)`);
  }
}

/** A default output file name for an Ollama input: llama3.2-1b.boosted.gguf */
export function ollamaOutputBase(ref: OllamaModelRef): string {
  return `${ref.namespace === DEFAULT_NAMESPACE ? '' : `${ref.namespace}-`}${ref.name}-${ref.tag}`;
}
