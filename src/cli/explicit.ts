/** What the user typed: which options were given, and command lines to print back. */
import type { Command } from 'commander';

export function explicitly(cmd: Command): Set<string> {
  return new Set(Object.keys(cmd.opts()).filter((key) => cmd.getOptionValueSource(key) === 'cli'));
}

/** A command line a user can paste into a POSIX shell (arguments quoted where needed). */
export function commandLine(args: readonly string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
