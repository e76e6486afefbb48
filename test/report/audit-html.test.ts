import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Script } from 'node:vm';
import { renderAuditHtml } from '../../src/report/audit-html.js';
import { QkdError } from '../../src/errors.js';
import type { AuditReport, TensorProfile } from '../../src/swan/types.js';
import type { PlanBits, QuantPlan } from '../../src/quant/scheme.js';

const KINDS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const HOSTILE = '</script><b>x';

/** A scored 2-D tensor whose metrics vary smoothly with layer and kind (deterministic, no Rng needed). */
function weight(name: string, layer: number | null, kind: string, shape: number[], seed: number): TensorProfile {
  const f = (k: number) => 0.5 + 0.45 * Math.sin(seed * 1.7 + k * 2.3);
  const scores = { kurtosis: f(1), spectral_concentration: f(2), noise_amplification: f(3), reconstruction_error: f(4) };
  return {
    name, shape, layer, kind,
    kurtosis: 10 * scores.kurtosis,
    spectral_concentration: 0.1 + 0.8 * scores.spectral_concentration,
    sigma_max_over_fro: 0.2 + 0.5 * f(5),
    noise_amplification: 0.3 * scores.noise_amplification,
    reconstruction_error: 0.1 * scores.reconstruction_error,
    scores,
    composite: 0.25 * (scores.kurtosis + scores.spectral_concentration + scores.noise_amplification + scores.reconstruction_error),
  };
}

/** A 1-D tensor: kurtosis only, every other metric null. */
function vector(name: string, layer: number | null, kind: string, size: number): TensorProfile {
  return {
    name, shape: [size], layer, kind, kurtosis: 0.5,
    spectral_concentration: null, sigma_max_over_fro: null, noise_amplification: null, reconstruction_error: null,
    scores: null, composite: null,
  };
}

/** 4 layers × 7 projections + norms, embeddings, head, a final norm and one hostile name. */
function syntheticReport(): AuditReport {
  const tensors: TensorProfile[] = [weight('model.embed_tokens.weight', null, 'embed_tokens', [256, 64], 0)];
  for (let l = 0; l < 4; l++) {
    const p = `model.layers.${l}`;
    tensors.push(vector(`${p}.input_layernorm.weight`, l, 'input_layernorm', 64));
    KINDS.forEach((kind, k) => {
      const block = kind.endsWith('_proj') && k < 4 ? 'self_attn' : 'mlp';
      const shape = kind === 'down_proj' ? [64, 172] : kind === 'gate_proj' || kind === 'up_proj' ? [172, 64] : [64, 64];
      tensors.push(weight(`${p}.${block}.${kind}.weight`, l, kind, shape, 1 + l * 7 + k));
    });
    tensors.push(vector(`${p}.post_attention_layernorm.weight`, l, 'post_attention_layernorm', 64));
  }
  tensors.push(vector('model.norm.weight', null, 'norm', 64));
  tensors.push(weight('lm_head.weight', null, 'lm_head', [256, 64], 99));
  tensors.push(weight(HOSTILE, 2, HOSTILE, [8, 8], 42));
  const params = tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  return {
    model: 'synthetic <tiny> "llama"',
    params,
    seconds: 1.25,
    settings: {
      bits: 4, probes: 8, maxRank: 256, krylovDepth: 8, seed: 7,
      weights: { kurtosis: 0.25, spectral_concentration: 0.25, noise_amplification: 0.25, reconstruction_error: 0.25 },
      noiseRef: 0.3, errorRef: 0.1,
    },
    tensors,
  };
}

function syntheticPlan(report: AuditReport): QuantPlan {
  const choices: PlanBits[] = [2, 3, 4, 8, 16];
  const bits: Record<string, PlanBits> = {};
  report.tensors.filter((t) => t.composite !== null).forEach((t, i) => { bits[t.name] = choices[i % choices.length]; });
  return { scheme: { groupSize: 0, symmetric: false }, bits };
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Contents of every <script> element, with its opening tag. */
function scripts(html: string): Array<{ tag: string; body: string }> {
  return [...html.matchAll(/(<script[^>]*>)([\s\S]*?)<\/script>/g)].map((m) => ({ tag: m[1], body: m[2] }));
}

/** /usr/bin/chromium, else chromium or chromium-browser on PATH, else null. */
function findChromium(): string | null {
  if (existsSync('/usr/bin/chromium')) return '/usr/bin/chromium';
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return null;
}

const report = syntheticReport();
const plan = syntheticPlan(report);
const html = renderAuditHtml(report, { plan });

describe('renderAuditHtml', () => {
  it('references nothing on the network', () => {
    assert.ok(html.startsWith('<!DOCTYPE html>'));
    assert.doesNotMatch(html, /\b(src|href)\s*=\s*["']?\s*(https?:)?\/\//i, 'no src=/href= to a URL');
    assert.doesNotMatch(html, /url\(\s*["']?\s*(https?:)?\/\//i, 'no CSS url() to the network');
    assert.doesNotMatch(html, /@import/i);
    assert.doesNotMatch(html, /<link\b/i);
    for (const s of scripts(html)) assert.doesNotMatch(s.tag, /\bsrc\s*=/i, 'every script is inline');
    // The only URL text allowed is the chart library's own banner comment.
    const urls = [...html.matchAll(/https?:\/\/[^\s"'<>)]*/g)].map((m) => m[0]);
    assert.ok(urls.every((u) => u.startsWith('https://github.com/leeoniya/uPlot')), `unexpected URLs: ${urls.join(' ')}`);
  });

  it('escapes a hostile tensor name everywhere', () => {
    assert.ok(!html.includes('<b>x'), 'raw markup from a name must not appear');
    assert.ok(html.includes(escapeHtml(HOSTILE)), 'the name is shown escaped');
    assert.ok(html.includes(escapeHtml('synthetic <tiny> "llama"')), 'the model name is escaped');
    // Exactly the page's own script elements: the data block, uPlot and the page script.
    const all = scripts(html);
    assert.equal(all.length, 3);
    assert.equal((html.match(/<script\b/g) ?? []).length, 3);
    assert.equal((html.match(/<\/script>/g) ?? []).length, 3);
    const data = JSON.parse(all[0].body) as { kinds: string[] };
    assert.ok(data.kinds.includes(HOSTILE), 'the data block keeps the name intact after parsing');
    assert.ok(!all[0].body.includes('<'), 'no < inside the JSON block');
  });

  it('inlines scripts that parse', () => {
    for (const s of scripts(html).slice(1)) assert.doesNotThrow(() => new Script(s.body));
  });

  it('lists every tensor, with — for the null metrics of 1-D tensors', () => {
    for (const t of report.tensors) assert.ok(html.includes(escapeHtml(t.name)), `missing ${t.name}`);
    const norm = html.match(/<tr><td class="name" data-v="model\.norm\.weight">.*?<\/tr>/);
    assert.ok(norm !== null, 'the final norm has a row');
    assert.equal((norm[0].match(/>—</g) ?? []).length, 11, 'layer, 4 raw metrics, 4 scores, the composite and the bits are —');
    assert.ok(html.indexOf('lm_head.weight') > 0);
  });

  it('shows settings, the heat map, the layer-free table and the bit plan', () => {
    assert.match(html, /<th>composite weights α<\/th><td>kurtosis 0\.25, spectral_concentration 0\.25/);
    assert.match(html, /<th>noise probes<\/th><td>8<\/td>/);
    const heat = html.match(/<table class="heat">[\s\S]*?<\/table>/);
    assert.ok(heat !== null);
    for (const k of KINDS) assert.ok(heat[0].includes(`<th>${k}</th>`));
    assert.equal((heat[0].match(/<tr><th>\d+<\/th>/g) ?? []).length, 4, 'one row per decoder layer');
    assert.match(html, /Outside the decoder layers[\s\S]*model\.embed_tokens\.weight[\s\S]*lm_head\.weight/);
    assert.match(html, /<section id="plan">/);
    assert.match(html, /average <b>[\d.]+<\/b> bits per weight/);
    assert.equal((html.match(/<table class="heat">/g) ?? []).length, 2, 'composite and bits heat maps');
    const given = renderAuditHtml(report, { plan, planSummary: { avgBits: 4.5, bytes: 3 << 20 }, title: 'T & T' });
    assert.match(given, /average <b>4\.5<\/b> bits per weight, \n<b>3\.00 MiB/);
    assert.match(given, /<title>T &amp; T<\/title>/);
    assert.doesNotMatch(renderAuditHtml(report), /<section id="plan">/);
  });

  it('computes the achieved average bits weighted by parameters', () => {
    const only = { scheme: { groupSize: 0, symmetric: false }, bits: { 'lm_head.weight': 8, 'model.layers.0.self_attn.q_proj.weight': 2 } } as QuantPlan;
    // 256·64 at 8 bits and 64·64 at 2 bits: (16384·8 + 4096·2) / 20480 = 6.8.
    assert.match(renderAuditHtml(report, { plan: only }), /average <b>6\.8<\/b> bits per weight/);
  });

  it('renders a model without decoder layers (no charts, no heat map rows)', () => {
    const flat = { ...report, tensors: report.tensors.filter((t) => t.layer === null) };
    const page = renderAuditHtml(flat);
    assert.doesNotMatch(page, /class="chart"/);
    assert.match(page, /No scored tensors inside decoder layers/);
    assert.match(page, /Outside the decoder layers/);
    const data = JSON.parse(scripts(page)[0].body) as { metrics: unknown[] };
    assert.equal(data.metrics.length, 0);
  });

  it('rejects a report without a tensor list', () => {
    assert.throws(() => renderAuditHtml({ ...report, tensors: undefined } as unknown as AuditReport), (e: unknown) => e instanceof QkdError && e.field === 'tensors');
  });

  it('renders in headless Chromium', (t) => {
    const chromium = findChromium();
    if (chromium === null) {
      t.skip('chromium not installed: apt-get install chromium to run this test');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'qkd-html-'));
    try {
      const page = join(dir, 'audit.html');
      writeFileSync(page, html);
      const common = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage', `--user-data-dir=${join(dir, 'profile')}`, '--virtual-time-budget=5000'];
      const dump = spawnSync(chromium, [...common, '--dump-dom', `file://${page}`], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(dump.status, 0, dump.stderr);
      const bodyTag = dump.stdout.match(/<body[^>]*>/)?.[0] ?? '';
      assert.match(bodyTag, /data-rendered="ok"/, `body: ${bodyTag} ${dump.stdout.match(/id="qkd-error"[^<]*<?/)?.[0] ?? ''}`);
      assert.match(bodyTag, /data-charts="6"/);
      assert.equal((dump.stdout.match(/<canvas/g) ?? []).length, 6, 'one canvas per chart');

      const png = join(dir, 'audit.png');
      const shot = spawnSync(chromium, [...common, '--hide-scrollbars', '--window-size=1400,2200', `--screenshot=${png}`, `file://${page}`], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(shot.status, 0, shot.stderr);
      const bytes = readFileSync(png);
      assert.deepEqual([...bytes.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], 'PNG signature');
      assert.equal(bytes.readUInt32BE(16), 1400, 'PNG width');
      // A blank page compresses to a few KB; charts, heat maps and text take far more.
      assert.ok(statSync(png).size > 40_000, `screenshot too small: ${statSync(png).size} bytes`);
      if (process.env.QKD_KEEP_SCREENSHOT) writeFileSync(process.env.QKD_KEEP_SCREENSHOT, bytes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
