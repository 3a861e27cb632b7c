/**
 * What the engine adds to its /metrics for the dashboards (deploy/grafana/dashboards), and the
 * Prometheus service discovery of its agent processes (`GET /metrics/targets`).
 *
 * Per-customer figures stay out of the labels (customer ids would explode cardinality): they are
 * in the cost ledger (`keel cost --by customer`) and the console.
 */
import { hostname } from 'node:os';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Meter } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { agentProcesses, listAgents, type Bus, type NatsConnection } from '../bus/index.ts';
import type { StateStore } from '../shared-state/index.ts';

/** One entry of Prometheus's `http_sd_configs` answer. */
export interface MetricsTarget {
  targets: string[];
  labels: Record<string, string>;
}

/**
 * The metrics endpoints of the agent processes this engine supervises (`pids`), from their
 * registry entries (each agent announces its /metrics URL): one http_sd group per process,
 * labelled `keel_process` (the agent, or the host's name) and `keel_agents`. Agents of other
 * machines or engines are left out (compose scrapes its agent services by DNS).
 */
export async function metricsTargets(o: { nats: NatsConnection; registryBucket: string; pids: () => Array<number | undefined> }): Promise<MetricsTarget[]> {
  const mine = new Set(o.pids().filter((p): p is number => p !== undefined));
  const here = hostname();
  const manifests = (await listAgents(o.nats, o.registryBucket)).filter((m) => m.host === here && mine.has(m.pid));
  const out: MetricsTarget[] = [];
  for (const p of agentProcesses(manifests)) {
    if (!p.metricsUrl) continue;
    const u = new URL(p.metricsUrl);
    out.push({ targets: [u.host], labels: { __metrics_path__: u.pathname, keel_process: p.name, keel_agents: p.agents.join(',') } });
  }
  return out.sort((a, b) => a.labels.keel_process!.localeCompare(b.labels.keel_process!));
}

/** Caches an async reading for a scrape: several gauges read it once per `ttlMs`. */
function cached<T>(ttlMs: number, read: () => Promise<T>): () => Promise<T> {
  let at = 0;
  let value: Promise<T> | undefined;
  return () => {
    if (!value || Date.now() - at > ttlMs) {
      at = Date.now();
      value = read();
    }
    return value;
  };
}

/**
 * Gauges read at scrape time:
 * - `keel_budget_limit_usd`, `keel_budget_spent_usd`, `keel_budget_remaining_usd` {scope, key, period, mode}
 *   for the engine, workflow and agent budgets of the current window (customer and run budgets
 *   are left out: one series per customer or run; `keel budgets` lists them);
 * - `keel_dlq_messages` {capability}: dead letters waiting, by capability;
 * - `keel_jetstream_stream_messages`, `_bytes`, `_consumers` {stream}: the NATS server's
 *   JetStream streams, read over the NATS API (no monitoring port needed).
 */
export function registerEngineGauges(meter: Meter, o: { store: StateStore; bus: Bus; nats: NatsConnection; logger: Logger; /** the capabilities of the agents the engine runs (their DLQ depth shows at 0) */ capabilities: () => string[] }): void {
  const budgets = cached(1_000, async () => {
    const { createBudgetGuard } = await import('../models/index.ts');
    return (await createBudgetGuard(o.store).list()).filter((b) => b.scope === 'engine' || b.scope === 'workflow' || b.scope === 'agent');
  });
  const budgetGauge = (name: string, description: string, pick: (b: Awaited<ReturnType<typeof budgets>>[number]) => number) =>
    meter.createObservableGauge(name, { description, unit: 'USD' }).addCallback(async (r) => {
      const list = await budgets().catch((err: unknown) => {
        o.logger.debug({ err }, 'metrics: could not list budgets');
        return [];
      });
      for (const b of list) r.observe(pick(b), { scope: b.scope, key: b.key || 'engine', period: b.period, mode: b.mode });
    });
  budgetGauge('keel_budget_limit_usd', 'budget limit of the current window (engine, workflow and agent budgets)', (b) => b.limitUsd);
  budgetGauge('keel_budget_spent_usd', 'spent in the current budget window', (b) => b.spentUsd);
  budgetGauge('keel_budget_remaining_usd', 'left in the current budget window (limit minus spent and reserved)', (b) => b.remainingUsd);

  const { streams } = o.bus.subjects;
  const dlqPrefix = o.bus.subjects.dlq('x').slice(0, -1);
  const jetstream = cached(1_000, async () => {
    const jsm = await jetstreamManager(o.nats);
    const infos = [];
    for (const name of Object.values(streams)) {
      const info = await jsm.streams.info(name, name === streams.dlq ? { subjects_filter: '>' } : undefined).catch(() => undefined);
      if (info) infos.push(info);
    }
    return infos;
  });
  const read = () =>
    jetstream().catch((err: unknown) => {
      o.logger.debug({ err }, 'metrics: could not read the JetStream streams');
      return [];
    });
  meter.createObservableGauge('keel_dlq_messages', { description: 'dead letters waiting in the DLQ stream, by capability' }).addCallback(async (r) => {
    const dlq = (await read()).find((i) => i.config.name === streams.dlq);
    if (!dlq) return;
    const bySubject = dlq.state.subjects ?? {};
    // every capability of the engine's agents shows, at 0 when it has none
    const caps = new Set([...o.capabilities(), ...Object.keys(bySubject).map((s) => s.slice(dlqPrefix.length))]);
    for (const c of caps) r.observe(bySubject[`${dlqPrefix}${c}`] ?? 0, { capability: c });
  });
  meter.createObservableGauge('keel_jetstream_stream_messages', { description: 'messages stored in a JetStream stream' }).addCallback(async (r) => {
    for (const i of await read()) r.observe(i.state.messages, { stream: i.config.name });
  });
  meter.createObservableGauge('keel_jetstream_stream_bytes', { description: 'bytes stored in a JetStream stream', unit: 'By' }).addCallback(async (r) => {
    for (const i of await read()) r.observe(i.state.bytes, { stream: i.config.name });
  });
  meter.createObservableGauge('keel_jetstream_stream_consumers', { description: 'consumers of a JetStream stream' }).addCallback(async (r) => {
    for (const i of await read()) r.observe(i.state.consumer_count, { stream: i.config.name });
  });
}
