/**
 * The WebAssembly SIMD backend of the embedded all-MiniLM-L6-v2: the committed kernel bytes are
 * what kernel.wat compiles to; its matrix products and attention agree with the TypeScript ones
 * on random data (every row-tail shape); with the real weights (`npm run provision`) both
 * backends give the same vectors, and a long call lets the event loop run and queues with
 * concurrent calls. Model tests skip, saying why, when the model is not provisioned.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config/index.ts';
import { LocalMiniLMEmbeddings, localMiniLMDir, localMiniLMPresent } from '../../memory/embeddings/index.ts';
import { attend, erf, erfFast, jsKernel, type BertWeights, type Linear } from '../../memory/embeddings/bert.ts';
import { WasmLinearKernel, wasmSimdSupported } from '../../memory/embeddings/kernel.ts';
import { KERNEL_WASM_BASE64 } from '../../memory/embeddings/kernel-wasm.ts';
import { compileKernelWat } from '../../memory/embeddings/kernel-build.ts';

/** deterministic pseudo-random floats in [-1, 1) */
function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}
const fill = (n: number, r: () => number): Float32Array => Float32Array.from({ length: n }, r);

/** A fake one-layer model whose linear layers have the given sizes (only `layers` is read by the kernel). */
function fakeWeights(r: () => number, H: number, I: number): BertWeights {
  const lin = (out: number, inn: number): Linear => ({ w: fill(out * inn, r), b: fill(out, r), in: inn, out });
  const ln = { g: fill(H, r), b: fill(H, r) };
  return {
    config: { hiddenSize: H, numLayers: 1, numHeads: 2, intermediateSize: I, vocabSize: 1, maxPositions: 16, typeVocabSize: 1, layerNormEps: 1e-12 },
    wordEmb: fill(H, r),
    posEmb: fill(16 * H, r),
    typeEmb: fill(H, r),
    embLn: ln,
    layers: [{ q: lin(H, H), k: lin(H, H), v: lin(H, H), o: lin(H, H), ln1: ln, up: lin(I, H), down: lin(H, I), ln2: ln }],
  };
}

describe('WebAssembly SIMD kernel', () => {
  it('kernel-wasm.ts holds exactly what kernel.wat compiles to (re-run kernel-build.ts after editing the .wat)', async () => {
    const compiled = await compileKernelWat();
    expect(Buffer.from(KERNEL_WASM_BASE64, 'base64').equals(Buffer.from(compiled))).toBe(true);
    expect(wasmSimdSupported()).toBe(true);
  });

  it('linear layers match the TypeScript kernel for 1-9 rows (4-row tiles and tails), in [out,in] → panel layout', () => {
    const r = rand(7);
    const H = 16;
    const I = 24;
    const w = fakeWeights(r, H, I);
    const js = jsKernel();
    const jsOut = new Map<string, Float32Array>();
    for (let n = 1; n <= 9; n++) {
      const x = fill(n * I, r);
      for (const [name, L] of [['q', w.layers[0]!.q], ['up', w.layers[0]!.up], ['down', w.layers[0]!.down]] as const) {
        const inp = name === 'down' ? x : x.subarray(0, n * H);
        const { y } = js.buffers({ y: n * L.out });
        js.linear(inp, n, L, y);
        jsOut.set(`${name}${n}`, y.slice(0, n * L.out));
      }
      jsOut.set(`x${n}`, x);
    }
    const wasm = new WasmLinearKernel(w, { release: true });
    expect(w.layers[0]!.up.w.length).toBe(0); // released: the kernel holds the only copy
    for (let n = 1; n <= 9; n++) {
      for (const [name, L] of [['q', w.layers[0]!.q], ['up', w.layers[0]!.up], ['down', w.layers[0]!.down]] as const) {
        const { x, y } = wasm.buffers({ x: n * I, y: n * L.out });
        x.set(name === 'down' ? jsOut.get(`x${n}`)! : jsOut.get(`x${n}`)!.subarray(0, n * H));
        wasm.linear(x, n, L, y);
        const want = jsOut.get(`${name}${n}`)!;
        const diff = Math.max(...Array.from(want, (v, i) => Math.abs(v - y[i]!)));
        expect(diff, `${name} n=${n}`).toBeLessThan(1e-5);
      }
    }
    const { x } = wasm.buffers({ x: 4 });
    expect(() => wasm.linear(new Float32Array(64), 1, w.layers[0]!.q, x)).toThrow(/buffers\(\)/);
    expect(() => new WasmLinearKernel(fakeWeights(r, 12, 24))).toThrow(/multiple of 8/);
  });

  it('attention matches the TypeScript one for texts of 1, 3 and 7 tokens at an offset', () => {
    const r = rand(11);
    const H = 16;
    const nh = 2;
    const n = 12;
    const wasm = new WasmLinearKernel(fakeWeights(r, H, 8));
    for (const [base, L] of [[0, 1], [2, 3], [5, 7]] as const) {
      const q = fill(n * H, r);
      const k = fill(n * H, r).map((v) => v * 3);
      const v = fill(n * H, r);
      const want = new Float32Array(n * H);
      attend(q, k, v, want, base, L, H, nh, new Float32Array(L));
      const b = wasm.buffers({ q: n * H, k: n * H, v: n * H, ctx: n * H, scores: L * L });
      b.q.set(q);
      b.k.set(k);
      b.v.set(v);
      wasm.attend(b.q, b.k, b.v, b.ctx, base, L, H, nh, b.scores);
      for (let i = base * H; i < (base + L) * H; i++) expect(Math.abs(b.ctx[i]! - want[i]!), `L=${L} @${i}`).toBeLessThan(1e-5);
    }
  });

  it('the table erf of the GELU is within 2e-7 of erf everywhere', () => {
    let worst = 0;
    for (let x = -8; x <= 8; x += 1 / 1024 + 1e-7) worst = Math.max(worst, Math.abs(erfFast(x) - erf(x)));
    expect(worst).toBeLessThan(2e-7);
    expect(erfFast(0)).toBe(0);
    expect(erfFast(9)).toBe(1);
    expect(erfFast(-9)).toBe(-1);
  });
});

const modelsDir = loadConfig().modelsDir;
let provisioned = false;
let skipReason = '';
beforeAll(async () => {
  provisioned = await localMiniLMPresent(modelsDir);
  if (!provisioned) skipReason = `the all-MiniLM-L6-v2 files are not in ${localMiniLMDir(modelsDir)}: run \`npm run provision\``;
});

const TICKET =
  'Hello team, I was charged twice for the annual plan this month and the second charge still shows on my card statement. I contacted support last week through the chat widget but nobody followed up. Could you please refund the duplicate charge and confirm by email when it is done?';

describe('local all-MiniLM-L6-v2 on the wasm backend', () => {
  it('is the default, and gives the TypeScript backend’s vectors to 1e-4', async (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    const wasm = new LocalMiniLMEmbeddings({ modelsDir });
    const js = new LocalMiniLMEmbeddings({ modelsDir, backend: 'js' });
    expect((await wasm.load()).backend).toBe('wasm');
    expect((await js.load()).backend).toBe('js');
    expect(await wasm.load()).not.toBe(await js.load());
    const texts = ['A man is eating food.', '', 'x', 'Héllo naïve CAFÉ 東京', TICKET, `${TICKET} `.repeat(8), 'reset my password'];
    const a = await wasm.embedF32(texts);
    const b = await js.embedF32(texts);
    for (const [i, t] of texts.entries()) {
      const diff = Math.max(...Array.from(a[i]!, (v, k) => Math.abs(v - b[i]![k]!)));
      expect(diff, t.slice(0, 30)).toBeLessThan(1e-4);
      expect(Math.hypot(...a[i]!)).toBeCloseTo(1, 5);
    }
  });

  it('a long call lets the event loop run between layers, and concurrent calls queue without mixing', async (ctx) => {
    if (!provisioned) return ctx.skip(skipReason);
    const emb = new LocalMiniLMEmbeddings({ modelsDir });
    const texts = Array.from({ length: 24 }, (_, i) => `${TICKET} (case ${i})`);
    const alone = await emb.embedF32(texts.slice(0, 3));
    let ran = false;
    setImmediate(() => (ran = true));
    const p1 = emb.embedF32(texts);
    const p2 = emb.embedF32(texts.slice(0, 3).reverse());
    const [r1, r2] = await Promise.all([p1, p2]);
    expect(ran, 'a setImmediate queued at the start ran before the call finished').toBe(true);
    for (let i = 0; i < 3; i++) {
      expect(Math.max(...Array.from(r1[i]!, (v, k) => Math.abs(v - alone[i]![k]!)))).toBeLessThan(1e-5);
      expect(Math.max(...Array.from(r2[2 - i]!, (v, k) => Math.abs(v - alone[i]![k]!)))).toBeLessThan(1e-5);
    }
  });
});
