// Conventions shared by every command: parse with node:util parseArgs, --json/--quiet/--verbose,
// exit codes 0 ok / 1 failure / 2 usage, one-line errors, colour only on a TTY without NO_COLOR.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MathneuroError } from '../errors.ts';

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
  try {
    return parseArgs({ args: argv, options: { ...globalOptions, ...options }, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/, ''));
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

/** A progress line on stderr, redrawn in place on a TTY, silent otherwise or with --quiet. */
export class ProgressLine {
  private last = 0;
  private readonly live: boolean;
  constructor(private readonly io: CommandIO, quiet: boolean) {
    this.live = !quiet && !!io.stderr.isTTY;
  }
  update(text: string) {
    if (!this.live) return;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    this.io.stderr.write(`\r\x1b[2K${text}`);
  }
  done(text?: string) {
    if (this.live) this.io.stderr.write('\r\x1b[2K');
    if (text && this.live) this.io.stderr.write(text + '\n');
  }
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
