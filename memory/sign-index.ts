/**
 * An in-process binary (sign-bit) index for the vector prefilter of the sqlite-vec adapter.
 *
 * Why: sqlite-vec 0.1.9's `vec0` KNN is a brute-force scan. Measured on this project's 2-core
 * box at 100k × 384: float32 KNN ≈ 67 ms, int8 ≈ 60 ms, `bit[384]` hamming ≈ 5 ms at k = 10 but
 * ≈ 19 ms at k = 100 (its top-k selection grows with k), and point lookups by rowid ≈ 28 µs
 * each. A hamming scan here over the same sign bits (the ones `vec_quantize_binary` keeps) costs
 * ≈ 5 ms whatever the number of candidates, so the adapter takes a few hundred candidates from it
 * and reranks them exactly with float32 cosine. `vec0` stays the persistent home of the bits
 * (the index is rebuilt from it), the float32 vectors live in the memory rows.
 */

const POPCOUNT16 = (() => {
  const t = new Uint8Array(65536);
  for (let i = 1; i < 65536; i++) t[i] = (i & 1) + t[i >> 1]!;
  return t;
})();

/** Sign bits of `v` (bit j set when v[j] > 0), padded to whole bytes: the layout stored in `bit[N]`. */
export function signBits(v: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(Math.ceil(v.length / 8));
  for (let j = 0; j < v.length; j++) if (v[j]! > 0) out[j >> 3]! |= 1 << (j & 7);
  return out;
}

export class SignIndex {
  readonly bytes: number;
  readonly words: number;
  #rowids = new Float64Array(1024);
  #active = new Uint8Array(1024);
  #sigs: Uint32Array;
  #slot = new Map<number, number>();
  #n = 0;
  /** the highest rowid a load from the database has covered (own adds do not move it: another writer may have committed lower rowids meanwhile) */
  loadedUpTo = 0;

  constructor(bytes: number) {
    this.bytes = bytes;
    this.words = Math.ceil(bytes / 4);
    this.#sigs = new Uint32Array(1024 * this.words);
  }

  get size(): number {
    return this.#n;
  }

  #grow(): void {
    const cap = this.#rowids.length * 2;
    const r = new Float64Array(cap);
    r.set(this.#rowids);
    this.#rowids = r;
    const a = new Uint8Array(cap);
    a.set(this.#active);
    this.#active = a;
    const s = new Uint32Array(cap * this.words);
    s.set(this.#sigs);
    this.#sigs = s;
  }

  #words(sig: Uint8Array): Uint32Array {
    const padded = new Uint8Array(this.words * 4);
    padded.set(sig.subarray(0, Math.min(sig.length, padded.length)));
    return new Uint32Array(padded.buffer);
  }

  add(rowid: number, sig: Uint8Array, active: boolean): void {
    const existing = this.#slot.get(rowid);
    const slot = existing ?? this.#n;
    if (existing === undefined) {
      if (this.#n === this.#rowids.length) this.#grow();
      this.#n++;
      this.#slot.set(rowid, slot);
    }
    this.#rowids[slot] = rowid;
    this.#active[slot] = active ? 1 : 0;
    this.#sigs.set(this.#words(sig), slot * this.words);
  }

  setActive(rowid: number, active: boolean): void {
    const s = this.#slot.get(rowid);
    if (s !== undefined) this.#active[s] = active ? 1 : 0;
  }

  remove(rowid: number): void {
    const s = this.#slot.get(rowid);
    if (s === undefined) return;
    const last = this.#n - 1;
    if (s !== last) {
      const lastRowid = this.#rowids[last]!;
      this.#rowids[s] = lastRowid;
      this.#active[s] = this.#active[last]!;
      this.#sigs.copyWithin(s * this.words, last * this.words, (last + 1) * this.words);
      this.#slot.set(lastRowid, s);
    }
    this.#slot.delete(rowid);
    this.#n--;
  }

  /** Up to about `want` rowids with the smallest hamming distance to `query` (ties at the cut included up to `want`). */
  nearest(query: Uint8Array, want: number, includeInactive: boolean): number[] {
    const q = this.#words(query);
    const W = this.words;
    const n = this.#n;
    const sigs = this.#sigs;
    const dist = new Uint16Array(n);
    const hist = new Uint32Array(this.bytes * 8 + 1);
    for (let i = 0, o = 0; i < n; i++, o += W) {
      if (!includeInactive && this.#active[i] === 0) {
        dist[i] = 0xffff;
        continue;
      }
      let d = 0;
      for (let w = 0; w < W; w++) {
        const x = (sigs[o + w]! ^ q[w]!) >>> 0;
        d += POPCOUNT16[x & 0xffff]! + POPCOUNT16[x >>> 16]!;
      }
      dist[i] = d;
      hist[d]!++;
    }
    let cut = 0;
    let below = 0;
    while (cut < hist.length && below + hist[cut]! < want) below += hist[cut++]!;
    let tiesLeft = want - below;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const d = dist[i]!;
      if (d < cut) out.push(this.#rowids[i]!);
      else if (d === cut && tiesLeft > 0) {
        out.push(this.#rowids[i]!);
        tiesLeft--;
      }
    }
    return out;
  }
}
