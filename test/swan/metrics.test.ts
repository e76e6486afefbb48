import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { withBackend } from '../../src/tensor/backend.js';
import { compositeScore, excessKurtosis, frobeniusSquared, metricScores, noiseAmplification, noiseAmplificationExplicit, noiseFromProbes, reconstructionError, rowSteps, weightStatistics } from '../../src/swan/metrics.js';
import { spectralSummary } from '../../src/swan/spectrum.js';
import { fromBf16, toBf16 } from '../../src/tensor/dtype.js';
import { profileModel, profileTensor, tensorLayerAndKind, profileSettings, type ProfileSource } from '../../src/swan/profile.js';
import { QkdError } from '../../src/errors.js';

const sample = (n: number, f: (rng: Rng) => number, seed = 1): Float32Array => {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => f(rng));
};

describe('excess kurtosis', () => {
  it('matches the known values of standard distributions', () => {
    const n = 400_000;
    assert.ok(Math.abs(excessKurtosis(sample(n, (r) => r.normal()))) < 0.05);
    assert.ok(Math.abs(excessKurtosis(sample(n, (r) => r.uniform())) + 1.2) < 0.02);
    // Laplace: κ = 3.
    assert.ok(Math.abs(excessKurtosis(sample(n, (r) => (r.uniform() < 0.5 ? -1 : 1) * -Math.log(1 - r.uniform()))) - 3) < 0.15);
  });

  it('is exact on a small hand-computed case and a constant tensor', () => {
    // Values ±1 (two each): m2 = 1, m4 = 1 → κ = −2.
    assert.equal(excessKurtosis(Float32Array.from([1, -1, 1, -1])), -2);
    assert.equal(excessKurtosis(new Float32Array(10).fill(3)), 0);
    assert.equal(excessKurtosis(new Float32Array(0)), 0);
  });

  it('is shift invariant in float64 (a large mean does not cancel)', () => {
    const base = sample(100_000, (r) => r.normal());
    const shifted = base.map((v) => v + 1000);
    // float32 storage of v + 1000 rounds v to ~6e-5; kurtosis moves by far less than 0.01.
    assert.ok(Math.abs(excessKurtosis(base) - excessKurtosis(shifted)) < 0.01);
  });
});

describe('reconstruction error and noise amplification', () => {
  it('reconstruction error equals a direct per-channel asymmetric RTN computation', () => {
    const rows = 13;
    const cols = 57;
    const w = sample(rows * cols, (r) => r.normal() * (1 + r.uniform()), 4);
    let err = 0;
    for (let r = 0; r < rows; r++) {
      const row = w.subarray(r * cols, (r + 1) * cols);
      const lo = Math.min(...row);
      const hi = Math.max(...row);
      const scale = (hi - lo) / 15;
      const zero = Math.round(-lo / scale);
      for (const v of row) {
        const q = Math.min(15, Math.max(0, Math.round(v / scale) + zero));
        err += ((q - zero) * scale - v) ** 2;
      }
    }
    const want = Math.sqrt(err / frobeniusSquared(w));
    for (const backend of ['reference', 'native'] as const) {
      const got = withBackend(backend, () => reconstructionError(w, rows, cols, 4, frobeniusSquared(w)));
      assert.ok(Math.abs(got - want) < 1e-5 * want + 1e-9, `${backend}: ${got} vs ${want}`);
    }
    assert.ok(reconstructionError(w, rows, cols, 8, frobeniusSquared(w)) < want / 10);
  });

  it('the fast noise estimator agrees with the explicit-E definition', () => {
    for (const [rows, cols, heavy] of [[64, 48, false], [40, 200, true]] as const) {
      const w = sample(rows * cols, (r) => (heavy && r.uniform() < 0.01 ? 30 : 1) * r.normal(), rows);
      const steps = rowSteps(w, rows, cols, 4);
      const fast = noiseAmplification(w, rows, cols, steps, { bits: 4, probes: 400, rng: new Rng(1) });
      const slow = noiseAmplificationExplicit(w, rows, cols, steps, { bits: 4, probes: 400, rng: new Rng(2) });
      assert.ok(Math.abs(fast - slow) < 0.03 * slow, `${rows}x${cols}: fast ${fast} vs explicit ${slow}`);
    }
  });

  it('noise amplification follows the step: Gaussian weights give ≈ range/15/√12 per unit', () => {
    const rows = 256;
    const cols = 256;
    const w = sample(rows * cols, (r) => r.normal(), 8);
    const steps = rowSteps(w, rows, cols, 4);
    let meanStep2 = 0;
    for (const s of steps) meanStep2 += s * s / rows;
    const a = noiseAmplification(w, rows, cols, steps, { bits: 4, probes: 64, rng: new Rng(3) });
    // E‖Ex‖² = Σ Δ_r²‖x‖²/12, E‖Wx‖² = ‖W‖_F²‖x‖²/cols ≈ rows‖x‖².
    const predicted = Math.sqrt(meanStep2 / 12);
    assert.ok(Math.abs(a - predicted) < 0.05 * predicted, `${a} vs ${predicted}`);
  });
});

describe('weightStatistics (one pass)', () => {
  it('matches the single-metric functions and a float64 definition, float32 and bf16, on both backends', () => {
    const rows = 37;
    const cols = 301;
    const w = fromBf16(toBf16(sample(rows * cols, (r) => (r.uniform() < 0.01 ? 25 : 1) * r.normal() + 0.4, 21)));
    w.fill(0.5, cols, 2 * cols); // a constant row: no quantization error
    // The definitions in float64.
    let mean = 0;
    for (const v of w) mean += v / w.length;
    let m2 = 0;
    let m4 = 0;
    let fro2 = 0;
    for (const v of w) { m2 += (v - mean) ** 2 / w.length; m4 += (v - mean) ** 4 / w.length; fro2 += v * v; }
    const kurtosis = m4 / (m2 * m2) - 3;
    for (const backend of ['reference', 'native'] as const) {
      for (const data of [w, { bf16: toBf16(w) }]) {
        const s = withBackend(backend, () => weightStatistics(data, rows, cols, 4));
        const kind = `${backend} ${data instanceof Float32Array ? 'f32' : 'bf16'}`;
        assert.ok(Math.abs(s.kurtosis - kurtosis) < 1e-9 * Math.abs(kurtosis), `${kind} kurtosis ${s.kurtosis} vs ${kurtosis}`);
        assert.ok(Math.abs(s.frobenius2 - fro2) < 1e-12 * fro2, `${kind} ‖W‖²`);
        assert.deepEqual([...s.steps], [...rowSteps(w, rows, cols, 4)], `${kind} steps`);
        assert.equal(s.steps[1], 0);
        const e = reconstructionError(w, rows, cols, 4, fro2);
        assert.ok(Math.abs(s.reconstructionError - e) < 1e-12 * e, `${kind} RTN error`);
      }
      assert.ok(Math.abs(withBackend(backend, () => excessKurtosis(w)) - kurtosis) < 1e-9 * Math.abs(kurtosis));
      assert.ok(Math.abs(withBackend(backend, () => frobeniusSquared(w)) - fro2) < 1e-12 * fro2);
    }
  });

  it('bits 0 gives only the moments; empty and constant tensors give zeros', () => {
    const w = sample(4096 * 3, (r) => r.normal(), 5);
    const s = weightStatistics(w, 1, w.length, 0);
    assert.equal(s.reconstructionError, 0);
    assert.ok(Math.abs(s.kurtosis - excessKurtosis(w)) < 1e-9);
    assert.deepEqual(weightStatistics(new Float32Array(0), 0, 0, 4), { kurtosis: 0, frobenius2: 0, steps: new Float64Array(0), reconstructionError: 0 });
    const constant = weightStatistics(new Float32Array(50).fill(-2), 5, 10, 4);
    assert.equal(constant.kurtosis, 0);
    assert.equal(constant.reconstructionError, 0);
  });

  it('noiseFromProbes is the noise estimator on given products, and the SVD probes feed it', () => {
    const rows = 96;
    const cols = 160;
    const w = sample(rows * cols, (r) => (r.uniform() < 0.01 ? 30 : 1) * r.normal(), 31);
    const steps = rowSteps(w, rows, cols, 4);
    // Explicit probe products of 400 Gaussian probes.
    const rng = new Rng(4);
    const K = 400;
    const wx2 = new Float64Array(K);
    const x2 = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      const x = Float64Array.from({ length: cols }, () => rng.normal());
      for (const v of x) x2[k]! += v * v;
      for (let r = 0; r < rows; r++) { let s = 0; for (let c = 0; c < cols; c++) s += w[r * cols + c]! * x[c]!; wx2[k]! += s * s; }
    }
    const fromProbes = noiseFromProbes({ wx2, x2 }, steps, new Rng(5));
    const explicit = noiseAmplificationExplicit(w, rows, cols, steps, { bits: 4, probes: 400, rng: new Rng(6) });
    assert.ok(Math.abs(fromProbes - explicit) < 0.03 * explicit, `${fromProbes} vs ${explicit}`);
    // The 8 probes of the randomised SVD: the same quantity, up to the noise of 8 samples.
    const s = spectralSummary(w, rows, cols, frobeniusSquared(w), { rng: new Rng(7), probes: 8 });
    const viaSvd = noiseFromProbes(s.probes!, steps, new Rng(8));
    assert.ok(Math.abs(viaSvd - explicit) < 0.2 * explicit, `${viaSvd} vs ${explicit}`);
  });
});

describe('scores and composite', () => {
  it('clips each score to [0, 1] and averages with normalised weights', () => {
    const s = metricScores({ kurtosis: 25, spectral_concentration: 0.5, noise_amplification: 0.1, reconstruction_error: -1 }, { noiseRef: 0.5, errorRef: 0.5 });
    assert.deepEqual(s, { kurtosis: 1, spectral_concentration: 0.5, noise_amplification: 0.2, reconstruction_error: 0 });
    assert.ok(Math.abs(compositeScore(s, { kurtosis: 1, spectral_concentration: 1, noise_amplification: 1, reconstruction_error: 1 }) - 0.425) < 1e-12);
    assert.equal(compositeScore(s, { kurtosis: 2, spectral_concentration: 0, noise_amplification: 0, reconstruction_error: 0 }), 1);
  });

  it('validates settings with field names', () => {
    assert.throws(() => profileSettings({ bits: 1 }), (e: unknown) => e instanceof QkdError && e.field === 'bits');
    assert.throws(() => profileSettings({ weights: { kurtosis: -1 } }), (e: unknown) => e instanceof QkdError && e.field === 'weights.kurtosis');
  });
});

describe('profile runner', () => {
  it('parses layer and kind from Hugging Face and GGUF names', () => {
    assert.deepEqual(tensorLayerAndKind('model.layers.11.self_attn.q_proj.weight'), { layer: 11, kind: 'q_proj' });
    assert.deepEqual(tensorLayerAndKind('model.embed_tokens.weight'), { layer: null, kind: 'embed_tokens' });
    assert.deepEqual(tensorLayerAndKind('lm_head.weight'), { layer: null, kind: 'lm_head' });
    assert.deepEqual(tensorLayerAndKind('blk.3.ffn_down.weight'), { layer: 3, kind: 'ffn_down' });
  });

  it('profiles a streamed source one tensor at a time, 1-D tensors without matrix metrics', () => {
    const tensors = [
      { name: 'model.layers.0.self_attn.q_proj.weight', shape: [64, 64] },
      { name: 'model.layers.0.input_layernorm.weight', shape: [64] },
      { name: 'model.layers.0.mlp.down_proj.weight', shape: [64, 128] },
    ];
    const reads: string[] = [];
    const source: ProfileSource = {
      path: 'mem',
      tensors,
      readFloat32(name) {
        reads.push(name);
        const t = tensors.find((x) => x.name === name)!;
        const n = t.shape.reduce((a, b) => a * b, 1);
        return sample(n, (r) => (name.includes('down') && r.uniform() < 0.005 ? 40 : 1) * r.normal(), n);
      },
    };
    const seen: number[] = [];
    const report = profileModel(source, { onTensor: (p) => seen.push(p.done) });
    assert.deepEqual(reads, tensors.map((t) => t.name));
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(report.params, 64 * 64 + 64 + 64 * 128);
    const [q, norm, down] = report.tensors;
    assert.equal(norm!.composite, null);
    assert.equal(norm!.spectral_concentration, null);
    assert.ok(down!.kurtosis > q!.kurtosis + 5, 'outliers raise kurtosis');
    assert.ok(down!.composite! > q!.composite!, 'and the composite');
    for (const t of [q!, down!]) for (const v of Object.values(t.scores!)) assert.ok(v >= 0 && v <= 1);
    // Deterministic for a seed, and per-tensor independent of the others.
    const again = profileModel(source, { filter: (n) => n.includes('down') });
    assert.deepEqual(again.tensors[0]!.composite !== null, true);
    const repeat = profileTensor(tensors[0]!.name, tensors[0]!.shape, source.readFloat32(tensors[0]!.name), report.settings, new Rng(report.settings.seed * 1000003));
    assert.equal(repeat.spectral_concentration, q!.spectral_concentration);
  });

  it('visit: called before each 2-D weight is profiled, and the function it returns once the profile has read the weight', () => {
    const tensors = [
      { name: 'a', shape: [32, 40] },
      { name: 'norm', shape: [40] },
      { name: 'b', shape: [48, 40] },
    ];
    const events: string[] = [];
    const data = new Map(tensors.map((t, i) => [t.name, sample(t.shape.reduce((x, y) => x * y, 1), (r) => r.normal(), 50 + i)]));
    const source: ProfileSource = {
      path: 'mem',
      tensors,
      readFloat32(name) {
        events.push(`read ${name}`);
        return data.get(name)!;
      },
    };
    const visit = (name: string) => {
      events.push(`visit ${name}`);
      return () => events.push(`done ${name}`);
    };
    profileModel(source, { visit, onTensor: (p) => events.push(`profiled ${p.name}`) });
    assert.deepEqual(events, ['read a', 'visit a', 'done a', 'read norm', 'read b', 'visit b', 'done b', 'profiled a', 'profiled norm', 'profiled b']);
  });

  // profileModel solves the Gram eigenvalues a batch of tensors at a time in the background; each result must be the
  // tensor's own profileTensor, in order, across batch boundaries, routes and 1-D tensors, with a reused read buffer.
  it('batched solves give each tensor its own profile, in order (many tensors, both routes, a reused read buffer)', () => {
    const tensors = Array.from({ length: 21 }, (_, i) => ({
      name: `model.layers.${i}.w`,
      shape: i % 7 === 3 ? [48] : i === 11 ? [400, 420] : [16 + 8 * (i % 5), 40 + i],
    }));
    const data = new Map(tensors.map((t, i) => [t.name, sample(t.shape.reduce((a, b) => a * b, 1), (r) => r.normal() * (1 + (i % 3)), 100 + i)]));
    let buffers = 0;
    const source: ProfileSource = {
      path: 'mem',
      tensors,
      // Like the file sources: the values go to the caller's scratch, which the next read overwrites.
      readFloat32(name, scratch) {
        const w = data.get(name)!;
        if (scratch === undefined || scratch.length < w.length) {
          buffers++;
          return Float32Array.from(w);
        }
        scratch.set(w);
        return scratch.subarray(0, w.length);
      },
    };
    const seen: string[] = [];
    const report = profileModel(source, { onTensor: (p) => seen.push(p.name) });
    assert.deepEqual(seen, tensors.map((t) => t.name));
    assert.equal(buffers, 0, 'every tensor read into the scratch');
    report.tensors.forEach((got, i) => {
      const want = profileTensor(tensors[i]!.name, tensors[i]!.shape, Float32Array.from(data.get(tensors[i]!.name)!), report.settings, new Rng(report.settings.seed * 1000003 + i));
      assert.deepEqual(got, want, tensors[i]!.name);
    });
    assert.ok(report.tensors[11]!.spectral_concentration! > 0, 'the 400×420 weight (the Krylov route) is profiled');
  });

  it('a tensor with NaN or ±Inf is refused with its name, where the first one is, and the file (2-D, 1-D and 3-D; float32 and bf16)', () => {
    const cases: { shape: number[]; at: number; value: number; where: RegExp }[] = [
      { shape: [32, 40], at: 2 * 40 + 7, value: Number.NaN, where: /row 2, column 7/ },
      { shape: [32, 40], at: 5, value: Number.POSITIVE_INFINITY, where: /row 0, column 5/ },
      { shape: [64], at: 3, value: Number.NEGATIVE_INFINITY, where: /index 3\)/ },
      { shape: [8, 4, 3], at: 13, value: Number.NaN, where: /row 1, column 1\)/ },
    ];
    for (const c of cases) {
      const n = c.shape.reduce((a, b) => a * b, 1);
      const values = sample(n, (r) => r.normal(), n);
      values[c.at] = c.value;
      const tensors = [{ name: 'ok', shape: [32, 40] }, { name: 'bad.weight', shape: c.shape }];
      const source: ProfileSource = {
        path: '/models/x.safetensors',
        tensors,
        readFloat32: (name) => (name === 'ok' ? sample(32 * 40, (r) => r.normal(), 1) : values),
      };
      assert.throws(() => profileModel(source), (e: unknown) => {
        assert.ok(e instanceof QkdError, String(e));
        assert.match(e.message, /tensor bad\.weight .* holds 1 NaN or infinite value/);
        assert.match(e.message, c.where);
        assert.match(e.message, /\/models\/x\.safetensors/);
        return true;
      });
      // In memory (the API): the same error without a file, for bf16 as well.
      assert.throws(() => profileTensor('bad.weight', c.shape, { bf16: toBf16(values) }, profileSettings(), new Rng(1)), /bad\.weight .* holds 1 NaN or infinite value/);
    }
    assert.throws(() => spectralSummary(new Float32Array(16), 4, 4, Number.NaN, { rng: new Rng(1) }), /NaN or infinite/);
  });

  it('the metrics do not depend on the weight\'s scale: 2^-50 to 2^60 give the profile of scale 1 (both spectrum routes)', () => {
    for (const [rows, cols] of [[64, 48], [640, 600]] as const) {
      const base = sample(rows * cols, (r) => r.normal(), rows + cols);
      const at = (e: number) => {
        const w = toBf16(base.map((v) => v * 2 ** e));
        return profileTensor('w', [rows, cols], { bf16: w }, profileSettings(), new Rng(3));
      };
      const one = at(0);
      for (const e of [-50, -40, 30, 60]) {
        const p = at(e);
        assert.ok(Math.abs(p.spectral_concentration! - one.spectral_concentration!) < 1e-4, `${rows}×${cols} at 2^${e}: concentration ${p.spectral_concentration} vs ${one.spectral_concentration}`);
        assert.ok(Math.abs(p.sigma_max_over_fro! / one.sigma_max_over_fro! - 1) < 1e-3, `${rows}×${cols} at 2^${e}: σ_max/‖W‖ ${p.sigma_max_over_fro} vs ${one.sigma_max_over_fro}`);
        assert.ok(Math.abs(p.noise_amplification! / one.noise_amplification! - 1) < 1e-3, `${rows}×${cols} at 2^${e}: noise ${p.noise_amplification} vs ${one.noise_amplification}`);
        assert.ok(Math.abs(p.kurtosis - one.kurtosis) < 1e-9);
      }
    }
  });

  it('a read that fails mid-way leaves no solve running, and the next audit works', () => {
    const tensors = Array.from({ length: 12 }, (_, i) => ({ name: `t${i}`, shape: [32, 40] }));
    const failing: ProfileSource = {
      path: 'mem',
      tensors,
      readFloat32(name) {
        if (name === 't10') throw new QkdError('IO', 'disk gone', { path: 'mem' });
        return sample(32 * 40, (r) => r.normal(), name.length);
      },
    };
    assert.throws(() => profileModel(failing), /disk gone/);
    const ok = profileModel({ ...failing, readFloat32: (name) => sample(32 * 40, (r) => r.normal(), name.length) });
    assert.equal(ok.tensors.length, 12);
  });
});
