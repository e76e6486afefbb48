// Builds the C++ kernel addon during `npm install`. A failed build must not
// fail the install: qkd then runs on the TypeScript reference backend and
// says so once at run time. The build log is kept for diagnosis.
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

if (process.env.QKD_SKIP_NATIVE === '1') {
  console.warn('qkd: QKD_SKIP_NATIVE=1, not building the native addon (reference backend only).');
  process.exit(0);
}
if (!existsSync('binding.gyp')) process.exit(0);

// `npx qkd` links this package into npm's cache and may re-run install
// scripts; skip the (slow) rebuild when the addon is newer than every source.
function newestSourceTime(dir) {
  let newest = statSync('binding.gyp').mtimeMs;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath ?? entry.path, entry.name)).mtimeMs);
  }
  return newest;
}
const addon = 'build/Release/qkd_native.node';
if (process.env.QKD_FORCE_NATIVE_BUILD !== '1' && existsSync(addon) && statSync(addon).mtimeMs > newestSourceTime('native')) {
  console.log('qkd: native addon is up to date.');
  process.exit(0);
}

const result = spawnSync('node-gyp', ['rebuild'], { encoding: 'utf8', shell: process.platform === 'win32' });
const log = `${result.stdout ?? ''}\n${result.stderr ?? ''}\n${result.error ? String(result.error) : ''}`;
mkdirSync('build', { recursive: true });
writeFileSync('build/native-build.log', log);
if (result.status === 0) {
  console.log('qkd: native kernels built (build/Release/qkd_native.node).');
} else {
  console.warn(
    'qkd: WARNING: the native addon could not be built; qkd will run on the slower TypeScript reference backend.\n' +
      '     Install a C++ compiler, python3 and make, then run `npm run build:native`. Build log: build/native-build.log',
  );
}
