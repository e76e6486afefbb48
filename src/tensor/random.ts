/**
 * Seeded pseudo-random numbers. One generator is created from a seed and
 * passed down; library code never calls Math.random. The state is four
 * 32-bit words (xoshiro128**), so it can be saved in a checkpoint and
 * restored to continue a run bit-for-bit.
 */
export class Rng {
  private s: Uint32Array;
  /** Cached second normal from Box–Muller, or null. Part of the state. */
  private spareNormal: number | null = null;

  constructor(seed: number) {
    this.s = new Uint32Array(4);
    // splitmix32 expands the seed so that nearby seeds give unrelated streams.
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2] = s[2]! ^ s[0]!;
    s[3] = s[3]! ^ s[1]!;
    s[1] = s[1]! ^ s[2]!;
    s[0] = s[0]! ^ s[3]!;
    s[2] = s[2]! ^ t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box–Muller, both values used). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /**
   * Fills `out` with the values out.length calls of normal() would return,
   * leaving the generator where they would. `fill` (a backend's normalFill
   * kernel) does it in bulk on the raw state; the default is the loop.
   */
  fillNormal(out: Float64Array, fill?: (state: Uint32Array, spare: Float64Array, out: Float64Array, n: number) => void): Float64Array {
    if (fill === undefined) {
      for (let i = 0; i < out.length; i++) out[i] = this.normal();
      return out;
    }
    this.advanceWith((state, spare) => fill(state, spare, out, out.length));
    return out;
  }

  /**
   * Lets a bulk kernel draw from this generator: `draw` gets the raw state
   * (four words, advanced in place) and the cached normal as [1 or 0,
   * value] (updated in place), and must move them exactly as the same
   * draws through normal() and nextUint32() would (kernels().normalFill,
   * kernels().startBlockFill).
   */
  advanceWith(draw: (state: Uint32Array, spare: Float64Array) => void): void {
    const spare = new Float64Array([this.spareNormal === null ? 0 : 1, this.spareNormal ?? 0]);
    draw(this.s, spare);
    this.spareNormal = spare[0] !== 0 ? spare[1]! : null;
  }

  /** Serialisable state (for checkpoints). */
  getState(): { words: number[]; spareNormal: number | null } {
    return { words: Array.from(this.s), spareNormal: this.spareNormal };
  }

  setState(state: { words: number[]; spareNormal: number | null }): void {
    this.s = Uint32Array.from(state.words);
    this.spareNormal = state.spareNormal;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
