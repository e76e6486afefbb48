// The native kernels are declared in four places: the C++ registration table
// (native/binding.cc), the TypeScript Kernels interface with its reference
// implementation (src/tensor/kernel-types.ts, reference/kernels.ts), the
// addon's exports at run time, and native/README.md. Until one declaration
// generates the rest, this test makes any drift between them a failure that
// names the kernel and the place.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { referenceKernels } from '../../src/tensor/reference/kernels.js';
import { loadNativeAddon } from '../../src/tensor/native/binding.js';

/** Names in binding.cc's napi_property_descriptor table: {"name", nullptr, Fn, ...}. */
function registered(): string[] {
  const text = readFileSync('native/binding.cc', 'utf8');
  return [...text.matchAll(/\{"([A-Za-z0-9]+)", nullptr, [A-Za-z0-9]+, nullptr, nullptr, nullptr, napi_enumerable, nullptr\}/g)].map((m) => m[1]!);
}

describe('native kernel declarations agree', () => {
  const names = registered();
  it('binding.cc registers kernels (the parse works)', () => {
    assert.ok(names.length > 30, `${names.length} names parsed`);
    assert.ok(names.includes('sgemm') && names.includes('info'));
  });
  it('every registered kernel is typed in TypeScript: the Kernels interface (with a reference), or the addon type itself', () => {
    const typed = new Set(Object.keys(referenceKernels));
    // The ggml codecs are reached through nativeGgmlCodec(), typed as members of NativeAddon (binding.ts).
    const addonType = readFileSync('src/tensor/native/binding.ts', 'utf8');
    const missing = names.filter((n) => n !== 'info' && !typed.has(n) && !new RegExp(`\\b${n}\\??\\(`).test(addonType));
    assert.deepEqual(missing, [], 'registered in binding.cc but typed neither in kernel-types.ts / reference/kernels.ts nor in native/binding.ts');
  });
  it('native/README.md documents every registered kernel', () => {
    const readme = readFileSync('native/README.md', 'utf8');
    const undocumented = names.filter((n) => !readme.includes(`\`${n}(`) && !readme.includes(`${n}(`));
    assert.deepEqual(undocumented, [], 'registered but not in native/README.md');
  });
  it('the built addon exports exactly the registered kernels', { skip: loadNativeAddon().addon === null && 'native addon not built' }, () => {
    const addon = loadNativeAddon().addon as unknown as Record<string, unknown>;
    const exported = Object.keys(addon).filter((k) => typeof addon[k] === 'function').sort();
    assert.deepEqual(exported, [...names].sort());
  });
});
