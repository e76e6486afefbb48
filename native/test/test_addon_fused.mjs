// Checks the version-2 exports of the addon (the fused kernels) from Node:
// each against a float64 reference written here from the contract, on
// subarrays of one arena (non-zero byteOffset), with EMPTY (zero-length)
// gradients where allowed, boolean and 0/1 flags, returned numbers, one
// threaded size with bit-identical repeats, and the argument errors.
// The exhaustive numerical sweep is the C++ test (test_fused.cc).
//
// Run after `npx node-gyp rebuild` (from the repository root):
//   node native/test/test_addon_fused.mjs             # every ISA path, one child process each
//   QKD_ISA=avx2 node native/test/test_addon_fused.mjs  # one path
import { runPerIsa, loadAddon, check, expectThrow, finish, randomArray } from './harness.mjs';

runPerIsa(import.meta.url);
const native = loadAddon();
const EMPTY = new Float32Array(0);
const TOLERANCE = 1e-5;

// Worst |got − want| / magnitude over a check.
function worstError() {
  let worst = 0;
  return {
    add(got, want, magnitude) {
      const err = Math.abs(got - want) / (magnitude + 1e-30);
      worst = Number.isNaN(err) ? Infinity : Math.max(worst, err);
    },
    get value() {
      return worst;
    },
  };
}

// Views at odd offsets into one arena, so that byteOffset is never 0.
function arenaViews(sizes, fill = () => randomArray(1)[0]) {
  const total = sizes.reduce((sum, n) => sum + n + 3, 0);
  const arena = new Float32Array(total + 5);
  for (let i = 0; i < arena.length; i += 1) arena[i] = fill();
  let at = 5;
  return sizes.map((n) => {
    const view = arena.subarray(at, at + n);
    at += n + 3;
    return view;
  });
}

const sigmoid = (x) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));
function logSumExp(z, at, n, scale) {
  let max = -Infinity;
  for (let j = 0; j < n; j += 1) max = Math.max(max, z[at + j] * scale);
  let sum = 0;
  for (let j = 0; j < n; j += 1) sum += Math.exp(z[at + j] * scale - max);
  return max + Math.log(sum);
}

// ---- rmsnorm --------------------------------------------------------------------
for (const [rows, cols] of [[1, 1], [3, 7], [5, 33], [4, 257], [2, 1000]]) {
  const [x, w, y, rstd, dy, dx, dw] = arenaViews([rows * cols, cols, rows * cols, rows, rows * cols, rows * cols, cols]);
  native.rmsnormForward(x, w, y, rstd, rows, cols, 1e-5);
  const fy = worstError();
  const s = [];
  for (let r = 0; r < rows; r += 1) {
    let squares = 0;
    for (let c = 0; c < cols; c += 1) squares += x[r * cols + c] ** 2;
    s.push(1 / Math.sqrt(squares / cols + 1e-5));
    fy.add(rstd[r], s[r], s[r]);
    for (let c = 0; c < cols; c += 1) fy.add(y[r * cols + c], x[r * cols + c] * s[r] * w[c], Math.abs(x[r * cols + c] * s[r] * w[c]));
  }
  check(fy.value < TOLERANCE, `rmsnormForward ${rows}x${cols}: error ${fy.value}`);
  for (const [useDx, useDw] of [[true, true], [false, true], [true, false]]) {
    const dx1 = Float32Array.from(dx), dw1 = Float32Array.from(dw);
    native.rmsnormBackward(x, w, rstd, dy, useDx ? dx1 : EMPTY, useDw ? dw1 : EMPTY, rows, cols);
    const fb = worstError();
    const dwWant = Array.from(dw, Number), dwMag = Array.from(dw, Math.abs);
    for (let r = 0; r < rows; r += 1) {
      const sr = rstd[r];
      let dot = 0, dotMag = 0;
      for (let c = 0; c < cols; c += 1) {
        const i = r * cols + c;
        dot += dy[i] * w[c] * x[i];
        dotMag += Math.abs(dy[i] * w[c] * x[i]);
        dwWant[c] += dy[i] * x[i] * sr;
        dwMag[c] += Math.abs(dy[i] * x[i] * sr);
      }
      if (useDx) {
        for (let c = 0; c < cols; c += 1) {
          const i = r * cols + c;
          const k = sr ** 3 / cols;
          fb.add(dx1[i], dx[i] + sr * dy[i] * w[c] - k * x[i] * dot, Math.abs(dx[i]) + Math.abs(sr * dy[i] * w[c]) + Math.abs(k * x[i]) * dotMag);
        }
      }
    }
    if (useDw) for (let c = 0; c < cols; c += 1) fb.add(dw1[c], dwWant[c], dwMag[c]);
    check(fb.value < TOLERANCE, `rmsnormBackward ${rows}x${cols} dx=${useDx} dw=${useDw}: error ${fb.value}`);
    if (!useDx) check(dx1.every((v, i) => v === dx[i]), 'rmsnormBackward with dx EMPTY leaves dx alone');
    if (!useDw) check(dw1.every((v, i) => v === dw[i]), 'rmsnormBackward with dw EMPTY leaves dw alone');
  }
}

// ---- swiglu ---------------------------------------------------------------------
for (const n of [1, 7, 33, 1000]) {
  const [gate, up, y, dy, dgate, dup] = arenaViews([n, n, n, n, n, n], () => randomArray(1, 20)[0]);
  native.swigluForward(gate, up, y, n);
  const f = worstError();
  for (let i = 0; i < n; i += 1) {
    const want = gate[i] * sigmoid(gate[i]) * up[i];
    f.add(y[i], want, Math.abs(want) + 1e-37);
  }
  check(f.value < TOLERANCE, `swigluForward n=${n}: error ${f.value}`);
  for (const [useG, useU] of [[true, true], [false, true], [true, false]]) {
    const dg = Float32Array.from(dgate), du = Float32Array.from(dup);
    native.swigluBackward(gate, up, dy, useG ? dg : EMPTY, useU ? du : EMPTY, n);
    const b = worstError();
    for (let i = 0; i < n; i += 1) {
      const g = gate[i], s = sigmoid(g);
      if (useG) b.add(dg[i], dgate[i] + dy[i] * up[i] * s * (1 + g * (1 - s)), Math.abs(dgate[i]) + Math.abs(dy[i] * up[i]) * (s + Math.abs(g * s * (1 - s))));
      if (useU) b.add(du[i], dup[i] + dy[i] * g * s, Math.abs(dup[i]) + Math.abs(dy[i] * g * s));
    }
    check(b.value < TOLERANCE, `swigluBackward n=${n} dgate=${useG} dup=${useU}: error ${b.value}`);
    if (!useG) check(dg.every((v, i) => v === dgate[i]), 'swigluBackward with dgate EMPTY leaves it alone');
    if (!useU) check(du.every((v, i) => v === dup[i]), 'swigluBackward with dup EMPTY leaves it alone');
  }
}

// ---- rope -----------------------------------------------------------------------
for (const [B, T, H, D] of [[1, 1, 1, 2], [2, 3, 2, 6], [1, 4, 3, 32]]) {
  const n = B * T * H * D, half = D / 2;
  const [src, dst0, cos, sin] = arenaViews([n, n, T * half, T * half]);
  for (const style of [0, 1]) {
    for (const direction of [1, -1]) {
      for (const accumulate of [false, true, 0, 1]) {
        const dst = Float32Array.from(dst0);
        native.rope(src, dst, cos, sin, B, T, H, D, style, direction, accumulate);
        const e = worstError();
        for (let row = 0; row < B * T * H; row += 1) {
          const t = Math.floor(row / H) % T;
          for (let i = 0; i < half; i += 1) {
            const ia = row * D + (style === 0 ? i : 2 * i), ib = row * D + (style === 0 ? i + half : 2 * i + 1);
            const c = cos[t * half + i], s = direction * sin[t * half + i];
            const a0 = accumulate ? dst0[ia] : 0, b0 = accumulate ? dst0[ib] : 0;
            const mag = Math.abs(src[ia]) + Math.abs(src[ib]);
            e.add(dst[ia], a0 + src[ia] * c - src[ib] * s, Math.abs(a0) + mag);
            e.add(dst[ib], b0 + src[ia] * s + src[ib] * c, Math.abs(b0) + mag);
          }
        }
        check(e.value < TOLERANCE, `rope ${B}x${T}x${H}x${D} style=${style} dir=${direction} acc=${accumulate}: error ${e.value}`);
      }
    }
    const inPlace = Float32Array.from(src), separate = new Float32Array(n);
    native.rope(inPlace, inPlace, cos, sin, B, T, H, D, style, 1, false);
    native.rope(src, separate, cos, sin, B, T, H, D, style, 1, false);
    check(inPlace.every((v, i) => Object.is(v, separate[i])), `rope in place matches (style ${style})`);
  }
}

// ---- adamw ----------------------------------------------------------------------
{
  const n = 1001;
  const [w, g, m, v] = arenaViews([n, n, n, n]);
  for (let i = 0; i < n; i += 1) v[i] = Math.abs(v[i]) * 1e-3;
  const [w0, m0, v0] = [Float32Array.from(w), Float32Array.from(m), Float32Array.from(v)];
  const [lr, b1, b2, eps, shrink, c1, c2] = [1e-3, 0.9, 0.999, 1e-8, 0.9999, 1.9, 12.5];
  native.adamw(w, g, m, v, n, lr, b1, b2, eps, shrink, c1, c2);
  const e = worstError();
  for (let i = 0; i < n; i += 1) {
    const fb1 = Math.fround(b1), fb2 = Math.fround(b2);
    const mi = fb1 * m0[i] + (1 - fb1) * g[i];
    const vi = fb2 * v0[i] + (1 - fb2) * g[i] * g[i];
    const step = (Math.fround(lr) * (mi * Math.fround(c1))) / (Math.sqrt(vi * Math.fround(c2)) + Math.fround(eps));
    e.add(m[i], mi, Math.abs(fb1 * m0[i]) + Math.abs((1 - fb1) * g[i]));
    e.add(v[i], vi, vi);
    e.add(w[i], w0[i] * Math.fround(shrink) - step, Math.abs(w0[i]) + Math.abs(step));
  }
  check(e.value < TOLERANCE, `adamw n=${n}: error ${e.value}`);
}

// ---- cross-entropy ----------------------------------------------------------------
for (const [rows, V] of [[1, 1], [5, 17], [7, 257]]) {
  const [logits, lse, dz] = arenaViews([rows * V, rows, rows * V], () => randomArray(1, 10)[0]);
  const targetArena = new Int32Array(rows + 2);
  const targets = targetArena.subarray(2);
  for (let r = 0; r < rows; r += 1) targets[r] = r % 3 === 1 ? -100 : (r * 7) % V;
  const lse0 = Float32Array.from(lse);
  const loss = native.crossEntropyForward(logits, targets, lse, rows, V, -100);
  let want = 0, mag = 0;
  const e = worstError();
  for (let r = 0; r < rows; r += 1) {
    if (targets[r] === -100) {
      check(Object.is(lse[r], lse0[r]), 'crossEntropyForward leaves lse of an ignored row alone');
      continue;
    }
    const l = logSumExp(logits, r * V, V, 1);
    e.add(lse[r], l, Math.abs(l) + 1);
    want += l - logits[r * V + targets[r]];
    mag += Math.abs(l) + Math.abs(logits[r * V + targets[r]]);
  }
  e.add(loss, want, mag);
  check(typeof loss === 'number' && e.value < TOLERANCE, `crossEntropyForward ${rows}x${V}: loss ${loss} vs ${want}, error ${e.value}`);
  const dz0 = Float32Array.from(dz);
  native.crossEntropyBackward(logits, targets, lse, dz, rows, V, -100, 0.25);
  const b = worstError();
  for (let r = 0; r < rows; r += 1) {
    for (let j = 0; j < V; j += 1) {
      const i = r * V + j;
      if (targets[r] === -100) {
        b.add(dz[i], dz0[i], Math.abs(dz0[i]));
        continue;
      }
      const p = Math.exp(logits[i] - lse[r]), hot = j === targets[r] ? 1 : 0;
      b.add(dz[i], dz0[i] + 0.25 * (p - hot), Math.abs(dz0[i]) + 0.25 * (p + hot));
    }
  }
  check(b.value < TOLERANCE, `crossEntropyBackward ${rows}x${V}: error ${b.value}`);
}

// ---- KL ---------------------------------------------------------------------------
for (const [rows, V, invTau] of [[1, 1, 1], [4, 17, 0.5], [3, 300, 2]]) {
  const [zT, zS, lseT, lseS, rowKl, dT, dS] = arenaViews([rows * V, rows * V, rows, rows, rows, rows * V, rows * V], () => randomArray(1, 6)[0]);
  const total = native.klForward(zT, zS, lseT, lseS, rowKl, rows, V, invTau);
  const e = worstError();
  let want = 0, mag = 1e-7 * rows; // float exp: ~1e-7 absolute per row (see fused.h)
  for (let r = 0; r < rows; r += 1) {
    const lt = logSumExp(zT, r * V, V, invTau), ls = logSumExp(zS, r * V, V, invTau);
    e.add(lseT[r], lt, Math.abs(lt) + 1);
    e.add(lseS[r], ls, Math.abs(ls) + 1);
    let kl = 0, klMag = 1e-7;
    for (let j = 0; j < V; j += 1) {
      const a = zT[r * V + j] * invTau - lt, b = zS[r * V + j] * invTau - ls;
      kl += Math.exp(a) * (a - b);
      klMag += Math.exp(a) * Math.abs(a - b) * (1 + Math.abs(a));
    }
    e.add(rowKl[r], kl, klMag);
    want += kl;
    mag += klMag;
  }
  e.add(total, want, mag);
  check(typeof total === 'number' && e.value < TOLERANCE, `klForward ${rows}x${V}: total ${total} vs ${want}, error ${e.value}`);
  for (const [useT, useS] of [[true, true], [false, true], [true, false]]) {
    const dT1 = Float32Array.from(dT), dS1 = Float32Array.from(dS);
    native.klBackward(zT, zS, lseT, lseS, rowKl, useT ? dT1 : EMPTY, useS ? dS1 : EMPTY, rows, V, invTau, 0.5);
    const b = worstError();
    for (let r = 0; r < rows; r += 1) {
      for (let j = 0; j < V; j += 1) {
        const i = r * V + j;
        const a = zT[i] * invTau - lseT[r], c = zS[i] * invTau - lseS[r];
        const pT = Math.exp(a), pS = Math.exp(c);
        if (useS) b.add(dS1[i], dS[i] + 0.5 * (pS - pT), Math.abs(dS[i]) + 0.5 * (pS * (1 + Math.abs(c)) + pT * (1 + Math.abs(a))));
        if (useT) b.add(dT1[i], dT[i] + 0.5 * pT * (a - c - rowKl[r]), Math.abs(dT[i]) + 0.5 * pT * (1 + Math.abs(a)) * (Math.abs(a - c) + Math.abs(rowKl[r])));
      }
    }
    check(b.value < TOLERANCE, `klBackward ${rows}x${V} dT=${useT} dS=${useS}: error ${b.value}`);
    if (!useT) check(dT1.every((v, i) => v === dT[i]), 'klBackward with dT EMPTY leaves it alone');
    if (!useS) check(dS1.every((v, i) => v === dS[i]), 'klBackward with dS EMPTY leaves it alone');
  }
}

// ---- causal softmax -------------------------------------------------------------------
for (const [BH, T, S] of [[1, 1, 1], [2, 5, 5], [3, 1, 9], [2, 4, 37]]) {
  const offset = S - T, n = BH * T * S;
  const [x, y, dy, dx0] = arenaViews([n, n, n, n], () => randomArray(1, 8)[0]);
  const valid = (row) => Math.min(S, offset + (row % T) + 1);
  for (let row = 0; row < BH * T; row += 1) for (let j = valid(row); j < S; j += 1) x[row * S + j] = NaN; // never read
  native.causalSoftmaxForward(x, y, BH, T, S, offset);
  const f = worstError();
  let zeros = true;
  for (let row = 0; row < BH * T; row += 1) {
    const l = logSumExp(x, row * S, valid(row), 1);
    for (let j = 0; j < S; j += 1) {
      if (j < valid(row)) {
        const p = Math.exp(x[row * S + j] - l);
        f.add(y[row * S + j], p, p);
      } else zeros = zeros && y[row * S + j] === 0;
    }
  }
  check(f.value < TOLERANCE && zeros, `causalSoftmaxForward ${BH}x${T}x${S}: error ${f.value}, masked zeros ${zeros}`);
  const inPlace = Float32Array.from(x);
  native.causalSoftmaxForward(inPlace, inPlace, BH, T, S, offset);
  check(inPlace.every((v, i) => Object.is(v, y[i])), 'causalSoftmaxForward in place');
  for (const mode of ['accumulate', 'write', 'in place']) {
    const dx = mode === 'in place' ? Float32Array.from(dy) : Float32Array.from(dx0);
    native.causalSoftmaxBackward(y, mode === 'in place' ? dx : dy, dx, BH, T, S, offset, mode === 'accumulate' ? 1 : false);
    const b = worstError();
    let masked = true;
    for (let row = 0; row < BH * T; row += 1) {
      let dot = 0, dotMag = 0;
      for (let j = 0; j < valid(row); j += 1) {
        dot += y[row * S + j] * dy[row * S + j];
        dotMag += Math.abs(y[row * S + j] * dy[row * S + j]);
      }
      for (let j = 0; j < S; j += 1) {
        const i = row * S + j;
        const base = mode === 'accumulate' ? dx0[i] : 0;
        if (j < valid(row)) b.add(dx[i], base + y[i] * (dy[i] - dot), Math.abs(base) + y[i] * (Math.abs(dy[i]) + dotMag));
        else masked = masked && (mode === 'accumulate' ? Object.is(dx[i], dx0[i]) : dx[i] === 0);
      }
    }
    check(b.value < TOLERANCE && masked, `causalSoftmaxBackward ${BH}x${T}x${S} ${mode}: error ${b.value}, masked ok ${masked}`);
  }
}

// ---- adds -------------------------------------------------------------------------------
{
  const n = 45;
  const [a, b, out] = arenaViews([n, n, n]);
  native.add(a, b, out, n);
  check(out.every((v, i) => v === Math.fround(a[i] + b[i])), 'add is exact');
  const acc = Float32Array.from(a);
  native.addInto(acc, b, n);
  check(acc.every((v, i) => v === out[i]), 'addInto matches add');
  const alias = Float32Array.from(b);
  native.add(a, alias, alias, n);
  check(alias.every((v, i) => v === out[i]), 'add with out = b');
}

// ---- a threaded size, twice: bit-identical -----------------------------------------------------
{
  const rows = 2048, cols = 704;
  const [x, w, dy] = arenaViews([rows * cols, cols, rows * cols]);
  const run = () => {
    const y = new Float32Array(rows * cols), rstd = new Float32Array(rows), dx = new Float32Array(rows * cols), dw = new Float32Array(cols);
    native.rmsnormForward(x, w, y, rstd, rows, cols, 1e-6);
    native.rmsnormBackward(x, w, rstd, dy, dx, dw, rows, cols);
    return [y, rstd, dx, dw];
  };
  const first = run(), second = run();
  check(first.every((arr, k) => arr.every((v, i) => Object.is(v, second[k][i]))), 'rmsnorm 2048x704 bit-identical across runs');
  let worst = 0;
  for (let r = 0; r < rows; r += 97) {
    let squares = 0;
    for (let c = 0; c < cols; c += 1) squares += x[r * cols + c] ** 2;
    const s = 1 / Math.sqrt(squares / cols + 1e-6);
    worst = Math.max(worst, Math.abs(first[1][r] - s) / s);
  }
  check(worst < TOLERANCE, `rmsnorm 2048x704 rstd error ${worst}`);
}

// ---- argument errors -------------------------------------------------------------------------------
{
  const f = (n) => new Float32Array(n);
  expectThrow(() => native.rmsnormForward(f(6), f(3), f(5), f(2), 2, 3, 1e-5),
    /^qkd_native\.rmsnormForward: argument y \(Float32Array\) has 5 elements, needs at least 6$/, 'short y');
  expectThrow(() => native.rmsnormForward(f(6), f(2), f(6), f(2), 2, 3, 1e-5),
    /^qkd_native\.rmsnormForward: argument w \(Float32Array\) has 2 elements, needs at least 3$/, 'short w');
  expectThrow(() => native.rmsnormForward(f(6), f(3), EMPTY, f(2), 2, 3, 1e-5),
    /rmsnormForward: argument y \(Float32Array\) has 0 elements/, 'EMPTY y is not allowed');
  expectThrow(() => native.rmsnormBackward(f(6), f(3), f(2), f(6), f(5), EMPTY, 2, 3),
    /^qkd_native\.rmsnormBackward: argument dx \(Float32Array\) has 5 elements, needs at least 6$/, 'short (not EMPTY) dx');
  expectThrow(() => native.rmsnormBackward(f(6), f(3), f(1), f(6), f(6), EMPTY, 2, 3),
    /rmsnormBackward: argument rstd \(Float32Array\) has 1 elements, needs at least 2/, 'short rstd');
  expectThrow(() => native.swigluForward(f(4), new Float64Array(4), f(4), 4),
    /^qkd_native\.swigluForward: argument up must be a Float32Array$/, 'Float64Array up');
  expectThrow(() => native.swigluBackward(f(4), f(4), f(4), f(4), f(4)),
    /^qkd_native\.swigluBackward: expected 6 arguments, got 5$/, 'argument count');
  expectThrow(() => native.rope(f(12), f(12), f(3), f(3), 1, 2, 2, 3, 0, 1, false),
    /^qkd_native\.rope: argument D must be even, got 3$/, 'odd D');
  expectThrow(() => native.rope(f(8), f(8), f(2), f(2), 1, 2, 1, 4, 2, 1, false),
    /rope: argument style must be 0 \(half\) or 1 \(interleaved\)/, 'style 2');
  expectThrow(() => native.rope(f(8), f(8), f(2), f(2), 1, 2, 1, 4, 0, 0, false),
    /rope: argument direction must be 1 or -1/, 'direction 0');
  expectThrow(() => native.rope(f(8), f(8), f(3), f(4), 1, 2, 1, 4, 0, 1, false),
    /^qkd_native\.rope: argument cos \(Float32Array\) has 3 elements, needs at least 4$/, 'short cos');
  const same = f(8);
  expectThrow(() => native.rope(same, same, f(4), f(4), 1, 2, 1, 4, 1, -1, true),
    /rope: arguments src and dst must not overlap when accumulate is set/, 'rope accumulate in place');
  expectThrow(() => native.adamw(f(4), f(4), f(4), f(3), 4, 1e-3, 0.9, 0.999, 1e-8, 1, 1, 1),
    /^qkd_native\.adamw: argument v \(Float32Array\) has 3 elements, needs at least 4$/, 'short v');
  expectThrow(() => native.adamw(f(4), f(4), f(4), f(4), 4, NaN, 0.9, 0.999, 1e-8, 1, 1, 1),
    /adamw: argument lr must be a finite number/, 'NaN lr');
  expectThrow(() => native.crossEntropyForward(f(6), new Int32Array([0, 3]), f(2), 2, 3, -100),
    /^qkd_native\.crossEntropyForward: argument targets\[1\] is 3, must be in \[0, V = 3\) or ignoreIndex \(-100\)$/, 'target out of range');
  expectThrow(() => native.crossEntropyBackward(f(6), new Int32Array([-5, 0]), f(2), f(6), 2, 3, -100, 1),
    /crossEntropyBackward: argument targets\[0\] is -5/, 'negative target');
  expectThrow(() => native.crossEntropyForward(f(6), f(2), f(2), 2, 3, -100),
    /crossEntropyForward: argument targets must be an Int32Array/, 'Float32Array targets');
  expectThrow(() => native.crossEntropyForward(f(6), new Int32Array([0]), f(2), 2, 3, -100),
    /crossEntropyForward: argument targets \(Int32Array\) has 1 elements, needs at least 2/, 'short targets');
  expectThrow(() => native.crossEntropyForward(f(6), new Int32Array([0, 0]), f(2), 2, 3, 1.5),
    /crossEntropyForward: argument ignoreIndex must be an integer/, 'fractional ignoreIndex');
  // Only counted rows are touched: a lone ignored last row needs no logits.
  check(native.crossEntropyForward(f(3), new Int32Array([1, -100]), f(1), 2, 3, -100) > 0, 'ignored last row needs no buffer');
  expectThrow(() => native.klForward(f(6), f(5), f(2), f(2), f(2), 2, 3, 1),
    /^qkd_native\.klForward: argument zS \(Float32Array\) has 5 elements, needs at least 6$/, 'short zS');
  expectThrow(() => native.klBackward(f(6), f(6), f(2), f(2), f(2), f(5), EMPTY, 2, 3, 1, 1),
    /^qkd_native\.klBackward: argument dT \(Float32Array\) has 5 elements, needs at least 6$/, 'short dT');
  // rowKl is only read for dT: with dT EMPTY it may be EMPTY too.
  const dS = f(6);
  native.klBackward(f(6), f(6), f(2), f(2), EMPTY, EMPTY, dS, 2, 3, 1, 1);
  check(dS.every((v) => Math.abs(v) < 1e-7), 'klBackward with dT and rowKl EMPTY');
  expectThrow(() => native.causalSoftmaxForward(f(8), f(7), 2, 2, 2, 0),
    /^qkd_native\.causalSoftmaxForward: argument y \(Float32Array\) has 7 elements, needs at least 8$/, 'short y');
  const scores = f(8);
  expectThrow(() => native.causalSoftmaxBackward(f(8), scores, scores, 2, 2, 2, 0, true),
    /causalSoftmaxBackward: arguments dy and dx must not overlap when accumulate is set/, 'accumulate with dx = dy');
  native.causalSoftmaxBackward(f(8), scores, scores, 2, 2, 2, 0, false);
  check(true, 'causalSoftmaxBackward with dx = dy and accumulate = false is accepted');
  const buffer = f(10);
  expectThrow(() => native.add(buffer.subarray(0, 5), f(5), buffer.subarray(2, 7), 5),
    /add: arguments a and out overlap without being the same elements/, 'partially overlapping a and out');
  expectThrow(() => native.addInto(f(4), f(3), 4),
    /^qkd_native\.addInto: argument src \(Float32Array\) has 3 elements, needs at least 4$/, 'short src');
}

finish();
