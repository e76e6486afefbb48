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
    const where = entry.parentPath ?? entry.path;
    if (where.includes('/build')) continue; // the MPI binding's own build output (native/mpi/build)
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath ?? entry.path, entry.name)).mtimeMs);
  }
  return newest;
}
const addon = 'build/Release/qkd_native.node';
if (process.env.QKD_FORCE_NATIVE_BUILD !== '1' && existsSync(addon) && statSync(addon).mtimeMs > newestSourceTime('native')) {
  console.log('qkd: native addon is up to date.');
} else {
  // The entry points are generated from the kernels' declaration (native/kernels.mjs) first.
  const generated = spawnSync(process.execPath, ['scripts/gen-kernels.mjs'], { encoding: 'utf8' });
  if (generated.status !== 0) console.warn(`qkd: could not generate the kernel bindings: ${generated.stderr}`);
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
}

// The MPI binding (native/mpi) is built only where MPI's development files
// are installed; without it every feature but `mpirun` works, and qkd says
// so when mpirun starts it.
const mpiFound = spawnSync(process.execPath, ['scripts/mpi-flags.mjs', 'found'], { encoding: 'utf8' }).stdout?.trim() === '1';
const mpiAddon = 'native/mpi/build/Release/qkd_mpi.node';
if (!mpiFound) {
  console.log('qkd: no MPI development files found (mpicc); data-parallel training (mpirun) is not available. See README "Running on several machines".');
} else if (process.env.QKD_FORCE_NATIVE_BUILD !== '1' && existsSync(mpiAddon) && statSync(mpiAddon).mtimeMs > Math.max(statSync('native/mpi/mpi.cc').mtimeMs, statSync('native/mpi/binding.gyp').mtimeMs)) {
  console.log('qkd: MPI binding is up to date.');
} else {
  const result = spawnSync('node-gyp', ['rebuild', '--directory', 'native/mpi'], { encoding: 'utf8', shell: process.platform === 'win32' });
  mkdirSync('build', { recursive: true });
  writeFileSync('build/mpi-build.log', `${result.stdout ?? ''}\n${result.stderr ?? ''}\n${result.error ? String(result.error) : ''}`);
  if (result.status === 0) console.log(`qkd: MPI binding built (${mpiAddon}).`);
  else console.warn('qkd: WARNING: the MPI binding could not be built; data-parallel training (mpirun) is not available. Build log: build/mpi-build.log');
}
