/**
 * Batching of low-urgency model work (summaries, digests): items wait in a window
 * (`KEEL_BATCH_WINDOW_MS`) or until the batch holds `KEEL_BATCH_SIZE` of them, then go out as ONE
 * model call; urgent items never wait (each is its own call at once).
 *
 * The call's cost is split across the items by their share of the prompt (characters of each
 * item's text, the instructions shared evenly), and the ledger gets ONE record per item — with
 * the item's own customer, run, agent and entity, its share of tokens and cost, and
 * `details.batch = { id, size, share, totalUsd }` — so `keel cost --by customer` (or `--by run`)
 * charges each customer for what was done for them. The shares add up to the call's cost exactly.
 *
 * ```ts
 * const summaries = createBatcher({
 *   kind: 'ticket.summarize', models, tier: 'small', costs: store,
 *   windowMs: cfg.batchWindowMs, size: cfg.batchSize,
 *   instructions: 'Summarize each support thread in at most 5 short sentences.',
 * });
 * const { text, costUsd } = await summaries.submit({ text: thread, attribution: { agent: 'summarizer', capability: 'ticket.summarize', customerId, runId } });
 * await summaries.close();   // sends what is waiting
 * ```
 *
 * The model is asked to answer each item under its own `### ITEM k` line; an item it left out
 * fails (retryable `MODEL_ERROR`), the others are answered.
 */
import { randomUUID } from 'node:crypto';
import type { CostInput } from '../shared-state/index.ts';
import { ModelError, toModelError } from './errors.ts';
import { invokeModel, type CostAttribution, type CostSink, type InvokeModelOptions } from './invoke.ts';
import { roundUsd, type TokenUsage } from './prices.ts';
import type { ModelRegistry } from './registry.ts';
import { ownRestorer, sensitiveSourceOf, type SensitiveRef, type SensitiveSource } from './redact.ts';

/** The redaction inputs of a batch: the sink's store and every item's customer and entity. */
function sensitiveOf(items: readonly CostAttribution[], source: SensitiveSource | undefined): { sensitiveSource?: SensitiveSource; sensitiveRefs?: SensitiveRef[] } {
  const refs: SensitiveRef[] = [];
  for (const a of items) {
    if (a.customerId) refs.push({ entityId: a.customerId });
    if (a.entityType && a.entityId) refs.push({ entityType: a.entityType, entityId: a.entityId });
  }
  return { ...(source ? { sensitiveSource: source } : {}), ...(refs.length ? { sensitiveRefs: refs } : {}) };
}

export type Urgency = 'low' | 'normal' | 'high';

export interface BatchItem {
  /** the item's own content (a thread to summarize, a digest's events) */
  text: string;
  /** whom it is for: the ledger record of its share carries this */
  attribution: CostAttribution;
  /** `high` (or `normal`, unless `batchNormal`) goes out at once, alone; `low` waits for its batch. Default `low`. */
  urgency?: Urgency;
  signal?: AbortSignal;
}

export interface BatchAnswer {
  text: string;
  /** this item's share of the call */
  costUsd: number;
  usage: TokenUsage;
  model: string;
  /** how many items the call answered (1 for an urgent item) */
  batchSize: number;
  batchId: string;
}

export interface BatcherOptions {
  /** what the items are, e.g. `ticket.summarize`: one batcher per kind of work */
  kind: string;
  models: ModelRegistry;
  tier: 'small' | 'large';
  costs: CostSink;
  /** what to do with each item (the system prompt) */
  instructions: string;
  /** `KEEL_BATCH_WINDOW_MS`: how long the first item of a batch waits at most */
  windowMs: number;
  /** `KEEL_BATCH_SIZE`: a batch goes out when it holds this many items */
  size: number;
  /** batch `normal`-urgency items too (default: only `low` waits) */
  batchNormal?: boolean;
  /** passed through to `invokeModel` */
  invoke?: Partial<Omit<InvokeModelOptions, 'model' | 'messages' | 'attribution' | 'costs'>>;
}

export interface Batcher {
  submit(item: BatchItem): Promise<BatchAnswer>;
  /** items waiting for their batch */
  readonly pending: number;
  /** model calls made so far (batches and urgent items) */
  readonly calls: number;
  /** sends the waiting items now */
  flush(): Promise<void>;
  /** flushes, then refuses new items */
  close(): Promise<void>;
}

interface Waiting {
  item: BatchItem;
  resolve: (a: BatchAnswer) => void;
  reject: (e: unknown) => void;
}

const MARK = (k: number) => `### ITEM ${k}`;

/** The one prompt of a batch: the instructions, then each item under its mark. */
export function batchPrompt(instructions: string, texts: readonly string[]): { system: string; user: string } {
  const system =
    texts.length === 1
      ? instructions
      : `${instructions}\n\nYou get ${texts.length} independent items, each under a line "${MARK(1)}", "${MARK(2)}" and so on. Answer every item separately, in order, each answer under the same "### ITEM k" line as its item, and nothing else.`;
  const user = texts.length === 1 ? texts[0]! : texts.map((t, i) => `${MARK(i + 1)}\n${t}`).join('\n\n');
  return { system, user };
}

/** The answers of a batch reply, by item (undefined where the model left one out). */
export function splitBatchAnswer(reply: string, n: number): (string | undefined)[] {
  if (n === 1) return [reply.trim()];
  const out: (string | undefined)[] = Array.from({ length: n }, () => undefined);
  const parts = reply.split(/^[ \t]*#{2,4}\s*ITEM\s+(\d+)\s*:?[ \t]*$/gim);
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const k = Number(parts[i]);
    const text = parts[i + 1]!.trim();
    if (k >= 1 && k <= n && text && out[k - 1] === undefined) out[k - 1] = text;
  }
  return out;
}

/**
 * Shares of a call by item: each item's characters, plus the instructions split evenly. The
 * cost shares add up to `costUsd` exactly (the last item takes the rounding remainder), the
 * token shares to the call's tokens.
 */
export function splitCost(weights: readonly number[], costUsd: number, usage: TokenUsage): { share: number; costUsd: number; usage: TokenUsage }[] {
  const total = weights.reduce((a, b) => a + b, 0) || 1;
  const shares = weights.map((w) => w / total);
  let costLeft = costUsd;
  const left = { ...usage };
  return shares.map((share, i) => {
    const last = i === shares.length - 1;
    const c = last ? roundUsd(costLeft) : roundUsd(costUsd * share);
    const u = last ? { ...left } : { inputTokens: Math.round(usage.inputTokens * share), outputTokens: Math.round(usage.outputTokens * share), cachedTokens: Math.round(usage.cachedTokens * share) };
    costLeft -= c;
    left.inputTokens -= u.inputTokens;
    left.outputTokens -= u.outputTokens;
    left.cachedTokens -= u.cachedTokens;
    return { share: Math.round(share * 1e6) / 1e6, costUsd: c, usage: u };
  });
}

export function createBatcher(o: BatcherOptions): Batcher {
  if (!(o.size >= 1) || !(o.windowMs >= 0)) throw new ModelError('MODEL_CONFIG_INVALID', `batcher '${o.kind}': size must be ≥ 1 and windowMs ≥ 0 (got ${o.size}, ${o.windowMs})`, { retryable: false });
  let waiting: Waiting[] = [];
  let timer: NodeJS.Timeout | undefined;
  let calls = 0;
  let closed = false;
  const inFlight = new Set<Promise<void>>();

  const send = async (batch: Waiting[]): Promise<void> => {
    const batchId = randomUUID();
    const texts = batch.map((w) => w.item.text);
    const { system, user } = batchPrompt(o.instructions, texts);
    const weights = texts.map((t) => t.length + o.instructions.length / texts.length);
    const first = batch[0]!.item.attribution;
    let records: { share: number; costUsd: number; usage: TokenUsage }[] = [];
    // ONE call; its single record becomes one record per item, each with its share
    const costs: CostSink = {
      recordCost: async (rec: CostInput) => {
        records = splitCost(weights, rec.costUsd ?? 0, { inputTokens: rec.tokensIn ?? 0, outputTokens: rec.tokensOut ?? 0, cachedTokens: rec.tokensCached ?? 0 });
        const written = [];
        for (const [i, w] of batch.entries()) {
          const a = w.item.attribution;
          const s = records[i]!;
          const mine: CostInput = {
            ...rec,
            agent: a.agent,
            capability: a.capability,
            tokensIn: s.usage.inputTokens,
            tokensOut: s.usage.outputTokens,
            tokensCached: s.usage.cachedTokens,
            costUsd: s.costUsd,
            computeMs: rec.computeMs,
            details: { ...rec.details, batch: { id: batchId, kind: o.kind, size: batch.length, share: s.share, totalUsd: rec.costUsd ?? 0 } },
          };
          for (const k of ['runId', 'customerId', 'entityType', 'entityId'] as const) {
            if (a[k]) mine[k] = a[k];
            else delete mine[k];
          }
          written.push(await o.costs.recordCost(mine));
        }
        return written;
      },
    };
    calls++;
    try {
      const signals = batch.map((w) => w.item.signal).filter((s): s is AbortSignal => !!s);
      const r = await invokeModel({
        ...o.invoke,
        model: o.models.get(o.tier, { capability: o.kind }),
        tier: o.tier === 'small' ? 1 : 2,
        messages: [
          { role: 'system', content: system },
          { role: 'user', content: user },
        ],
        // the batch's own attribution is its first item's; the ledger records are per item (above)
        attribution: { agent: first.agent, capability: o.kind },
        costs,
        // a batch is cancelled only when every item's caller gave up
        ...(signals.length === batch.length && signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
        // every item's customer and entity: their sensitive fields are redacted from a cloud prompt
        ...sensitiveOf(batch.map((w) => w.item.attribution), o.invoke?.sensitiveSource ?? sensitiveSourceOf(o.costs)),
        // the answer comes back with its placeholders: each item's part is restored below with its own values only
        restoreAnswer: false,
      });
      const text = typeof r.message.content === 'string' ? r.message.content : JSON.stringify(r.message.content);
      const answers = splitBatchAnswer(text, batch.length);
      for (const [i, w] of batch.entries()) {
        const a = answers[i];
        const s = records[i] ?? { costUsd: 0, usage: { inputTokens: 0, outputTokens: 0, cachedTokens: 0 } };
        if (a === undefined) w.reject(new ModelError('MODEL_ERROR', `batch ${batchId} (${o.kind}): the model left item ${i + 1} of ${batch.length} unanswered`, { retryable: true, model: r.model, provider: r.provider }));
        // restored after splitting, with the placeholders of this item's own text only: a placeholder
        // that stands for another customer's value stays a placeholder in this one's answer
        else w.resolve({ text: r.redactor ? ownRestorer(r.redactor, w.item.text)(a) : a, costUsd: s.costUsd, usage: s.usage, model: r.model, batchSize: batch.length, batchId });
      }
    } catch (err) {
      const e = toModelError(err);
      for (const w of batch) w.reject(e);
    }
  };

  const launch = (batch: Waiting[]) => {
    const p = send(batch).finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  const flushNow = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (waiting.length === 0) return;
    const batch = waiting;
    waiting = [];
    launch(batch);
  };

  return {
    get pending() {
      return waiting.length;
    },
    get calls() {
      return calls;
    },
    submit(item) {
      if (closed) return Promise.reject(new ModelError('MODEL_BAD_REQUEST', `batcher '${o.kind}' is closed`, { retryable: true }));
      return new Promise<BatchAnswer>((resolve, reject) => {
        const w = { item, resolve, reject };
        const urgency = item.urgency ?? 'low';
        if (urgency === 'high' || (urgency === 'normal' && !o.batchNormal)) {
          launch([w]);
          return;
        }
        waiting.push(w);
        if (waiting.length >= o.size) flushNow();
        else if (!timer) {
          timer = setTimeout(flushNow, o.windowMs);
          timer.unref?.();
        }
      });
    },
    async flush() {
      flushNow();
      await Promise.allSettled([...inFlight]);
    },
    async close() {
      closed = true;
      flushNow();
      await Promise.allSettled([...inFlight]);
    },
  };
}
