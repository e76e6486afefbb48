// npm run bench -- NAME [args]: runs dist/bench/NAME.js (compiled from bench/NAME.ts).
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';

const [name, ...rest] = process.argv.slice(2);
const available = readdirSync('dist/bench').filter((f) => f.endsWith('.js') && !f.startsWith('_')).map((f) => f.slice(0, -3));
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- NAME   (NAME: ${available.join(', ')})`);
  process.exit(name ? 1 : 0);
}
const file = `dist/bench/${name}.js`;
if (!existsSync(file)) process.exit(1);
// The llama.cpp columns use the node-llama-cpp that `npm test` installs into .cache (see scripts/run-tests.mjs).
const nodeLlamaCpp = resolve('.cache/node-llama-cpp/node_modules/node-llama-cpp');
const env = !process.env.QKD_NODE_LLAMA_CPP && existsSync(join(nodeLlamaCpp, 'package.json')) ? { ...process.env, QKD_NODE_LLAMA_CPP: nodeLlamaCpp } : process.env;
const result = spawnSync(process.execPath, [file, ...rest], { stdio: 'inherit', env });
process.exit(result.status ?? 1);
