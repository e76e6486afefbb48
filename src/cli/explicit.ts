/** Which options of a command the user actually typed (not defaults). */
import type { Command } from 'commander';

export function explicitly(cmd: Command): Set<string> {
  return new Set(Object.keys(cmd.opts()).filter((key) => cmd.getOptionValueSource(key) === 'cli'));
}
