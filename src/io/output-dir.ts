/**
 * Output directories, checked before any work starts: a command that would
 * fail at its first write after minutes of computing fails at once instead,
 * with one error that names the path and what is wrong with it.
 *
 * Directories are created one level at a time (never `mkdir -p`): Node's
 * recursive mkdir loops forever on some kernel file systems (/proc), and its
 * raw EPERM / ENOTDIR / EEXIST errors do not say which part of the path is
 * at fault.
 */
import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { QkdError } from '../errors.js';

function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOSPC':
      return 'no space left on the device';
    case 'ENOENT':
      return 'the file system does not allow creating it';
    default:
      return (err as Error).message;
  }
}

/**
 * Makes sure `path` is a directory qkd can write to, creating it (and
 * missing parents) when needed. `flag` names the option the path came from.
 */
/** An empty path ('' or spaces) is refused by name: it resolves to the working directory, and renaming onto it fails. */
function refuseEmptyPath(path: string, flag: string, what: string): void {
  if (path.trim() === '') throw new QkdError('ARGUMENT', `${flag} is empty`, { field: flag, hint: `${what} path` });
}

export function ensureWritableDirectory(path: string, flag = '--out'): void {
  refuseEmptyPath(path, flag, 'a directory');
  const absolute = resolve(path);
  const missing: string[] = [];
  let existing = absolute;
  while (!existsSync(existing)) {
    missing.unshift(existing);
    const parent = dirname(existing);
    if (parent === existing) break;
    existing = parent;
  }
  let stat;
  try {
    stat = statSync(existing);
  } catch (err) {
    throw new QkdError('IO', `cannot use ${flag} ${path}: ${describeFsError(err)}`, { path: existing, field: flag });
  }
  if (!stat.isDirectory()) {
    const what = existing === absolute ? `${flag} ${path} exists and is a file, not a directory` : `cannot create ${flag} ${path}: ${existing} is a file, not a directory`;
    throw new QkdError('IO', what, { path: existing, field: flag, hint: 'a directory path' });
  }
  for (const dir of missing) {
    try {
      mkdirSync(dir);
    } catch (err) {
      // Another process (a rank of the same data-parallel job) made it meanwhile: that is what was wanted.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && statSync(dir).isDirectory()) continue;
      throw new QkdError('IO', `cannot create ${flag} ${path}: ${describeFsError(err)} (at ${dir})`, { path: dir, field: flag, hint: 'a directory you can write to' });
    }
  }
  // Permission bits do not tell (root, read-only mounts, /proc): try a write.
  const probe = join(absolute, `.qkd-write-test-${process.pid}`);
  try {
    writeFileSync(probe, '');
  } catch (err) {
    throw new QkdError('IO', `cannot write into ${flag} ${path}: ${describeFsError(err)}`, { path: absolute, field: flag, hint: 'a directory you can write to' });
  }
  rmSync(probe, { force: true });
}

/**
 * Checks an output directory that a command fills with files of its own: it
 * must be writable and empty, unless `force` allows replacing what is there.
 */
export function prepareOutputDirectory(path: string, options: { force?: boolean; flag?: string } = {}): void {
  const flag = options.flag ?? '--out';
  ensureWritableDirectory(path, flag);
  const used = readdirSync(path).filter((name) => !name.startsWith('.qkd-write-test-'));
  if (used.length > 0 && !options.force) {
    throw new QkdError('IO', `${flag} ${path} is not empty (${listSome(used)}); refusing to overwrite it`, { path, field: flag, hint: '--force to replace the files qkd writes there, or a new directory' });
  }
}

export function listSome(names: string[]): string {
  return `${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}`;
}

/**
 * Checks, before any work, that a file can be written at `path`: its
 * directory exists (or is created) and is writable, and `path` is not a
 * directory.
 */
export function ensureWritableFile(path: string, flag: string): void {
  refuseEmptyPath(path, flag, 'a file');
  const parent = dirname(resolve(path));
  if (existsSync(parent) && !statSync(parent).isDirectory()) {
    throw new QkdError('IO', `cannot write ${flag} ${path}: ${parent} is a file, not a directory`, { path: parent, field: flag, hint: 'a path in a directory' });
  }
  ensureWritableDirectory(parent, flag);
  if (existsSync(path) && statSync(path).isDirectory()) {
    throw new QkdError('IO', `${flag} ${path} is a directory, not a file`, { path, field: flag, hint: 'a file path' });
  }
}

/** Files that hold a model or the settings it is read with: never replaced by a report. */
const MODEL_FILE = /\.(safetensors|gguf|bin|pt|pth|ckpt)$|^(config|tokenizer|tokenizer_config|generation_config|latest|trainer_state)\.json$|\.index\.json$/;

/**
 * An output file that may replace what is at `path` (checked before any
 * work, after ensureWritableFile): it is never the command's input `model`
 * nor a model file in the model's directory (the model itself, or the one
 * holding the given model file), and an existing non-empty file that
 * `ours` does not recognise as an earlier output of the same kind is kept
 * unless `force`.
 */
export function ensureReplaceableFile(path: string, flag: string, options: { model: string; force: boolean; ours: (path: string) => boolean; what: string }): void {
  if (!existsSync(path)) return;
  const target = realpathSync(path);
  const model = existsSync(options.model) ? realpathSync(options.model) : resolve(options.model);
  const home = existsSync(model) && statSync(model).isDirectory() ? model : dirname(model);
  const inside = target.startsWith(home + '/') && MODEL_FILE.test(target.slice(target.lastIndexOf('/') + 1));
  if (target === model || inside) {
    throw new QkdError('IO', `${flag} ${path} is ${target === model ? 'the model itself' : 'a file of the model'}; refusing to overwrite it`, { path, field: flag, hint: "a path outside the model's files" });
  }
  // An empty regular file (a placeholder from touch or mktemp) holds nothing to lose; a device or a FIFO
  // (size 0 too: /dev/null) is never replaced without --force.
  const stat = statSync(target);
  const placeholder = stat.isFile() && stat.size === 0;
  if (!options.force && !placeholder && (!stat.isFile() || !options.ours(path))) {
    throw new QkdError('IO', `${flag} ${path} exists and is not ${options.what}; refusing to overwrite it`, { path, field: flag, hint: `a new path, or --force to replace it` });
  }
}
