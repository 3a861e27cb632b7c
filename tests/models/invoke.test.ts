import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { context, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { openStore, type StateStore } from '../../shared-state/index.ts';
import { CostNotRecordedError, invokeModel, isModelError, ScriptedChatModel, createModelRegistry, loadPriceTable } from '../../models/index.ts';
import { tempDir } from '../../testkit/common.ts';
import { ALL_ENTITY_TYPES } from '../helpers/types.ts';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const contextManager = new AsyncLocalStorageContextManager();

let dir: ReturnType<typeof tempDir>;
let store: StateStore;

beforeAll(async () => {
  context.setGlobalContextManager(contextManager.enable());
  trace.setGlobalTracerProvider(provider);
  dir = tempDir();
  store = await openStore(`sqlite:${dir.path}/s.db`, { types: ALL_ENTITY_TYPES });
});
afterAll(async () => {
  await store.close();
  await provider.shutdown();
  contextManager.disable();
  dir.remove();
});
afterEach(() => exporter.reset());

// scripted models are priced by KEEL_PRICE_SCRIPTED: $2 input, $0.50 cached input, $8 output per 1M tokens
const prices = loadPriceTable({ KEEL_PRICE_SCRIPTED: '2,0.5,8' });

describe('invokeModel', () => {
  it('writes one cost record with the attribution, usage, cost, trace id and details', async () => {
    const model = new ScriptedChatModel({ modelName: 'scripted-small', replies: [{ content: 'Refund approved.', usage: { input_tokens: 1500, output_tokens: 120, cached_tokens: 1000 } }] });
    const parent = trace.getTracer('test').startSpan('task ticket.triage');
    const res = await context.with(trace.setSpan(context.active(), parent), () =>
      invokeModel({
        model,
        tier: 1,
        messages: [{ role: 'user', content: 'Can I get a refund?' }],
        attribution: { agent: 'triage', capability: 'ticket.triage', runId: 'run-1', customerId: 'C-7', entityType: 'ticket', entityId: 'T-42' },
        costs: store,
        prices,
        details: { reason: 'low confidence' },
      }),
    );
    parent.end();

    const expectedUsd = (500 * 2 + 1000 * 0.5 + 120 * 8) / 1e6; // 0.00246
    expect(res.message.content).toBe('Refund approved.');
    expect(res.usage).toEqual({ inputTokens: 1500, outputTokens: 120, cachedTokens: 1000 });
    expect(res.costUsd).toBeCloseTo(expectedUsd, 12);
    expect(res.model).toBe('scripted-small');
    expect(res.provider).toBe('scripted');

    const report = await store.costs({ records: 10 });
    expect(report.records).toHaveLength(1);
    const rec = report.records[0]!;
    expect(rec).toMatchObject({
      agent: 'triage',
      capability: 'ticket.triage',
      runId: 'run-1',
      customerId: 'C-7',
      entityType: 'ticket',
      entityId: 'T-42',
      model: 'scripted-small',
      tokensIn: 1500,
      tokensOut: 120,
      tokensCached: 1000,
      traceId: parent.spanContext().traceId,
      details: { tier: 1, provider: 'scripted', requestModel: 'scripted-small', reason: 'low confidence', price: { key: 'scripted:*', input: 2, cachedInput: 0.5, output: 8 } },
    });
    expect(rec.costUsd).toBeCloseTo(expectedUsd, 12);
    expect(rec.computeMs).toBeGreaterThan(0);
    expect(res.record).toMatchObject({ id: rec.id });

    // the span: `chat <model>`, a CLIENT child of the task span, with the GenAI attributes
    const spans = exporter.getFinishedSpans().filter((s) => s.name.startsWith('chat '));
    expect(spans).toHaveLength(1);
    const span = spans[0]!;
    expect(span.name).toBe('chat scripted-small');
    expect(span.kind).toBe(SpanKind.CLIENT);
    expect(span.spanContext().traceId).toBe(parent.spanContext().traceId);
    expect(span.parentSpanContext?.spanId).toBe(parent.spanContext().spanId);
    expect(span.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'gen_ai.system': 'scripted',
      'gen_ai.provider.name': 'scripted',
      'gen_ai.request.model': 'scripted-small',
      'gen_ai.response.model': 'scripted-small',
      'gen_ai.usage.input_tokens': 1500,
      'gen_ai.usage.output_tokens': 120,
      'gen_ai.usage.cache_read.input_tokens': 1000,
      'gen_ai.response.finish_reasons': ['stop'],
      'keel.model.tier': 1,
      'keel.agent': 'triage',
      'keel.capability': 'ticket.triage',
      'keel.run_id': 'run-1',
      'keel.customer_id': 'C-7',
      'keel.entity': 'ticket/T-42',
    });
    expect(span.attributes['keel.cost.usd']).toBeCloseTo(expectedUsd, 12);
  });

  it('takes tier, provider and prices from a registry handle', async () => {
    const models = createModelRegistry({ KEEL_MODEL_LARGE: 'scripted:large', KEEL_PRICE_SCRIPTED: '1,1,1' }, { scripts: { large: [{ content: 'ok', usage: { input_tokens: 100, output_tokens: 100 } }] } });
    const res = await invokeModel({ model: models.get(2), messages: 'hi', attribution: { agent: 'writer', capability: 'content.draft' }, costs: store });
    expect(res.costUsd).toBeCloseTo(200 / 1e6, 12);
    const { records } = await store.costs({ agent: 'writer', records: 1 });
    expect(records[0]).toMatchObject({ model: 'large', customerId: null, runId: null, details: { tier: 2, provider: 'scripted' } });
  });

  it('writes no record and throws a normalized error when the call fails', async () => {
    const model = new ScriptedChatModel({ replies: [{ content: '', error: { status: 503, message: 'overloaded' } }, { content: '', error: { status: 401, message: 'bad key' } }] });
    const before = (await store.costs()).totals.count;
    const call = () => invokeModel({ model, messages: 'x', attribution: { agent: 'a', capability: 'c' }, costs: store, prices });
    await expect(call()).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true, status: 503, provider: 'scripted' });
    await expect(call()).rejects.toMatchObject({ code: 'MODEL_AUTH_FAILED', retryable: false, status: 401 });
    expect((await store.costs()).totals.count).toBe(before);
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => [s.status.code, s.attributes['error.type'], s.attributes['keel.error.retryable']])).toEqual([
      [SpanStatusCode.ERROR, '503', true],
      [SpanStatusCode.ERROR, '401', false],
    ]);
  });

  it('hands back the reply when the ledger refuses the record', async () => {
    const model = new ScriptedChatModel({ replies: [{ content: 'paid for', usage: { input_tokens: 10, output_tokens: 1 } }] });
    const err = await invokeModel({
      model,
      messages: 'x',
      attribution: { agent: 'a', capability: 'c' },
      costs: { recordCost: () => Promise.reject(Object.assign(new Error('database is locked'), { retryable: true })) },
      prices,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CostNotRecordedError);
    expect(isModelError(err, 'MODEL_COST_NOT_RECORDED')).toBe(true);
    expect((err as CostNotRecordedError<{ message: { content: string } }>).result.message.content).toBe('paid for');
  });
});
