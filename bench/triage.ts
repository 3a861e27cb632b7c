/**
 * `npm run bench -- triage [--json] [--quick]`: triage quality and latency on the held-out test
 * split of the labeled corpus (agents/inbound/fixtures/triage-corpus.json), for the rules alone
 * and with the learned tier (over the default embeddings when provisioned, and over n-grams
 * alone, which needs no model files). Each result carries `intent_accuracy`,
 * `escalation_recall` and `false_alarm_rate` besides the agreed fields; `notes` has per-intent
 * precision/recall, urgency accuracy, the calibration (ECE before/after temperature scaling) and,
 * for the learned tiers, the gain after 50 simulated operator corrections of the worst class.
 *
 * The test split is read here only: the rules and the training never see it.
 */
import { loadConfig } from '../config/index.ts';
import { INTENTS, cleanText, triageText, type Intent } from '../agents/inbound/index.ts';
import { LearnedTriage, corpusEmbeddingsCache, corpusExamples, defaultFeaturizer, exampleText, expectedCalibrationError, loadTriageCorpus, ngramFeaturizer, type CorpusItem, type Featurizer, type LabeledExample, type LearnedPrediction } from '../agents/inbound/index.ts';
import { figures, type Bench, type BenchContext, type ScenarioResult } from './lib.ts';

/** the confidence below which the router does not take the learned tier's intent (heuristics.ts CONFIDENCE_THRESHOLD) */
const THRESHOLD = 0.6;

export interface TriageQuality {
  intent_accuracy: number;
  escalation_recall: number;
  false_alarm_rate: number;
  urgency_accuracy: number;
  per_intent: Record<string, { precision: number; recall: number; support: number }>;
  /** test messages whose intent was wrong: id, expected, got */
  confusions: string[];
}

type Predicted = { intent: string; urgency: string; escalate: boolean };
const r3 = (n: number) => Math.round(n * 1000) / 1000;

/** Accuracy, per-intent precision/recall, escalation recall and false alarms of predictions against the labels. */
export function quality(items: CorpusItem[], got: Predicted[]): TriageQuality {
  const per: TriageQuality['per_intent'] = {};
  for (const i of INTENTS) {
    const tp = items.filter((x, k) => x.intent === i && got[k]!.intent === i).length;
    const predicted = got.filter((g) => g.intent === i).length;
    const support = items.filter((x) => x.intent === i).length;
    per[i] = { precision: r3(predicted ? tp / predicted : 0), recall: r3(support ? tp / support : 0), support };
  }
  const esc = items.map((x, k) => [x.escalate, got[k]!.escalate] as const);
  const pos = esc.filter(([t]) => t).length;
  const neg = esc.length - pos;
  return {
    intent_accuracy: r3(items.filter((x, k) => x.intent === got[k]!.intent).length / items.length),
    escalation_recall: r3(pos ? esc.filter(([t, g]) => t && g).length / pos : 1),
    false_alarm_rate: r3(neg ? esc.filter(([t, g]) => !t && g).length / neg : 0),
    urgency_accuracy: r3(items.filter((x, k) => x.urgency === got[k]!.urgency).length / items.length),
    per_intent: per,
    confusions: items.flatMap((x, k) => (x.intent === got[k]!.intent ? [] : [`${x.id}: ${x.intent} -> ${got[k]!.intent}`])),
  };
}

/** Rules alone on each item, timed per message (cleanup included). */
export function runRules(items: CorpusItem[]): { got: Predicted[]; lat: number[]; elapsed: number } {
  const got: Predicted[] = [];
  const lat: number[] = [];
  const t0 = performance.now();
  for (const x of items) {
    const s = performance.now();
    const t = triageText(cleanText(x.text), { subject: x.subject, priorContacts: x.priorContacts });
    lat.push(performance.now() - s);
    got.push({ intent: t.intent, urgency: t.urgency, escalate: t.escalate });
  }
  return { got, lat, elapsed: performance.now() - t0 };
}

/** The router: rules for urgency and escalation (they always win), the learned intent when it is sure enough, else the rules'. */
export function route(rules: Predicted & { confidence?: number }, learned: LearnedPrediction, threshold = THRESHOLD): Predicted {
  return { ...rules, intent: learned.confidence >= threshold ? learned.intent : rules.intent };
}

async function runLearned(model: LearnedTriage, items: CorpusItem[]): Promise<{ got: Predicted[]; learned: LearnedPrediction[]; lat: number[]; elapsed: number }> {
  const got: Predicted[] = [];
  const learned: LearnedPrediction[] = [];
  const lat: number[] = [];
  const t0 = performance.now();
  for (const x of items) {
    const s = performance.now();
    const t = triageText(cleanText(x.text), { subject: x.subject, priorContacts: x.priorContacts });
    const p = await model.predict(x.text, x.subject, t.intent);
    lat.push(performance.now() - s);
    learned.push(p);
    got.push(route(t, p));
  }
  return { got, learned, lat, elapsed: performance.now() - t0 };
}

function result(scenario: string, items: CorpusItem[], run: { got: Predicted[]; lat: number[]; elapsed: number }, notes: Record<string, unknown>): ScenarioResult & Pick<TriageQuality, 'intent_accuracy' | 'escalation_recall' | 'false_alarm_rate'> {
  const q = quality(items, run.got);
  return {
    scenario,
    ...figures(items.length, run.elapsed, run.lat),
    baseline: null,
    ratio: null,
    intent_accuracy: q.intent_accuracy,
    escalation_recall: q.escalation_recall,
    false_alarm_rate: q.false_alarm_rate,
    notes: { urgency_accuracy: q.urgency_accuracy, per_intent: q.per_intent, test_messages: items.length, confusions: q.confusions.slice(0, 40), ...notes },
  };
}

/**
 * The gain after `n` operator corrections: the class the learned tier recalls worst on the test
 * split; up to `n` of its train-split examples are held back from a base model (as if the
 * corpus had not covered how this business's customers phrase it) and then given back as
 * operator decisions (weight 3), retraining warm. Its test recall before and after.
 */
export async function correctionGain(featurizer: Featurizer, test: CorpusItem[], worst: Intent, n = 50): Promise<Record<string, unknown>> {
  const train = corpusExamples('train');
  const ofClass = train.filter((e) => e.intent === worst);
  const keep = Math.max(6, ofClass.length - n);
  const heldBack = ofClass.slice(keep);
  const base = await LearnedTriage.train(train.filter((e) => !heldBack.includes(e)), featurizer);
  const recall = async (m: LearnedTriage) => {
    const of = test.filter((x) => x.intent === worst);
    let hit = 0;
    for (const x of of) if ((await m.predict(x.text, x.subject)).intent === worst) hit++;
    return r3(hit / Math.max(1, of.length));
  };
  const before = await recall(base);
  const corrections: LabeledExample[] = heldBack.map((e) => ({ ...e, id: `op-${e.id}`, source: 'operator' }));
  const t0 = performance.now();
  const after = await LearnedTriage.train([...train.filter((e) => !heldBack.includes(e)), ...corrections], featurizer, { previous: base });
  const retrainMs = Math.round(performance.now() - t0);
  return { class: worst, corrections: corrections.length, recall_before: before, recall_after: await recall(after), retrain_ms: retrainMs };
}

async function learnedScenario(ctx: BenchContext, name: string, featurizer: Featurizer, test: CorpusItem[], extra: Record<string, unknown> = {}, uncached?: Featurizer): Promise<ScenarioResult> {
  ctx.progress(`${name}: training on the train split (${featurizer.id})`);
  const model = await LearnedTriage.train(corpusExamples('train'), featurizer);
  ctx.progress(`${name}: trained in ${model.report.trainMs} ms (temperature ${model.report.temperature})`);
  // a message never seen: the same model reading through a featurizer with no vector cache (what
  // a new customer mail costs: rules, n-gram model, and the embedding pass when the n-grams are unsure)
  let timing: Record<string, unknown> = {};
  if (uncached) {
    const fresh = model.withFeaturizer(uncached);
    await fresh.predict('warm up the embedding model', 'warm-up');
    ctx.progress(`${name}: timing never-seen messages (no vector cache)`);
    const cpu0 = process.cpuUsage();
    const r = await runLearned(fresh, test);
    const cpu = process.cpuUsage(cpu0);
    const f = figures(test.length, r.elapsed, r.lat);
    timing = { uncached_p50_ms: f.p50_ms, uncached_p99_ms: f.p99_ms, uncached_cpu_ms_per_message: r3((cpu.user + cpu.system) / 1000 / test.length), uncached_embedded: r.learned.filter((p) => !p.fast).length };
  }
  const run = await runLearned(model, test);
  const conf = run.learned.map((p) => p.confidence);
  const ok = run.learned.map((p, k) => p.intent === test[k]!.intent);
  const alone = quality(test, run.learned.map((p, k) => ({ intent: p.intent, urgency: test[k]!.urgency, escalate: false })));
  const q = quality(test, run.got);
  // the worst-recalled class; and the worst among those with 50 train examples to hold back (plus 6 kept)
  const trainCount = (i: Intent) => corpusExamples('train').filter((e) => e.intent === i).length;
  const worstOf = (xs: Intent[]) => xs.reduce((w, i) => (q.per_intent[i]!.recall < q.per_intent[w]!.recall ? i : w), xs[0]!);
  const worst = worstOf([...INTENTS]);
  const worst50 = worstOf(INTENTS.filter((i) => trainCount(i) >= 56));
  const gain: unknown[] = [];
  for (const cls of [...new Set([worst, worst50])]) {
    ctx.progress(`${name}: up to 50 simulated corrections of '${cls}'`);
    gain.push(ctx.quick ? { class: cls, skipped: '--quick' } : await correctionGain(featurizer, test, cls));
  }
  return result(name, test, run, {
    featurizer: featurizer.id,
    learned_alone_accuracy: alone.intent_accuracy,
    threshold: THRESHOLD,
    below_threshold: conf.filter((c) => c < THRESHOLD).length,
    calibration: { temperature: model.report.temperature, ece_heldout_train_before: model.report.eceBefore, ece_heldout_train_after: model.report.eceAfter, ece_test: r3(expectedCalibrationError(conf, ok)) },
    train_ms: model.report.trainMs,
    fast_path: { answered_without_embedding: run.learned.filter((p) => p.fast).length, of: test.length },
    ...timing,
    corrections: gain,
    ...extra,
  });
}

/** Embedding time per message with no cache: the MiniLM forward pass a new message costs. */
async function uncachedEmbedLatency(cfg: ReturnType<typeof loadConfig>, items: CorpusItem[]): Promise<{ p50: number; p99: number }> {
  const d = await defaultFeaturizer(cfg);
  if (!('featurizer' in d)) return { p50: NaN, p99: NaN };
  await d.featurizer.features(['warm-up']);
  const lat: number[] = [];
  for (const x of items) {
    const s = performance.now();
    await d.featurizer.features([exampleText(x.text, x.subject)]);
    lat.push(performance.now() - s);
  }
  const f = figures(lat.length, lat.reduce((a, b) => a + b, 0), lat);
  return { p50: f.p50_ms, p99: f.p99_ms };
}

export const triageBench: Bench = {
  name: 'triage',
  description: 'triage quality (intent accuracy, escalation recall/false alarms) and latency on the corpus test split: rules, and rules + learned tier',
  async run(ctx) {
    const all = loadTriageCorpus();
    const test = all.filter((x) => x.split === 'test');
    const results: ScenarioResult[] = [];
    ctx.progress(`rules on ${test.length} test messages`);
    runRules(test.slice(0, 5)); // loads wink-nlp's model outside the timing
    results.push(result('rules (tier 0)', test, runRules(test), {}));

    const cfg = loadConfig();
    // vectors are cached by text hash beside the models: a second run embeds nothing
    const d = await defaultFeaturizer(cfg, corpusEmbeddingsCache(cfg.modelsDir));
    if ('featurizer' in d) {
      ctx.progress(`embedding the ${all.length} corpus messages once (cached for later runs)`);
      await d.featurizer.features(all.map((x) => exampleText(x.text, x.subject)));
      const embedMs = await uncachedEmbedLatency(cfg, test.slice(0, ctx.quick ? 5 : 20));
      const fresh = await defaultFeaturizer(cfg);
      results.push(await learnedScenario(ctx, 'rules + learned (embeddings + n-grams)', d.featurizer, test, { embedding_p50_ms_uncached: embedMs.p50, embedding_p99_ms_uncached: embedMs.p99, latency_note: 'p50/p99 use cached vectors; uncached_p50_ms/uncached_p99_ms time the same model on never-seen messages (no vector cache): the embedding pass runs only when the n-gram model is unsure' }, 'featurizer' in fresh ? fresh.featurizer : undefined));
    } else ctx.progress(`no embeddings: ${d.missing}`);
    results.push(await learnedScenario(ctx, 'rules + learned (n-grams only)', ngramFeaturizer(), test));
    return { results, machine: { corpus: { messages: all.length, train: all.length - test.length, test: test.length }, ...('missing' in d ? { embeddings: d.missing } : { embeddings: cfg.embeddings }) } };
  },
};
