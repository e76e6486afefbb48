/**
 * The self-contained HTML page of `qkd audit`: one file a user can open
 * offline, mail or attach to a ticket. Everything it needs is inside it: the
 * chart library (uPlot, read from node_modules when the page is rendered), its
 * stylesheet, the data and the page script. Nothing is fetched from the
 * network, so the page looks the same on an air-gapped machine.
 *
 * Tables and heat maps are plain HTML rendered here, so they are readable even
 * with scripts disabled; only the per-layer line charts and column sorting
 * need the page script. When the script has drawn every chart it sets
 * `<body data-rendered="ok" data-charts="N">`, which a headless browser test
 * checks; on failure it sets data-rendered="error" and shows the message.
 *
 * Escaping: every text and attribute value goes through `escapeHtml`; the
 * JSON data block has '<', '>' and '&' written as \u escapes, so no tensor
 * name can close the script element it lives in.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { QkdError } from '../errors.js';
import { packedBytes, type QuantPlan } from '../quant/scheme.js';
import type { AuditReport, MetricScores, TensorProfile } from '../swan/types.js';

export interface AuditHtmlOptions {
  /** Page title; defaults to "qkd audit: <model>". */
  title?: string;
  /** Bits per tensor; when given the page shows the plan table and a bits heat map. */
  plan?: QuantPlan | null;
  /** Achieved average bits and packed bytes of the plan; computed from the report's shapes when absent. */
  planSummary?: { avgBits: number; bytes: number } | null;
}

/** Projection kinds of a LLaMA block, in the order they run; other kinds follow in order of appearance. */
const CANONICAL_KINDS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Series colours (distinct on white, colour-blind friendly enough for 7 lines); cycled beyond. */
const SERIES_COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

/** The per-layer charts: one per raw metric plus the composite. */
const CHART_METRICS: ReadonlyArray<{ key: ChartMetric; label: string }> = [
  { key: 'kurtosis', label: 'excess kurtosis κ' },
  { key: 'spectral_concentration', label: 'spectral concentration c' },
  { key: 'sigma_max_over_fro', label: 'σ_max / ‖W‖_F' },
  { key: 'noise_amplification', label: 'noise amplification a' },
  { key: 'reconstruction_error', label: 'reconstruction error e' },
  { key: 'composite', label: 'composite S' },
];
type ChartMetric =
  | 'kurtosis'
  | 'spectral_concentration'
  | 'sigma_max_over_fro'
  | 'noise_amplification'
  | 'reconstruction_error'
  | 'composite';

const SCORE_KEYS: ReadonlyArray<keyof MetricScores> = ['kurtosis', 'spectral_concentration', 'noise_amplification', 'reconstruction_error'];

/** Heat-map colours per plan bit width: fewer bits = hotter. */
const BITS_COLORS: Record<number, string> = { 2: '#b2182b', 3: '#ef8a62', 4: '#fddbc7', 8: '#d1e5f0', 16: '#67a9cf' };

/** Renders the audit report (and optionally a bit plan) as one self-contained HTML document. */
export function renderAuditHtml(report: AuditReport, options: AuditHtmlOptions = {}): string {
  checkReport(report);
  const title = options.title ?? `qkd audit: ${report.model}`;
  const grid = layerGrid(report.tensors);
  const plan = options.plan ?? null;
  const assets = chartAssets();
  const body = [
    `<h1>${escapeHtml(title)}</h1>`,
    headerSection(report),
    guideSection(report, plan !== null),
    chartsSection(grid),
    heatSection(report, grid),
    plan === null ? '' : planSection(report, grid, plan, options.planSummary ?? null),
    tensorTableSection(report, plan),
  ].join('\n');
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(title)}</title>`,
    `<style>\n${escapeStyle(assets.css)}\n</style>`,
    `<style>\n${PAGE_CSS}\n</style>`,
    '</head>',
    '<body>',
    '<div id="qkd-error" class="error" hidden></div>',
    '<noscript><p class="error">The per-layer charts need JavaScript; the tables below do not.</p></noscript>',
    body,
    `<script type="application/json" id="qkd-data">${jsonForScript(chartData(grid))}</script>`,
    `<!-- uPlot ${assets.version} (MIT licence, © Leon Sorokin), inlined so the page works offline -->`,
    `<script>\n${escapeScript(assets.js)}\n</script>`,
    `<script>\n${PAGE_SCRIPT}\n</script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------
// Input checks and the layer × kind grid

/** The report usually comes from a JSON file: fail with a named field rather than a TypeError deep inside. */
function checkReport(report: AuditReport): void {
  if (report === null || typeof report !== 'object') {
    throw new QkdError('ARGUMENT', 'audit report is not an object', { hint: 'an AuditReport from swan' });
  }
  if (typeof report.model !== 'string') {
    throw new QkdError('ARGUMENT', 'audit report has no model name', { field: 'model', hint: 'a string' });
  }
  if (!Array.isArray(report.tensors)) {
    throw new QkdError('ARGUMENT', 'audit report has no tensor list', { field: 'tensors', hint: 'an array of TensorProfile' });
  }
  if (report.settings === null || typeof report.settings !== 'object') {
    throw new QkdError('ARGUMENT', 'audit report has no settings', { field: 'settings', hint: 'ProfileSettings' });
  }
  report.tensors.forEach((t, i) => {
    if (t === null || typeof t !== 'object' || typeof t.name !== 'string' || typeof t.kind !== 'string') {
      throw new QkdError('ARGUMENT', `tensor entry ${i} has no name or kind`, { field: `tensors[${i}]`, hint: 'a TensorProfile' });
    }
  });
}

/** Decoder layers (rows) × quantizable tensor kinds (columns), each cell the tensor shown there. */
interface LayerGrid {
  layers: number[];
  kinds: string[];
  cell(layer: number, kind: string): TensorProfile | undefined;
}

/**
 * Kinds are those with at least one scored (2-D) tensor inside a decoder
 * layer, so norms do not add empty series. When several tensors share a
 * (layer, kind) cell, e.g. a projection and its bias, the scored and larger
 * one is shown.
 */
function layerGrid(tensors: readonly TensorProfile[]): LayerGrid {
  const cells = new Map<string, TensorProfile>();
  const kindsSeen: string[] = [];
  const layers = new Set<number>();
  for (const t of tensors) {
    if (t.layer === null || t.composite === null) continue;
    layers.add(t.layer);
    if (!kindsSeen.includes(t.kind)) kindsSeen.push(t.kind);
    const key = cellKey(t.layer, t.kind);
    const previous = cells.get(key);
    if (previous === undefined || elementCount(t.shape) > elementCount(previous.shape)) cells.set(key, t);
  }
  const kinds = [
    ...CANONICAL_KINDS.filter((k) => kindsSeen.includes(k)),
    ...kindsSeen.filter((k) => !CANONICAL_KINDS.includes(k)),
  ];
  return { layers: [...layers].sort((a, b) => a - b), kinds, cell: (layer, kind) => cells.get(cellKey(layer, kind)) };
}

function cellKey(layer: number, kind: string): string {
  return `${layer}\u0000${kind}`;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

// ---------------------------------------------------------------------------
// Sections

function headerSection(report: AuditReport): string {
  const s = report.settings;
  const weights = s.weights
    ? `${SCORE_KEYS.map((k) => `${escapeHtml(k)} ${formatNumber(s.weights[k])}`).join(', ')} (S divides by their sum)`
    : '—';
  const quantizable = report.tensors.filter((t) => t.composite !== null).length;
  const rows: Array<[string, string]> = [
    ['model', escapeHtml(report.model)],
    ['parameters', escapeHtml(formatCount(report.params))],
    ['tensors', `${report.tensors.length} (${quantizable} scored)`],
    ['seconds', escapeHtml(formatNumber(report.seconds))],
    ['bits (RTN probe)', escapeHtml(formatNumber(s.bits))],
    ['noise probes', escapeHtml(formatNumber(s.probes))],
    ['SVD rank cap / Krylov depth / dimensions per rank', `${escapeHtml(formatNumber(s.maxRank))} / ${escapeHtml(formatNumber(s.krylovDepth))} / ${typeof s.krylovDimensions === 'number' ? escapeHtml(formatNumber(s.krylovDimensions)) : '—'}`],
    ['seed', escapeHtml(formatNumber(s.seed))],
    ['composite weights α', weights],
    ['score references a_ref / e_ref', `${escapeHtml(formatNumber(s.noiseRef))} / ${escapeHtml(formatNumber(s.errorRef))}`],
  ];
  const dl = rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${v}</td></tr>`).join('\n');
  return `<section id="summary"><table class="summary">\n${dl}\n</table></section>`;
}

/** One row of the "How to read this report" table. */
interface GuideRow {
  /** The short label used as a column header in the tensor table. */
  column: string;
  name: string;
  formula: string;
  meaning: string;
  score: string;
  higher: string;
}

/**
 * Plain-words meaning of every number on the page and which way is bad, next
 * to the short column labels, so a reader does not need the paper. Values
 * that depend on the run (bit width, references) come from the settings.
 */
function guideRows(report: AuditReport, withPlan: boolean): GuideRow[] {
  const s = report.settings;
  const bits = formatNumber(s.bits);
  const rows: GuideRow[] = [
    {
      column: 'κ',
      name: 'excess kurtosis',
      formula: 'κ = mean((w − μ)⁴) / σ⁴ − 3 over all entries',
      meaning: 'How heavy the tails of the weight values are: 0 for a bell curve, large when a few weights sit far from the rest. '
        + 'A uniform quantization grid must stretch to reach those outliers, which leaves few levels for the ordinary weights.',
      score: 's(κ) = clip(κ / 10, 0, 1)',
      higher: 'worse: more outliers',
    },
    {
      column: 'c',
      name: 'spectral concentration',
      formula: 'c = share of Σ σᵢ² held by the largest 10% of the singular values',
      meaning: 'How much of the matrix’s energy lives in a few strong directions. About 0.1 means it is spread evenly; '
        + 'near 1 means a handful of directions carry nearly everything, so errors along them weigh more.',
      score: 's(c) = clip((c − 0.1) / 0.8, 0, 1)',
      higher: 'worse: more concentrated',
    },
    {
      column: 'σ₁/F',
      name: 'σ_max / ‖W‖_F',
      formula: 'largest singular value over the Frobenius norm',
      meaning: 'The share of the norm in the single strongest direction, from 1/√rank (flat spectrum) to 1 (rank one). '
        + 'A companion to c for reading; it has no score and is not part of S.',
      score: '—',
      higher: 'more concentrated (more sensitive)',
    },
    {
      column: 'a',
      name: 'output noise amplification',
      formula: 'a = mean over Gaussian inputs x of ‖E x‖ / ‖W x‖',
      meaning: `E is random noise of one ${bits}-bit quantization step per row, standing in for rounding. `
        + 'a tells how large the error in the layer’s output is compared with the output itself.',
      score: `s(a) = clip(a / a_ref, 0, 1), a_ref = ${formatNumber(s.noiseRef)}`,
      higher: 'worse: more output error',
    },
    {
      column: 'e',
      name: 'reconstruction error',
      formula: 'e = ‖Q(W) − W‖_F / ‖W‖_F',
      meaning: `The relative error of the weights themselves after plain round-to-nearest ${bits}-bit quantization, `
        + 'a cheap proxy for the damage before any smarter method is applied.',
      score: `s(e) = clip(e / e_ref, 0, 1), e_ref = ${formatNumber(s.errorRef)}`,
      higher: 'worse: more weight error',
    },
    {
      column: 'S',
      name: 'composite score',
      formula: 'S = Σ αⱼ sⱼ over the four scores, with α (see above) divided by its sum',
      meaning: 'One number from 0 to 1 that combines the scores s(κ), s(c), s(a) and s(e). It colours the heat map and orders the table. '
        + '1-D tensors such as norms are not quantized and have no scores.',
      score: 'is itself in [0, 1]',
      higher: 'more sensitive: deserves more bits',
    },
  ];
  if (withPlan) {
    rows.push({
      column: 'bits',
      name: 'bit plan',
      formula: 'bits per weight chosen for each tensor',
      meaning: 'The allocator spends an average bit budget where it lowers the predicted damage most, and the damage counts more for tensors with a high S. '
        + 'In the bits heat map hotter colours mean fewer bits.',
      score: '—',
      higher: 'more precision kept, larger file (fewer bits = more compression and more error)',
    });
  }
  return rows;
}

function guideSection(report: AuditReport, withPlan: boolean): string {
  const rows = guideRows(report, withPlan)
    .map((r) => [
      `<tr><td class="sym">${escapeHtml(r.column)}</td><th>${escapeHtml(r.name)}</th>`,
      `<td>${escapeHtml(r.meaning)}<div class="formula">${escapeHtml(r.formula)}</div></td>`,
      `<td class="formula">${escapeHtml(r.score)}</td><td class="higher">${escapeHtml(r.higher)}</td></tr>`,
    ].join(''))
    .join('\n');
  return [
    '<section id="guide"><h2>How to read this report</h2>',
    '<p>Each quantizable tensor gets four raw metrics; each is mapped to a score s in [0, 1], and a weighted mean of the four scores is the composite S. '
      + 'For every one of them a higher value means the tensor is more sensitive to quantization.</p>',
    '<table class="guide"><thead><tr><th>column</th><th>metric</th><th>what it measures</th><th>score</th><th>higher means</th></tr></thead><tbody>',
    rows,
    '</tbody></table></section>',
  ].join('\n');
}

function chartsSection(grid: LayerGrid): string {
  if (grid.layers.length === 0) {
    return '<section id="charts"><h2>Per-layer metrics</h2><p>No scored tensors inside decoder layers.</p></section>';
  }
  const figures = CHART_METRICS.map((m) => `<div class="chart" id="chart-${m.key}"></div>`).join('\n');
  return `<section id="charts"><h2>Per-layer metrics</h2>\n<div class="charts">\n${figures}\n</div></section>`;
}

function heatSection(report: AuditReport, grid: LayerGrid): string {
  const scale = compositeScale(report);
  const paint = (t: TensorProfile): HeatCell | null => {
    if (t.composite === null) return null;
    const x = t.composite / scale.top;
    return { color: rampColor(x), dark: x > 0.6, text: formatNumber(t.composite), tip: `${t.name}: composite ${formatNumber(t.composite)}` };
  };
  const heat = heatTable(grid, paint);
  const outside = report.tensors.filter((t) => t.layer === null);
  const outsideRows = outside
    .map((t) => {
      const c = paint(t);
      const cell = c === null ? '<td class="none">—</td>' : coloredCell(c.color, c.dark, c.text, c.tip);
      return `<tr><td class="name">${escapeHtml(t.name)}</td><td>${escapeHtml(t.kind)}</td><td>${escapeHtml(formatShape(t.shape))}</td>${cell}</tr>`;
    })
    .join('\n');
  const outsideTable = outside.length === 0
    ? ''
    : `<h3>Outside the decoder layers</h3>\n<table class="small"><thead><tr><th>tensor</th><th>kind</th><th>shape</th><th>composite</th></tr></thead><tbody>\n${outsideRows}\n</tbody></table>`;
  return `<section id="heatmap"><h2>Composite sensitivity: layer × kind</h2>\n${compositeLegend(scale)}\n${heat}\n${outsideTable}</section>`;
}

/** The colour scale of the composite heat map: 0 → palest, top → darkest. */
interface CompositeScale {
  top: number;
  /** True when a composite above the possible maximum (1) set the top. */
  fromData: boolean;
}

/**
 * swan divides S = Σ α_j s_j by Σ α_j (metrics.ts compositeScore), so S is a
 * weighted mean of scores in [0, 1] and never exceeds 1, whatever the stored
 * weights (the defaults are 1 each, and a top of Σα = 4 left every cell pale).
 * A report from elsewhere may hold larger values: then the largest seen is
 * the top, so those cells do not all saturate into one colour.
 */
function compositeScale(report: AuditReport): CompositeScale {
  const seen = report.tensors.reduce((m, t) => (t.composite !== null && Number.isFinite(t.composite) ? Math.max(m, t.composite) : m), 0);
  return seen > COMPOSITE_MAX ? { top: seen, fromData: true } : { top: COMPOSITE_MAX, fromData: false };
}

/** The largest composite swan can produce: every weighted score at 1. */
const COMPOSITE_MAX = 1;

/** States the range in words as well, since the ramp alone does not say what the ends mean. */
function compositeLegend(scale: CompositeScale): string {
  const top = escapeHtml(formatNumber(scale.top));
  const note = scale.fromData
    ? `S reaches ${top} in this report (above the usual maximum of ${COMPOSITE_MAX}), so the scale runs to the largest value seen`
    : `S runs from 0 to ${top}`;
  return [
    '<div class="legend" id="composite-legend">composite S:',
    '<span class="legend-lo">0</span><span class="ramp"></span>',
    `<span class="legend-hi">${top}</span>`,
    `<span class="legend-note">(${note}; darker = more sensitive to quantization)</span></div>`,
  ].join(' ');
}

interface HeatCell {
  color: string;
  dark: boolean;
  text: string;
  tip: string;
}

/** A layer × kind table whose cells `paint` colours; empty cells show '—'. */
function heatTable(grid: LayerGrid, paint: (t: TensorProfile) => HeatCell | null): string {
  if (grid.layers.length === 0) return '<p>No scored tensors inside decoder layers.</p>';
  const head = `<tr><th>layer</th>${grid.kinds.map((k) => `<th>${escapeHtml(k)}</th>`).join('')}</tr>`;
  const rows = grid.layers.map((layer) => {
    const cells = grid.kinds.map((kind) => {
      const t = grid.cell(layer, kind);
      const c = t === undefined ? null : paint(t);
      return c === null ? '<td class="none">—</td>' : coloredCell(c.color, c.dark, c.text, c.tip);
    });
    return `<tr><th>${layer}</th>${cells.join('')}</tr>`;
  });
  return `<table class="heat"><thead>${head}</thead><tbody>\n${rows.join('\n')}\n</tbody></table>`;
}

function coloredCell(color: string, dark: boolean, text: string, tip: string): string {
  const cls = dark ? ' class="dark"' : '';
  return `<td${cls} style="background:${color}" title="${escapeHtml(tip)}">${escapeHtml(text)}</td>`;
}

function planSection(report: AuditReport, grid: LayerGrid, plan: QuantPlan, given: { avgBits: number; bytes: number } | null): string {
  const summary = given ?? planSummaryFromShapes(report, plan);
  const byName = new Map(report.tensors.map((t) => [t.name, t]));
  const heat = heatTable(grid, (t) => {
    const bits = plan.bits[t.name];
    if (bits === undefined) return null;
    return { color: BITS_COLORS[bits] ?? '#dddddd', dark: bits === 2, text: String(bits), tip: `${t.name}: ${bits} bits` };
  });
  const legend = Object.entries(BITS_COLORS)
    .map(([bits, color]) => `<span class="swatch" style="background:${color}"></span>${bits}`)
    .join(' ');
  const rows = Object.entries(plan.bits)
    .map(([name, bits]) => {
      const t = byName.get(name);
      const shape = t === undefined ? '?' : formatShape(t.shape);
      const bytes = t !== undefined && t.shape.length === 2 ? groupDigits(packedBytes(t.shape[0], t.shape[1], bits, plan.scheme)) : '?';
      return `<tr><td class="name">${escapeHtml(name)}</td><td>${escapeHtml(shape)}</td><td class="num">${escapeHtml(String(bits))}</td><td class="num">${escapeHtml(bytes)}</td></tr>`;
    })
    .join('\n');
  const scheme = plan.scheme.groupSize > 0 ? `groups of ${plan.scheme.groupSize}` : 'per output channel';
  return [
    '<section id="plan"><h2>Bit plan</h2>',
    `<p class="plan-summary">average <b>${escapeHtml(formatNumber(summary.avgBits))}</b> bits per weight, `,
    `<b>${escapeHtml(formatBytes(summary.bytes))}</b> packed (${escapeHtml(scheme)}, ${plan.scheme.symmetric ? 'symmetric' : 'asymmetric'})</p>`,
    `<div class="legend">bits ${legend}</div>`,
    heat,
    `<details open><summary>bits per tensor (${Object.keys(plan.bits).length} tensors)</summary>`,
    `<table class="small plan"><thead><tr><th>tensor</th><th>shape</th><th>bits</th><th>bytes</th></tr></thead><tbody>\n${rows}\n</tbody></table></details>`,
    '</section>',
  ].join('\n');
}

/** Average bits weighted by parameter count and packed bytes, over the plan's tensors that the report knows as 2-D. */
function planSummaryFromShapes(report: AuditReport, plan: QuantPlan): { avgBits: number; bytes: number } {
  let weightedBits = 0;
  let params = 0;
  let bytes = 0;
  for (const t of report.tensors) {
    const bits = plan.bits[t.name];
    if (bits === undefined || t.shape.length !== 2) continue;
    const n = elementCount(t.shape);
    weightedBits += bits * n;
    params += n;
    bytes += packedBytes(t.shape[0], t.shape[1], bits, plan.scheme);
  }
  return { avgBits: params > 0 ? weightedBits / params : 0, bytes };
}

/** How a tensor-table column shows its values; the exact value always goes into data-v for sorting. */
type CellStyle = 'name' | 'text' | 'shape' | 'num' | 'count';

interface TensorColumn {
  /** Short header, so the table fits a laptop window; `tip` is the full name. */
  label: string;
  tip: string;
  style: CellStyle;
  value: (t: TensorProfile) => string | number | null;
}

/**
 * Every tensor, most sensitive first; the page script re-sorts on a header
 * click. Sixteen columns fit about 1200 px because headers are short (full
 * names in tooltips and in the guide), numbers have three significant
 * digits, and names and kinds may wrap at dots and underscores.
 */
function tensorTableSection(report: AuditReport, plan: QuantPlan | null): string {
  const columns: TensorColumn[] = [
    { label: 'tensor', tip: 'name in the model file', style: 'name', value: (t) => t.name },
    { label: 'kind', tip: 'tensor kind', style: 'text', value: (t) => t.kind },
    { label: 'layer', tip: 'decoder layer', style: 'num', value: (t) => t.layer },
    { label: 'shape', tip: 'shape [out, in]', style: 'shape', value: (t) => formatShape(t.shape) },
    { label: 'params', tip: 'number of elements', style: 'count', value: (t) => elementCount(t.shape) },
    { label: 'κ', tip: 'excess kurtosis (higher = worse)', style: 'num', value: (t) => t.kurtosis },
    { label: 'c', tip: 'spectral concentration (higher = worse)', style: 'num', value: (t) => t.spectral_concentration },
    { label: 'σ₁/F', tip: 'σ_max / ‖W‖_F: largest singular value over the Frobenius norm (higher = more concentrated)', style: 'num', value: (t) => t.sigma_max_over_fro },
    { label: 'a', tip: 'output noise amplification (higher = worse)', style: 'num', value: (t) => t.noise_amplification },
    { label: 'e', tip: 'relative reconstruction error (higher = worse)', style: 'num', value: (t) => t.reconstruction_error },
    ...SCORE_KEYS.map((k): TensorColumn => ({ label: `s(${SCORE_LETTER[k]})`, tip: `score of ${k}, 0 to 1 (higher = worse)`, style: 'num', value: (t) => (t.scores === null ? null : t.scores[k]) })),
    { label: 'S', tip: 'composite score, 0 to 1 (higher = more sensitive)', style: 'num', value: (t) => t.composite },
  ];
  if (plan !== null) columns.push({ label: 'bits', tip: 'planned bits', style: 'num', value: (t) => plan.bits[t.name] ?? null });
  const head = columns
    .map((c, i) => `<th data-col="${i}" data-type="${c.style === 'num' || c.style === 'count' ? 'num' : 'text'}" title="${escapeHtml(c.tip)} (click to sort)">${escapeHtml(c.label)}</th>`)
    .join('');
  const rows = [...report.tensors].sort(bySensitivity).map((t) => {
    const cells = columns.map((c) => tableCell(c.value(t), c.style));
    return `<tr>${cells.join('')}</tr>`;
  });
  return [
    '<section id="tensors"><h2>All tensors</h2>',
    '<div class="scroll"><table class="tensors sortable"><thead><tr>',
    head,
    '</tr></thead><tbody>',
    rows.join('\n'),
    '</tbody></table></div></section>',
  ].join('\n');
}

const SCORE_LETTER: Record<keyof MetricScores, string> = { kurtosis: 'κ', spectral_concentration: 'c', noise_amplification: 'a', reconstruction_error: 'e' };

/** Composite descending, unscored tensors last, then by name so the order is stable. */
function bySensitivity(a: TensorProfile, b: TensorProfile): number {
  if (a.composite !== null && b.composite !== null && a.composite !== b.composite) return b.composite - a.composite;
  if ((a.composite === null) !== (b.composite === null)) return a.composite === null ? 1 : -1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** One table cell; data-v carries the exact sort key (empty = missing, sorted last). */
function tableCell(value: string | number | null, style: CellStyle): string {
  if (value === null) {
    return '<td class="none" data-v="">—</td>';
  }
  if (typeof value === 'number') {
    const key = escapeHtml(Number.isFinite(value) ? String(value) : '');
    if (style === 'count') {
      return `<td class="num" data-v="${key}" title="${escapeHtml(groupDigits(value))}">${escapeHtml(formatCompactCount(value))}</td>`;
    }
    return `<td class="num" data-v="${key}">${escapeHtml(formatShort(value))}</td>`;
  }
  if (style === 'shape') return `<td class="shape" data-v="${escapeHtml(value)}">${escapeHtml(value)}</td>`;
  const cls = style === 'name' ? 'name' : 'text';
  return `<td class="${cls}" data-v="${escapeHtml(value)}">${breakable(value)}</td>`;
}

/** Escaped text with optional line breaks after '.' and '_' so long names wrap at their parts. */
function breakable(text: string): string {
  return escapeHtml(text).replace(/([._])(?=.)/g, '$1<wbr>');
}

// ---------------------------------------------------------------------------
// Chart data and assets

interface ChartData {
  layers: number[];
  kinds: string[];
  colors: string[];
  metrics: Array<{ key: ChartMetric; label: string; values: Array<Array<number | null>> }>;
}

/** Per metric, one row of values per kind over the layers (null = no tensor there: a gap in the line). */
function chartData(grid: LayerGrid): ChartData {
  const metrics = grid.layers.length === 0 ? [] : CHART_METRICS.map((m) => ({
    key: m.key,
    label: m.label,
    values: grid.kinds.map((kind) => grid.layers.map((layer) => finiteOrNull(grid.cell(layer, kind)?.[m.key] ?? null))),
  }));
  return {
    layers: grid.layers,
    kinds: grid.kinds,
    colors: grid.kinds.map((_, i) => SERIES_COLORS[i % SERIES_COLORS.length]),
    metrics,
  };
}

function finiteOrNull(v: number | null): number | null {
  return v !== null && Number.isFinite(v) ? v : null;
}

interface ChartAssets {
  js: string;
  css: string;
  version: string;
}

let cachedAssets: ChartAssets | null = null;

/** uPlot's browser build and stylesheet, read once per process from the installed package. */
function chartAssets(): ChartAssets {
  if (cachedAssets !== null) return cachedAssets;
  const require = createRequire(import.meta.url);
  let jsPath = 'uplot/dist/uPlot.iife.min.js';
  try {
    jsPath = require.resolve('uplot/dist/uPlot.iife.min.js');
    const cssPath = require.resolve('uplot/dist/uPlot.min.css');
    const pkg = JSON.parse(readFileSync(require.resolve('uplot/package.json'), 'utf8')) as { version?: string };
    cachedAssets = { js: readFileSync(jsPath, 'utf8'), css: readFileSync(cssPath, 'utf8'), version: pkg.version ?? '?' };
    return cachedAssets;
  } catch (err) {
    throw new QkdError('IO', `could not read the chart library: ${(err as Error).message}`, {
      path: jsPath,
      hint: 'the uplot package installed (npm install)',
    });
  }
}

// ---------------------------------------------------------------------------
// Escaping and formatting

/** Text and attribute values (always written in double quotes). */
function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}
const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** JSON inside a script element: no '<' may appear, or '</script' in a name would end the element. */
function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * Library code inlined in a script element: '</script' would end the element
 * and '<!--' changes how the HTML parser scans it. Both can only sit in JS
 * strings or regexes, where '<\/' and '\x3C' mean the same characters.
 */
function escapeScript(js: string): string {
  return js.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '\\x3C!--');
}

function escapeStyle(css: string): string {
  return css.replace(/<\/(style)/gi, '<\\/$1');
}

/** Four significant digits; exponent form for very large or small magnitudes. */
function formatNumber(v: number | null | undefined): string {
  if (v === null || v === undefined) return '—';
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** Three significant digits for the dense tensor table; exponent form below 0.001 and from 10 000 up. */
function formatShort(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e4) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-3)) return v.toExponential(2).replace('e+', 'e');
  return String(Number(v.toPrecision(3)));
}

/** 45088768 → "45.1M"; the exact count goes in the cell's tooltip. Rounds before picking the unit, so 999999 is "1M", not "1000k". */
function formatCompactCount(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const units: Array<[number, string]> = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [size, suffix] of units) {
    const v = Number((n / size).toPrecision(3));
    if (Math.abs(v) >= 1) return `${v}${suffix}`;
  }
  return String(n);
}

/** 1234567 → "1,234,567". */
function groupDigits(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** 1234567 → "1,234,567 (1.23 M)". */
function formatCount(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const grouped = groupDigits(n);
  const units: Array<[number, string]> = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  const unit = units.find(([size]) => Math.abs(n) >= size * 10);
  return unit === undefined ? grouped : `${grouped} (${Number((n / unit[0]).toPrecision(3))} ${unit[1]})`;
}

function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(2)} MiB (${groupDigits(n)} B)`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB (${groupDigits(n)} B)`;
  return `${n} B`;
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Sequential yellow → orange → dark red ramp for t ∈ [0, 1]. */
function rampColor(t: number): string {
  const stops: Array<[number, number, number]> = [[255, 255, 204], [254, 217, 118], [253, 141, 60], [227, 26, 28], [128, 0, 38]];
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const mix = stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
  return `rgb(${mix.join(',')})`;
}

// ---------------------------------------------------------------------------
// Page stylesheet and script

const PAGE_CSS = `
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #222; background: #fff; max-width: 1500px; }
h1 { font-size: 22px; margin: 0 0 12px; word-break: break-all; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border: 1px solid #e2e2e2; }
th { background: #f4f4f4; font-weight: 600; text-align: left; }
table.summary th { width: 230px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
td.none { color: #999; text-align: center; }
table.heat td { text-align: center; min-width: 64px; font-variant-numeric: tabular-nums; font-size: 12px; }
table.heat td.dark { color: #fff; }
table.heat th:first-child, table.heat tbody th { text-align: right; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
.chart { min-height: 320px; border: 1px solid #eee; padding: 4px; }
.chart .u-title { font-size: 14px; }
.chart .u-legend { font-size: 12px; }
.chart .u-legend th, .chart .u-legend td { border: none; background: none; padding: 0 2px; font-weight: normal; }
.legend { font-size: 12px; margin: 6px 0; display: flex; align-items: center; gap: 6px; }
.ramp { display: inline-block; width: 160px; height: 12px; background: linear-gradient(to right, rgb(255,255,204), rgb(254,217,118), rgb(253,141,60), rgb(227,26,28), rgb(128,0,38)); border: 1px solid #ccc; }
.swatch { display: inline-block; width: 14px; height: 12px; border: 1px solid #aaa; margin-left: 8px; }
.scroll { overflow-x: auto; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.tensors td.num, table.tensors td.shape { white-space: nowrap; }
table.tensors th, table.tensors td { padding: 2px 5px; }
table.tensors td.name, table.tensors td.text { word-break: normal; overflow-wrap: break-word; }
#guide p { font-size: 14px; margin: 0 0 6px; }
table.guide { margin-top: 8px; }
table.guide td, table.guide th { vertical-align: top; }
table.guide td.sym { font-weight: 600; white-space: nowrap; }
table.guide td.higher { min-width: 12em; }
.formula { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; color: #555; }
div.formula { margin-top: 3px; }
table.plan { margin-top: 12px; }
details summary { cursor: pointer; margin: 12px 0 4px; font-size: 14px; }
table.sortable th.asc::after { content: " ▲"; }
table.sortable th.desc::after { content: " ▼"; }
.error { color: #a00; background: #fee; border: 1px solid #f99; padding: 8px; }
`.trim();

/**
 * Runs in the browser (plain ES5-style JS so any engine parses it). Kept
 * free of template literals and backslashes so it can live in this TS
 * template string unchanged.
 */
const PAGE_SCRIPT = `
(function () {
  'use strict';
  var body = document.body;
  try {
    var data = JSON.parse(document.getElementById('qkd-data').textContent);
    var charts = drawCharts(data);
    enableSorting();
    body.setAttribute('data-charts', String(charts));
    body.setAttribute('data-rendered', 'ok');
  } catch (err) {
    body.setAttribute('data-rendered', 'error');
    var box = document.getElementById('qkd-error');
    box.textContent = 'Rendering the charts failed: ' + (err && err.message ? err.message : String(err));
    box.hidden = false;
  }

  function fmt(v) {
    if (v === null || v === undefined) return '—';
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  function drawCharts(data) {
    if (typeof uPlot !== 'function') throw new Error('uPlot did not load');
    var drawn = 0;
    data.metrics.forEach(function (metric) {
      var el = document.getElementById('chart-' + metric.key);
      if (!el) return;
      var series = [{ label: 'layer', value: function (u, v) { return v === null || v === undefined ? '—' : String(v); } }];
      data.kinds.forEach(function (kind, i) {
        series.push({
          label: kind,
          stroke: data.colors[i],
          width: 1.5,
          points: { show: true, size: 5, fill: data.colors[i] },
          value: function (u, v) { return fmt(v); }
        });
      });
      var opts = {
        title: metric.label,
        width: Math.max(320, (el.clientWidth || 560) - 10),
        height: 260,
        scales: {
          x: { time: false, range: function (u, min, max) { return [min - 0.5, max + 0.5]; } }
        },
        axes: [
          { label: 'decoder layer', incrs: [1, 2, 5, 10, 20, 50, 100], values: function (u, splits) { return splits.map(function (s) { return String(s); }); } },
          { size: 64, values: function (u, splits) { return splits.map(fmt); } }
        ],
        series: series,
        legend: { show: true, live: false }
      };
      new uPlot(opts, [data.layers].concat(metric.values), el);
      drawn++;
    });
    return drawn;
  }

  function enableSorting() {
    var tables = document.querySelectorAll('table.sortable');
    Array.prototype.forEach.call(tables, function (table) {
      var heads = table.querySelectorAll('thead th');
      Array.prototype.forEach.call(heads, function (th) {
        th.addEventListener('click', function () { sortBy(table, heads, th); });
      });
    });
  }

  function sortBy(table, heads, th) {
    var col = Number(th.getAttribute('data-col'));
    var numeric = th.getAttribute('data-type') === 'num';
    // First click: largest numbers first, names A to Z; further clicks toggle.
    var dir = th.classList.contains('desc') ? 1 : th.classList.contains('asc') ? -1 : (numeric ? -1 : 1);
    Array.prototype.forEach.call(heads, function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(dir === 1 ? 'asc' : 'desc');
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (ra, rb) {
      var a = ra.cells[col].getAttribute('data-v');
      var b = rb.cells[col].getAttribute('data-v');
      if (a === '' || b === '') return a === b ? 0 : (a === '' ? 1 : -1);
      if (numeric) return dir * (Number(a) - Number(b));
      return dir * (a < b ? -1 : a > b ? 1 : 0);
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }
})();
`.trim();
