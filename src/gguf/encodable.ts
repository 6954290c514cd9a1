// Which characters of a text a model's tokenizer cannot encode, decided in TS from the GGUF's
// vocabulary before any text reaches llama.cpp. A SentencePiece ("llama") vocabulary without byte
// tokens loads and generates, but tokenizing a character that is no token of its own makes
// llama.cpp throw std::out_of_range out of the tokenizer (src/llama-vocab.cpp
// llm_tokenizer_spm_session::resegment -> llama_vocab::byte_to_token: token_to_id.at()), which kills
// node-llama-cpp and the shim. The rule here is exactly resegment's: a character is encoded when its
// text is a token, else byte by byte through "<0xXX>" tokens (or a one-byte token), else it aborts.
// Other tokenizers never call byte_to_token on input text (BPE drops bytes it has no token for).
import { MathneuroError } from '../errors.ts';
import type { GgufInfo } from './reader.ts';

/** A text to check and where it comes from ("file:line", "builtin:math@1/seed0#7"). */
export interface NamedText { text: string; source: string }

export interface Unencodable { index: number; source: string; chars: string[] }

/** The characters of `text` the vocabulary cannot encode (each once, in order of appearance). */
export type EncodabilityCheck = (text: string) => string[];

const HEX = '0123456789ABCDEF';
const checks = new WeakMap<GgufInfo, EncodabilityCheck | null>();

/**
 * A check for texts of this model, or undefined when every text can be tokenized (byte fallback
 * for all 256 bytes, or a tokenizer without byte_to_token on input).
 */
export function encodabilityCheck(info: GgufInfo): EncodabilityCheck | undefined {
  const known = checks.get(info);
  if (known !== undefined) return known ?? undefined;
  const made = makeCheck(info);
  checks.set(info, made ?? null);
  return made;
}

function makeCheck(info: GgufInfo): EncodabilityCheck | undefined {
  if (info.metadata.get('tokenizer.ggml.model') !== 'llama') return undefined;
  const tokens = info.metadata.get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens)) return undefined;
  const vocab = new Set<string>();
  for (let i = 0; i < tokens.length; i++) vocab.add(tokens[i] === '' ? `[EMPTY_${i}]` : String(tokens[i]));
  // llama_vocab::byte_to_token (SPM): "<0xXX>" (upper-case hex), else the byte as a one-character string
  const byteOk = Array.from({ length: 256 }, (_, b) => vocab.has(`<0x${HEX[b >> 4]}${HEX[b & 15]}>`) || (b < 0x80 && vocab.has(String.fromCharCode(b))));
  if (byteOk.every(Boolean)) return undefined;
  const memo = new Map<string, boolean>();
  const ok = (ch: string) => {
    let v = memo.get(ch);
    if (v === undefined) {
      const piece = ch === ' ' ? '\u2581' : ch; // llama_escape_whitespace: ' ' -> U+2581 before the tokenizer
      v = vocab.has(piece) || [...Buffer.from(piece, 'utf8')].every((b) => byteOk[b]);
      memo.set(ch, v);
    }
    return v;
  };
  // add_space_prefix (on unless the GGUF says false) puts a ' ' in front of every non-empty text
  const spacePrefix = info.metadata.get('tokenizer.ggml.add_space_prefix') !== false;
  return (text: string) => {
    const bad = new Set<string>();
    if (spacePrefix && text.length > 0 && !ok(' ')) bad.add(' ');
    for (const ch of text) if (!ok(ch)) bad.add(ch);
    return [...bad];
  };
}

/** "é" (U+00E9), " " (U+0020) ... for messages. */
export function describeChars(chars: string[], max = 12): string {
  const shown = chars.slice(0, max).map((c) => `${JSON.stringify(c)} (U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')})`);
  return shown.join(', ') + (chars.length > max ? ` and ${chars.length - max} more` : '');
}

export interface ScreenOptions {
  /** skip the texts that cannot be encoded instead of failing (--skip-unencodable) */
  skip?: boolean;
  /** what the texts are, for messages: "calibration samples", "KL prompts" */
  what?: string;
  /** a built-in set: when most of it cannot be encoded, say so and suggest the user's own data */
  builtin?: { set: string; option: string };
}

/**
 * Check texts against the model's vocabulary before the first forward pass. Returns the indices to
 * keep and the texts left out (with --skip-unencodable); without `skip`, any unencodable text is an
 * EDATA error naming the samples and the characters.
 */
export function screenTexts(info: GgufInfo, texts: readonly NamedText[], options: ScreenOptions = {}): { keep: number[]; skipped: Unencodable[] } {
  const check = encodabilityCheck(info);
  const all = texts.map((_, i) => i);
  if (!check) return { keep: all, skipped: [] };
  const keep: number[] = [];
  const skipped: Unencodable[] = [];
  texts.forEach((t, i) => {
    const chars = check(t.text);
    if (chars.length) skipped.push({ index: i, source: t.source, chars }); else keep.push(i);
  });
  if (skipped.length === 0) return { keep, skipped };
  const chars = [...new Set(skipped.flatMap((s) => s.chars))];
  const what = options.what ?? 'samples';
  const most = options.builtin && skipped.length * 2 > texts.length;
  const why = `characters this model's vocabulary cannot encode (it has no byte tokens to fall back on; llama.cpp's tokenizer would abort on them): ${describeChars(chars)}`;
  if (most && (!options.skip || keep.length === 0)) {
    throw new MathneuroError('EDATA', `most of the built-in ${options.builtin!.set} set (${skipped.length} of ${texts.length} ${what}) uses ${why}. This vocabulary does not cover the built-in texts: give your own data with ${options.builtin!.option}${options.skip ? '' : ' (or --skip-unencodable to use the rest)'}`);
  }
  if (!options.skip) {
    const list = skipped.slice(0, 5).map((s) => `${s.source} (${describeChars(s.chars, 4)})`).join('; ');
    throw new MathneuroError('EDATA', `${skipped.length} of ${texts.length} ${what} use ${why}: ${list}${skipped.length > 5 ? `; and ${skipped.length - 5} more` : ''}. Use --skip-unencodable to leave them out`);
  }
  if (keep.length === 0) throw new MathneuroError('EDATA', `none of the ${texts.length} ${what} can be encoded by this model's vocabulary (${describeChars(chars)}); nothing is left after --skip-unencodable`);
  return { keep, skipped };
}

/** A last guard where a text reaches the tokenizer without a source name: throws instead of the abort. */
export function assertEncodable(info: GgufInfo, text: string, where: string): void {
  const check = encodabilityCheck(info);
  const chars = check ? check(text) : [];
  if (chars.length) throw new MathneuroError('EDATA', `${where}: a text uses characters this model's vocabulary cannot encode (no byte tokens to fall back on; llama.cpp's tokenizer would abort): ${describeChars(chars)}`);
}
