// Patching a GGUF: scale (or zero) the selected weights. patchModel checks the request, finds each
// tensor's mask (a selection file, or a selection made here from statistics) and the provenance
// keys, then hands one job to a write path:
// - new file (default, new-file.ts): a temporary file beside the output, renamed into place at the
//   end; the header is the source's plus mathneuro.* provenance keys, every unchanged byte copied as is.
// - in place (in-place.ts): the model is rewritten range by range, each range's original bytes
//   appended to an undo journal and synced first; `unpatchModel` restores the original bit-exactly.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { codecTypeByName, codecTypeInfo, type RequantizeStrategy } from '../core/codec.ts';
import { sha256InBackground } from '../core/background-hash.ts';
import { recallSha256, rememberSha256, unchangedSince, type HashedFile } from '../core/file-identity.ts';
import { packMask, unpackMask, type PackedMask } from '../core/mask-codec.ts';
import { sha256File, sha256Files } from '../core/tensor-io.ts';
import { MathneuroError } from '../errors.ts';
import { readGgufSync, type GgufInfo, type GgufMetadataEntry, type GgufTensorInfo } from '../gguf/reader.ts';
import { modelFiles, openModelSync } from '../gguf/model.ts';
import { GGUF_VALUE } from '../gguf/types.ts';
import { realPath, sameFile } from '../paths.ts';
import { SelectionFile } from '../select/file.ts';
import { planTensors, selectTensors } from '../select/select.ts';
import { checkAbort, importanceOf, writeAll, type MaskSource } from './job.ts';
import { journalPathFor, readJournal } from './journal.ts';
import { patchInPlace } from './in-place.ts';
import { outputShards, patchNewFile } from './new-file.ts';
import { RealizedScaleReport } from './realized.ts';
import type { PatchOptions, PatchResult, PatchedTensor } from './types.ts';

export type { PatchSourceInfo, PatchOptions, PatchProgress, PatchedTensor, PatchResult, UnpatchResult } from './types.ts';
export { unpatchModel } from './in-place.ts';

export const PATCH_VERSION = 1;
export const DEFAULT_SCALE = 1.1;
/**
 * A patch from statistics into a new file keeps at most this many bytes of masks as the selection
 * made them, waiting for the patch (the rest Rice-coded): with the patch's own two tensors in
 * flight, the memory the masks add. Tests lower it (0: every mask coded).
 */
export const STREAMING_LIMITS = { rawMaskBytes: 64 * 2 ** 20 };

/** Stands in the new header for the source's sha256 (64 characters) until the hash is known. */
const SHA256_PENDING = 'mathneuro-sha256-pending-0123456789abcdef0123456789abcdef0123456';

const str = (key: string, value: string): GgufMetadataEntry => ({ key, type: GGUF_VALUE.STRING, value });
const f64 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.FLOAT64, value });
const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });

function modelName(info: GgufInfo): string {
  const v = info.metadata.get('general.name');
  return typeof v === 'string' && v ? v : path.basename(info.path);
}

function sourceLabel(file: string, sha256: string) { return `${path.basename(file)} sha256:${sha256}`; }

/**
 * The source's sha256 as its selection file recorded it, when the selection's record of every
 * model file (device, inode, size, modification and change times) still matches: the bytes are then
 * those that were hashed, and are not read again. Undefined otherwise (or with `rehash`).
 */
function hashFromSelection(info: GgufInfo, file: SelectionFile | undefined, options: PatchOptions): { sha256: string; files: HashedFile[] } | undefined {
  const m = file?.index.model;
  if (!m || options.rehash || typeof m.sha256 !== 'string' || !m.files) return undefined;
  if (m.files.length === 1 && m.files[0]?.sha256 !== m.sha256) return undefined;
  return unchangedSince(modelFiles(info), m.files) ? { sha256: m.sha256, files: m.files } : undefined;
}

/**
 * Where each tensor's mask comes from. From statistics with `streaming` (a new file without
 * upcast), the selection runs on while the file is written: the source is returned at once and
 * `selecting` tells when each mask is known.
 */
async function maskSource(info: GgufInfo, options: PatchOptions, file: SelectionFile | undefined, streaming = false): Promise<MaskSource> {
  if (options.selection && file) {
    const q = file.kIndex(options.topK);
    const idx = file.index;
    if (idx.model.tensorCount !== info.tensors.length) throw new MathneuroError('ESELECTION', `${options.selection} was made for a model with ${idx.model.tensorCount} tensors, ${info.path} has ${info.tensors.length}`);
    for (const t of idx.tensors) {
      const m = info.tensorByName.get(t.name);
      if (!m || m.numel !== t.numel || m.shape.join('x') !== t.shape.join('x')) throw new MathneuroError('ESELECTION', `${options.selection} does not match ${info.path}: tensor ${t.name} ${m ? `is ${m.shape.join('x')}, the selection has ${t.shape.join('x')}` : 'is missing'}`);
    }
    const sha = sha256File(options.selection);
    return {
      method: idx.method, topK: idx.topK[q], seed: idx.seed, modelSha256: idx.model.sha256,
      description: [str('mathneuro.selection', sourceLabel(options.selection, sha)),
        str('mathneuro.statistics.math', idx.statistics.math.sha256 ? sourceLabel(idx.statistics.math.path, idx.statistics.math.sha256) : path.basename(idx.statistics.math.path)),
        ...(idx.statistics.general ? [str('mathneuro.statistics.general', idx.statistics.general.sha256 ? sourceLabel(idx.statistics.general.path, idx.statistics.general.sha256) : path.basename(idx.statistics.general.path))] : [])],
      names: new Set(idx.tensors.filter((t) => t.counts[q] > 0).map((t) => t.name)),
      count: (name) => file.tensor(name)?.counts[q] ?? 0,
      mask: (name, into) => file.mask(name, q, into),
    };
  }
  if (!options.math) throw new MathneuroError('EUSAGE', 'patching needs a selection file or the statistics (math, and general for mathneuro)');
  if (options.topK === undefined) throw new MathneuroError('EUSAGE', 'patching from statistics needs K (--top-k)');
  const method = options.method ?? 'mathneuro';
  const plan = planTensors(info, options.math, { includeOutput: options.includeOutput });
  // Each mask kept until the patch takes it. Streaming, the patch takes each one once, soon after
  // it is selected: it is kept as the selection made it (coding it and decoding it again was ~0.4 s
  // of CPU on llama-1b Q4_K, 2% of the run) while the masks kept so are under
  // STREAMING_LIMITS.rawMaskBytes, and dropped once taken. Beyond that (a selection far ahead of
  // the patch), and when the whole selection runs first, the masks are kept Rice-coded (or raw
  // where that is smaller), coded on the thread pool meanwhile.
  type HeldMask = { packed?: PackedMask; raw?: Uint8Array; numel: number; count: number };
  const masks = new Map<string, HeldMask>();
  let rawBytes = 0;
  // each scored tensor's mask known (packed, or nothing selected), in the plan's order
  const known = new Map<string, { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void }>();
  for (const s of plan.scored) {
    let resolve!: () => void, reject!: (e: unknown) => void;
    const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => {});   // (awaited by whoever needs that tensor)
    known.set(s.tensor.name, { promise, resolve, reject });
  }
  const names = new Set(plan.scored.map((s) => s.tensor.name));
  const topK = options.topK, math = options.math;
  const stopper = new AbortController();
  const stopOn = () => stopper.abort();
  options.signal?.addEventListener('abort', stopOn, { once: true });
  if (options.signal?.aborted) stopper.abort();
  const run = (async () => {
    const packing: Promise<void>[] = [];
    try {
      for await (const selection of selectTensors(info, plan, {
        method, topK: [topK], math, general: options.general, seed: options.seed, includeOutput: options.includeOutput,
        threads: options.threads, signal: stopper.signal,
        // (streaming: the write's own progress stands for both)
        onProgress: streaming ? undefined : (p) => options.onProgress?.({ phase: 'select', done: p.done, total: p.total, item: p.tensor }),
      })) {
        const waiter = known.get(selection.tensor.name)!;
        if (selection.counts[0] > 0) {
          const entry: HeldMask = { numel: selection.tensor.numel, count: selection.counts[0] };
          masks.set(selection.tensor.name, entry);
          const raw = selection.masks[0];
          if (streaming && rawBytes + raw.length <= STREAMING_LIMITS.rawMaskBytes) {
            entry.raw = raw;
            rawBytes += raw.length;
            waiter.resolve();
            continue;
          }
          const p = packMask(raw, entry.numel).then((packed) => { entry.packed = packed; waiter.resolve(); }, (e) => { waiter.reject(e); throw e; });
          p.catch(() => {});   // (awaited below, unless the selection fails first)
          packing.push(p);
        } else waiter.resolve();
      }
      await Promise.all(packing);
      // every mask is known: only the tensors with selected weights remain
      for (const name of names) if (!masks.has(name)) names.delete(name);
    } catch (e) {
      for (const w of known.values()) w.reject(e);
      throw e;
    } finally {
      options.signal?.removeEventListener('abort', stopOn);
    }
  })();
  run.catch(() => {});   // (awaited by all() and stop())
  if (!streaming) await run;
  const statsLabel = (s: { path?: string }, fallback: string) => (s.path ? sourceLabel(s.path, sha256File(s.path)) : fallback);
  return {
    method, topK: options.topK, seed: options.seed,
    description: [str('mathneuro.statistics.math', statsLabel(options.math, 'in-memory')),
      ...(options.general ? [str('mathneuro.statistics.general', statsLabel(options.general, 'in-memory'))] : [])],
    names,
    count: (name) => masks.get(name)?.count ?? 0,
    mask: (name, into) => {
      const m = masks.get(name)!;
      if (m.raw) {
        // (taken once: the patch holds it from here)
        const raw = m.raw;
        m.raw = undefined;
        rawBytes -= raw.length;
        return raw;
      }
      if (!m.packed) throw new MathneuroError('EPATCH', `the mask of ${name} was taken already`);
      return unpackMask(m.packed, m.numel, m.count, into);
    },
    selecting: streaming ? {
      ready: (name) => known.get(name)?.promise ?? Promise.resolve(),
      all: () => run,
      stop: async () => { stopper.abort(); await run.catch(() => undefined); },
    } : undefined,
  };
}

function provenance(info: GgufInfo, sha256: string, source: MaskSource, options: PatchOptions, scale: number, strategy: RequantizeStrategy): GgufMetadataEntry[] {
  const pkgVersion = '0.1.0';
  return [
    u32('mathneuro.patch.version', PATCH_VERSION),
    str('mathneuro.tool', `mathneuro ${pkgVersion}`),
    str('mathneuro.method', source.method),
    f64('mathneuro.top_k', source.topK),
    str('mathneuro.intervention', options.prune ? 'prune' : 'scale'),
    f64('mathneuro.scale', scale),
    str('mathneuro.requantization', strategy),
    ...(options.upcast ? [str('mathneuro.upcast', options.upcast)] : []),
    ...(source.seed !== undefined && source.method === 'random' ? [u32('mathneuro.seed', source.seed)] : []),
    ...source.description,
    str('mathneuro.source.name', modelName(info)),
    str('mathneuro.source.file', path.basename(info.path)),
    str('mathneuro.source.sha256', sha256),
    // a split model: the source's sha256 is that of its shards' bytes one after the other
    ...(modelFiles(info).length > 1 ? [u32('mathneuro.source.shards', modelFiles(info).length)] : []),
    str('mathneuro.patched_at', new Date().toISOString()),
  ];
}

/** Patches a model into a new file, or in place with an undo journal. */
export async function patchModel(options: PatchOptions): Promise<PatchResult> {
  const started = Date.now();
  // the model's real file: a symbolic link is followed, so the journal lives beside the real file
  // and an output that is the model through a link is recognised
  const given = options.model;
  if (existsSync(options.model)) options = { ...options, model: realPath(options.model) };
  const scale = options.prune ? 0 : options.scale ?? DEFAULT_SCALE;
  if (!Number.isFinite(scale)) throw new MathneuroError('EUSAGE', `the scale must be a finite number, got ${scale}`);
  if (options.prune && options.scale !== undefined) throw new MathneuroError('EUSAGE', 'give either a scale or prune, not both');
  const strategy = options.strategy ?? 'auto';
  if (options.inPlace && options.out && !sameFile(options.model, options.out)) throw new MathneuroError('EUSAGE', 'in-place patching writes the model itself: give no output path');
  if (options.inPlace && options.upcast) throw new MathneuroError('EUSAGE', '--upcast changes the tensor layout and needs a new file (not --in-place)');
  if (!options.inPlace) {
    if (!options.out) throw new MathneuroError('EUSAGE', 'an output path is needed (or --in-place)');
    if (sameFile(options.model, options.out)) throw new MathneuroError('EUSAGE', 'the output is the source model (links resolved): use --in-place to patch it in place');
    if (existsSync(options.out) && !options.force) throw new MathneuroError('EEXIST', `${options.out} exists (--force overwrites it)`);
  }
  const upcastType = options.upcast ? codecTypeByName(options.upcast) : undefined;
  if (options.upcast && !upcastType) throw new MathneuroError('EUSAGE', `unknown upcast type ${options.upcast}`);

  // by the path as given where it names the real file: the header parse a caller still holds
  // (the CLI's, readGgufSync keeps parses by path) is then used again instead of made twice
  const info = openModelSync(path.resolve(given) === options.model ? given : options.model);
  const outs = options.inPlace ? [] : outputShards(info, options.out!);
  for (const out of outs.slice(1)) {
    if (info.shards.some((shard) => sameFile(shard.path, out))) throw new MathneuroError('EUSAGE', `the output shard ${out} is a shard of the source model: use --in-place to patch it in place`);
    if (existsSync(out) && !options.force) throw new MathneuroError('EEXIST', `${out} exists (--force overwrites it)`);
  }
  const journalPath = journalPathFor(options.model);
  if (existsSync(journalPath)) throw new MathneuroError('EEXIST', `${options.model} is patched in place (undo journal ${journalPath}); run mathneuro unpatch ${options.model} first`);
  if (info.metadata.has('mathneuro.method') && !options.force) {
    throw new MathneuroError('EEXIST', `${options.model} was already patched by mathneuro (${String(info.metadata.get('mathneuro.method'))}, K=${String(info.metadata.get('mathneuro.top_k'))}); patch its source instead, or --force to patch it again`);
  }

  // A new file gets the source's sha256 in its header: it is computed on a worker thread while the
  // copy is written (a placeholder of the same length is replaced before the file is committed).
  // In place, the undo journal needs it before the first byte changes. A selection file made on
  // this very file, unchanged since, already holds it; so does the hash memo, for a model hashed
  // before and unchanged since.
  const selectionFile = options.selection ? SelectionFile.open(options.selection) : undefined;
  const known = hashFromSelection(info, selectionFile, options) ?? (options.rehash ? undefined : recallSha256(options.hashMemo, modelFiles(info)));
  const hashing = options.inPlace || known ? undefined : sha256InBackground(modelFiles(info));
  // from statistics into a new file (no upcast), the file is written while the selection runs
  const streaming = !options.selection && !options.inPlace && !upcastType;
  let selecting: MaskSource['selecting'];
  try {
    const source = await maskSource(info, options, selectionFile, streaming);
    selecting = source.selecting;
    checkAbort(options.signal);
    let sha256 = known?.sha256 ?? SHA256_PENDING;
    // the source's bytes must stay those hashed (by select, or for the memo) until the patch is committed
    const checkUnchanged = () => {
      if (known && !unchangedSince(modelFiles(info), known.files)) throw new MathneuroError('EIO', `${options.model} changed while it was being patched (its size or times are no longer those recorded with its sha256); nothing was written`);
    };
    const checkSha = (sha: string) => {
      if (source.modelSha256 && source.modelSha256 !== sha && !options.force) {
        throw new MathneuroError('ESELECTION', `${options.selection} was made on another file (sha256 ${source.modelSha256.slice(0, 12)}...) than ${options.model} (${sha.slice(0, 12)}...); --force applies it anyway`);
      }
    };
    let shardSha256: string[] = known ? known.files.map((f) => f.sha256) : [];
    // known (the selection's or the memo's): checked before anything is written
    if (known) checkSha(known.sha256);
    if (options.inPlace && !known) {
      // (not remembered: the model is about to change)
      ({ sha256, files: shardSha256 } = sha256Files(modelFiles(info), (p) => options.onProgress?.({ phase: 'hash', done: p.bytesDone, total: p.bytesTotal })));
      checkSha(sha256);
    }
    const entries = provenance(info, sha256, source, options, scale, strategy);
    const realized = new RealizedScaleReport(scale);
    const tensors: PatchedTensor[] = [];
    const requantProblem = (t: GgufTensorInfo): string | undefined => {
      if (upcastType) return undefined;
      const type = codecTypeInfo(t.type);
      if (!type?.canQuantize || !type.canDequantize) return `${t.name}: ggml cannot requantize ${t.typeName}; use --upcast f16 or q8_0 (new file)`;
      if (type.requiresImatrix && !importanceOf(options, t.name)) return `${t.name} is ${t.typeName}, which ggml only quantizes with an importance matrix: pass the math statistics (--math); their sums of squares serve as one`;
      return undefined;
    };
    // (streaming, `names` holds every tensor that may get selected weights: one that could not be
    // requantized is only a problem if it does, which the whole selection tells)
    let problem = info.tensors.filter((t) => source.names.has(t.name)).map(requantProblem).find((m) => m);
    if (problem && source.selecting) {
      await source.selecting.all();
      problem = info.tensors.filter((t) => source.names.has(t.name)).map(requantProblem).find((m) => m);
    }
    if (problem) throw new MathneuroError('EQUANT', problem);
    const finish = (r: Omit<PatchResult, 'source' | 'method' | 'topK' | 'intervention' | 'scale' | 'modelParameters' | 'realized' | 'tensors' | 'elapsedMs' | 'selectedWeights' | 'tensorsPatched' | 'blocksTouched' | 'bytesChanged'>): PatchResult => ({
      source: { path: options.model, name: modelName(info), sha256, hashed: !known, bytes: info.totalBytes },
      method: source.method, topK: source.topK, intervention: options.prune ? 'prune' : 'scale', scale,
      modelParameters: info.tensors.reduce((a, t) => a + t.numel, 0),
      ...r,
      selectedWeights: tensors.reduce((a, t) => a + t.selectedWeights, 0),
      tensorsPatched: tensors.length,
      blocksTouched: tensors.reduce((a, t) => a + t.blocksTouched, 0),
      bytesChanged: tensors.reduce((a, t) => a + t.bytesChanged, 0),
      realized: realized.rows(), tensors, elapsedMs: Date.now() - started,
    });

    if (options.inPlace) {
      await patchInPlace({ info, source, entries, options, scale, strategy, realized, tensors, sha256, shardSha256, journalPath });
      return finish({ mode: 'in-place', output: { path: options.model, bytes: info.totalBytes, ...(info.shards.length > 1 ? { shards: modelFiles(info) } : {}) }, journal: journalPath });
    }
    const written = await patchNewFile({ info, source, entries, options, scale, strategy, realized, tensors, outs, upcastType: upcastType?.id, beforeCommit: async (fd, header) => {
      await source.selecting?.all();   // (every mask was needed by now: this only surfaces a late error)
      if (known) return checkUnchanged();   // the header holds the known sha256 already
      // before the copy is committed: the real sha256 replaces the placeholder in its header
      options.onProgress?.({ phase: 'hash', done: 0, total: info.totalBytes });
      sha256 = await hashing!.result;
      rememberSha256(options.hashMemo, modelFiles(info), sha256, await hashing!.files);
      checkSha(sha256);
      const at = Buffer.from(header).indexOf(SHA256_PENDING);
      if (at < 0) throw new MathneuroError('EPATCH', 'the sha256 placeholder is missing from the new header');
      writeAll(fd, Buffer.from(sha256, 'latin1'), at);
      options.onProgress?.({ phase: 'hash', done: info.totalBytes, total: info.totalBytes });
    } });
    const upcastTensors = tensors.filter((t) => t.upcastTo);
    return finish({
      mode: 'new-file', output: { path: options.out!, bytes: written, ...(outs.length > 1 ? { shards: outs } : {}) },
      upcast: upcastType ? {
        type: upcastType.name, tensors: upcastTensors.length,
        bytesBefore: upcastTensors.reduce((a, t) => a + (t.bytesBefore ?? 0), 0),
        bytesAfter: upcastTensors.reduce((a, t) => a + (t.bytesAfter ?? 0), 0),
        extraBytes: written - info.totalBytes,
      } : undefined,
    });
  } finally {
    hashing?.cancel();
    await selecting?.stop();   // (ended already after a patch that completed)
  }
}

/** What kind of patched file this is, if any. */
export function patchState(model: string): { inPlace?: { journal: string; complete: boolean; provenance?: Record<string, unknown> }; newFile?: Record<string, unknown> } {
  const state: ReturnType<typeof patchState> = {};
  if (existsSync(model)) model = realPath(model);
  const journalPath = journalPathFor(model);
  if (existsSync(journalPath)) {
    const c = readJournal(journalPath);
    state.inPlace = { journal: journalPath, complete: !!c.commit, provenance: c.header?.provenance };
  }
  const info = readGgufSync(model);
  const keys = info.metadataEntries.filter((e) => e.key.startsWith('mathneuro.') && !e.key.startsWith('mathneuro.stats.') && !e.key.startsWith('mathneuro.model.'));
  if (info.metadata.has('mathneuro.method')) state.newFile = Object.fromEntries(keys.map((e) => [e.key, e.value]));
  return state;
}


