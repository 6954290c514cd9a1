import { existsSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildPaths, cpuBackendInfo, llamaSourceDir, loadNative, nativeBuild, nodeLlamaCppDir, prebuiltBinsDir } from '../native.ts';
import { globalHelp, parse, writeJson, type Command } from './common.ts';

export const command: Command = {
  name: 'doctor',
  summary: 'which native build is used, its backend, devices, CPU features and llama.cpp commit',
  help: `usage: mathneuro doctor [--json]

Shows both native builds (prebuilt-linked from npm install, and from source via npm run build:source),
which one is loaded, the ggml devices it sees and the llama.cpp release it was built from.
MATHNEURO_BUILD=source|prebuilt forces one build. The prebuilt loads the best of its CPU variants
(libggml-cpu-<variant>.so) for this CPU; MATHNEURO_CPU_VARIANT=<variant> (e.g. x64, sse42, haswell)
loads that one instead, for mathneuro and node-llama-cpp alike (quantized matmuls round differently
per variant). The source build has its CPU backend compiled in.
${globalHelp}

examples:
  mathneuro doctor
  MATHNEURO_BUILD=prebuilt mathneuro doctor --json`,
  async run(argv, io) {
    const { values } = parse(argv, {}, false);
    const builds = Object.fromEntries(Object.entries(buildPaths).map(([kind, p]) => [kind, existsSync(p) ? { built: true, path: p, builtAt: statSync(p).mtime.toISOString() } : { built: false, path: p }]));
    const native = loadNative();
    const used = nativeBuild();
    const info = native.systemInfo();
    let llamaRelease = 'unknown';
    try { llamaRelease = JSON.parse(readFileSync(path.join(nodeLlamaCppDir(), 'llama', 'binariesGithubRelease.json'), 'utf8')).release; } catch {}
    let llamaCommit = 'unknown';
    try {
      const head = readFileSync(path.join(llamaSourceDir(), '.git', 'HEAD'), 'utf8').trim();
      llamaCommit = head.startsWith('ref:') ? head : head.slice(0, 12);
    } catch {}
    const cpuBackend = cpuBackendInfo();
    const cpuFeatures = info.llamaSystemInfo.split('|').map((s) => s.trim()).filter((s) => / = 1$/.test(s)).map((s) => s.replace(/ = 1$/, '').replace(/^CPU : /, ''));
    const report = {
      ok: true, used: used.kind, builds, buildKind: info.buildKind, llamaRelease, llamaCommit, prebuiltBins: prebuiltBinsDir(),
      devices: info.devices,
      cpuBackend: {
        loaded: cpuBackend.loaded, library: cpuBackend.library, forced: cpuBackend.forced ?? null, defaultVariant: cpuBackend.defaultVariant ?? null,
        variants: cpuBackend.variants.map((v) => ({ name: v.name, supported: v.score > 0, score: v.score })),
      },
      cpu: { model: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), features: cpuFeatures },
      supportsGpuOffload: info.supportsGpuOffload, node: process.version, platform: `${process.platform}-${process.arch}`,
    };
    if (values.json) { writeJson(io, report); return 0; }
    const lines = [
      `native build in use: ${used.kind} (${used.path})`,
      ...Object.entries(builds).map(([k, b]) => `  ${k.padEnd(8)} ${b.built ? `built ${(b as { builtAt: string }).builtAt}` : 'not built'}${k === 'source' && !b.built ? ' (npm run build:source)' : ''}`),
      `llama.cpp: release ${llamaRelease}, commit ${llamaCommit}`,
      `devices: ${info.devices.map((d: { name: string; description: string; type: string }) => `${d.name} (${d.type}, ${d.description})`).join(', ') || 'none'}`,
      `GPU offload: ${info.supportsGpuOffload ? 'yes' : 'no'}`,
      `CPU backend: ${cpuBackend.loaded === 'built-in' ? 'compiled into the source build' : `${cpuBackend.loaded} (${cpuBackend.library})`}${cpuBackend.forced ? ', forced by MATHNEURO_CPU_VARIANT' : ''}`,
      `  prebuilt CPU variants: default here ${cpuBackend.defaultVariant ?? 'none'}; supported ${cpuBackend.variants.filter((v) => v.score > 0).map((v) => v.name).join(' ') || 'none'}${cpuBackend.variants.some((v) => v.score <= 0) ? `; not on this CPU ${cpuBackend.variants.filter((v) => v.score <= 0).map((v) => v.name).join(' ')}` : ''} (MATHNEURO_CPU_VARIANT=<variant> forces one)`,
      `CPU: ${report.cpu.model}, ${report.cpu.cores} threads; features: ${cpuFeatures.join(' ')}`,
      `node ${process.version} ${report.platform}`,
    ];
    io.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
};
