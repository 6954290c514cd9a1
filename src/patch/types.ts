// The public types of patching: options, progress, and what a patch or an undo reports.
import type { RequantizeStrategy } from '../core/codec.ts';
import type { SelectionMethod, StatisticsSource } from '../select/select.ts';
import type { RealizedScaleRow } from './realized.ts';

export interface PatchSourceInfo { path: string; sha256?: string }

export interface PatchOptions {
  /** the GGUF to patch */
  model: string;
  /** new-file mode: the output path (must differ from model) */
  out?: string;
  /** rewrite `model` itself, with an undo journal beside it (default false) */
  inPlace?: boolean;
  /** a selection file to replay; otherwise the selection is made from the statistics */
  selection?: string;
  /** statistics (needed without a selection file; math also serves as importance matrix) */
  math?: StatisticsSource & { path?: string };
  general?: StatisticsSource & { path?: string };
  /** selection method when replaying from statistics (default 'mathneuro') */
  method?: SelectionMethod;
  /** K: with statistics, required; with a selection file, picks one of its K */
  topK?: number;
  seed?: number;
  includeOutput?: boolean;
  /** factor for the selected weights (default 1.1); ignored with prune */
  scale?: number;
  /** set the selected weights to zero instead */
  prune?: boolean;
  /** requantization of touched blocks (default 'auto') */
  strategy?: RequantizeStrategy;
  /** new-file mode: store tensors with selected weights in this type so the change holds */
  upcast?: 'q8_0' | 'f16';
  /** use the math statistics' sums of squares as importance matrix when requantizing (default true when given) */
  useImportance?: boolean;
  /** overwrite an existing output; patch a file that mathneuro already patched (default false) */
  force?: boolean;
  /** threads for selecting and requantizing (default: all cores); the output does not depend on it */
  threads?: number;
  /**
   * new-file mode: copy the unchanged bytes through a buffer instead of inside the kernel
   * (copy_file_range, as cp does) (default false; the output is the same)
   */
  streamCopy?: boolean;
  /**
   * hash the source even where the selection file holds its sha256 and its record of the file
   * (device, inode, size, modification and change times) still matches (default false)
   */
  rehash?: boolean;
  /**
   * a hash memo file (core/file-identity.ts; the CLI's is hashMemoPath()): the source's sha256 is
   * taken from it while the model is unchanged since it was hashed, and remembered there when hashed
   * (default: none)
   */
  hashMemo?: string;
  onProgress?: (p: PatchProgress) => void;
  signal?: AbortSignal;
}

export interface PatchProgress { phase: 'hash' | 'select' | 'patch' | 'copy' | 'verify' | 'restore'; done: number; total: number; item?: string }

export interface PatchedTensor {
  name: string;
  type: string;
  selectedWeights: number;
  blocksTouched: number;
  bytesChanged: number;
  /** with upcast: the stored type and sizes */
  upcastTo?: string;
  bytesBefore?: number;
  bytesAfter?: number;
}

export interface PatchResult {
  mode: 'new-file' | 'in-place';
  /** hashed: false when the sha256 is the selection file's or the hash memo's (the file unchanged since), not read again */
  source: { path: string; name: string; sha256: string; hashed: boolean; bytes: number };
  /** for a split model: path is the first shard, bytes all shards together, shards every file */
  output: { path: string; bytes: number; shards?: string[] };
  journal?: string;
  method: SelectionMethod;
  topK: number;
  intervention: 'scale' | 'prune';
  scale: number;
  selectedWeights: number;
  modelParameters: number;
  tensorsPatched: number;
  blocksTouched: number;
  bytesChanged: number;
  upcast?: { type: string; tensors: number; bytesBefore: number; bytesAfter: number; extraBytes: number };
  realized: RealizedScaleRow[];
  tensors: PatchedTensor[];
  elapsedMs: number;
}

export interface UnpatchResult {
  model: string;
  journal: string;
  restoredRanges: number;
  restoredBytes: number;
  sha256: string;
  /** the patch had completed (false: it was interrupted and its partial writes were undone) */
  wasComplete: boolean;
  provenance?: Record<string, unknown>;
  /** a split model: every shard restored, with its sha256 (each checked against the journal's) */
  shards?: { path: string; sha256: string }[];
}
