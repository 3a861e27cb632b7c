/**
 * The WebAssembly SIMD {@link LinearKernel}: the matrix product of kernel.wat (f32x4, 4 rows ×
 * 8 outputs per inner loop; ~10 GMAC/s a core against ~1 for the TypeScript one), with the
 * linear layers' weights copied into the module's memory once, transposed and packed in panels of
 * 8 outputs (read in order by the inner loop), and
 * a forward pass's buffers placed after them, so the rest of the forward (attention,
 * LayerNorm, GELU, in TypeScript) works on them in place: nothing is copied per call.
 * The bytes are compiled from kernel.wat ahead of time (kernel-build.ts): no native build, no
 * compiler at run time.
 */
import { softmaxRows, type BertWeights, type Linear, type LinearKernel } from './bert.ts';
import { KERNEL_WASM_BASE64 } from './kernel-wasm.ts';

const PAGE = 65536;

// the tsconfig's libs (ES2024, node) do not declare WebAssembly: the little used here
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;

let bytes: Uint8Array | undefined;
function kernelBytes(): Uint8Array {
  return (bytes ??= Uint8Array.from(Buffer.from(KERNEL_WASM_BASE64, 'base64')));
}

/** Whether this runtime runs WebAssembly with SIMD (Node ≥ 16.4 does). */
export function wasmSimdSupported(): boolean {
  try {
    return wasm !== undefined && wasm.validate(kernelBytes());
  } catch {
    return false;
  }
}

type LinearFn = (x: number, n: number, K: number, wt: number, O: number, b: number, y: number) => void;
type HeadFn = (a: number, b: number, out: number, L: number, stride: number, dh: number) => void;

interface Placed {
  wt: number;
  b: number;
}

export class WasmLinearKernel implements LinearKernel {
  readonly name = 'wasm-simd' as const;
  private readonly memory: WasmMemory;
  private readonly fn: LinearFn;
  private readonly scoresFn: HeadFn;
  private readonly mixFn: HeadFn;
  private readonly placed = new Map<Linear, Placed>();
  /** first byte after the weights: where the buffers start */
  private readonly heap: number;

  /**
   * Copies every linear layer of `w` into the module's memory. With `release`, the JS copies of
   * those weights are dropped afterwards (`Linear.w` becomes empty), so the weights are held
   * once: the same `w` then works only with this kernel.
   */
  constructor(w: BertWeights, o: { release?: boolean } = {}) {
    const linears = w.layers.flatMap((l) => [l.q, l.k, l.v, l.o, l.up, l.down]);
    let floats = 0;
    for (const L of linears) {
      if (L.out % 8 !== 0 || L.in < 1) throw new Error(`wasm kernel: a ${L.out}×${L.in} linear layer is not supported (outputs must be a multiple of 8)`);
      floats += align4(L.in * L.out) + align4(L.out);
    }
    if (!wasm) throw new Error('wasm kernel: this runtime has no WebAssembly');
    const instance = new wasm.Instance(new wasm.Module(kernelBytes()), {});
    // the module defines its own (1-page) memory: grow it to hold the weights
    this.memory = instance.exports.memory as WasmMemory;
    this.memory.grow(Math.ceil((floats * 4) / PAGE));
    this.fn = instance.exports.linear as LinearFn;
    this.scoresFn = instance.exports.scores as HeadFn;
    this.mixFn = instance.exports.mix as HeadFn;
    const f = new Float32Array(this.memory.buffer);
    let at = 0; // in floats
    for (const L of linears) {
      const { in: K, out: O, w: src } = L;
      const wt = at;
      // panels of 8 outputs, each K rows of 8 (see kernel.wat)
      for (let o = 0; o < O; o++) {
        const row = o * K;
        const dst = wt + (o >> 3) * K * 8 + (o & 7);
        for (let k = 0; k < K; k++) f[dst + k * 8] = src[row + k]!;
      }
      at += align4(K * O);
      const b = at;
      f.set(L.b, b);
      at += align4(O);
      this.placed.set(L, { wt: wt * 4, b: b * 4 });
      if (o.release) L.w = new Float32Array(0);
    }
    this.heap = at * 4;
  }

  /** bytes of WebAssembly memory in use (weights + the largest pass's buffers so far) */
  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  buffers<K extends string>(sizes: Record<K, number>): Record<K, Float32Array> {
    const names = Object.keys(sizes) as K[];
    let end = this.heap;
    const offsets: number[] = [];
    for (const k of names) {
      offsets.push(end);
      end += align4(sizes[k]) * 4;
    }
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / PAGE));
    // after a grow the old views are detached: make new ones every call
    const buf = this.memory.buffer;
    const out = {} as Record<K, Float32Array>;
    names.forEach((k, i) => (out[k] = new Float32Array(buf, offsets[i]!, sizes[k])));
    return out;
  }

  linear(x: Float32Array, n: number, L: Linear, y: Float32Array): void {
    const p = this.placed.get(L);
    if (!p) throw new Error('wasm kernel: this linear layer was not loaded into the kernel');
    const buf = this.memory.buffer;
    if (x.buffer !== buf || y.buffer !== buf) throw new Error('wasm kernel: operands must come from buffers()');
    if (x.length < n * L.in || y.length < n * L.out) throw new Error('wasm kernel: operand buffers too small');
    this.fn(x.byteOffset, n, L.in, p.wt, L.out, p.b, y.byteOffset);
  }

  /** per head: scores = q·kᵀ (wasm), softmax (TypeScript: wasm has no exp), ctx = p·v (wasm) */
  attend(q: Float32Array, k: Float32Array, v: Float32Array, ctx: Float32Array, base: number, L: number, H: number, nh: number, scores: Float32Array): void {
    const buf = this.memory.buffer;
    if (q.buffer !== buf || k.buffer !== buf || v.buffer !== buf || ctx.buffer !== buf || scores.buffer !== buf) throw new Error('wasm kernel: operands must come from buffers()');
    const dh = H / nh;
    if (dh % 4 !== 0 || scores.length < L * L || ctx.length < (base + L) * H) throw new Error('wasm kernel: unsupported attention shape');
    const stride = H * 4;
    const row = base * stride;
    const scale = 1 / Math.sqrt(dh);
    for (let hd = 0; hd < nh; hd++) {
      const col = row + hd * dh * 4;
      this.scoresFn(q.byteOffset + col, k.byteOffset + col, scores.byteOffset, L, stride, dh);
      softmaxRows(scores, L, L, scale);
      this.mixFn(scores.byteOffset, v.byteOffset + col, ctx.byteOffset + col, L, stride, dh);
    }
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
