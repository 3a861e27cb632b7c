/**
 * The agent runtime: what makes an agent a plugin of the engine rather than a point tool.
 *
 * ```ts
 * import { z } from 'zod';
 * import { defineAgent, defineCapability } from './runtime/index.ts';
 *
 * export default defineAgent({
 *   name: 'greeter',
 *   version: '1.0.0',
 *   capabilities: [
 *     defineCapability({
 *       name: 'greet',
 *       version: '1',
 *       input: z.object({ customerId: z.string() }),
 *       output: z.object({ sent: z.boolean() }),
 *       permissions: { entityTypes: ['customer'], secrets: ['SMTP_PASSWORD'] },
 *       timeoutMs: 30_000,
 *       async handler(ctx) {
 *         const c = await ctx.state.get('customer', ctx.input.customerId);
 *         await ctx.effect('send', (key) => mailer.send({ to: c!.state.email, idempotencyKey: key }));
 *         return { sent: true };
 *       },
 *     }),
 *   ],
 * });
 * ```
 *
 * Run it as its own process with `keel agent start ./greeter.ts` (or by name when it
 * is in a feature's catalog, agents/index.ts); `keel start` supervises every enabled agent.
 */
export { defineAgent, defineCapability, taskType } from './define.ts';
export type { AgentDefinition, AgentSandbox, Capability, TaskContext, Permissions } from './define.ts';
export { runAgent, manifestCapabilities, agentEntityTypes, RetryableError, PermanentError } from './runtime.ts';
export { defineFeature } from './feature.ts';
export type { Feature, FeatureAgent, Ingress, IngressContext, MemoryRule, MemoryDraft } from './feature.ts';
export { loadAgent, loadAgentModule, loadFeatureModule } from './load.ts';
export { replayRun } from './replay.ts';
export type { ReplayReport, ReplayStep, ReplayOptions, PromptChange } from './replay.ts';
export { createCapabilityTestKit, type CapabilityTestKit, type CapabilityTestKitOptions, type CapabilityRunOptions, type CapabilityRunResult, type RecordedEffect, type RecordedEnqueue, type RecordedModelCall, type FailedModelCall, type CapturedLog } from './testkit.ts';
export type { RunAgentOptions, RunningAgent } from './runtime.ts';
export { hostAgents } from './host.ts';
/** LangGraph graphs as capabilities (LangGraph itself loads with the first task); the checkpointer and `runGraph` are in runtime/langgraph/ */
export { defineGraphCapability, graphTask } from './langgraph/graph-capability.ts';
export type { GraphCapabilityOptions } from './langgraph/graph-capability.ts';
export type { AgentHost, HostedAgentSpec, HostedAgentStatus, HostAgentsOptions } from './host.ts';
export { CircuitBreaker } from './breaker.ts';
export type { BreakerOptions, BreakerState } from './breaker.ts';
export { natsPermissionsFor, natsUsers, loadOrCreateCredentials, readCredentials, ensureCredentials, agentEnvSuffix, credentialsFromEnv } from './permissions.ts';
export type { Credentials, CredentialsFile } from './permissions.ts';
export type { ScopedState } from './scoped-state.ts';
export * from './errors.ts';
