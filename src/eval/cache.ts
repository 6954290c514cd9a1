// Per-item result cache: one JSON-lines file per (model sha256, task, settings hash), one line
// per item, so a rerun or a bigger --limit only evaluates new items. Model hashes of
// multi-GB files are computed once and memoised by path and identity (core/file-identity.ts).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, appendFileSync, realpathSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sha256InBackground } from '../core/background-hash.ts';
import { recallSha256, rememberSha256 } from '../core/file-identity.ts';

/** The cache directory: the option, else $MATHNEURO_CACHE_DIR, else ~/.cache/mathneuro/eval. */
export function resolveCacheDir(option?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (option) return path.resolve(option);
  if (env.MATHNEURO_CACHE_DIR) return path.resolve(env.MATHNEURO_CACHE_DIR);
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'mathneuro', 'eval');
}

/** A stable hash of plain settings (keys sorted), to key cached results by everything that changes them. */
export function settingsHash(settings: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]));
    return v;
  };
  return createHash('sha256').update(JSON.stringify(canonical(settings))).digest('hex').slice(0, 16);
}

/**
 * sha256 of a file, memoised in <cacheDir>/file-hashes.json (the hash memo of core/file-identity.ts:
 * by real path, trusted while the file's device, inode, size and times are those it was hashed with).
 */
export async function fileSha256(file: string, cacheDir?: string): Promise<string> {
  const real = realpathSync(file);
  const memoFile = cacheDir ? path.join(cacheDir, 'file-hashes.json') : undefined;
  const known = recallSha256(memoFile, [real]);
  if (known) return known.sha256;
  const hashing = sha256InBackground(real);
  const sha256 = await hashing.result;
  rememberSha256(memoFile, [real], sha256, await hashing.files);
  return sha256;
}

/** Cached results of one (model, task, settings): item id -> result. */
export class ResultCache<T> {
  private readonly entries = new Map<string, T>();
  readonly file: string | undefined;

  /** `enabled: false` keeps results in memory only (--no-cache). */
  constructor(cacheDir: string, modelKey: string, task: string, settings: string, enabled = true) {
    this.file = enabled ? path.join(cacheDir, modelKey.slice(0, 32), `${task}-${settings}.jsonl`) : undefined;
    if (this.file && existsSync(this.file)) {
      for (const line of readFileSync(this.file, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          const { id, result } = JSON.parse(line) as { id: string; result: T };
          this.entries.set(id, result);
        } catch { /* a torn last line from an interrupted run: ignore it */ }
      }
    }
  }

  get(id: string): T | undefined { return this.entries.get(id); }
  has(id: string): boolean { return this.entries.has(id); }
  get size(): number { return this.entries.size; }

  set(id: string, result: T): void {
    this.entries.set(id, result);
    if (!this.file) return;
    mkdirSync(path.dirname(this.file), { recursive: true });
    appendFileSync(this.file, JSON.stringify({ id, result }) + '\n');
  }
}
