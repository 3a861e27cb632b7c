/**
 * Tool calls from a model are requests, never instructions: inbound text (an email, a chat
 * message) reaches the model's prompt, so whatever the model asks for may be what a customer —
 * or an attacker — wrote. A capability lists the tools it may use in `permissions.tools`
 * (default none); `ctx.llm` refuses to offer any other tool, and drops every call in an answer
 * whose name is not on the list, recording each refusal (warning, span event, counter, audit).
 */
import type { Span } from '@opentelemetry/api';
import type { StateStore } from '../shared-state/index.ts';
import type { Logger } from '../observability/index.ts';
import type { ModelToolCall, ToolSpec } from '../models/index.ts';
import { PermissionDeniedError } from './errors.ts';
import type { Capability } from './define.ts';

/** The capability's allowed tool names (`permissions.tools`; none when absent). */
export function allowedTools(cap: Capability): ReadonlySet<string> {
  return new Set(cap.permissions?.tools ?? []);
}

/** Throws AGENT_PERMISSION_DENIED when a tool offered to the model is not on the capability's list. */
export function checkToolsOffered(cap: Capability, agent: string, tools: readonly ToolSpec[] | undefined): void {
  const allowed = allowedTools(cap);
  const outside = (tools ?? []).map((t) => t.name).filter((n) => !allowed.has(n));
  if (outside.length) throw new PermissionDeniedError(agent, `tools ${outside.map((n) => `'${n}'`).join(', ')} (capability '${cap.name}' may bind only ${allowed.size ? [...allowed].join(', ') : 'none'}: permissions.tools)`);
}

/** The calls on the list, and the ones that are not. */
export function splitToolCalls(calls: readonly ModelToolCall[] | undefined, allowed: ReadonlySet<string>): { kept: ModelToolCall[]; refused: ModelToolCall[] } {
  const kept: ModelToolCall[] = [];
  const refused: ModelToolCall[] = [];
  for (const c of calls ?? []) (allowed.has(c.name) ? kept : refused).push(c);
  return { kept, refused };
}

export interface ToolRefusalSinks {
  agent: string;
  capability: string;
  logger: Logger;
  span: Span | undefined;
  /** `keel_tool_calls_refused_total` (by agent, capability, tool) */
  counter: { add(n: number, attrs: Record<string, string>): void } | undefined;
  store: StateStore;
  runId: string | undefined;
  taskId: string;
  model: string;
}

/**
 * Drops the calls that are not allowed from a model's answer and records each refusal once: a
 * warning, a span event `keel.tool_call.refused`, the counter, and an audit record
 * `tool_call.refused` (actor the agent, subject `capability/<name>`, the tool names and the run;
 * the arguments are not kept: they may carry what the inbound text injected).
 */
export async function enforceToolAllowlist<A extends { toolCalls?: ModelToolCall[] }>(answer: A, allowed: ReadonlySet<string>, s: ToolRefusalSinks): Promise<A & { refusedToolCalls?: string[] }> {
  const { kept, refused } = splitToolCalls(answer.toolCalls, allowed);
  if (!refused.length) return answer;
  const names = refused.map((c) => c.name);
  const { toolCalls: _all, ...rest } = answer;
  const out = { ...rest, ...(kept.length ? { toolCalls: kept } : {}), refusedToolCalls: names } as A & { refusedToolCalls: string[] };
  s.logger.warn({ tools: names, allowed: [...allowed], model: s.model }, 'model asked for tools the capability may not use: refused (dropped from the answer)');
  for (const c of refused) {
    s.span?.addEvent('keel.tool_call.refused', { 'keel.tool.name': c.name, 'keel.capability': s.capability, ...(c.id ? { 'keel.tool.call_id': c.id } : {}) });
    s.counter?.add(1, { agent: s.agent, capability: s.capability, tool: c.name });
  }
  s.span?.setAttribute('keel.tool_calls.refused', refused.length);
  await s.store
    .appendAudit({
      actor: { kind: 'agent', id: s.agent },
      action: 'tool_call.refused',
      subject: `capability/${s.capability}`,
      details: { tools: names, allowed: [...allowed], model: s.model, taskId: s.taskId, ...(s.runId ? { runId: s.runId } : {}) },
    })
    .catch((err: unknown) => s.logger.error({ err, tools: names }, 'refused tool calls could not be audited'));
  return out;
}
