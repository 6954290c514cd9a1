// The calibration sets' own seeded generator (splitmix32 per sample). It is frozen with the set's
// version: a change here changes every built-in text, so it does not share code that may evolve.

/** Deterministic stream for one sample: (set, version, seed, index) -> the same draws on every machine. */
export class CalibrationRandom {
  private state: number;

  constructor(...keys: (string | number)[]) {
    // FNV-1a over the keys, so sample i of seed s does not depend on how many samples are drawn
    let h = 0x811c9dc5;
    for (const key of keys) {
      const text = `${key}\u0000`;
      for (let i = 0; i < text.length; i++) {
        h ^= text.charCodeAt(i);
        h = Math.imul(h, 0x01000193) >>> 0;
      }
    }
    this.state = h;
  }

  /** next 32-bit unsigned integer (splitmix32) */
  u32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  }

  /** uniform integer in [min, max] */
  int(min: number, max: number): number {
    return min + Math.floor((this.u32() / 4294967296) * (max - min + 1));
  }

  /** a multiple of `step` in [min, max] (both multiples of step) */
  step(min: number, max: number, step: number): number {
    return this.int(min / step, max / step) * step;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  /** `count` different items, in random order */
  pickDistinct<T>(items: readonly T[], count: number): T[] {
    const pool = items.slice();
    const out: T[] = [];
    for (let i = 0; i < count && pool.length; i++) out.push(pool.splice(this.int(0, pool.length - 1), 1)[0]);
    return out;
  }

  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }
}
