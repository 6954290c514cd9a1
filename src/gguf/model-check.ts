// Model-level checks after a valid GGUF structure (reader.ts): things llama.cpp's loader or
// tokenizer abort on (GGML_ASSERT -> SIGABRT kills the process) instead of returning an error,
// found by fuzzing metadata of valid models (scripts/fuzz.ts). Each failure is EBADGGUF with the
// key or tensor named. llama.cpp release v0.4.0 (80fb11a): re-fuzz when it changes.
import { MathneuroError } from '../errors.ts';
import { readGgufSync, type GgufInfo, type GgufValue } from './reader.ts';
import { readShards } from './model.ts';
import { GGML_TYPE, GGUF_VALUE } from './types.ts';

/** Architectures llama.cpp's LLM_ARCH_NAMES knows (src/llama-arch.cpp), without clip and (unknown). */
export const KNOWN_ARCHITECTURES = new Set(('llama llama4 deci falcon grok gpt2 gptj gptneox mpt baichuan starcoder refact bert modern-bert '
  + 'nomic-bert nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 eurobert bloom stablelm qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe '
  + 'qwen3next qwen3vl qwen3vlmoe qwen35 qwen35moe qwen4exp phi2 phi3 phimoe plamo plamo2 plamo3 codeshell orion internlm2 minicpm '
  + 'minicpm3 gemma gemma2 gemma3 gemma3n gemma4 gemma4-assistant gemma-embedding starcoder2 mamba mamba2 jamba falcon-h1 xverse '
  + 'command-r cohere2 cohere2moe dbrx olmo olmo2 olmoe muse-glimmer openelm arctic deepseek deepseek2 deepseek2-ocr deepseek32 deepseek4 '
  + 'chatglm glm4 glm4moe glm-dsa bitnet t5 t5encoder jais jais2 nemotron nemotron_h nemotron_h_moe exaone exaone4 exaone-moe rwkv6 '
  + 'rwkv6qwen2 rwkv7 arwkv7 granite granitemoe granitehybrid graniteswitch granite_swa chameleon wavtokenizer-dec plm bailingmoe '
  + 'bailingmoe2 bailingmoe3 dots1 dots3note arcee afmoe laguna ernie4_5 ernie4_5-moe hunyuan-moe hunyuan-dense hunyuan_vl hy_v3 smollm3 '
  + 'gpt-oss lfm2 lfm2moe dream smallthinker llada llada-moe seed_oss grovemoe apertus minimax-01 minimax-m2 minimax-m3 cogvlm rnd1 '
  + 'pangu-embedded mistral3 eagle3 dflash mistral4 paddleocr mimo2 step35 llama-embed maincoder kimi-linear kimi-k3 talkie mellum '
  + 'nanbeige qwen3tts pockettts').split(' '));

/** Tokenizer models whose tokenizer works on any text. "none"/"no_vocab" have no tokenizer (tokenizing
 * aborts), "bert" (WPM, encoders) aborts on byte tokens; anything else llama.cpp does not know. */
export const SUPPORTED_TOKENIZERS = new Set(['llama', 'gpt2', 't5', 'rwkv', 'plamo2']);

/** Types ggml only uses for activations or integers: as model weights the CPU backend aborts or crashes. */
const NON_WEIGHT_TYPES = new Set<number>([GGML_TYPE.Q8_1, GGML_TYPE.Q8_K, GGML_TYPE.I8, GGML_TYPE.I16, GGML_TYPE.I32, GGML_TYPE.I64, GGML_TYPE.F64]);

/** Hyperparameters that must be integers >= min (and <= max) when present, per layer when arrays. */
const INTEGER_HPARAMS: [suffix: string, min: number, max: number][] = [
  ['block_count', 1, 4096], ['embedding_length', 1, 1 << 20], ['feed_forward_length', 0, 1 << 24], ['context_length', 1, 2 ** 31 - 1],
  ['attention.head_count', 0, 1 << 16], ['attention.head_count_kv', 0, 1 << 16], ['attention.key_length', 1, 1 << 16],
  ['attention.value_length', 1, 1 << 16], ['rope.dimension_count', 0, 1 << 16], ['expert_count', 0, 1 << 16], ['expert_used_count', 0, 1 << 16],
  ['vocab_size', 1, 2 ** 31 - 1],
];

function fail(info: GgufInfo, message: string): never {
  throw new MathneuroError('EBADGGUF', `${info.path}: ${message} (llama.cpp would abort on this model)`);
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function values(v: GgufValue | undefined): unknown[] { return v === undefined ? [] : Array.isArray(v) ? v : [v]; }

function entryType(info: GgufInfo, key: string) { return info.metadataEntries.find((e) => e.key === key); }

/** Tokenizer metadata: present, a tokenizer llama.cpp can run on any text, consistent arrays. */
function checkTokenizer(info: GgufInfo) {
  const model = info.metadata.get('tokenizer.ggml.model');
  if (typeof model !== 'string') fail(info, 'tokenizer.ggml.model is missing or not a string: mathneuro needs the model\'s tokenizer');
  if (!SUPPORTED_TOKENIZERS.has(model)) fail(info, `tokenizer.ggml.model "${model.slice(0, 40)}" is not supported (${[...SUPPORTED_TOKENIZERS].join(', ')})`);
  const tokensEntry = entryType(info, 'tokenizer.ggml.tokens');
  if (!tokensEntry || tokensEntry.type !== GGUF_VALUE.ARRAY || tokensEntry.arrayType !== GGUF_VALUE.STRING) fail(info, 'tokenizer.ggml.tokens is missing or not an array of strings');
  const tokens = tokensEntry.value as string[];
  const n = tokens.length;
  if (n < 1 || n > 2 ** 31 - 1) fail(info, `tokenizer.ggml.tokens has ${n} entries`);
  // llama.cpp renames empty tokens [EMPTY_i] and asserts that every text is unique
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const text = tokens[i] === '' ? `[EMPTY_${i}]` : tokens[i];
    if (seen.has(text)) fail(info, `tokenizer.ggml.tokens: token ${i} ${JSON.stringify(text.slice(0, 40))} appears twice`);
    seen.add(text);
  }
  const scores = entryType(info, 'tokenizer.ggml.scores');
  if (scores && (scores.type !== GGUF_VALUE.ARRAY || (scores.arrayType !== GGUF_VALUE.FLOAT32 && scores.arrayType !== GGUF_VALUE.INT32) || (scores.value as unknown[]).length < n)) {
    fail(info, `tokenizer.ggml.scores must be an f32 or i32 array of at least ${n} entries`);
  }
  const typesEntry = entryType(info, 'tokenizer.ggml.token_type');
  let tokenTypes: number[] | undefined;
  if (typesEntry) {
    if (typesEntry.type !== GGUF_VALUE.ARRAY || typesEntry.arrayType !== GGUF_VALUE.INT32 || (typesEntry.value as unknown[]).length < n) {
      fail(info, `tokenizer.ggml.token_type must be an i32 array of at least ${n} entries`);
    }
    tokenTypes = typesEntry.value as number[];
  }
  // byte tokens are decoded as "<0xXX>" (token_to_byte reads text[3..5]); SentencePiece-style vocabs
  // fall back to them for any character without a token (byte_to_token throws out of the tokenizer)
  if (tokenTypes && model !== 'rwkv') {
    for (let i = 0; i < n; i++) {
      if (tokenTypes[i] === 6 && !/^<0x[0-9A-Fa-f]{2}>$/.test(tokens[i])) fail(info, `tokenizer.ggml.tokens: byte token ${i} is ${JSON.stringify(tokens[i].slice(0, 20))}, not <0xXX>`);
    }
  }
  if (model === 'llama' || model === 't5') {
    for (let b = 0; b < 256; b++) {
      const text = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      if (!seen.has(text)) fail(info, `the SentencePiece vocabulary has no byte token ${text}: text with a character outside the vocabulary cannot be tokenized`);
    }
  }
  if (model === 'gpt2') {
    const merges = entryType(info, 'tokenizer.ggml.merges');
    if (!merges || merges.type !== GGUF_VALUE.ARRAY || merges.arrayType !== GGUF_VALUE.STRING) fail(info, 'tokenizer.ggml.merges is missing or not an array of strings (BPE tokenizers need it)');
  }
  for (const e of info.metadataEntries) {
    if (!e.key.startsWith('tokenizer.ggml.') || !e.key.endsWith('_token_id')) continue;
    for (const v of values(e.value)) {
      const id = typeof v === 'bigint' ? Number(v) : v;
      if (!isInt(id) || id < -1 || id >= n) fail(info, `${e.key} = ${String(v)} is not a token id (the vocabulary has ${n} tokens)`);
    }
  }
  // add_bos/add_eos with the default ids of the tokenizer when the keys are absent
  for (const [flag, key, dflt] of [['add_bos_token', 'bos_token_id', 1], ['add_eos_token', 'eos_token_id', 2]] as const) {
    if (info.metadata.get(`tokenizer.ggml.${flag}`) === true && !info.metadata.has(`tokenizer.ggml.${key}`) && model === 'llama' && dflt >= n) {
      fail(info, `tokenizer.ggml.${flag} is set but the default ${key} ${dflt} is outside the ${n}-token vocabulary`);
    }
  }
}

function checkHyperparameters(info: GgufInfo, arch: string) {
  const get = (suffix: string) => info.metadata.get(`${arch}.${suffix}`);
  for (const [suffix, min, max] of INTEGER_HPARAMS) {
    for (const raw of values(get(suffix))) {
      const v = typeof raw === 'bigint' ? Number(raw) : raw;
      if (!isInt(v) || v < min || v > max) fail(info, `${arch}.${suffix} = ${String(raw)} (expected an integer in ${min}..${max})`);
    }
  }
  for (const e of info.metadataEntries) {
    if (!e.key.startsWith(`${arch}.`)) continue;
    const floaty = e.type === GGUF_VALUE.FLOAT32 || e.type === GGUF_VALUE.FLOAT64 || (e.type === GGUF_VALUE.ARRAY && (e.arrayType === GGUF_VALUE.FLOAT32 || e.arrayType === GGUF_VALUE.FLOAT64));
    if (!floaty) continue;
    for (const v of values(e.value)) {
      if (!Number.isFinite(v as number)) fail(info, `${e.key} = ${String(v)} is not a finite number`);
      if ((/epsilon|freq_base/.test(e.key)) && !((v as number) > 0)) fail(info, `${e.key} = ${String(v)} must be > 0`);
    }
  }
  const scalar = (suffix: string) => { const v = get(suffix); return isInt(v) ? v : undefined; };
  const nEmbd = scalar('embedding_length');
  const nHead = scalar('attention.head_count');
  const nHeadKv = scalar('attention.head_count_kv');
  if (nHead !== undefined && nHeadKv !== undefined && nHeadKv > 0 && (nHeadKv > nHead || nHead % nHeadKv !== 0)) {
    fail(info, `${arch}.attention.head_count ${nHead} is not a multiple of head_count_kv ${nHeadKv}`);
  }
  if (nEmbd !== undefined && nHead && get('attention.key_length') === undefined && nEmbd % nHead !== 0) {
    fail(info, `${arch}.embedding_length ${nEmbd} is not a multiple of attention.head_count ${nHead}`);
  }
  const nExpert = scalar('expert_count');
  const nUsed = scalar('expert_used_count');
  if (nUsed !== undefined && nUsed > (nExpert ?? 0)) fail(info, `${arch}.expert_used_count ${nUsed} is more than expert_count ${nExpert ?? 0}`);
  if (nExpert && !nUsed) fail(info, `${arch}.expert_count is ${nExpert} but expert_used_count is ${nUsed ?? 'missing'}`);
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

/**
 * Model-level checks for a file llama.cpp is about to load as a model (statistics collection).
 * Throws MathneuroError EBADGGUF naming the key or tensor.
 */
export function checkModel(info: GgufInfo): void {
  if (info.metadata.get('general.type') === 'imatrix') return; // a statistics file, never loaded as a model
  const arch = info.metadata.get('general.architecture');
  if (typeof arch !== 'string' || arch === '') fail(info, 'general.architecture is missing or not a string');
  if (!KNOWN_ARCHITECTURES.has(arch)) fail(info, `general.architecture "${arch.slice(0, 40)}" is not an architecture this llama.cpp knows`);
  if (info.tensors.length === 0 && !info.metadata.has('split.count')) fail(info, 'the file has no tensors (a vocabulary-only GGUF?)');
  checkHyperparameters(info, arch);
  checkTokenizer(info);
  checkTensors(info);
  for (const shard of checkSplits(info)) checkTensors(shard);
}

/** The validator and the model-level checks in one call: use it before any llama.cpp model load. */
export function validateModelFile(path: string): GgufInfo {
  const info = readGgufSync(path);
  checkModel(info);
  return info;
}
