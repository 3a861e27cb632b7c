/**
 * The learned tier's pieces: the optimizer learns, temperature scaling recovers a known
 * temperature and lowers the calibration error, ECE is computed right, and LearnedTriage trains
 * on examples (n-gram features: no model files) and retrains warm with an operator's decisions.
 */
import { describe, expect, it } from 'vitest';
import { EMBED_WORDS, FAST_CONFIDENCE, LearnedTriage, embeddingHead, expectedCalibrationError, fitTemperature, hashedNgrams, logitsOf, ngramFeaturizer, nll, softmax, trainSoftmax, type Featurizer, type LabeledExample } from '../../../agents/inbound/learned.ts';

/** a seeded PRNG and a normal sample */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const gauss = (r: () => number) => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());

describe('softmax regression', () => {
  it('separates three gaussian blobs it was not shown and its loss falls with training', () => {
    const r = rng(7);
    const centers = [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]];
    const sample = (n: number) => Array.from({ length: n }, (_, k) => ({ y: k % 3, x: Float32Array.from(centers[k % 3]!, (c) => c + 0.6 * gauss(r)) }));
    const train = sample(150), test = sample(90);
    const few = trainSoftmax(train.map((s) => s.x), train.map((s) => s.y), 3, { epochs: 1 });
    const many = trainSoftmax(train.map((s) => s.x), train.map((s) => s.y), 3, { epochs: 80 });
    const loss = (m: typeof few) => nll(train.map((s) => logitsOf(m, 3, s.x)), train.map((s) => s.y), 1);
    expect(loss(many)).toBeLessThan(loss(few));
    const acc = test.filter((s) => { const p = softmax(logitsOf(many, 3, s.x)); return p.indexOf(Math.max(...p)) === s.y; }).length / test.length;
    expect(acc).toBeGreaterThan(0.9);
  });

  it('example weights pull the boundary toward the weighted class', () => {
    const X = [Float32Array.from([1, 0]), Float32Array.from([1, 0.1])];
    const y = [0, 1];
    const p = (w: number[]) => softmax(logitsOf(trainSoftmax(X, y, 2, { epochs: 100, weights: w }), 2, Float32Array.from([1, 0.05])))[1]!;
    expect(p([1, 5])).toBeGreaterThan(p([5, 1]));
  });
});

describe('calibration', () => {
  it('fitTemperature recovers the temperature that made overconfident logits', () => {
    const r = rng(11);
    // labels drawn from softmax(z), then the logits shown sharpened 3x: the right temperature is 3
    const logits: number[][] = [], y: number[] = [];
    for (let k = 0; k < 3000; k++) {
      const z = [gauss(r), gauss(r), gauss(r), gauss(r)];
      const p = softmax(z);
      let u = r(), c = 0;
      while (c < 3 && u > p[c]!) u -= p[c++]!;
      y.push(c);
      logits.push(z.map((v) => v * 3));
    }
    const t = fitTemperature(logits, y);
    expect(t).toBeGreaterThan(2.6);
    expect(t).toBeLessThan(3.4);
    const conf = (tt: number) => logits.map((z) => Math.max(...softmax(z, tt)));
    const ok = logits.map((z, k) => { const p = softmax(z); return p.indexOf(Math.max(...p)) === y[k]; });
    expect(expectedCalibrationError(conf(t), ok)).toBeLessThan(expectedCalibrationError(conf(1), ok) / 2);
  });

  it('ECE is the size-weighted gap between accuracy and confidence per bin', () => {
    // bin 0.9-1.0: 4 at 0.95, 2 right (acc 0.5, gap 0.45); bin 0.5-0.6: 2 at 0.55, both right (gap 0.45)
    expect(expectedCalibrationError([0.95, 0.95, 0.95, 0.95, 0.55, 0.55], [true, true, false, false, true, true])).toBeCloseTo(0.45, 6);
    expect(expectedCalibrationError([0.8, 0.8], [true, true])).toBeCloseTo(0.2, 6);
    expect(expectedCalibrationError([], [])).toBe(0);
  });
});

describe('LearnedTriage', () => {
  const ex = (id: string, intent: LabeledExample['intent'], text: string): LabeledExample => ({ id, text, intent, source: 'corpus', group: id });
  const base: LabeledExample[] = [
    ...['I want my money back for order 1', 'please refund the last payment', 'refund me, the item broke', 'can I get a refund for the course', 'send the money back to my card', 'refund request for the jacket'].map((t, i) => ex(`r${i}`, 'refund', t)),
    ...['the app crashes when I open it', 'error 500 on the dashboard', 'the export button does nothing', 'login page is broken', 'images do not load since yesterday', 'the editor freezes on save'].map((t, i) => ex(`b${i}`, 'bug', t)),
    ...['how do I add a user', 'do you ship to Canada', 'is there a student discount', 'where can I find the API docs', 'what does the pro plan include', 'can I change my email address'].map((t, i) => ex(`q${i}`, 'question', t)),
  ];

  it('trains, predicts with calibrated probabilities that sum to 1, and reports its calibration', async () => {
    const m = await LearnedTriage.train(base, ngramFeaturizer(1024), { epochs: 80 });
    const p = await m.predict('the dashboard shows error 500 again');
    expect(p.intent).toBe('bug');
    expect(Object.values(p.probs).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 2);
    expect(p.confidence).toBe(p.probs.bug);
    expect(m.report).toMatchObject({ examples: base.length, operatorExamples: 0, featurizer: 'ngrams:1024' });
    expect(m.report.temperature).toBeGreaterThan(0);
  });

  it("an operator's decisions change what it says about similar messages, retraining warm", async () => {
    const m = await LearnedTriage.train(base, ngramFeaturizer(1024), { epochs: 80 });
    const msg = 'we will not be needing the tool after the project ends';
    const before = await m.predict(msg);
    expect(before.intent).not.toBe('cancellation');
    const ops: LabeledExample[] = ['we will not be needing the service after march', 'not needing the tool anymore, the project ended', 'after the project ends we will not need the plan'].map((t, i) => ({ id: `op${i}`, text: t, intent: 'cancellation', source: 'operator' }));
    const after = await LearnedTriage.train([...base, ...ops], ngramFeaturizer(1024), { previous: m });
    expect(after.report.operatorExamples).toBe(3);
    expect((await after.predict(msg)).intent).toBe('cancellation');
  });

  it('the fast n-gram model answers alone when it agrees with the rules; else the costly features are computed', async () => {
    // a "costly" part (standing in for the embedding model) that counts the texts it is asked for
    const asked: string[] = [];
    const ng = ngramFeaturizer(1024);
    const costly: Featurizer = {
      id: 'counting+ngrams:1024',
      dim: 1024 + 4,
      fast: ng,
      async features(texts) {
        asked.push(...texts);
        const n = await ng.features(texts);
        return n.map((v) => { const o = new Float32Array(1028); o.set(v, 4); return o; });
      },
    };
    const m = await LearnedTriage.train(base, costly, { epochs: 80 });
    asked.length = 0;
    const agreed = await m.predict('the export button crashes the app', undefined, 'bug');
    expect(agreed).toMatchObject({ intent: 'bug', fast: true });
    expect(asked).toEqual([]);
    // the rules say something else and the n-gram model is not sure: the full model is asked
    const unsure = await m.predict('hello there', undefined, 'praise');
    if (unsure.fast) expect(unsure.confidence).toBeGreaterThanOrEqual(FAST_CONFIDENCE);
    else expect(asked).toHaveLength(1);
    // without the rules' answer, only a sure n-gram model answers alone
    const p = await m.predict('zzz qqq', undefined);
    expect(p.fast === true ? p.confidence >= FAST_CONFIDENCE : asked.length >= 1).toBe(true);
  });

  it('the embedding model reads the head of a long message', () => {
    const long = Array.from({ length: 200 }, (_, i) => `w${i}`).join(' ');
    expect(embeddingHead(long).split(' ')).toHaveLength(EMBED_WORDS);
    expect(embeddingHead('short text\nkept as is')).toBe('short text\nkept as is');
  });

  it('n-gram features are unit length and share most of a misspelt word', () => {
    const a = hashedNgrams('refund', 2048), b = hashedNgrams('refnud', 2048), c = hashedNgrams('calendar', 2048);
    const dot = (x: Float32Array, y: Float32Array) => x.reduce((s, v, i) => s + v * y[i]!, 0);
    expect(dot(a, a)).toBeCloseTo(1, 5);
    expect(dot(a, b)).toBeGreaterThan(dot(a, c));
  });
});
