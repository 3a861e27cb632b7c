import { describe, expect, it } from 'vitest';
import { KeelError, isKeelError, toKeelError, ConfigError, ProvisionError } from '../../config/index.ts';
import { BusError, BusUnavailableError, InvalidMessageError, PermanentError, RetryableError, isBusError, toFailure } from '../../bus/index.ts';
import { StateError, VersionConflictError, isStateError } from '../../shared-state/index.ts';
import { ChannelError, MailSendError, isChannelError } from '../../channels/index.ts';
import { ModelError, ModelNotConfiguredError, toModelError } from '../../models/index.ts';
import { AgentError, CircuitOpenError, DefinitionError } from '../../runtime/index.ts';
import { CheckpointError } from '../../runtime/langgraph/index.ts';
import { WorkflowError, WorkflowDefinitionError } from '../../workflows/index.ts';
import { CliError } from '../../cli/errors.ts';
import { CostArgumentError } from '../../cli/commands/cost.ts';
import { EngineError } from '../../engine/errors.ts';
import { TestkitError } from '../../testkit/index.ts';
import { BenchError } from '../../bench/errors.ts';

describe('KeelError, the one error root', () => {
  it('carries code, retryable, nextDelayMs and cause', () => {
    const cause = new Error('low level');
    const e = new KeelError('KEEL_TEST', 'it broke', { retryable: true, nextDelayMs: 250, cause });
    expect(e).toBeInstanceOf(Error);
    expect(e).toMatchObject({ name: 'KeelError', code: 'KEEL_TEST', message: 'it broke', retryable: true, nextDelayMs: 250 });
    expect(e.cause).toBe(cause);
    const plain = new KeelError('KEEL_TEST', 'defaults');
    expect(plain.retryable).toBe(false);
    expect('cause' in plain).toBe(false);
  });

  // one instance of every family, with the code and retryable flag it had before KeelError
  const families: Array<[string, KeelError, string, boolean]> = [
    ['ConfigError', new ConfigError(['KEEL_HTTP_PORT: must be a number']), 'KEEL_CONFIG_INVALID', false],
    ['ProvisionError', new ProvisionError(['nats-server'], 2), 'KEEL_PROVISION_FAILED', false],
    ['BusError', new BusError('BUS_PUBLISH_FAILED', 'no ack'), 'BUS_PUBLISH_FAILED', false],
    ['BusUnavailableError', new BusUnavailableError('nats://127.0.0.1:1'), 'BUS_UNAVAILABLE', true],
    ['InvalidMessageError', new InvalidMessageError('payload_too_large', 'too big'), 'BUS_PAYLOAD_TOO_LARGE', false],
    ['PermanentError', new PermanentError('never'), 'PERMANENT', false],
    ['RetryableError', new RetryableError('later', { code: 'UPSTREAM_BUSY', nextDelayMs: 500 }), 'UPSTREAM_BUSY', true],
    ['StateError', new StateError('STATE_INVALID_DEFINITION', 'bad type'), 'STATE_INVALID_DEFINITION', false],
    ['VersionConflictError', new VersionConflictError('ticket', 't1', 1, 2), 'STATE_VERSION_CONFLICT', true],
    ['ChannelError', new ChannelError('CHANNEL_PARSE_TIMEOUT', 'slow'), 'CHANNEL_PARSE_TIMEOUT', false],
    ['MailSendError 4xx', new MailSendError('smtp://relay', ['a@b.c'], Object.assign(new Error('busy'), { responseCode: 421 })), 'CHANNEL_SEND_FAILED', true],
    ['MailSendError 5xx', new MailSendError('smtp://relay', ['a@b.c'], Object.assign(new Error('no'), { responseCode: 550 })), 'CHANNEL_SEND_FAILED', false],
    ['ModelError', new ModelError('MODEL_RATE_LIMITED', 'slow down', { retryable: true, nextDelayMs: 3000 }), 'MODEL_RATE_LIMITED', true],
    ['ModelNotConfiguredError', new ModelNotConfiguredError(1, 'small', 'KEEL_MODEL_SMALL'), 'MODEL_NOT_CONFIGURED', false],
    ['AgentError', new AgentError('AGENT_NO_CREDENTIALS', 'no credentials'), 'AGENT_NO_CREDENTIALS', false],
    ['CircuitOpenError', new CircuitOpenError('crm', 1000), 'AGENT_CIRCUIT_OPEN', true],
    ['DefinitionError', new DefinitionError('bad agent'), 'AGENT_INVALID_DEFINITION', false],
    ['CheckpointError', new CheckpointError('CHECKPOINT_BUSY', 'locked', { retryable: true }), 'CHECKPOINT_BUSY', true],
    ['WorkflowError', new WorkflowError('WORKFLOW_CONTENDED', 'busy', true), 'WORKFLOW_CONTENDED', true],
    ['WorkflowDefinitionError', new WorkflowDefinitionError('w', ['steps: at least one step']), 'WORKFLOW_INVALID', false],
    ['CliError', new CliError('CLI_BAD_ARGUMENT', '--limit must be a number'), 'CLI_BAD_ARGUMENT', false],
    ['CostArgumentError', new CostArgumentError('--since takes a duration'), 'COST_BAD_ARGUMENT', false],
    ['EngineError', new EngineError('ENGINE_HTTP_PORT_IN_USE', 'port in use'), 'ENGINE_HTTP_PORT_IN_USE', false],
    ['TestkitError', new TestkitError('TESTKIT_TIMEOUT', 'timed out'), 'TESTKIT_TIMEOUT', false],
    ['BenchError', new BenchError('BENCH_INCOMPLETE', '3 runs did not complete'), 'BENCH_INCOMPLETE', false],
  ];

  it.each(families)('%s is a KeelError with its code and retryable flag', (name, e, code, retryable) => {
    expect(e).toBeInstanceOf(KeelError);
    expect(e).toBeInstanceOf(Error);
    expect(isKeelError(e)).toBe(true);
    expect(e.code).toBe(code);
    expect(e.retryable).toBe(retryable);
    expect(e.name).toBe(name.split(' ')[0]);
    expect(typeof e.stack).toBe('string');
  });

  it('keeps the family fields and guards', () => {
    const rate = families.find(([n]) => n === 'ModelError')![1] as ModelError;
    expect(rate.nextDelayMs).toBe(3000);
    expect((families.find(([n]) => n === 'RetryableError')![1] as RetryableError).nextDelayMs).toBe(500);
    expect((families.find(([n]) => n === 'CircuitOpenError')![1] as CircuitOpenError).nextDelayMs).toBe(1000);
    expect(new ConfigError(['x: y']).issues).toEqual(['x: y']);
    expect(isBusError(new BusUnavailableError('nats://x'), 'BUS_UNAVAILABLE')).toBe(true);
    expect(isStateError(new VersionConflictError('t', 'i', 1, 2), 'STATE_VERSION_CONFLICT')).toBe(true);
    expect(isChannelError(new ChannelError('CHANNEL_SMTP_REPLY', 'x'))).toBe(true);
    // a ModelError still passes toModelError unchanged
    expect(toModelError(rate)).toBe(rate);
    // the bus still reads retryability by fields
    expect(toFailure(new PermanentError('no')).retryable).toBe(false);
    expect(toFailure(new RetryableError('later', { nextDelayMs: 7 }))).toMatchObject({ retryable: true, code: 'RETRYABLE', nextDelayMs: 7 });
  });

  it('isKeelError accepts the shape of one from another process or package copy', () => {
    const wire = JSON.parse(JSON.stringify({ name: 'BusError', code: 'BUS_UNAVAILABLE', message: 'cannot reach NATS', retryable: true }));
    expect(isKeelError(wire)).toBe(true);
    expect(isKeelError({ code: 'STATE_NOT_FOUND', message: 'ticket t1 not found', retryable: false })).toBe(true);
    // a plain Node error has a string code but no retryable flag: not a KeelError
    expect(isKeelError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe(false);
    expect(isKeelError(new Error('plain'))).toBe(false);
    expect(isKeelError({ code: 42, message: 'x', retryable: true })).toBe(false);
    expect(isKeelError(null)).toBe(false);
    expect(isKeelError('BUS_UNAVAILABLE')).toBe(false);
  });

  it('toKeelError wraps a plain Error, keeping it as the cause', () => {
    const plain = new Error('disk full');
    const e = toKeelError(plain);
    expect(e).toBeInstanceOf(KeelError);
    expect(e).toMatchObject({ code: 'KEEL_UNKNOWN', message: 'disk full', retryable: false });
    expect(e.cause).toBe(plain);
    expect(toKeelError(plain, 'STATE_UNAVAILABLE').code).toBe('STATE_UNAVAILABLE');
  });

  it('toKeelError keeps what a thrown value says about itself and passes KeelErrors through', () => {
    const node = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(toKeelError(node)).toMatchObject({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED', retryable: false, cause: node });
    expect(toKeelError(Object.assign(new Error('later'), { retryable: true, nextDelayMs: 100 }))).toMatchObject({ retryable: true, nextDelayMs: 100 });
    expect(toKeelError(Object.assign(new Error('never'), { nonRetryable: true })).retryable).toBe(false);
    expect(toKeelError('just a string')).toMatchObject({ code: 'KEEL_UNKNOWN', message: 'just a string', cause: 'just a string' });
    const typed = new StateError('STATE_BUSY', 'locked', { retryable: true });
    expect(toKeelError(typed)).toBe(typed);
    const wire = { code: 'BUS_NO_RESPONDERS', message: 'nobody', retryable: true };
    expect(toKeelError(wire)).toBe(wire);
  });
});
