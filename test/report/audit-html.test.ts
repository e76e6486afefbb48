import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Script } from 'node:vm';
import { renderAuditHtml } from '../../src/report/audit-html.js';
import { QkdError } from '../../src/errors.js';
import { compositeScore, metricScores } from '../../src/swan/metrics.js';
import { DEFAULT_PROFILE_SETTINGS } from '../../src/swan/profile.js';
import type { AuditReport, MetricScores, TensorProfile } from '../../src/swan/types.js';
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
      bits: 4, probes: 8, maxRank: 256, krylovDepth: 8, krylovDimensions: 2.75, products: 'auto', seed: 7,
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

/**
 * A report as `qkd audit` writes it with the default settings (weights α = 1
 * each): scores and composites come from swan's own functions, so the page is
 * checked against the composite's real range. Raw metrics are chosen to give
 * the composites 1, 0.5 and 0.
 */
function defaultWeightsReport(): AuditReport {
  const settings = DEFAULT_PROFILE_SETTINGS;
  const scored = (name: string, layer: number, kind: string, level: number): TensorProfile => {
    const raw = {
      kurtosis: 10 * level,
      spectral_concentration: 0.1 + 0.8 * level,
      noise_amplification: settings.noiseRef * level,
      reconstruction_error: settings.errorRef * level,
    };
    const scores = metricScores(raw, settings);
    return { name, shape: [32, 32], layer, kind, ...raw, sigma_max_over_fro: 0.5, scores, composite: compositeScore(scores, settings.weights) };
  };
  const tensors = [
    scored('model.layers.0.self_attn.q_proj.weight', 0, 'q_proj', 1),
    scored('model.layers.0.self_attn.k_proj.weight', 0, 'k_proj', 0.5),
    scored('model.layers.0.self_attn.v_proj.weight', 0, 'v_proj', 0),
  ];
  return { model: 'defaults', params: 3 * 32 * 32, seconds: 0.5, settings, tensors };
}

/** Long real-model names and shapes and values of every magnitude: the widest table a laptop must show. */
function wideReport(): AuditReport {
  const tensors: TensorProfile[] = [];
  const extreme = (name: string, layer: number | null, kind: string, shape: number[], i: number): TensorProfile => {
    const scores: MetricScores = { kurtosis: 0.123456789, spectral_concentration: 1, noise_amplification: 1.23456789e-4, reconstruction_error: 0.987654321 };
    return {
      name, shape, layer, kind, kurtosis: 12345.6789 + i, spectral_concentration: 0.123456789, sigma_max_over_fro: 1.23456789e-4,
      noise_amplification: 123456.789, reconstruction_error: 1.23456789e-5, scores, composite: 0.123456789 * (i % 8),
    };
  };
  for (let l = 30; l < 32; l++) {
    const p = `model.layers.${l}`;
    tensors.push(vector(`${p}.post_attention_layernorm.weight`, l, 'post_attention_layernorm', 4096));
    KINDS.forEach((kind, k) => {
      const block = k < 4 ? 'self_attn' : 'mlp';
      tensors.push(extreme(`${p}.${block}.${kind}.weight`, l, kind, kind === 'down_proj' ? [4096, 14336] : [14336, 4096], l * 7 + k));
    });
  }
  tensors.push(extreme('model.embed_tokens.weight', null, 'embed_tokens', [128256, 4096], 99));
  const params = tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  return { model: 'meta-llama/Meta-Llama-3.1-8B-Instruct', params, seconds: 1234.5678, settings: DEFAULT_PROFILE_SETTINGS, tensors };
}

/** The background of the composite heat-map cell whose tooltip names `tensor`. */
function heatColor(page: string, tensor: string): [number, number, number] {
  const m = page.match(new RegExp(`style="background:rgb\\((\\d+),(\\d+),(\\d+)\\)" title="${escapeRegExp(escapeHtml(tensor))}: composite `));
  assert.ok(m !== null, `no heat cell for ${tensor}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** The page's ramp ends: palest for S = 0, darkest for the scale's top. */
const PALEST: [number, number, number] = [255, 255, 204];
const DARKEST: [number, number, number] = [128, 0, 38];

function brightness([r, g, b]: [number, number, number]): number {
  return (r + g + b) / 3;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Tags removed and whitespace collapsed, as a reader sees the text. */
function visibleText(fragment: string): string {
  return fragment.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
}

/** The guide's row per metric name, as [metric, "higher means" text]. */
function guideRows(page: string): Map<string, string> {
  const section = page.match(/<section id="guide">[\s\S]*?<\/section>/);
  assert.ok(section !== null, 'the page has a guide section');
  const rows = [...section[0].matchAll(/<tr><td class="sym">[^<]*<\/td><th>([^<]*)<\/th>[\s\S]*?<td class="higher">([^<]*)<\/td><\/tr>/g)];
  return new Map(rows.map((m) => [m[1], m[2]]));
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Contents of every <script> element, with its opening tag. */
function scripts(html: string): Array<{ tag: string; body: string }> {
  return [...html.matchAll(/(<script[^>]*>)([\s\S]*?)<\/script>/g)].map((m) => ({ tag: m[1], body: m[2] }));
}

/** /usr/bin/chromium, else chromium or chromium-browser on PATH, else null. */
/** Runs fn with a Chromium binary and a scratch directory (removed after), or skips the test without Chromium. */
function withChromium(t: { skip: (message: string) => void }, fn: (chromium: string, dir: string) => void): void {
  const chromium = findChromium();
  if (chromium === null) {
    t.skip('chromium not installed: apt-get install chromium to run this test');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'qkd-html-'));
  try {
    fn(chromium, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function findChromium(): string | null {
  if (existsSync('/usr/bin/chromium')) return '/usr/bin/chromium';
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return null;
}

function chromiumArgs(dir: string): string[] {
  return ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage', `--user-data-dir=${join(dir, 'profile')}`, '--virtual-time-budget=5000'];
}

/**
 * Appended after the page's own script, so it runs once the charts are
 * drawn: reading the widths forces layout, and the attribute survives into
 * --dump-dom. Numbers: window.innerWidth, the page's scroll and client widths,
 * then the tensor table's scroll box's.
 */
const LAYOUT_PROBE = `<script>(function () {
  var d = document.documentElement;
  var box = document.querySelector('#tensors .scroll');
  d.setAttribute('data-probe', [window.innerWidth, d.scrollWidth, d.clientWidth, box.scrollWidth, box.clientWidth].join(' '));
})();</script>`;

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

  it('scales the composite heat map to the composite’s real range', () => {
    const r = defaultWeightsReport();
    const composites = r.tensors.map((t) => t.composite ?? NaN);
    assert.ok(Math.abs(composites[0] - 1) < 1e-12 && Math.abs(composites[1] - 0.5) < 1e-12 && composites[2] === 0, `swan gives S = 1, 0.5, 0 with α = 1 each, got ${composites.join(', ')}`);
    const page = renderAuditHtml(r);
    const legend = page.match(/<div class="legend" id="composite-legend">[\s\S]*?<\/div>/);
    assert.ok(legend !== null, 'the heat map has a legend');
    assert.match(legend[0], /<span class="legend-lo">0<\/span><span class="ramp"><\/span> <span class="legend-hi">1<\/span>/, 'the ramp runs 0 to 1, not 0 to Σα = 4');
    assert.match(visibleText(legend[0]), /S runs from 0 to 1;/, 'the legend states the range in words');
    assert.deepEqual(heatColor(page, r.tensors[0].name), DARKEST, 'S = 1 gets the darkest colour');
    assert.deepEqual(heatColor(page, r.tensors[2].name), PALEST, 'S = 0 gets the palest colour');
    const mid = heatColor(page, r.tensors[1].name);
    const b = brightness(mid);
    assert.ok(b < brightness(PALEST) - 50 && b > brightness(DARKEST) + 50, `S = 0.5 should get a mid colour, not a pale one: rgb(${mid.join(',')})`);
    // The synthetic report's weights already sum to 1: the same top.
    assert.match(html, /<span class="legend-hi">1<\/span>/);
  });

  it('stretches the heat-map scale to the largest composite when a report holds values above 1', () => {
    const r = defaultWeightsReport();
    r.tensors[0] = { ...r.tensors[0], composite: 2.5 };
    r.tensors[1] = { ...r.tensors[1], composite: 1.25 };
    const page = renderAuditHtml(r);
    assert.match(page, /<span class="legend-hi">2\.5<\/span>/);
    assert.match(page, /S reaches 2\.5 in this report/);
    assert.deepEqual(heatColor(page, r.tensors[0].name), DARKEST, 'only the largest value gets the darkest colour');
    assert.notDeepEqual(heatColor(page, r.tensors[1].name), DARKEST, 'values below it stay distinguishable');
  });

  it('explains every metric and which direction is worse', () => {
    assert.match(html, /<section id="guide"><h2>How to read this report<\/h2>/);
    assert.ok(html.indexOf('id="guide"') < html.indexOf('id="tensors"'), 'the guide comes before the tables it explains');
    const rows = guideRows(html);
    const expected: Array<[string, RegExp]> = [
      ['excess kurtosis', /^worse/],
      ['spectral concentration', /^worse/],
      ['σ_max / ‖W‖_F', /^more concentrated/],
      ['output noise amplification', /^worse/],
      ['reconstruction error', /^worse/],
      ['composite score', /^more sensitive/],
      ['bit plan', /^more precision/],
    ];
    assert.deepEqual([...rows.keys()], expected.map(([name]) => name));
    for (const [name, direction] of expected) assert.match(rows.get(name) ?? '', direction, `direction of ${name}`);
    const guide = html.match(/<section id="guide">[\s\S]*?<\/section>/)?.[0] ?? '';
    // Formulas and references come from the run's settings (the synthetic report: 4 bits, a_ref 0.3, e_ref 0.1).
    for (const text of ['mean((w − μ)⁴) / σ⁴ − 3', 'clip(κ / 10, 0, 1)', 'clip((c − 0.1) / 0.8, 0, 1)', 'one 4-bit quantization step', 'a_ref = 0.3', 'e_ref = 0.1', 'S = Σ αⱼ sⱼ']) {
      assert.ok(visibleText(guide).includes(text), `the guide mentions ${text}`);
    }
    // Every short header of the tensor table is explained in the guide.
    const labels = [...guide.matchAll(/<td class="sym">([^<]*)<\/td>/g)].map((m) => m[1]);
    const tableHead = html.match(/<table class="tensors sortable">[\s\S]*?<\/thead>/)?.[0] ?? '';
    for (const label of labels) assert.ok(tableHead.includes(`>${label}</th>`), `column ${label} is in the tensor table`);
    assert.ok(!guideRows(renderAuditHtml(report)).has('bit plan'), 'no bit-plan row without a plan');
  });

  it('keeps every value in the compact tensor table', () => {
    const wide = wideReport();
    const page = renderAuditHtml(wide);
    const table = page.match(/<table class="tensors sortable">[\s\S]*?<\/table>/)?.[0] ?? '';
    const head = [...table.matchAll(/<th data-col="\d+"[^>]*title="([^"]*)"[^>]*>([^<]*)<\/th>/g)];
    assert.equal(head.length, 15, 'all columns (no plan: no bits)');
    for (const [, tip, label] of head) assert.ok(label.length <= 6 && tip.length > label.length, `short header ${label} with a tooltip`);
    const rows = table.match(/<tr><td class="name"[\s\S]*?<\/tr>/g) ?? [];
    assert.equal(rows.length, wide.tensors.length);
    const embed = rows.find((r) => r.includes('data-v="model.embed_tokens.weight"')) ?? '';
    // Shown with three digits, exact in data-v (what sorting uses); params compact with the exact count as tooltip.
    assert.match(embed, /data-v="12444\.6789">1\.24e4</);
    assert.match(embed, /data-v="0\.000123456789">1\.23e-4</);
    assert.match(embed, /data-v="525336576" title="525,336,576">525M</);
    assert.match(embed, /<td class="shape" data-v="\[128256,4096\]">\[128256,4096\]</);
    // Long names and kinds may wrap at their dots and underscores only.
    assert.match(page, />model\.<wbr>layers\.<wbr>31\.<wbr>post_<wbr>attention_<wbr>layernorm\.<wbr>weight</);
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
    withChromium(t, (chromium, dir) => {
      const page = join(dir, 'audit.html');
      writeFileSync(page, html);
      const common = chromiumArgs(dir);
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
    });
  });

  it('fits a 1280 px window and shows the legend and the guide in headless Chromium', (t) => {
    withChromium(t, (chromium, dir) => {
      const page = join(dir, 'wide.html');
      const wide = wideReport();
      const choices: PlanBits[] = [2, 3, 4, 8, 16];
      const bits = Object.fromEntries(wide.tensors.filter((x) => x.composite !== null).map((x, i) => [x.name, choices[i % choices.length]]));
      writeFileSync(page, renderAuditHtml(wide, { plan: { scheme: { groupSize: 128, symmetric: false }, bits } }).replace('</body>', `${LAYOUT_PROBE}\n</body>`));
      const dump = spawnSync(chromium, [...chromiumArgs(dir), '--window-size=1280,900', '--dump-dom', `file://${page}`], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(dump.status, 0, dump.stderr);
      assert.match(dump.stdout.match(/<body[^>]*>/)?.[0] ?? '', /data-rendered="ok"/);
      const probe = dump.stdout.match(/<html[^>]*data-probe="([\d ]+)"/);
      assert.ok(probe !== null, 'the layout probe ran');
      const [inner, pageScroll, pageClient, tableScroll, tableClient] = probe[1].split(' ').map(Number);
      assert.equal(inner, 1280, 'the window is 1280 px wide');
      assert.ok(pageScroll <= pageClient, `the page scrolls sideways: ${pageScroll} > ${pageClient}`);
      assert.ok(tableScroll <= tableClient, `the tensor table needs a horizontal scroll bar: ${tableScroll} > ${tableClient}`);

      const legend = dump.stdout.match(/<div class="legend" id="composite-legend">[\s\S]*?<\/div>/);
      assert.ok(legend !== null, 'the legend is in the rendered page');
      assert.match(visibleText(legend[0]), /^composite S: 0 1 \(S runs from 0 to 1; darker = more sensitive to quantization\)$/);
      const guide = visibleText(dump.stdout.match(/<section id="guide">[\s\S]*?<\/section>/)?.[0] ?? '');
      assert.match(guide, /^How to read this report /);
      for (const name of ['excess kurtosis', 'spectral concentration', 'σ_max / ‖W‖_F', 'output noise amplification', 'reconstruction error', 'composite score', 'bit plan']) {
        assert.ok(guide.includes(name), `the guide explains ${name}`);
      }
      assert.match(guide, /higher means/);
    });
  });
});
