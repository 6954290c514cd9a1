// Loads the native shim: the source build when it exists (npm run build:source), else the
// prebuilt-linked one (npm install). Backends are loaded once, on first use.
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MathneuroError } from './errors.ts';

const require = createRequire(import.meta.url);
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const paths = require(path.join(packageRoot, 'scripts', 'paths.cjs')) as {
  binsDir(): string; llamaSourceDir(): string; bundlePath(): string;
};

export type BuildKind = 'source' | 'prebuilt';

export const buildPaths: Record<BuildKind, string> = {
  source: path.join(packageRoot, 'build-source', 'Release', 'mathneuro.node'),
  prebuilt: path.join(packageRoot, 'build', 'Release', 'mathneuro.node'),
};

export interface DeviceInfo {
  name: string; description: string; type: 'cpu' | 'gpu' | 'accel' | 'other'; backend: string;
  memoryTotalBytes: number; memoryFreeBytes: number;
}
export interface SystemInfo {
  buildKind: string; llamaSystemInfo: string; devices: DeviceInfo[];
  supportsGpuOffload: boolean; supportsMmap: boolean;
}

/** The raw binding. Each native module adds its functions; typed wrappers live beside their TS module. */
export interface NativeBinding {
  init(binsDir?: string, verbose?: boolean): void;
  systemInfo(): SystemInfo;
  [name: string]: any;
}

let cached: { binding: NativeBinding; kind: BuildKind; path: string } | undefined;

/** Which build to use: MATHNEURO_BUILD=source|prebuilt forces one; otherwise the one that exists,
 * and when both do, the more recently built (a rebuild after editing native/ is what you meant). */
export function pickBuild(): { kind: BuildKind; path: string } | undefined {
  const forced = process.env.MATHNEURO_BUILD as BuildKind | undefined;
  if (forced) {
    if (!(forced in buildPaths)) throw new MathneuroError('EUSAGE', `MATHNEURO_BUILD must be "source" or "prebuilt", not "${forced}"`);
    return existsSync(buildPaths[forced]) ? { kind: forced, path: buildPaths[forced] } : undefined;
  }
  const present = (['source', 'prebuilt'] as BuildKind[]).filter((k) => existsSync(buildPaths[k]));
  if (present.length === 0) return undefined;
  present.sort((a, b) => statSync(buildPaths[b]).mtimeMs - statSync(buildPaths[a]).mtimeMs);
  return { kind: present[0], path: buildPaths[present[0]] };
}

export function loadNative(): NativeBinding {
  if (cached) return cached.binding;
  let picked = pickBuild();
  if (!picked) {
    // Installed as a dependency with install scripts disabled: build on first use, loudly.
    const forced = process.env.MATHNEURO_BUILD;
    if (forced) throw new MathneuroError('ENATIVE', `the ${forced} build of the native shim is missing (${buildPaths[forced as BuildKind]}); run ${forced === 'source' ? 'npm run build:source' : 'npm run build'}`);
    process.stderr.write('mathneuro: the native shim is not built yet; building it now (once, ~10 s)...\n');
    const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
    const r = spawnSync(process.execPath, [path.join(packageRoot, 'scripts', 'install.mjs'), '--force'], { stdio: ['ignore', 'inherit', 'inherit'] });
    picked = pickBuild();
    if (r.status !== 0 || !picked) throw new MathneuroError('ENATIVE', 'could not build the native shim; run `npm run build` in the mathneuro package and read its output');
  }
  const binding = require(picked.path) as NativeBinding;
  binding.init(paths.binsDir(), process.env.MATHNEURO_LLAMA_LOG === '1');
  cached = { binding, kind: picked.kind, path: picked.path };
  return binding;
}

export function nativeBuild(): { kind: BuildKind; path: string } {
  loadNative();
  return { kind: cached!.kind, path: cached!.path };
}

export function prebuiltBinsDir(): string { return paths.binsDir(); }
export function llamaSourceDir(): string { return paths.llamaSourceDir(); }
