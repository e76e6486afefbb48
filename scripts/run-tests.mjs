// Runs the compiled test suite (dist/test/**/*.test.js) with node's test runner.
//
// The tests that check GGUF files in llama.cpp itself need the npm package
// node-llama-cpp (its JavaScript API over the prebuilt llama.cpp that the
// devDependency @node-llama-cpp/linux-x64 holds). It is installed here, once,
// into .cache/node-llama-cpp rather than as a devDependency: its optional
// per-platform binary packages (CUDA, Vulkan, macOS, Windows builds) cannot
// all be recorded in package-lock.json from every registry, which `npm ci`
// requires, and none of them is needed. QKD_NODE_LLAMA_CPP tells qkd where it is.
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';

const NODE_LLAMA_CPP = '3.22.1';
const prefix = resolve('.cache/node-llama-cpp');
const entry = join(prefix, 'node_modules', 'node-llama-cpp');
if (!process.env.QKD_NODE_LLAMA_CPP && !existsSync(join(entry, 'package.json'))) {
  console.log(`installing node-llama-cpp ${NODE_LLAMA_CPP} into ${prefix} (once; the llama.cpp checks use it)`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const r = spawnSync(npm, ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund', `node-llama-cpp@${NODE_LLAMA_CPP}`], { stdio: 'inherit', env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' } });
  if (r.status !== 0) console.error('qkd: could not install node-llama-cpp; the llama.cpp checks will fail');
}

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? find(join(dir, e.name)) : e.name.endsWith('.test.js') ? [join(dir, e.name)] : [],
  );
}
const filter = process.argv[2];
const files = find('dist/test').filter((f) => !filter || f.includes(filter)).sort();
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], { stdio: 'inherit', env: { QKD_NODE_LLAMA_CPP: entry, ...process.env } });
process.exit(result.status ?? 1);
