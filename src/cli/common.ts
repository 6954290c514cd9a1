// Conventions shared by every command: parse with node:util parseArgs, --json/--quiet/--verbose,
// exit codes 0 ok / 1 failure / 2 usage, one-line errors, colour only on a TTY without NO_COLOR.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MathneuroError } from '../errors.ts';
import { loadNative, type DeviceInfo } from '../native.ts';

export interface CommandIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

export interface Command {
  name: string;
  summary: string;
  /** Full --help text: usage line, options, examples. */
  help: string;
  run(argv: string[], io: CommandIO): Promise<number>;
}

export const globalOptions = {
  json: { type: 'boolean', default: false },
  quiet: { type: 'boolean', short: 'q', default: false },
  verbose: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsConfig['options'];

export const globalHelp = `  --json       print one JSON object on stdout (and nothing else there)
  -q, --quiet  no progress display
  --verbose    stack traces and llama.cpp logs on errors
  -h, --help   this help`;

/** The hash memo, in the help of the commands that hash a model (select, patch). */
export const hashMemoHelp = `The model's sha256 is remembered in file-hashes.json of the cache folder ($MATHNEURO_CACHE_DIR,
else ~/.cache/mathneuro) with each file's device, inode, size and modification and change times,
and taken from there while those are unchanged (every write to a file changes its change time).`;

/** Options of every command that runs the model (stats, boost, ablate, eval, report, overlap). */
export const modelCheckOptions = {
  'no-model-checks': { type: 'boolean' },
  'skip-unencodable': { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

export const modelCheckHelp = `  --skip-unencodable   skip samples with characters the model's vocabulary cannot encode
                       (no byte fallback; llama.cpp's tokenizer would abort on them) and say how
                       many; without it such a sample is an error naming it and the characters
  --no-model-checks    skip the model-level checks (docs/model-checks.md); the GGUF validator still
                       runs: you take the risk of an abort`;

export class UsageError extends MathneuroError {
  constructor(message: string) { super('EUSAGE', message); }
}

/** parseArgs that turns its errors into UsageError (exit code 2). */
export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, allowPositionals = true) {
  argv = normalizeArgv(argv);
  const hasShortF = Object.values(options).some((o) => (o as { short?: string }).short === 'f');
  const dashF = argv.findIndex((a) => a === '-f' || /^-f./.test(a) && !a.startsWith('--'));
  const end = argv.indexOf('--');
  if (!hasShortF && dashF >= 0 && (end < 0 || dashF < end)) {
    throw new UsageError('-f is not --force any more: in llama.cpp tools -f is the data file, and this command reads none; use --force to overwrite');
  }
  if (hasShortF && dashF >= 0 && argv[dashF] === '-f' && (end < 0 || dashF < end) && (argv[dashF + 1] === undefined || /^-[^\d]/.test(argv[dashF + 1]))) {
    throw new UsageError('-f takes a data file, as in llama.cpp (it is no longer --force: use --force to overwrite)');
  }
  try {
    return parseArgs({ args: argv, options: { ...globalOptions, ...options }, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0].replace(/\. To specify a positional argument.*$/, ''));
  }
}

export function colors(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv) {
  const on = !!stream.isTTY && !('NO_COLOR' in env) && env.TERM !== 'dumb';
  const wrap = (code: string) => (s: string) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);
  return { on, bold: wrap('1'), dim: wrap('2'), red: wrap('31'), green: wrap('32'), yellow: wrap('33'), cyan: wrap('36') };
}

export function parseNumber(name: string, value: string | undefined, opts: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || value.trim() === '') throw new UsageError(`--${name} must be a number, got "${value}"`);
  if (opts.integer && !Number.isInteger(n)) throw new UsageError(`--${name} must be an integer, got "${value}"`);
  if (opts.min !== undefined && n < opts.min) throw new UsageError(`--${name} must be >= ${opts.min}, got ${value}`);
  if (opts.max !== undefined && n > opts.max) throw new UsageError(`--${name} must be <= ${opts.max}, got ${value}`);
  return n;
}

export function writeJson(io: CommandIO, value: unknown) {
  io.stdout.write(JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? Number(v) : v), 2) + '\n');
}

/**
 * Progress on stderr, only on a TTY and without --quiet/--json: a line redrawn in place with a bar,
 * the stage's clock (redrawn every second, so it runs while a stage waits on a slow first item) and
 * an ETA from the rate measured in this stage; one line per finished stage ("done <stage> 12s").
 */
export class ProgressLine {
  private lastDraw = -Infinity;
  readonly live: boolean;
  private stageName: string | undefined;
  private stageStart = 0;
  private first: { done: number; at: number } | undefined;
  private latest: { done: number; total: number; at: number; extra: string } | undefined;
  private text: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly c: ReturnType<typeof colors>;
  constructor(private readonly io: CommandIO, quiet: boolean, private readonly now: () => number = Date.now) {
    this.live = !quiet && !!io.stderr.isTTY;
    this.c = colors(io.stderr, io.env);
  }
  /**
   * A free-form line (no bar) with the stage clock appended. With `label`, it belongs to that
   * stage (a later step() of the same label continues its clock); without, to an unnamed stage
   * that the next step() continues (loading a model is part of the stage that then runs it).
   */
  update(text: string, label?: string) {
    if (!this.live) return;
    const fresh = label !== undefined && label !== this.stageName || this.stageName === undefined;
    if (label !== undefined && label !== this.stageName) { this.finishStage(); this.begin(label); }
    else if (this.stageName === undefined) this.begin('');
    this.text = text;
    this.latest = undefined;
    this.draw(fresh);
  }
  /** `done` of `total` units of stage `label`: bar, counts, clock, ETA. A new label finishes the previous stage. */
  step(label: string, done: number, total: number, extra = '') {
    if (!this.live) return;
    const fresh = label !== this.stageName;
    if (fresh) {
      if (this.stageName === '') this.stageName = label;   // the unnamed stage's clock runs on
      else { this.finishStage(); this.begin(label); }
    }
    const at = this.now();
    if (!this.first || done < this.first.done) this.first = { done, at };
    this.latest = { done, total, at, extra };
    this.text = undefined;
    this.draw(fresh);
  }
  /** Seconds left from the rate of this stage so far (units after the first report), counting down between reports. */
  eta(): number {
    const l = this.latest, f = this.first;
    if (!l || !f || l.done <= f.done || l.at <= f.at) return NaN;
    const rate = (l.done - f.done) / (l.at - f.at);
    return Math.max(0, (l.total - l.done) / rate - (this.now() - l.at));
  }
  private begin(label: string) {
    this.stageName = label;
    this.stageStart = this.now();
    this.first = undefined;
    this.latest = undefined;
    this.timer ??= setInterval(() => this.draw(true), 1000);
    this.timer.unref?.();
  }
  private line(): string {
    const clock = formatDuration(this.now() - this.stageStart);
    if (this.text !== undefined) return `${this.text}  ${clock}`;
    const l = this.latest;
    if (!l) return `${this.stageName ?? ''}  ${clock}`;
    const eta = this.eta();
    return `${this.c.cyan(this.stageName ?? '')} ${bar(l.total ? l.done / l.total : 0)} ${l.done}/${l.total}${l.extra ? `  ${l.extra}` : ''}  ${clock}  ETA ${Number.isFinite(eta) ? formatDuration(eta) : '--'}`;
  }
  private draw(force: boolean) {
    if (interruptState.interrupted) return;   // Ctrl-C: the "interrupted" line stays the last one
    const now = this.now();
    // reports redraw at most every 100 ms; the clock's timer always does
    if (!force) {
      if (now - this.lastDraw < 100) return;
      this.lastDraw = now;
    }
    this.io.stderr.write(`\r\x1b[2K${this.line()}`);
  }
  /** Close the current stage with one line ("done <stage> <time>"). */
  finishStage(detail = '') {
    if (!this.live || this.stageName === undefined) return;
    if (this.stageName === '') { this.io.stderr.write('\r\x1b[2K'); this.stageName = undefined; return; }
    this.io.stderr.write(`\r\x1b[2K${this.c.green('done')} ${this.stageName.padEnd(14)} ${formatDuration(this.now() - this.stageStart)}${detail ? `  ${detail}` : ''}\n`);
    this.stageName = undefined;
    this.text = undefined;
    this.latest = undefined;
  }
  /** Clear the line and stop the clock; with `finish`, the last stage gets its "done" line. */
  done(text?: string, finish = true) {
    if (this.timer) { clearInterval(this.timer); this.timer = undefined; }
    if (!this.live) return;
    if (finish) this.finishStage();
    else this.io.stderr.write('\r\x1b[2K');
    this.stageName = undefined;
    if (text) this.io.stderr.write(text + '\n');
  }
  /** Stop the clock and clear the line without a "done" line (an error or an interrupt). */
  abandon() { this.done(undefined, false); }
}

/** Set by the SIGINT handler of interruptible(): main() then exits 130. */
export const interruptState = { interrupted: false };

/**
 * Ctrl-C for a command: the first aborts the returned signal (the command stops at the next
 * check and cleans up: temporary files, the undo of an in-place patch); later ones say that the
 * cleanup is being finished instead of killing the process half-way. main() exits 130.
 */
export function interruptible(io: CommandIO, cleanup = 'cleaning up'): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  let count = 0;
  const onSigint = () => {
    count++;
    interruptState.interrupted = true;
    if (count === 1) {
      io.stderr.write(`\ninterrupted: ${cleanup} (Ctrl-C again does not stop that)\n`);
      controller.abort();
    } else io.stderr.write(`still ${cleanup}; it ends by itself in a moment\n`);
  };
  process.on('SIGINT', onSigint);
  return { signal: controller.signal, dispose: () => { process.removeListener('SIGINT', onSigint); } };
}

/**
 * Runs a command's long work with Ctrl-C turned into `signal` (interruptible()) and its progress
 * line ended either way: done when the work succeeds, cleared when it fails or is interrupted.
 */
export async function runInterruptible<T>(io: CommandIO, progress: ProgressLine, cleanup: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const interrupt = interruptible(io, cleanup);
  try {
    const result = await work(interrupt.signal);
    progress.done();
    return result;
  } catch (e) {
    progress.abandon();
    throw e;
  } finally {
    interrupt.dispose();
  }
}

/** A pipeline's onProgress drawn on a progress line, each stage under its name. */
export function pipelineProgress<S extends string>(progress: ProgressLine, names: Record<S, string>): (p: { stage: S; done: number; total: number; detail?: string }) => void {
  return (p) => {
    if (p.stage === 'resolve') return progress.update('resolving the model');
    progress.step(names[p.stage], p.done, p.total, p.detail ?? '');
  };
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export function bar(fraction: number, width = 24): string {
  const f = Math.max(0, Math.min(1, fraction));
  const full = Math.round(f * width);
  return '[' + '#'.repeat(full) + '.'.repeat(width - full) + ']';
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's spellings and the hardware options every model-running command shares
// (stats, boost, ablate, eval, report, overlap, and any later one: spread `hardwareOptions` into
// its parse() options, call `parseHardware(values, io)`, and append `hardwareHelp` to its help).

/** llama.cpp spellings of more than one letter after a single dash: parseArgs would split them into short flags. */
const longSingleDash: Record<string, string> = { '-ngl': '--n-gpu-layers', '-ub': '--ubatch-size' };

/** Rewrite llama.cpp's multi-letter single-dash flags (-ngl 99, -ngl=99) to their long names. */
export function normalizeArgv(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { out.push(...argv.slice(i)); break; }
    const eq = a.indexOf('=');
    const head = eq > 0 ? a.slice(0, eq) : a;
    const long = longSingleDash[head];
    out.push(long ? long + (eq > 0 ? a.slice(eq) : '') : a);
  }
  return out;
}

export const modelOption = {
  model: { type: 'string', short: 'm' },
} as const satisfies ParseArgsConfig['options'];

export const modelHelp = `  -m, --model F     the model (as llama.cpp spells it; the positional argument works too)`;

/** The model: the positional argument or -m/--model (not both). */
export function modelArgument(values: { model?: string }, positionals: string[], what = 'one model path'): string {
  if (values.model !== undefined) {
    if (positionals.length) throw new UsageError(`give the model once: -m ${values.model} and "${positionals[0]}"`);
    return values.model;
  }
  if (positionals.length !== 1) throw new UsageError(positionals.length ? `expected ${what}, got ${positionals.length}: ${positionals.join(' ')}` : `expected ${what} (positional or -m/--model)`);
  return positionals[0];
}

export const hardwareOptions = {
  threads: { type: 'string', short: 't' },
  'ctx-size': { type: 'string', short: 'c' },
  ctx: { type: 'string' },
  'batch-size': { type: 'string', short: 'b' },
  'n-gpu-layers': { type: 'string' },
  'gpu-layers': { type: 'string' },
  gpu: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

export const hardwareHelp = `
hardware (the same on every command that runs the model; llama.cpp's spellings):
  -t, --threads N          CPU threads (default: physical cores, or $MATHNEURO_THREADS)
  -c, --ctx-size N         context size in tokens (also --ctx; default: the command's)
  -b, --batch-size N       logical batch size (default 512)
  -ngl, --n-gpu-layers N   layers to offload to a GPU: a number, all or auto (also --gpu-layers;
                           default 0). An error when doctor finds no GPU backend (auto: GPU if found)
  --gpu                    offload every layer (-ngl all)`;

export interface Hardware {
  nThreads: number;
  nCtx?: number;
  nBatch?: number;
  /** layers on the GPU: 0 = CPU only, -1 = all */
  nGpuLayers: number;
}

/** Physical cores (llama.cpp's default thread count), from /proc/cpuinfo; the logical count elsewhere. */
export function physicalCores(): number {
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    const cores = new Set<string>();
    let phys = '0';
    for (const line of text.split('\n')) {
      const m = /^(physical id|core id)\s*:\s*(\d+)/.exec(line);
      if (!m) continue;
      if (m[1] === 'physical id') phys = m[2];
      else cores.add(`${phys}:${m[2]}`);
    }
    if (cores.size > 0) return Math.min(cores.size, os.availableParallelism());
  } catch { /* not Linux */ }
  return os.availableParallelism();
}

export function defaultThreads(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.MATHNEURO_THREADS);
  return Number.isInteger(n) && n > 0 ? n : physicalCores();
}

/** The GPU-capable devices the native build sees (what doctor lists), and every device's description. */
export function gpuDevices(): { gpus: DeviceInfo[]; all: DeviceInfo[] } {
  const info = loadNative().systemInfo();
  const all = info.devices;
  // llama.cpp offloads layers to GPU and integrated-GPU devices (the shim reports an iGPU as
  // "other"), never to the CPU or an accelerator such as BLAS
  return { gpus: info.supportsGpuOffload ? all.filter((d) => d.type === 'gpu' || d.type === 'other') : [], all };
}

function one(values: Record<string, unknown>, names: string[]): { name: string; value: string } | undefined {
  const given = names.filter((n) => values[n] !== undefined);
  if (given.length > 1 && new Set(given.map((n) => String(values[n]))).size > 1) throw new UsageError(`--${given[0]} and --${given[1]} are the same option with different values`);
  return given.length ? { name: given[0], value: String(values[given[0]]) } : undefined;
}

/**
 * The hardware options, parsed and checked the same way for every command: a GPU option where the
 * native build has no GPU backend is an ENOBACKEND error naming the devices doctor found.
 */
export function parseHardware(values: Record<string, unknown>, io: { env: NodeJS.ProcessEnv }, minCtx = 8): Hardware {
  const threads = parseNumber('threads', values.threads as string | undefined, { integer: true, min: 1, max: 1024 }) ?? defaultThreads(io.env);
  const ctx = one(values, ['ctx-size', 'ctx']);
  const nCtx = ctx ? parseNumber(ctx.name, ctx.value, { integer: true, min: minCtx }) : undefined;
  const nBatch = parseNumber('batch-size', values['batch-size'] as string | undefined, { integer: true, min: 1, max: 1 << 20 });
  const ngl = one(values, ['n-gpu-layers', 'gpu-layers']);
  let nGpuLayers = 0;
  let asked: string | undefined;
  if (ngl) {
    const v = ngl.value.trim().toLowerCase();
    if (v === 'all') { nGpuLayers = -1; asked = `-ngl ${v}`; }
    else if (v === 'auto') nGpuLayers = gpuDevices().gpus.length ? -1 : 0;
    else {
      nGpuLayers = parseNumber(ngl.name, ngl.value, { integer: true, min: -1 })!;
      if (nGpuLayers !== 0) asked = `-ngl ${ngl.value}`;
    }
  }
  if (values.gpu) {
    if (ngl && nGpuLayers === 0 && asked === undefined && ngl.value.trim() !== 'auto') throw new UsageError('--gpu and -ngl 0 contradict each other');
    if (!ngl) nGpuLayers = -1;
    asked ??= '--gpu';
  }
  if (asked) {
    const { gpus, all } = gpuDevices();
    if (!gpus.length) {
      const found = all.map((d) => `${d.name} (${d.type})`).join(', ') || 'no devices';
      throw new MathneuroError('ENOBACKEND', `${asked}: this build has no GPU backend; mathneuro doctor found ${found} (leave out the GPU option, or use -ngl auto)`);
    }
  }
  return { nThreads: threads, nCtx, nBatch, nGpuLayers };
}

/** -f is llama.cpp's data file; it was --force here before. A clear message for the old use. */
export function checkDataFileFlag(file: string | undefined, flag = '-f/--file'): void {
  if (file === undefined) return;
  if (file === '' || file.startsWith('-')) throw new UsageError(`${flag} takes a data file (as in llama.cpp); to overwrite the output use --force`);
  if (!existsSync(file)) throw new MathneuroError('ENOENT', `no such data file: ${file} (${flag} is the data file, as in llama.cpp; --force overwrites)`);
}
