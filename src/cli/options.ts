/**
 * Strict parsers for command-line values. `Number()` and `parseFloat` accept
 * too much ('' is 0, '4abc' is 4, 'abc' is NaN and flows on silently); these
 * accept a plain decimal number only, check its range, and fail with a
 * message naming the flag and what it takes.
 */
import { InvalidArgumentError } from 'commander';

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

type Parser<T> = (value: string) => T;

function fail(flag: string, expected: string, value: string): never {
  throw new InvalidArgumentError(`${flag} takes ${expected}, got '${value}'`);
}

/** A whole number in [min, max]. */
export function integerIn(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): Parser<number> {
  // Past 2^53 a number is not exact: the bound there is the safe-integer one, on either side.
  const expected =
    max !== Number.MAX_SAFE_INTEGER ? `a whole number from ${min} to ${max}` : min === -Number.MAX_SAFE_INTEGER ? `a whole number between ±${Number.MAX_SAFE_INTEGER}` : min === 1 ? 'a positive whole number' : `a whole number from ${min} to ${Number.MAX_SAFE_INTEGER}`;
  return (value) => {
    const n = Number(value);
    if (!INTEGER.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) fail(flag, expected, value);
    return n;
  };
}

export const positiveInt = (flag: string): Parser<number> => integerIn(flag, 1);
export const integer = (flag: string): Parser<number> => integerIn(flag, -Number.MAX_SAFE_INTEGER);

export interface NumberRange {
  /** Smallest allowed value; `exclusiveMin` makes it a strict bound. */
  min?: number;
  exclusiveMin?: boolean;
  max?: number;
}

/** A finite decimal number in a range. */
export function decimal(flag: string, range: NumberRange = {}): Parser<number> {
  const parts: string[] = [];
  if (range.min !== undefined) parts.push(range.exclusiveMin ? `> ${range.min}` : `≥ ${range.min}`);
  if (range.max !== undefined) parts.push(`≤ ${range.max}`);
  const expected = parts.length > 0 ? `a number ${parts.join(' and ')}` : 'a number';
  return (value) => {
    const n = Number(value);
    if (!DECIMAL.test(value.trim()) || !Number.isFinite(n)) fail(flag, expected, value);
    if (range.min !== undefined && (range.exclusiveMin ? n <= range.min : n < range.min)) fail(flag, expected, value);
    if (range.max !== undefined && n > range.max) fail(flag, expected, value);
    return n;
  };
}

/** One of a fixed set of words. */
export function choice<T extends string>(flag: string, allowed: readonly T[]): Parser<T> {
  return (value) => {
    if (!(allowed as readonly string[]).includes(value)) fail(flag, `one of ${allowed.join(', ')}`, value);
    return value as T;
  };
}

/** One of a fixed set of numbers. */
export function numberChoice<T extends number>(flag: string, allowed: readonly T[]): Parser<T> {
  return (value) => {
    const n = Number(value);
    if (!INTEGER.test(value.trim()) || !(allowed as readonly number[]).includes(n)) fail(flag, `one of ${allowed.join(', ')}`, value);
    return n as T;
  };
}
