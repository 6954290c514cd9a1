// Debian's headless Chromium for the report tests: screenshot and DOM dump of a local file.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export function chromiumPath(): string | undefined {
  for (const p of [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (p && existsSync(p)) return p;
  return undefined;
}

function run(args: string[], page: string): { stdout: string; status: number | null; stderr: string } {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-chromium-'));
  try {
    const r = spawnSync(chromiumPath()!, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--hide-scrollbars', '--force-device-scale-factor=1', `--user-data-dir=${profile}`,
      ...args, pathToFileURL(page).href,
    ], { encoding: 'utf8', timeout: 180_000, maxBuffer: 64 * 1024 * 1024 });
    return { stdout: r.stdout ?? '', status: r.status, stderr: r.stderr ?? '' };
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

export function screenshot(page: string, png: string, width = 1200, height = 1600): Buffer {
  const r = run([`--screenshot=${png}`, `--window-size=${width},${height}`], page);
  if (!existsSync(png)) throw new Error(`chromium wrote no screenshot (status ${r.status}): ${r.stderr.slice(-2000)}`);
  return readFileSync(png);
}

export function dumpDom(page: string): string {
  const r = run(['--dump-dom'], page);
  if (r.status !== 0 || !r.stdout.includes('<html')) throw new Error(`chromium --dump-dom failed (status ${r.status}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}
