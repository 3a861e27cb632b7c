/**
 * A deterministic LangChain chat model whose replies come from a list, for tests and for
 * replaying recorded model outputs at no cost. It reports `usage_metadata` and
 * `response_metadata.model_name` exactly as the real providers' LangChain models do, so the
 * ledger, spans and prices see no difference.
 */
import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { z } from 'zod';
import { BaseChatModel, type BaseChatModelCallOptions, type BaseChatModelParams, type BindToolsInput } from '@langchain/core/language_models/chat_models';
import { AIMessage, type BaseMessage } from '@langchain/core/messages';
import type { ChatResult } from '@langchain/core/outputs';
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import { ModelConfigError, ModelError } from './errors.ts';

/** One scripted reply, in the shape of a script file's entries. */
export interface ScriptedReply {
  content: string;
  /** as the provider would report it; omitted: estimated at ~4 characters per token */
  usage?: { input_tokens: number; output_tokens: number; cached_tokens?: number };
  tool_calls?: { name: string; args: Record<string, unknown>; id?: string }[];
  /** instead of replying, fail like a provider's HTTP error with this status (429, 500, 400, ...) */
  error?: { status?: number; message: string };
  /** wait this long before answering (honours the call's AbortSignal) */
  latencyMs?: number;
  /** overrides the model's name for this reply */
  model?: string;
}

export interface ScriptedChatModelParams extends BaseChatModelParams {
  replies: ScriptedReply[];
  /** reported as `response_metadata.model_name` (default `scripted`) */
  modelName?: string;
  /** start over after the last reply instead of failing with MODEL_SCRIPT_EXHAUSTED */
  loop?: boolean;
}

const replySchema = z.strictObject({
  content: z.string(),
  usage: z
    .strictObject({
      input_tokens: z.number().int().nonnegative(),
      output_tokens: z.number().int().nonnegative(),
      cached_tokens: z.number().int().nonnegative().optional(),
    })
    .refine((u) => (u.cached_tokens ?? 0) <= u.input_tokens, 'cached_tokens are part of input_tokens, so cannot exceed them')
    .optional(),
  tool_calls: z.array(z.strictObject({ name: z.string().min(1), args: z.record(z.string(), z.unknown()), id: z.string().optional() })).optional(),
  error: z.strictObject({ status: z.number().int().min(100).max(599).optional(), message: z.string() }).optional(),
  latencyMs: z.number().nonnegative().optional(),
  model: z.string().min(1).optional(),
});
/** A script file: a list of replies, or `{ model?, loop?, replies }`. */
const scriptSchema = z.union([z.array(replySchema), z.strictObject({ model: z.string().min(1).optional(), loop: z.boolean().optional(), replies: z.array(replySchema) })]);

/** Reads and checks a script file; throws {@link ModelConfigError} naming the file (and `variable`, if given). */
export function readScript(path: string, variable?: string): { replies: ScriptedReply[]; modelName: string; loop: boolean } {
  const where = variable ? `${variable} (${path})` : path;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ModelConfigError([{ variable: where, message: `cannot read the script: ${(err as Error).message}` }]);
  }
  const parsed = scriptSchema.safeParse(raw);
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ModelConfigError([{ variable: where, message: `not a script (expected [{ content, usage: { input_tokens, output_tokens, cached_tokens } }]): ${msg}` }]);
  }
  const d = parsed.data;
  const fallbackName = basename(path, extname(path)) || 'scripted';
  if (Array.isArray(d)) return { replies: d, modelName: fallbackName, loop: false };
  return { replies: d.replies, modelName: d.model ?? fallbackName, loop: d.loop ?? false };
}

const estimate = (text: string) => Math.ceil(text.length / 4);
const textOf = (m: BaseMessage) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content));

/**
 * An Error shaped like a provider SDK's HTTP error (`status`), so normalization treats it alike.
 * Deliberately not a KeelError: it stands in for a foreign SDK's error, which `toModelError`
 * turns into a ModelError; a Keel `code`/`retryable` of its own would make a scripted failure
 * behave unlike a real provider's wherever it is seen before that normalization.
 */
class ScriptedProviderError extends Error {
  readonly status: number | undefined;
  constructor(message: string, status: number | undefined) {
    super(message);
    this.name = 'ScriptedProviderError';
    this.status = status;
  }
}

export class ScriptedChatModel extends BaseChatModel<BaseChatModelCallOptions> {
  static override lc_name(): string {
    return 'ScriptedChatModel';
  }

  readonly replies: readonly ScriptedReply[];
  readonly modelName: string;
  readonly loop: boolean;
  #next = 0;

  constructor(params: ScriptedChatModelParams) {
    super(params);
    this.replies = [...params.replies];
    this.modelName = params.modelName ?? 'scripted';
    this.loop = params.loop ?? false;
  }

  /** A model that plays a script file (see {@link readScript} for the format). */
  static fromFile(path: string, opts: Omit<ScriptedChatModelParams, 'replies'> & { variable?: string } = {}): ScriptedChatModel {
    const { variable, ...rest } = opts;
    const s = readScript(path, variable);
    return new ScriptedChatModel({ modelName: s.modelName, loop: s.loop, ...rest, replies: s.replies });
  }

  /** How many replies have been played. */
  get played(): number {
    return this.#next;
  }

  _llmType(): string {
    return 'scripted';
  }

  override _identifyingParams(): Record<string, unknown> {
    return { model_name: this.modelName };
  }

  /** Tools do not change a script; replies carry their own `tool_calls`. */
  override bindTools(_tools: BindToolsInput[], kwargs?: Partial<BaseChatModelCallOptions>): ReturnType<NonNullable<BaseChatModel['bindTools']>> {
    return kwargs ? this.withConfig(kwargs) : this;
  }

  async _generate(messages: BaseMessage[], options: this['ParsedCallOptions'], _runManager?: CallbackManagerForLLMRun): Promise<ChatResult> {
    options.signal?.throwIfAborted();
    if (this.#next >= this.replies.length) {
      if (!this.loop || this.replies.length === 0) {
        throw new ModelError('MODEL_SCRIPT_EXHAUSTED', `scripted model '${this.modelName}' has no reply left (all ${this.replies.length} played)`, { provider: 'scripted', model: this.modelName, retryable: false });
      }
      this.#next = 0;
    }
    const reply = this.replies[this.#next++]!;
    if (reply.latencyMs) await sleep(reply.latencyMs, options.signal);
    if (reply.error) throw new ScriptedProviderError(reply.error.message, reply.error.status);

    const input = reply.usage?.input_tokens ?? estimate(messages.map(textOf).join('\n'));
    const output = reply.usage?.output_tokens ?? estimate(reply.content);
    const cached = reply.usage?.cached_tokens ?? 0;
    const modelName = reply.model ?? this.modelName;
    const toolCalls = (reply.tool_calls ?? []).map((t, i) => ({ name: t.name, args: t.args, id: t.id ?? `call_${this.#next}_${i}`, type: 'tool_call' as const }));
    const message = new AIMessage({
      content: reply.content,
      tool_calls: toolCalls,
      usage_metadata: {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        input_token_details: { cache_read: cached },
      },
      response_metadata: {
        model_name: modelName,
        model_provider: 'scripted',
        finish_reason: toolCalls.length ? 'tool_calls' : 'stop',
      },
    });
    return {
      generations: [{ text: reply.content, message, generationInfo: { finish_reason: toolCalls.length ? 'tool_calls' : 'stop' } }],
      llmOutput: { tokenUsage: { promptTokens: input, completionTokens: output, totalTokens: input + output } },
    };
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason instanceof Error ? signal!.reason : new DOMException('aborted', 'AbortError'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
