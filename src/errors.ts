/**
 * The one error type of qkd. Every failure a user can cause (bad shapes,
 * bad files, bad flags) is a QkdError with a stable code, the offending
 * path or field when there is one, and a hint of what was expected. The CLI
 * prints it without a stack trace.
 */
export type QkdErrorCode =
  | 'SHAPE' // tensor shapes do not fit the op
  | 'DTYPE' // wrong element type
  | 'ARGUMENT' // a value out of its allowed range
  | 'STATE' // an API used in the wrong order (e.g. backward twice)
  | 'NATIVE' // the C++ addon failed
  | 'IO' // file missing / unreadable / malformed
  | 'CONFIG'; // configuration field invalid

export interface QkdErrorDetails {
  /** File or tensor path the error is about. */
  path?: string;
  /** Field (config key, header field, argument name) that is wrong. */
  field?: string;
  /** What was expected instead. */
  hint?: string;
}

export class QkdError extends Error {
  readonly code: QkdErrorCode;
  readonly path?: string;
  readonly field?: string;
  readonly hint?: string;
  /** The message without the file, field and hint parts (for a caller that re-attributes the error). */
  readonly bare: string;

  constructor(code: QkdErrorCode, message: string, details: QkdErrorDetails = {}) {
    const parts = [message];
    if (details.path !== undefined) parts.push(`(file: ${details.path})`);
    if (details.field !== undefined) parts.push(`(field: ${details.field})`);
    if (details.hint !== undefined) parts.push(`expected: ${details.hint}`);
    super(parts.join(' '));
    this.name = 'QkdError';
    this.code = code;
    this.bare = message;
    if (details.path !== undefined) this.path = details.path;
    if (details.field !== undefined) this.field = details.field;
    if (details.hint !== undefined) this.hint = details.hint;
  }
}

/**
 * Runs `fn`; a QkdError from it about one of `fields` (the data it was
 * given, e.g. 'calibration') that names no file is thrown again naming
 * `source` (the file the user gave and its flag), with its message and hint
 * kept: the generic code does not know where the data came from. Other
 * errors pass unchanged.
 */
export function attributed<T>(source: { path?: string; field: string }, fields: readonly string[], fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof QkdError && err.path === undefined && err.field !== undefined && fields.includes(err.field)) {
      throw new QkdError(err.code, err.bare, { path: source.path, field: source.field, hint: err.hint });
    }
    throw err;
  }
}

/** Formats a shape for error messages: [2,3,4]. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}
