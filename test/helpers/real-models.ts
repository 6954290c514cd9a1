// Real pretrained GGUFs from ../shared/models (never committed; tests skip without them), and
// variants made from them at test time.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './fixtures.ts';

/** ../shared/models beside the repository, or MATHNEURO_MODELS_DIR */
export const modelsDir = process.env.MATHNEURO_MODELS_DIR ?? path.resolve(repoRoot, '..', 'shared', 'models');

/** Path of a shared model, or undefined when it is not there. */
export function sharedModel(name: string): string | undefined {
  const file = path.join(modelsDir, name);
  return existsSync(file) ? file : undefined;
}

/**
 * A copy of a SentencePiece model whose 256 byte tokens "<0xXX>" are renamed "{byXX}" (same length,
 * so every offset stays): a vocabulary with no byte fallback, like some real TinyStories conversions.
 */
export function noByteVocabCopy(source: string, out: string): string {
  const buf = readFileSync(source);
  for (let b = 0; b < 256; b++) {
    const hex = b.toString(16).toUpperCase().padStart(2, '0');
    const needle = Buffer.concat([Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]), Buffer.from(`<0x${hex}>`)]); // u64 length 6, then the text
    const at = buf.indexOf(needle);
    if (at < 0) throw new Error(`${source}: no byte token <0x${hex}>`);
    buf.write(`{by${hex}}`, at + 8, 'latin1');
  }
  writeFileSync(out, buf);
  return out;
}
