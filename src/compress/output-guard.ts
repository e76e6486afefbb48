/**
 * Where the model-to-model commands (quantize, prune) may write: never over
 * the input model's own directory (the directory of a model given as a
 * file included), nor inside a training run (a checkpoint
 * directory or a run directory, whose checkpoints would no longer match),
 * whatever the spelling of the paths (symlinks, `..`). Checked before any
 * work, and before --force clears anything.
 */
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { QkdError } from '../errors.js';
import { modelHome } from '../models/load-any.js';

/** `action` names the command's work in the message ("quantizing", "pruning"). */
export function refuseOutputOverModel(modelPath: string, out: string, action: string): void {
  const real = (p: string): string => (existsSync(p) ? realpathSync(p) : resolve(p));
  const target = real(out);
  // A model given as a file (dir/model.safetensors, a GGUF) lives in its directory: that is refused too,
  // and so is the directory a symlinked model file really is in.
  if (existsSync(modelPath) && (real(modelHome(modelPath)) === target || modelFiles(modelPath).some((f) => dirname(real(f)) === target))) {
    throw new QkdError('ARGUMENT', `the output directory is the model's own directory; ${action} there would overwrite the float model`, { path: out, field: '--out', hint: 'another directory' });
  }
  for (let dir = target; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'latest.json')) || existsSync(join(dir, 'trainer_state.json'))) {
      throw new QkdError('ARGUMENT', `the output directory lies in a training run (${dir}); writing there would corrupt its checkpoints`, { path: out, field: '--out', hint: 'a directory outside the run' });
    }
    if (dirname(dir) === dir) break;
  }
}

/** The files a model is read from (the file given, or the config, weights and tokenizer in its directory). */
function modelFiles(modelPath: string): string[] {
  if (statSync(modelPath).isFile()) {
    const beside = join(dirname(modelPath), 'config.json');
    return existsSync(beside) ? [modelPath, beside] : [modelPath];
  }
  const home = modelHome(modelPath);
  if (!existsSync(home) || !statSync(home).isDirectory()) return [];
  return readdirSync(home)
    .filter((name) => /\.(safetensors|gguf|bin)$|^(config|tokenizer|tokenizer_config)\.json$|\.index\.json$/.test(name))
    .map((name) => join(home, name));
}
