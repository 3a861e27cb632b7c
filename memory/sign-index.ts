/**
 * An in-process binary (sign-bit) index for the vector prefilter of the sqlite-vec adapter.
 *
 * Why: sqlite-vec 0.1.9's `vec0` KNN is a brute-force scan. Measured on this project's 2-core
 * box at 100k × 384: float32 KNN ≈ 67 ms, int8 ≈ 60 ms, `bit[384]` hamming ≈ 5 ms at k = 10 but
 * ≈ 19 ms at k = 100 (its top-k selection grows with k), and point lookups by rowid ≈ 28 µs
 * each. A hamming scan here over the same sign bits (the ones `vec_quantize_binary` keeps) costs
 * ≈ 5 ms whatever the number of candidates, so the adapter takes a few thousand candidates from
 * it, ranks those by an int8 code of each vector (centered, kept only in this process: 1 byte per
 * dimension) and reranks the best of them exactly with float32 cosine. `vec0` stays the persistent
 * home of the bits (the index is rebuilt from it), the float32 vectors live in the memory rows.
 *
 * Why the int8 stage ranks right: for a center c, v·q = (v − c)·q + c·q, and c·q is the same for
 * every memory, so ordering by code(v − c)·q orders by v·q up to the codes' rounding.
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
  readonly dim: number;
  readonly #center: Float32Array | null;
  /** int8 code = round((v − c) · scale): 5 standard deviations of a centered unit vector's component map to 127 */
  readonly #scale: number;
  #rowids = new Float64Array(1024);
  #active = new Uint8Array(1024);
  #codes: Int8Array;
  #sigs: Uint32Array;
  #slot = new Map<number, number>();
  #n = 0;
  /** the highest rowid a load from the database has covered (own adds do not move it: another writer may have committed lower rowids meanwhile) */
  loadedUpTo = 0;

  constructor(dim: number, center: Float32Array | null) {
    this.dim = dim;
    this.bytes = Math.ceil(dim / 8);
    this.words = Math.ceil(this.bytes / 4);
    this.#center = center;
    this.#scale = 127 / (5 / Math.sqrt(dim));
    this.#sigs = new Uint32Array(1024 * this.words);
    this.#codes = new Int8Array(1024 * dim);
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
    const c = new Int8Array(cap * this.dim);
    c.set(this.#codes);
    this.#codes = c;
  }

  #words(sig: Uint8Array): Uint32Array {
    const padded = new Uint8Array(this.words * 4);
    padded.set(sig.subarray(0, Math.min(sig.length, padded.length)));
    return new Uint32Array(padded.buffer);
  }

  add(rowid: number, sig: Uint8Array, active: boolean, vector: ArrayLike<number>): void {
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
    const o = slot * this.dim;
    const c = this.#center;
    for (let i = 0; i < this.dim; i++) {
      const x = Math.round(((vector[i] ?? 0) - (c ? c[i]! : 0)) * this.#scale);
      this.#codes[o + i] = x > 127 ? 127 : x < -127 ? -127 : x;
    }
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
      this.#codes.copyWithin(s * this.dim, last * this.dim, (last + 1) * this.dim);
      this.#slot.set(lastRowid, s);
    }
    this.#slot.delete(rowid);
    this.#n--;
  }

  /**
   * Rowids of about `keep` memories nearest to `query`: the `prefilter` smallest hamming distances
   * of `querySig`, then the best `keep` of those by int8 code · query.
   */
  nearest(querySig: Uint8Array, query: ArrayLike<number>, prefilter: number, keep: number, includeInactive: boolean): number[] {
    const slots = this.#hamming(querySig, prefilter, includeInactive);
    if (slots.length <= keep) return slots.map((s) => this.#rowids[s]!);
    const D = this.dim;
    // the query in int8 too (its own scale: ranking only needs the order), so the dot products stay in small-integer arithmetic
    let max = 0;
    for (let i = 0; i < D; i++) max = Math.max(max, Math.abs(query[i] ?? 0));
    const q = new Int32Array(D);
    if (max > 0) for (let i = 0; i < D; i++) q[i] = Math.round(((query[i] ?? 0) / max) * 127);
    const codes = this.#codes;
    const scored = new Int32Array(slots.length);
    for (let k = 0; k < slots.length; k++) {
      const row = codes.subarray(slots[k]! * D, slots[k]! * D + D);
      let d = 0;
      for (let i = 0; i < D; i++) d += row[i]! * q[i]!;
      scored[k] = d;
    }
    const cut = Int32Array.from(scored).sort()[slots.length - keep]!;
    const out: number[] = [];
    for (let k = 0; k < slots.length && out.length < keep; k++) if (scored[k]! > cut) out.push(this.#rowids[slots[k]!]!);
    for (let k = 0; k < slots.length && out.length < keep; k++) if (scored[k] === cut) out.push(this.#rowids[slots[k]!]!);
    return out;
  }

  /** Slots of up to about `want` memories with the smallest hamming distance to `query` (ties at the cut included up to `want`). */
  #hamming(query: Uint8Array, want: number, includeInactive: boolean): number[] {
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
      if (d < cut) out.push(i);
      else if (d === cut && tiesLeft > 0) {
        out.push(i);
        tiesLeft--;
      }
    }
    return out;
  }
}
