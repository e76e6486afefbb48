// npm run experiment -- NAME [args]: runs dist/experiments/NAME.js (compiled from experiments/NAME.ts).
import { existsSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const [name, ...rest] = process.argv.slice(2);
const available = existsSync('dist/experiments') ? readdirSync('dist/experiments').filter((f) => f.endsWith('.js') && !f.startsWith('_')).map((f) => f.slice(0, -3)) : [];
if (!name || !available.includes(name)) {
  console.error(`usage: npm run experiment -- NAME [options]   (NAME: ${available.join(', ')})`);
  process.exit(name ? 1 : 0);
}
// The llama.cpp columns use node-llama-cpp: beside qkd, or where the test runner installed it.
const result = spawnSync(process.execPath, [`dist/experiments/${name}.js`, ...rest], { stdio: 'inherit', env: { QKD_NODE_LLAMA_CPP: '.cache/node-llama-cpp/node_modules/node-llama-cpp', ...process.env } });
process.exit(result.status ?? 1);
