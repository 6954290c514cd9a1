// The `mathneuro` command: dispatches to one module per command (src/cli/<name>.ts).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';
import { MathneuroError, asMathneuroError } from '../errors.ts';
import { interruptState, type Command, type CommandIO } from './common.ts';

/** Every command, in the order the help lists them. A module exports `command: Command`. */
const commandNames = [
  'boost', 'tune', 'ablate', 'synth', 'stats', 'select', 'patch', 'unpatch', 'inspect',
  'eval', 'report', 'overlap', 'quantize', 'doctor',
] as const;

const here = path.dirname(fileURLToPath(import.meta.url));
/** .ts from src/ (tsx, tests), .js from the built dist/ of the package. */
const ext = path.extname(fileURLToPath(import.meta.url));

async function loadCommand(name: string): Promise<Command | undefined> {
  const file = path.join(here, `${name}${ext}`);
  if (!existsSync(file)) return undefined;
  const mod = await import(pathToFileURL(file).href);
  return mod.command as Command;
}

async function mainHelp(io: CommandIO) {
  const lines = ['mathneuro: find and edit the math-specific weights of a GGUF model (MathNeuro, arXiv 2410.16930)', '', 'usage: mathneuro <command> [options]   (mathneuro <command> --help for details)', '', 'commands:'];
  for (const name of commandNames) {
    const c = await loadCommand(name);
    if (c) lines.push(`  ${name.padEnd(9)} ${c.summary}`);
  }
  lines.push('', 'exit codes: 0 ok, 1 failure, 2 usage error, 130 interrupted (Ctrl-C)');
  io.stdout.write(lines.join('\n') + '\n');
}

export async function main(argv: string[], io: CommandIO = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    await mainHelp(io);
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-V') {
    const pkg = JSON.parse((await import('node:fs')).readFileSync(path.join(here, '..', '..', 'package.json'), 'utf8'));
    io.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  const verbose = rest.includes('--verbose');
  const json = rest.includes('--json');
  const command = (commandNames as readonly string[]).includes(name) ? await loadCommand(name) : undefined;
  if (!command) {
    io.stderr.write(`mathneuro: unknown command "${name}" (mathneuro --help lists them)\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(command.help.trimEnd() + '\n');
    return 0;
  }
  interruptState.interrupted = false;
  try {
    return await command.run(rest, io);
  } catch (e) {
    const err = asMathneuroError(e);
    const usage = err.code === 'EUSAGE';
    // Ctrl-C: the command stopped and cleaned up; 128 + SIGINT, as a shell reports it
    if (err.code === 'EABORT' || interruptState.interrupted) {
      if (json) io.stdout.write(JSON.stringify({ ok: false, error: { code: 'EABORT', message: err.message } }) + '\n');
      io.stderr.write(`mathneuro ${name}: interrupted (${err.message})\n`);
      return 130;
    }
    if (json) io.stdout.write(JSON.stringify({ ok: false, error: { code: err.code, message: err.message } }) + '\n');
    io.stderr.write(`mathneuro ${name}: ${err.message}${usage ? ` (mathneuro ${name} --help)` : ''}\n`);
    if (verbose && (e as Error)?.stack) io.stderr.write(((e as Error).stack ?? '') + '\n');
    return usage ? 2 : 1;
  }
}

export { MathneuroError };
