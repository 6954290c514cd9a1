// One error type for everything the library reports; `code` is stable and documented.
export type ErrorCode =
  | 'EUSAGE'        // bad arguments or options
  | 'ENOENT'        // a file does not exist
  | 'EBADGGUF'      // a file is not a valid GGUF (the validator's verdict)
  | 'EDATA'         // a data file cannot be parsed
  | 'ESTATS'        // a statistics file does not match the model or is malformed
  | 'ESELECTION'    // a selection file does not match
  | 'ELOAD'         // llama.cpp could not load a model that passed validation
  | 'EDECODE'       // a forward pass failed
  | 'ENATIVE'       // the native shim is missing or failed to load
  | 'ENOBACKEND'
  | 'EBUSY'
  | 'EDISPOSED'
  | 'EABORT'        // cancelled by an AbortSignal
  | 'EEXIST'        // refusing to overwrite or to patch twice
  | 'EPATCH'        // patching failed; the source is intact
  | 'EJOURNAL'      // an undo journal is missing or corrupt
  | 'EQUANT'        // a tensor type cannot be requantized
  | 'EIO'
  | 'EMMAP'         // weights in a read-only mapping of the file cannot be changed in memory (tune loads without mmap)
  | 'EEVAL';

export class MathneuroError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MathneuroError';
    this.code = code;
  }
}

/** Native errors carry a `code`; turn them (and anything else) into a MathneuroError. */
export function asMathneuroError(e: unknown, fallback: ErrorCode = 'EIO'): MathneuroError {
  if (e instanceof MathneuroError) return e;
  const err = e as { code?: string; message?: string };
  if (err && typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code)) {
    return new MathneuroError(err.code as ErrorCode, err.message ?? String(e), { cause: e });
  }
  return new MathneuroError(fallback, err?.message ?? String(e), { cause: e });
}
