// Model-level checks after a valid GGUF structure (reader.ts): only what llama.cpp's loader,
// tokenizer or CPU kernels abort on (GGML_ASSERT -> SIGABRT, or SIGSEGV, kills the process) instead
// of returning an error, found by fuzzing (scripts/fuzz.ts). Each failure is EBADGGUF with the key or
// tensor named; MODEL_CHECKS names the llama.cpp code each check protects, and
// test/gguf/model-check-aborts.test.ts shows each abort in a child process with the checks off.
// What llama.cpp only warns about is a warning here; what it refuses cleanly is left to it (its own
// reason is in the ELOAD error). Texts are checked against the vocabulary in encodable.ts.
// llama.cpp release v0.4.0 (80fb11a): re-run the abort tests when it changes.
import { MathneuroError } from '../errors.ts';
import { readGgufSync, type GgufInfo, type GgufValue } from './reader.ts';
import { readShards } from './model.ts';
import { GGML_TYPE, GGUF_VALUE } from './types.ts';

/** Types ggml only uses for activations or integers: as model weights the CPU backend has no dot product for them. */
const NON_WEIGHT_TYPES = new Set<number>([GGML_TYPE.Q8_1, GGML_TYPE.Q8_K, GGML_TYPE.I8, GGML_TYPE.I16, GGML_TYPE.I32, GGML_TYPE.I64, GGML_TYPE.F64]);

/** llama-hparams.h LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS (asserted in llama_model_base::load_hparams). */
const LLAMA_MAX_LAYERS = 512;
const LLAMA_MAX_EXPERTS = 1024;

function fail(info: GgufInfo, message: string): never {
  throw new MathneuroError('EBADGGUF', `${info.path}: ${message} (llama.cpp would abort on this model; --no-model-checks to try anyway)`);
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const num = (v: unknown) => (typeof v === 'bigint' ? Number(v) : v);

function values(v: GgufValue | undefined): unknown[] { return v === undefined ? [] : Array.isArray(v) ? v : [v]; }

function entryType(info: GgufInfo, key: string) { return info.metadataEntries.find((e) => e.key === key); }

/**
 * The semantic checks: each one names the llama.cpp code it keeps from aborting the process
 * (bundled source, release v0.4.0) and test/gguf/model-check-aborts.test.ts shows that abort in a
 * child process with the check off. Everything else llama.cpp refuses with an error of its own
 * (its reason ends up in the ELOAD message) or only warns about; docs/model-checks.md lists them.
 */
export const MODEL_CHECKS = [
  { id: 'tokenizer-none', protects: 'src/llama-vocab.cpp llama_vocab::impl::tokenize: GGML_ASSERT(tokenizer) (tokenizer.ggml.model "none"/"no_vocab": the model loads but no text can be tokenized)' },
  { id: 'wpm-byte-token', protects: 'src/llama-vocab.cpp llama_vocab::impl::token_to_byte: GGML_ABORT for a BYTE token in a WPM ("bert") vocabulary (reached while the vocabulary is loaded)' },
  { id: 'duplicate-token', protects: 'src/llama-vocab.cpp llama_vocab::impl::load: GGML_ASSERT(id_to_token.size() == token_to_id.size())' },
  { id: 'special-token-default', protects: 'src/llama-vocab.cpp llama_vocab::impl::tokenize: GGML_ASSERT(special_bos_id / special_eos_id != LLAMA_TOKEN_NULL) when add_bos/add_eos is on and neither the key nor the default id is inside the vocabulary' },
  { id: 'block-count', protects: 'src/llama-model.cpp llama_model_base::load_hparams: GGML_ASSERT(n_layer_all > 0 && n_layer_all <= LLAMA_MAX_LAYERS (512))' },
  { id: 'expert-count', protects: 'src/llama-model.cpp llama_model_base::load_hparams: GGML_ASSERT(n_expert <= LLAMA_MAX_EXPERTS), (n_expert_used_max <= n_expert), (n_expert_used_max > 0 when n_expert > 0)' },
  { id: 'norm-epsilon', protects: 'ggml/src/ggml-cpu/ops.cpp ggml_compute_forward_rms_norm_f32 / ggml_compute_forward_norm_f32: GGML_ASSERT(eps >= 0.0f) (NaN or negative epsilon)' },
  { id: 'weight-type', protects: 'ggml/src/ggml-cpu/ggml-cpu.c ggml_compute_forward_mul_mat: calls the type\'s vec_dot, which I8/I16/I32/I64/F64/Q8_1/Q8_K do not have (SIGSEGV)' },
  { id: 'split-no-type', protects: 'src/llama-model-loader.cpp llama_model_loader::llama_model_loader reads each further shard\'s split.no with gguf_get_val_u16 (ggml/src/gguf.cpp), which asserts the key\'s type' },
  { id: 'norm-type', protects: 'ggml/src/ggml-cpu/binary-ops.cpp binary_op: GGML_ABORT("unsupported types") when a norm or bias vector is not F32 (src1 of the mul/add)' },
] as const;

/** Tokenizer metadata: what llama.cpp's vocabulary loader and tokenizer assert on. */
function checkTokenizer(info: GgufInfo, warnings: string[]) {
  const model = info.metadata.get('tokenizer.ggml.model');
  // tokenizer-none
  if (model === 'none' || model === 'no_vocab') fail(info, `tokenizer.ggml.model is "${model}": the model has no tokenizer, and mathneuro runs it on text`);
  const tokensEntry = entryType(info, 'tokenizer.ggml.tokens');
  if (typeof model !== 'string' || !tokensEntry || tokensEntry.type !== GGUF_VALUE.ARRAY || tokensEntry.arrayType !== GGUF_VALUE.STRING) return; // llama.cpp refuses with its own error
  const tokens = tokensEntry.value as string[];
  const n = tokens.length;
  // duplicate-token: llama.cpp renames empty tokens [EMPTY_i], then asserts that every text is unique
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const text = tokens[i] === '' ? `[EMPTY_${i}]` : tokens[i];
    if (seen.has(text)) fail(info, `tokenizer.ggml.tokens: token ${i} ${JSON.stringify(text.slice(0, 40))} appears twice`);
    seen.add(text);
  }
  const typesEntry = entryType(info, 'tokenizer.ggml.token_type');
  const tokenTypes = typesEntry && typesEntry.type === GGUF_VALUE.ARRAY && typesEntry.arrayType === GGUF_VALUE.INT32 ? typesEntry.value as number[] : undefined;
  // wpm-byte-token
  if (model === 'bert' && tokenTypes) {
    const i = tokenTypes.slice(0, n).indexOf(6);
    if (i >= 0) fail(info, `tokenizer.ggml.token_type: token ${i} ${JSON.stringify(tokens[i].slice(0, 20))} is a BYTE token in a WPM ("bert") vocabulary`);
  }
  // llama.cpp reads every *_token_id as a u32 and replaces one outside the vocabulary by its default
  // id with a warning ("bad special token", llama-vocab.cpp llama_vocab::impl::load): never an abort.
  // 4294967295 is how converters spell "no token".
  const ignored: string[] = [];
  for (const e of info.metadataEntries) {
    if (!e.key.startsWith('tokenizer.ggml.') || !e.key.endsWith('_token_id')) continue;
    for (const v of values(e.value)) {
      const id = num(v);
      if (!isInt(id) || id < 0 || id >= n) ignored.push(`${e.key.slice('tokenizer.ggml.'.length)} = ${String(v)}${id === 4294967295 || id === -1 ? ' (no token)' : ''}`);
    }
  }
  if (ignored.length) warnings.push(`${ignored.join(', ')} ${ignored.length > 1 ? 'are' : 'is'} outside the ${n}-token vocabulary: llama.cpp ignores ${ignored.length > 1 ? 'them' : 'it'} and uses its default id ("bad special token" warning)`);
  // special-token-default: SentencePiece ("llama") adds BOS by default; an id outside the vocabulary
  // falls back to the default (bos 1, eos 2), which llama.cpp disables when it is outside too
  if (model === 'llama') {
    for (const [flag, key, dflt, on] of [['add_bos_token', 'bos_token_id', 1, true], ['add_eos_token', 'eos_token_id', 2, false]] as const) {
      const set = info.metadata.get(`tokenizer.ggml.${flag}`);
      if (!(set === true || (set === undefined && on))) continue;
      const id = num(info.metadata.get(`tokenizer.ggml.${key}`));
      if ((isInt(id) && id >= 0 && id < n) || dflt < n) continue;
      fail(info, `tokenizer.ggml.${flag} is on but neither tokenizer.ggml.${key} (${id === undefined ? 'absent' : String(id)}) nor the default id ${dflt} is inside the ${n}-token vocabulary`);
    }
  }
}

/** What llama_model_base::load_hparams asserts (for every architecture) and ggml's norms assert at compute time. */
function checkHyperparameters(info: GgufInfo, arch: string) {
  const get = (suffix: string) => num(info.metadata.get(`${arch}.${suffix}`));
  const blocks = get('block_count');
  if (isInt(blocks) && (blocks < 1 || blocks > LLAMA_MAX_LAYERS)) fail(info, `${arch}.block_count = ${blocks} (llama.cpp asserts 1..${LLAMA_MAX_LAYERS})`);
  const nExpertRaw = get('expert_count');
  const nExpert = isInt(nExpertRaw) ? nExpertRaw : 0;
  if (nExpert > LLAMA_MAX_EXPERTS) fail(info, `${arch}.expert_count = ${nExpert} (llama.cpp asserts at most ${LLAMA_MAX_EXPERTS})`);
  const used = values(info.metadata.get(`${arch}.expert_used_count`)).map(num).filter(isInt);
  const usedMax = used.length ? Math.max(...used) : 0;
  if (usedMax > nExpert) fail(info, `${arch}.expert_used_count ${usedMax} is more than expert_count ${nExpert}`);
  if (nExpert > 0 && usedMax === 0) fail(info, `${arch}.expert_count is ${nExpert} but expert_used_count is ${used.length ? 0 : 'missing'}`);
  for (const e of info.metadataEntries) {
    if (!e.key.startsWith(`${arch}.`) || !/epsilon/.test(e.key)) continue;
    for (const v of values(e.value)) {
      if (typeof v === 'number' && !(v >= 0)) fail(info, `${e.key} = ${String(v)} (ggml's norms assert eps >= 0)`);
    }
  }
}

function checkTensors(info: GgufInfo) {
  for (const t of info.tensors) {
    if (NON_WEIGHT_TYPES.has(t.type)) fail(info, `tensor "${t.name}" is ${t.typeName}: llama.cpp cannot compute with ${t.typeName} weights`);
    const oneDimensional = t.shape.filter((d) => d > 1).length <= 1 && t.shape[0] === t.numel;
    if ((oneDimensional || /_norm(_[a-z0-9]+)?\.(weight|bias)$/.test(t.name)) && t.type !== GGML_TYPE.F32) {
      fail(info, `tensor "${t.name}" (norm or vector) is ${t.typeName}; llama.cpp needs F32 there`);
    }
  }
}

/**
 * Split models (split.count > 1): llama.cpp opens the other shards itself, by name, with ggml's
 * loader, and reads their split.no with an asserting getter. Every shard passes the validator here
 * (the model view's readShards, src/gguf/model.ts).
 */
function checkSplits(info: GgufInfo): GgufInfo[] {
  return readShards(info).slice(1);
}

export interface ModelCheckOptions {
  /** false: skip the semantic model checks (the structural validator still runs): you take the risk of an abort */
  modelChecks?: boolean;
}

/**
 * Model-level checks for a file llama.cpp is about to load as a model (statistics collection).
 * Throws MathneuroError EBADGGUF naming the key or tensor; returns warnings for what llama.cpp only
 * warns about (and goes on).
 */
export function checkModel(info: GgufInfo, options: ModelCheckOptions = {}): string[] {
  const warnings: string[] = [];
  if (options.modelChecks === false) return warnings;
  if (info.metadata.get('general.type') === 'imatrix') return warnings; // a statistics file, never loaded as a model
  // an unknown or missing architecture, a missing tokenizer, no tensors, shapes: llama.cpp refuses
  // those itself with an error (its reason is in the ELOAD message), so they are not checked here
  const arch = info.metadata.get('general.architecture');
  if (typeof arch === 'string' && arch !== '') checkHyperparameters(info, arch);
  checkTokenizer(info, warnings);
  checkTensors(info);
  for (const shard of checkSplits(info)) checkTensors(shard);
  return warnings;
}

const warned = new Set<string>();

/** Print each model warning once per process (stderr: stdout stays clean for --json). */
export function emitModelWarnings(info: GgufInfo, warnings: string[], sink: (line: string) => void = (l) => process.stderr.write(l + '\n')): void {
  for (const w of warnings) {
    const line = `mathneuro: warning: ${info.path}: ${w}`;
    if (warned.has(line)) continue;
    warned.add(line);
    sink(line);
  }
}

/** The validator and the model-level checks in one call: use it before any llama.cpp model load. */
export function validateModelFile(path: string, options: ModelCheckOptions = {}): GgufInfo {
  const info = readGgufSync(path);
  emitModelWarnings(info, checkModel(info, options));
  return info;
}
