// Finds how to compile and link against MPI, for native/mpi/binding.gyp and
// scripts/build-native.mjs. Usage: node scripts/mpi-flags.mjs cflags|libs|found
// Tries, in order: Open MPI's `mpicc --showme:*`, MPICH's `mpicc -show`, and
// pkg-config (ompi, mpich). Prints nothing (and `found` prints 0) when no MPI
// development files are installed.
import { spawnSync } from 'node:child_process';

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function flags() {
  const compile = run('mpicc', ['--showme:compile']);
  const link = run('mpicc', ['--showme:link']);
  if (compile !== null && link !== null) return { cflags: compile, libs: link };
  const show = run('mpicc', ['-show']);
  if (show !== null) {
    const words = show.split(/\s+/).slice(1);
    return { cflags: words.filter((w) => w.startsWith('-I') || w.startsWith('-D')).join(' '), libs: words.filter((w) => w.startsWith('-L') || w.startsWith('-l') || w.startsWith('-Wl')).join(' ') };
  }
  for (const pkg of ['ompi', 'mpich']) {
    const cflags = run('pkg-config', ['--cflags', pkg]);
    const libs = run('pkg-config', ['--libs', pkg]);
    if (cflags !== null && libs !== null) return { cflags, libs };
  }
  return null;
}

const what = process.argv[2];
const found = flags();
if (what === 'found') console.log(found ? '1' : '0');
else if (what === 'cflags') console.log(found?.cflags ?? '');
else if (what === 'libs') console.log(found?.libs ?? '');
else {
  console.error('usage: node scripts/mpi-flags.mjs cflags|libs|found');
  process.exit(2);
}
