/**
 * The top-r energy of G = AᵀA from a block Krylov pass, by deflated block
 * Gauss quadrature (docs/algorithms.md §1, "Spectral concentration"): the
 * estimator behind the Krylov route's spectral concentration
 * (swan/spectrum.ts builds the pass and asks the eigen kernel for H's
 * eigenvalues and the eigenvector rows of its first and last block).
 */

/** Where the eigen-solve's results lie: n eigenvalues, then rows [0, heads) and [n − tails, n) of the eigenvectors (row-major, n columns). */
export interface EigenRowsLayout {
  readonly n: number;
  readonly heads: number;
  readonly tails: number;
}

/** The Krylov pass's blocks the estimate reads. */
export interface KrylovBlocks {
  /** Width of the start block Q₀. */
  readonly head: number;
  /** Width of the last block (0 when the space stopped growing). */
  readonly tail: number;
  /** ZᵀZ (tail × tail) of the last block's product outside the basis. */
  readonly zz: Float64Array;
}

/**
 * A Ritz pair (θ, y) counts as converged when its residual ‖G·Qy − θ·Qy‖²
 * over its gap to the next Ritz value below is at most this fraction of the
 * largest Ritz value (the eigenvalue error of a converged pair is about
 * residual²/gap). In a prototype on five kinds of 8192 × 2048 weights
 * (simulated int8 products), 1e-5 to 1e-3 gave the same estimates within
 * their spread (docs/algorithms.md §1).
 */
const RITZ_CONVERGED = 1e-4;

/**
 * Σ of the top r eigenvalues of G = AᵀA (N × N, trace `trace`) estimated by
 * deflated block Gauss quadrature, and the largest Ritz value. Each Ritz
 * value θⱼ (eigenvalue of H, eigenvector yⱼ) carries the weight
 * wⱼ = (N/b)·‖yⱼ's rows in the start block‖²: the start block Q₀ is
 * isotropic, so E[Q₀ᵀ f(G) Q₀] = (b/N)·tr f(G), and Q₀ᵀ f(G) Q₀ ≈
 * E₁ᵀ f(H) E₁ for the polynomials the Krylov space holds; Σ wⱼ = N. The
 * leading Ritz pairs that have converged (RITZ_CONVERGED) stand for one
 * eigenvalue each (weight 1, removing their weights' randomness); the rest
 * of the N eigenvalues are spread over the other Ritz values in proportion
 * to their weights times a + c·θ, which makes them hold both the count and
 * the energy left. The top-r sum takes Ritz values from the largest down
 * until their weights add up to r. Unlike the sum of the top r Ritz values
 * (a lower bound that converges slowly on a flat spectrum), the estimate
 * needs no more Krylov dimensions than r, and r may exceed the rank cap.
 */
export function quadratureTopSum(results: Float64Array, solve: EigenRowsLayout, projection: KrylovBlocks, N: number, r: number, trace: number): { sum: number; top: number } {
  const n = solve.n;
  const theta = results.subarray(0, n);
  const rowsOf = results.subarray(n);
  /** Entry (row i of the eigenvector matrix, column j), for a row the solve returned. */
  const entry = (i: number, j: number): number => (i < solve.heads ? rowsOf[i * n + j]! : rowsOf[(solve.heads + i - (n - solve.tails)) * n + j]!);
  const { head, tail, zz } = projection;
  const top = Math.max(0, theta[0]!);
  // Leading converged pairs.
  let converged = 0;
  for (; converged < Math.min(n, r); converged++) {
    const j = converged;
    let res2 = 0;
    for (let a = 0; a < tail; a++) {
      const ya = entry(n - tail + a, j);
      for (let c = 0; c < tail; c++) res2 += ya * zz[a * tail + c]! * entry(n - tail + c, j);
    }
    const gap = j + 1 < n ? theta[j]! - theta[j + 1]! : Math.abs(theta[j]!);
    if (!(res2 <= RITZ_CONVERGED * top * gap)) break;
  }
  // The other Ritz values' quadrature weights, rescaled by a + c·θ so that they hold the N − m eigenvalues left
  // and their known energy tr G − Σ_{j<m} θⱼ (both moments the quadrature gets right in expectation): in a
  // prototype this roughly halved the largest error on steep power laws (docs/algorithms.md §1).
  const weights = new Float64Array(n);
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let convergedEnergy = 0;
  for (let j = 0; j < converged; j++) convergedEnergy += Math.max(0, theta[j]!);
  for (let j = converged; j < n; j++) {
    let w2 = 0;
    for (let i = 0; i < head; i++) w2 += entry(i, j) ** 2;
    const t = Math.max(0, theta[j]!);
    weights[j] = w2;
    s0 += w2;
    s1 += w2 * t;
    s2 += w2 * t * t;
  }
  const count = N - converged;
  const energy = trace - convergedEnergy;
  const det = s0 * s2 - s1 * s1;
  let a = s0 > 0 ? count / s0 : 0;
  let c = 0;
  if (energy > 0 && det > 1e-9 * s0 * s2) {
    // Solve [s0 s1; s1 s2]·[a; c] = [count; energy].
    a = (count * s2 - s1 * energy) / det;
    c = (s0 * energy - s1 * count) / det;
  }
  let mass = 0;
  let sum = 0;
  for (let j = 0; j < n && mass < r; j++) {
    const weight = j < converged ? 1 : Math.max(0, weights[j]! * (a + c * Math.max(0, theta[j]!)));
    const take = Math.min(weight, r - mass);
    sum += take * Math.max(0, theta[j]!);
    mass += take;
  }
  return { sum, top };
}
