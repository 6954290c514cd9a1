// One view of a model over all of its files. A split model (gguf-split's `<name>-00001-of-0000N.gguf`)
// is opened at its first shard, as llama.cpp does (src/llama-model-loader.cpp, llama_get_list_splits
// with llama_split_prefix/llama_split_path of src/llama.cpp): the other shards are found by that
// naming, each passes the validator, carries split.no = its index (u16), and no tensor is in two
// shards; split.tensors.count is the total (the loader's "corrupted model" check). Every tensor of
// the view names its shard and file; its absoluteOffset is within that file.
import { MathneuroError } from '../errors.ts';
import { readGgufSync, type GgufInfo, type GgufTensorInfo } from './reader.ts';
import { GGUF_VALUE } from './types.ts';

export interface GgufModel extends GgufInfo {
  /** every file of the model in order: [the file itself] when it is not split */
  shards: GgufInfo[];
  /** tensors of all shards, each with `shard` and `file` set */
  tensors: GgufTensorInfo[];
  /** bytes of all shards together */
  totalBytes: number;
}

const pad = (x: number) => String(x).padStart(5, '0');

/** llama_split_path: `<prefix>-%05d-of-%05d.gguf` for shard `index` (0-based) of `count`. */
export function splitPath(prefix: string, index: number, count: number): string {
  return `${prefix}-${pad(index + 1)}-of-${pad(count)}.gguf`;
}

/** llama_split_prefix: the prefix when `file` is named as shard `index` of `count`, else undefined. */
export function splitPrefix(file: string, index: number, count: number): string | undefined {
  const suffix = `-${pad(index + 1)}-of-${pad(count)}.gguf`;
  return file.length > suffix.length && file.endsWith(suffix) ? file.slice(0, -suffix.length) : undefined;
}

/** The shard count a file name announces (`-0000i-of-0000N.gguf`), or undefined. */
export function splitCountOfName(file: string): { index: number; count: number; prefix: string } | undefined {
  const m = /^(.+)-(\d{5,})-of-(\d{5,})\.gguf$/s.exec(file);
  if (!m) return undefined;
  const index = Number(m[2]) - 1, count = Number(m[3]);
  if (!(count >= 1 && index >= 0 && index < count) || splitPrefix(file, index, count) !== m[1]) return undefined;
  return { index, count, prefix: m[1] };
}

function entry(info: GgufInfo, key: string) { return info.metadataEntries.find((e) => e.key === key); }

function bad(file: string, message: string): never {
  throw new MathneuroError('EBADGGUF', `${file}: ${message}`);
}

/** split.count of a file: 1 when absent. Throws when it is not a u16 >= 1. */
export function splitCount(info: GgufInfo): number {
  const e = entry(info, 'split.count');
  if (!e) return 1;
  if (e.type !== GGUF_VALUE.UINT16 || typeof e.value !== 'number' || e.value < 1) bad(info.path, 'split.count must be a u16 >= 1');
  return e.value;
}

/**
 * The shards of the model whose first file is `first` (already read): [first] when it is not split.
 * The first shard must be named as llama.cpp names it and carry split.no = 0.
 */
export function readShards(first: GgufInfo): GgufInfo[] {
  const view = (first as Partial<GgufModel>).shards;
  if (view) return view;   // already a model view
  const n = splitCount(first);
  if (n === 1) return [first];
  const no = entry(first, 'split.no');
  if (!no || no.type !== GGUF_VALUE.UINT16 || no.value !== 0) {
    bad(first.path, `a split model must be opened at its first shard (split.no is ${no ? String(no.value) : 'missing'}, llama.cpp needs 0)`);
  }
  const prefix = splitPrefix(first.path, 0, n);
  if (prefix === undefined) bad(first.path, `a model in ${n} shards must be named <name>-00001-of-${pad(n)}.gguf (llama.cpp finds the other shards by that name)`);
  const shards = [first];
  const names = new Set(first.tensors.map((t) => t.name));
  for (let i = 1; i < n; i++) {
    const file = splitPath(prefix, i, n);
    let shard: GgufInfo;
    try { shard = readGgufSync(file); } catch (e) {
      if ((e as MathneuroError).code === 'ENOENT') throw new MathneuroError('ENOENT', `${first.path} is shard 1 of ${n}, but shard ${i + 1} (${file}) is missing`);
      throw e;
    }
    const sn = entry(shard, 'split.no');
    if (!sn || sn.type !== GGUF_VALUE.UINT16 || sn.value !== i) bad(file, `shard ${i + 1} of ${n} needs split.no = ${i} (u16), it has ${sn ? String(sn.value) : 'none'}`);
    for (const t of shard.tensors) {
      if (names.has(t.name)) bad(file, `tensor "${t.name}" is in two shards`);
      names.add(t.name);
    }
    shards.push(shard);
  }
  // llama_model_loader reads it as an int (GGUFMeta: the key must be an i32) and compares it with the tensors it found
  const total = entry(first, 'split.tensors.count');
  if (!total || total.type !== GGUF_VALUE.INT32 || typeof total.value !== 'number') bad(first.path, `split.tensors.count ${total ? 'is not an i32' : 'is missing'} (llama.cpp refuses the split model)`);
  if (total.value !== names.size) bad(first.path, `split.tensors.count is ${total.value}, the ${n} shards hold ${names.size} tensors`);
  return shards;
}

/** A model's view from its single file or from several shards already read (shards[0] the first). */
export function modelOf(shards: GgufInfo[]): GgufModel {
  const first = shards[0];
  const tensors: GgufTensorInfo[] = [];
  const tensorByName = new Map<string, GgufTensorInfo>();
  shards.forEach((s, shard) => {
    for (const t of s.tensors) {
      const v = { ...t, shard, file: s.path };
      tensors.push(v);
      tensorByName.set(v.name, v);
    }
  });
  return { ...first, tensors, tensorByName, shards, totalBytes: shards.reduce((a, s) => a + s.fileSize, 0) };
}

/** Opens a model: the validator over its file, or over every shard when it is split. */
export function openModelSync(path: string): GgufModel {
  return modelOf(readShards(readGgufSync(path)));
}

/** The files of a model view (one, or every shard), for hashing and identity. */
export function modelFiles(info: GgufInfo): string[] {
  const shards = (info as Partial<GgufModel>).shards;
  return shards ? shards.map((s) => s.path) : [info.path];
}

/** True when the view spans several files. */
export function isSplit(info: GgufInfo): boolean { return modelFiles(info).length > 1; }

/** The file that holds a tensor's bytes. */
export function tensorFile(info: GgufInfo, t: GgufTensorInfo): string { return t.file ?? info.path; }
