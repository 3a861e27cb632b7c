/**
 * Keel's configuration, read from `KEEL_*` environment variables with documented defaults.
 *
 * ```ts
 * import { loadConfig } from './config/index.ts';
 * const cfg = loadConfig();            // process.env
 * const cfg2 = loadConfig({ KEEL_HTTP_PORT: '0' });
 * ```
 *
 * Every option is listed in {@link CONFIG_DOCS} (the README's configuration table is built from it).
 * This floor also holds the error root {@link KeelError} (see errors.ts) that every family extends.
 */
import { homedir } from 'node:os';
import { resolve, join } from 'node:path';
import { z } from 'zod';
import { KeelError } from './errors.ts';

export interface ConfigDoc {
  name: string;
  default: string;
  description: string;
}

/** The public contract: every `KEEL_*` variable, its default and meaning. */
export const CONFIG_DOCS: readonly ConfigDoc[] = [
  { name: 'KEEL_DATA_DIR', default: './.keel', description: 'Where the embedded engine keeps its state: SQLite file, JetStream store, outbox, pid files.' },
  { name: 'KEEL_MIN_FREE_MB', default: '256', description: 'Disk space kept in reserve under KEEL_DATA_DIR: below it the engine refuses new work (SMTP `452 4.3.1`, HTTP 507 `STORAGE_FULL`), reports `disk: low` on /healthz (503), and the agents finish what was accepted in the reserve; it lifts by itself when space is freed. `0` turns the guard off. See docs/reliability.md.' },
  { name: 'KEEL_NATS_URL', default: '(unset)', description: 'Use this NATS server (e.g. nats://host:4222) instead of starting a local one.' },
  { name: 'KEEL_NATS_PORT', default: '4222', description: 'Client port of the local nats-server that `keel start` supervises.' },
  { name: 'KEEL_NATS_SERVER_BIN', default: '(provisioned)', description: 'Path of the nats-server binary; default is the one deploy/provision.sh built, then `nats-server` on PATH.' },
  { name: 'KEEL_NATS_USER', default: '(unset)', description: 'With KEEL_NATS_URL: the bus user of the engine and the CLI (the admin user `keel deploy nats-config` generates). Agent processes never inherit it.' },
  { name: 'KEEL_NATS_PASSWORD', default: '(unset)', description: 'With KEEL_NATS_URL: the password of KEEL_NATS_USER. Agent processes never inherit it.' },
  { name: 'KEEL_NATS_TLS_CA', default: '(unset)', description: 'PEM file of the CA that signed the NATS server\'s TLS certificate; every Keel process (engine, CLI, agents) verifies the server with it. Unset: a TLS server is verified against the system CAs. See docs/deploy-security.md.' },
  { name: 'KEEL_NATS_CLUSTER', default: '(unset: one node)', description: '`3` or `5`: `keel start` runs and supervises that many clustered nats-server nodes on loopback (client ports KEEL_NATS_PORT, +1, +2 …; data under KEEL_DATA_DIR/nats/n0, n1 …) and connects every process to all of them. Not with KEEL_NATS_URL. See docs/bus.md#clustering-and-durability.' },
  { name: 'KEEL_NATS_REPLICAS', default: '1 (3 with KEEL_NATS_CLUSTER)', description: 'Replicas of every stream and KV bucket Keel provisions: 1, 3 or 5 (at most the number of JetStream servers). An existing stream is changed in place (R1 to R3 included). With KEEL_NATS_URL, set it to 3 for a 3-node cluster.' },
  { name: 'KEEL_NATS_MAX_BYTES', default: '1GB', description: 'Disk all of Keel\'s streams together may fill, per replica (e.g. `512MB`, `4GB`; at least `64MB`), split among them: tasks 20 %, events 35 %, inbound 30 %, outbound 5 %, dead letters 10 %. JetStream reserves it when the streams are created. Each stream is also bounded by age and message count; a full task stream refuses new tasks (the publisher retries), the others drop their oldest messages. See docs/bus.md.' },
  { name: 'KEEL_NATS_SYNC', default: 'always', description: 'JetStream fsync policy of the nats-servers Keel runs and of `keel deploy nats-config`: `always` (fsync before every acknowledgement) or an interval such as `1s` or `2m` (NATS\'s own default; an OS crash or power loss can lose what was acknowledged since the last sync). See docs/bus.md#clustering-and-durability.' },
  { name: 'KEEL_HTTP_HOST', default: '127.0.0.1', description: 'Address the HTTP API (/healthz, /metrics, /v1/...) listens on.' },
  { name: 'KEEL_HTTP_PORT', default: '8080', description: 'Port of the HTTP API.' },
  { name: 'KEEL_STATE', default: 'sqlite:<KEEL_DATA_DIR>/keel.db', description: 'System of record: `sqlite:PATH` (embedded) or a `mongodb://` / `mongodb+srv://` URL.' },
  { name: 'KEEL_SMTP_HOST', default: '127.0.0.1', description: 'Address the SMTP ingress listens on.' },
  { name: 'KEEL_SMTP_PORT', default: '2525', description: 'Port of the SMTP ingress (inbound customer email).' },
  { name: 'KEEL_SMTP_MAX_BYTES', default: '10485760', description: 'Largest inbound message accepted (announced with SIZE; larger ones get 552).' },
  { name: 'KEEL_SMTP_RELAY', default: '(unset)', description: 'smtp://host:port relay for outbound mail; unset = write .eml files to KEEL_DATA_DIR/outbox/.' },
  { name: 'KEEL_SMTP_FROM', default: 'support@keel.local', description: 'From address of replies.' },
  { name: 'KEEL_SMTP_ACCEPT', default: '(the domain of KEEL_SMTP_FROM)', description: 'Recipients the SMTP ingress takes mail for: comma list of domains (`example.com`) and addresses (`support@example.com`), `*` for any; other recipients are refused with 550 5.1.1.' },
  { name: 'KEEL_OPERATOR_EMAIL', default: 'operator@keel.local', description: 'Where escalations (with the whole ticket history) are sent.' },
  { name: 'KEEL_AGENTS', default: '(every feature\'s default agents)', description: 'Agents `keel start` supervises: comma list of names or module paths, `name@N` for N replicas, `none` for none.' },
  { name: 'KEEL_WORKFLOWS', default: '(unset)', description: 'Extra workflow definition modules (comma-separated paths).' },
  { name: 'KEEL_FEATURES', default: '(unset)', description: 'Extra feature modules (comma-separated paths, each default-exports `defineFeature(...)`): their entity types, workflows, agents and ingress join the built-in features.' },
  { name: 'KEEL_WORKFLOW_SWEEP_MS', default: '1000', description: 'How often the agent instance holding the workflow timer lease looks for due timers (retries, timeouts, approval deadlines); the others wait on the bus and take over within the lease TTL (2 s) if it dies. 0: this process never fires timers.' },
  { name: 'KEEL_AGENT_HOSTS', default: '(unset: one process per agent)', description: 'Co-host agents in fewer processes: `all` (every agent in one process), or `;`-separated groups `name:agent,agent` (e.g. `inbound:intake,triage,summarizer`). Each agent keeps its own bus user, secrets, heartbeat and restarts; a crash of the process stops every agent it hosts. See docs/agents.md.' },
  { name: 'KEEL_AGENT_SANDBOX', default: '1', description: 'Run each supervised agent process under Node\'s permission model (`--permission`: reads limited to the repo, node_modules, KEEL_MODELS_DIR and what its manifest\'s `sandbox.fsRead` adds; writes to KEEL_DATA_DIR, the compile cache and `sandbox.fsWrite`; no child processes or workers unless declared) with a V8 heap cap (`sandbox.maxOldSpaceMb`, default 256 MB), and cgroup v2 limits where writable. A denied access fails the task for good (AGENT_SANDBOX_DENIED). `0` turns it all off. See docs/sandbox.md.' },
  { name: 'KEEL_METRICS_PORT', default: '(unset)', description: 'For `keel agent start`: serve the agent\'s /metrics on this port.' },
  { name: 'KEEL_SUPPORT_SIGNATURE', default: 'The support team', description: 'Signature of suggested replies.' },
  { name: 'KEEL_OPERATOR', default: '$USER', description: 'Operator name the CLI records as the actor of approvals and runs it starts.' },
  { name: 'KEEL_DRAIN_MS', default: '10000', description: 'How long an agent finishes in-flight tasks after SIGTERM before aborting them.' },
  { name: 'KEEL_SECRET_<NAME>', default: '(unset)', description: 'A secret value; each agent process receives only the secrets its capabilities declare.' },
  { name: 'KEEL_METRICS_HOST', default: '127.0.0.1', description: 'Address an agent\'s /metrics listens on (0.0.0.0 in containers).' },
  { name: 'KEEL_AGENT_METRICS', default: '1', description: 'For `keel start`: each supervised agent process serves its own /metrics on a free port of KEEL_METRICS_HOST, listed for Prometheus at GET /metrics/targets (http_sd_configs; deploy/prometheus-local.yml). `0`: agent processes serve no metrics. See docs/observability.md.' },
  { name: 'KEEL_POLICY_REPLY_EMAIL', default: 'approve', description: 'Sending an email reply: `approve` (wait for the operator), `audit` (send, and record it in the audit log), `auto` (send).' },
  { name: 'KEEL_POLICY_REPLY_CHAT', default: 'approve', description: 'Sending a chat reply: same modes. Any `KEEL_POLICY_<ACTION>` sets the policy of a workflow approval whose `policy` is that action.' },
  { name: 'KEEL_SQLITE_SYNC', default: 'FULL', description: 'SQLite durability: FULL syncs every commit; NORMAL (WAL) survives process crashes but may lose the last commits on power loss, and is faster.' },
  { name: 'KEEL_SUBJECT_PREFIX', default: 'keel', description: 'First token of every bus subject, stream and bucket name (one prefix per tenant).' },
  { name: 'KEEL_LOG_LEVEL', default: 'info', description: 'pino log level: trace, debug, info, warn, error, fatal, silent.' },
  { name: 'KEEL_LOG_FORMAT', default: 'auto', description: 'Log lines: `auto` (readable lines on a terminal, JSON when stdout is not a TTY), `json` or `pretty`. Agent processes of `keel start` inherit it. See docs/observability.md.' },
  { name: 'KEEL_TOOLS_DIR', default: '~/.cache/keel/tools', description: 'Cache of the servers deploy/provision.sh builds (nats-server, FerretDB, Jaeger, natscli).' },
  { name: 'KEEL_MEMORY', default: 'sqlite-vec:<KEEL_DATA_DIR>/memory.db', description: 'Long-term memory store: `sqlite-vec:PATH` (embedded) or a Qdrant URL `http(s)://host:6333` (production; collections are prefixed with KEEL_SUBJECT_PREFIX).' },
  { name: 'KEEL_EMBEDDINGS', default: 'local:all-minilm-l6-v2', description: 'Embedding model as `provider:model`: `local:all-minilm-l6-v2` (no network; files provisioned by deploy/provision.sh), `openai:text-embedding-3-small` (KEEL_OPENAI_BASE_URL/OPENAI_API_KEY), `ollama:nomic-embed-text` (KEEL_OLLAMA_URL).' },
  { name: 'KEEL_MODELS_DIR', default: '~/.cache/keel/models', description: 'Cache of the local model files deploy/provision.sh fetches (the embedded embedding model).' },
  { name: 'KEEL_MEMORY_WEIGHTS', default: 'vector=0.55,lexical=0.3,recency=0.1,importance=0.05', description: 'How recall fuses its components into one score (relative weights; `keel memory search --explain` shows each).' },
  { name: 'KEEL_BUDGET_ON_REFUSAL', default: 'cheaper', description: 'What a model call refused by a hard budget does instead: `cheaper` (the next cheaper tier, then tier 0), `tier0` (tier 0 at once), `ask` (tier 0 now, and an approval asking the operator to raise the limit).' },
  { name: 'KEEL_INTENT_CACHE_TTL', default: '86400', description: 'Seconds a cached model answer stays valid in the intent cache (0 turns the cache off).' },
  { name: 'KEEL_BATCH_WINDOW_MS', default: '30000', description: 'How long low-urgency model work (summaries, digests) waits to be batched into one call; urgent work never waits.' },
  { name: 'KEEL_BATCH_SIZE', default: '8', description: 'A batch goes out when it holds this many items, even before its window ends.' },
  { name: 'KEEL_LAUNCH_SEARCH_URL', default: '(unset: research from the notes alone)', description: 'Web-search connector of the launch researcher: a URL with `{query}` (e.g. `https://search.example/api?q={query}`) answering JSON `{ results: [{ title, url, snippet }] }`.' },
  { name: 'KEEL_LAUNCH_FOLLOW_UP_MS', default: '259200000', description: 'How long after the launch the follow-up email goes out (default 3 days).' },
  { name: 'KEEL_LAUNCH_DUE_MS', default: '3600000', description: 'Due time of a launch task an agent owns (research, drafts, plan), from the launch start; publishing tasks are due this long after their calendar time.' },
  { name: 'KEEL_LAUNCH_REVIEW_DUE_MS', default: '86400000', description: 'Due time of the operator\'s review tasks, from the launch start (and never before the launch time).' },
  { name: 'KEEL_LAUNCH_SWEEP_MS', default: '60000', description: 'How often the marketer looks for overdue launch tasks (each one blocks its product once, with the reason).' },
  { name: 'KEEL_TRACES_UI', default: '(unset: trace ids shown as text)', description: 'Base URL of a trace UI (Jaeger, e.g. `http://127.0.0.1:16686`): the web console links each trace id to `<url>/trace/<id>`. See docs/console.md.' },
  { name: 'KEEL_RUN_RETENTION', default: '90d', description: 'Retention of finished workflow runs\' histories (units s, m, h, d; `off` keeps everything): a run finished (and an idle concurrency lane unchanged) longer ago has its events replaced by one `compacted` event holding its final state (kept: `keel run show` still shows every step), and idempotency records completed longer ago are deleted (a run that old can no longer be replayed). Keep it longer than the DLQ stream\'s max age (re-drives) and the task stream\'s. See docs/operations.md.' },
  { name: 'KEEL_RETENTION_INTERVAL', default: '1h', description: 'How often `keel start` runs the retention pass (also once shortly after start); its last report is in KEEL_DATA_DIR/retention.json.' },
  { name: 'KEEL_AUTO_PROVISION', default: '1', description: 'When no nats-server binary is found, `keel start` builds the pinned one with deploy/provision.sh (0 to refuse instead).' },
  { name: 'KEEL_RATE_LIMIT_SENDER', default: '20/10m', description: 'Inbound messages one sender may send per window, as `N/duration` (units s, m, h, d: `20/10m`, `100/1h`), per email address (SMTP MAIL FROM and the parsed From) and per chat handle; `off` disables. Over it: SMTP `421 4.7.0`, chat HTTP 429 `RATE_LIMITED` with Retry-After, WebSocket an error frame. See docs/abuse-and-injection.md.' },
  { name: 'KEEL_RATE_LIMIT_CHANNEL', default: '600/1m', description: 'Inbound messages per window for a whole channel (email, chat), from everyone together, as `N/duration`; `off` disables. Refusals are counted in `keel_ingress_rate_limited` and audited (`ingress.rate_limited`, once per key and window).' },
  { name: 'KEEL_OPERATOR_TOKEN', default: '(unset)', description: 'An operator token for the HTTP API, of operator KEEL_OPERATOR, for compose and CI (any string of 24+ characters; send it as `Authorization: Bearer <token>`). It is checked besides the tokens of `keel operator token create`, is never written to disk, and is not passed to agent processes. Unset and no token created yet: `keel start` creates one and prints it once. See docs/security.md.' },
  { name: 'KEEL_REDACT', default: 'cloud', description: 'Redaction of model prompts (models/redact.ts): `cloud` replaces e-mail addresses, phone numbers, card numbers, IBANs, street addresses, KEEL_SECRET_* values and the values of entity fields declared `sensitive` with placeholders (`[EMAIL_1]`) in every prompt to a cloud provider (openai, anthropic) and puts them back in the answer; `all` does it for local models (ollama, scripted) too; `off` never. See docs/data-protection.md.' },
];

const port = (name: string) =>
  z.coerce
    .number({ error: `${name} must be a number` })
    .int(`${name} must be an integer`)
    .min(0, `${name} must be 0..65535`)
    .max(65535, `${name} must be 0..65535`);

/** Units of a rate-limit window (`20/10m`): whole seconds and up. */
const RATE_UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `N/duration` (`20/10m`, `600/1m`, `5/30s`, `100/h`) → `{ points, durationMs }`; `off` → null (no
 * limit). A string names the problem.
 */
export function parseRateLimit(value: string): RateLimitSpec | null | string {
  const v = value.trim().toLowerCase();
  if (v === 'off' || v === 'none') return null;
  const m = /^(\d+)\s*\/\s*(\d*)\s*([smhd])$/.exec(v);
  if (!m) return `'${value}' is not N/duration (e.g. 20/10m, 600/1m, 5/30s, 100/1h; units s, m, h, d) or off`;
  const points = Number(m[1]);
  const durationMs = Number(m[2] || '1') * RATE_UNITS[m[3]!]!;
  if (points < 1) return `'${value}': N must be at least 1 (use off to disable the limit)`;
  if (durationMs < 1_000) return `'${value}': the window must be at least 1s`;
  return { points, durationMs };
}

/** `90d`, `12h`, `30m`, `45s` (also `1.5h`) → ms; `off` → null where allowed. A string names the problem. */
export function parseDurationMs(value: string, allowOff = false): number | null | string {
  const v = value.trim().toLowerCase();
  if (allowOff && (v === 'off' || v === 'none')) return null;
  const m = /^(\d+(?:\.\d+)?)\s*([smhd])$/.exec(v);
  if (!m) return `'${value}' is not a duration (e.g. 90d, 12h, 30m, 45s${allowOff ? ') or off' : ')'}`;
  const ms = Math.round(Number(m[1]) * RATE_UNITS[m[2]!]!);
  if (ms < 1_000) return `'${value}': at least 1s`;
  return ms;
}

const duration = (name: string, allowOff: boolean) =>
  z.string().transform((v, ctx): number | null => {
    const r = parseDurationMs(v, allowOff);
    if (typeof r === 'string') {
      ctx.addIssue({ code: 'custom', message: `${name}: ${r}` });
      return z.NEVER;
    }
    return r;
  });

const rateLimit = () =>
  z.string().transform((v, ctx): RateLimitSpec | null => {
    const r = parseRateLimit(v);
    if (typeof r === 'string') {
      ctx.addIssue({ code: 'custom', message: r });
      return z.NEVER;
    }
    return r;
  });

const schema = z.object({
  KEEL_DATA_DIR: z.string().min(1).default('./.keel'),
  KEEL_MIN_FREE_MB: z.coerce.number({ error: 'KEEL_MIN_FREE_MB must be a number of MiB' }).min(0, 'KEEL_MIN_FREE_MB must be 0 or more').default(256),
  KEEL_NATS_URL: z.string().min(1).optional(),
  KEEL_NATS_PORT: port('KEEL_NATS_PORT').default(4222),
  KEEL_NATS_SERVER_BIN: z.string().min(1).optional(),
  KEEL_NATS_USER: z.string().min(1).optional(),
  KEEL_NATS_PASSWORD: z.string().min(1).optional(),
  KEEL_NATS_TLS_CA: z.string().min(1).optional(),
  KEEL_NATS_CLUSTER: z.enum(['0', '1', '3', '5'], { error: 'KEEL_NATS_CLUSTER must be 3 or 5 (nodes of the local cluster), or 1 for one node' }).optional(),
  KEEL_NATS_REPLICAS: z.enum(['1', '3', '5'], { error: 'KEEL_NATS_REPLICAS must be 1, 3 or 5' }).optional(),
  KEEL_NATS_MAX_BYTES: z
    .string()
    .transform((v, ctx) => {
      const n = parseBytes(v);
      if (n === undefined || n < 64 * 1024 * 1024) {
        ctx.addIssue({ code: 'custom', message: 'KEEL_NATS_MAX_BYTES must be a size of at least 64MB (e.g. 512MB, 4GB)' });
        return z.NEVER;
      }
      return n;
    })
    .optional(),
  KEEL_NATS_SYNC: z
    .string()
    .trim()
    .regex(/^(always|\d+(ms|s|m|h))$/, 'KEEL_NATS_SYNC must be `always` or an interval such as 100ms, 1s, 2m')
    .default('always'),
  KEEL_HTTP_HOST: z.string().min(1).default('127.0.0.1'),
  KEEL_HTTP_PORT: port('KEEL_HTTP_PORT').default(8080),
  KEEL_SMTP_HOST: z.string().min(1).default('127.0.0.1'),
  KEEL_SMTP_PORT: port('KEEL_SMTP_PORT').default(2525),
  KEEL_SMTP_MAX_BYTES: z.coerce.number().int().min(1024).default(10 * 1024 * 1024),
  KEEL_STATE: z.string().min(1).optional(),
  KEEL_SUBJECT_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/, 'KEEL_SUBJECT_PREFIX must be one subject token: letters, digits, _ or -')
    .default('keel'),
  KEEL_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  KEEL_LOG_FORMAT: z.enum(['auto', 'json', 'pretty'], { error: 'KEEL_LOG_FORMAT must be auto, json or pretty' }).default('auto'),
  KEEL_TOOLS_DIR: z.string().min(1).optional(),
  KEEL_MEMORY: z.string().min(1).optional(),
  KEEL_EMBEDDINGS: z.string().regex(/^[a-z]+:.+$/, 'KEEL_EMBEDDINGS must be provider:model, e.g. local:all-minilm-l6-v2 or openai:text-embedding-3-small').default('local:all-minilm-l6-v2'),
  KEEL_MODELS_DIR: z.string().min(1).optional(),
  KEEL_MEMORY_WEIGHTS: z.string().optional(),
  KEEL_BUDGET_ON_REFUSAL: z.enum(['cheaper', 'tier0', 'ask'], { error: 'KEEL_BUDGET_ON_REFUSAL must be cheaper, tier0 or ask' }).default('cheaper'),
  KEEL_INTENT_CACHE_TTL: z.coerce.number({ error: 'KEEL_INTENT_CACHE_TTL must be a number of seconds' }).int().min(0).default(86_400),
  KEEL_BATCH_WINDOW_MS: z.coerce.number({ error: 'KEEL_BATCH_WINDOW_MS must be a number' }).int().min(0).default(30_000),
  KEEL_BATCH_SIZE: z.coerce.number({ error: 'KEEL_BATCH_SIZE must be a number' }).int().min(1).default(8),
  KEEL_LAUNCH_SEARCH_URL: z.string().url('KEEL_LAUNCH_SEARCH_URL must be a URL (with {query} where the query goes)').optional(),
  KEEL_LAUNCH_FOLLOW_UP_MS: z.coerce.number({ error: 'KEEL_LAUNCH_FOLLOW_UP_MS must be a number' }).int().min(0).default(3 * 86_400_000),
  KEEL_LAUNCH_DUE_MS: z.coerce.number({ error: 'KEEL_LAUNCH_DUE_MS must be a number' }).int().min(1).default(3_600_000),
  KEEL_LAUNCH_REVIEW_DUE_MS: z.coerce.number({ error: 'KEEL_LAUNCH_REVIEW_DUE_MS must be a number' }).int().min(1).default(86_400_000),
  KEEL_LAUNCH_SWEEP_MS: z.coerce.number({ error: 'KEEL_LAUNCH_SWEEP_MS must be a number' }).int().min(1_000).default(60_000),
  KEEL_TRACES_UI: z.string().url('KEEL_TRACES_UI must be a URL, e.g. http://127.0.0.1:16686').optional(),
  KEEL_RUN_RETENTION: duration('KEEL_RUN_RETENTION', true).default(90 * 86_400_000),
  KEEL_RETENTION_INTERVAL: duration('KEEL_RETENTION_INTERVAL', false).default(3_600_000),
  KEEL_AUTO_PROVISION: z.enum(['0', '1', 'true', 'false']).default('1'),
  KEEL_RATE_LIMIT_SENDER: rateLimit().default({ points: 20, durationMs: 600_000 }),
  KEEL_RATE_LIMIT_CHANNEL: rateLimit().default({ points: 600, durationMs: 60_000 }),
  KEEL_AGENTS: z.string().optional(),
  KEEL_WORKFLOWS: z.string().optional(),
  KEEL_FEATURES: z.string().optional(),
  KEEL_WORKFLOW_SWEEP_MS: z.coerce.number({ error: 'KEEL_WORKFLOW_SWEEP_MS must be a number' }).int().min(0).default(1_000),
  KEEL_METRICS_PORT: port('KEEL_METRICS_PORT').optional(),
  KEEL_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  KEEL_AGENT_METRICS: z.enum(['0', '1'], { error: 'KEEL_AGENT_METRICS must be 0 or 1' }).default('1'),
  KEEL_SUPPORT_SIGNATURE: z.string().trim().min(1).default('The support team'),
  KEEL_OPERATOR_EMAIL: z.string().trim().min(1).default('operator@keel.local'),
  KEEL_OPERATOR: z.string().trim().min(1).optional(),
  KEEL_REDACT: z.enum(['cloud', 'all', 'off'], { error: 'KEEL_REDACT must be cloud, all or off' }).default('cloud'),
  KEEL_OPERATOR_TOKEN: z.preprocess((v) => (v === '' ? undefined : v), z.string().trim().min(24, 'KEEL_OPERATOR_TOKEN must be at least 24 characters (e.g. openssl rand -base64 32)').optional()),
  USER: z.string().optional(),
  KEEL_SMTP_RELAY: z.string().trim().min(1).optional(),
  KEEL_SMTP_FROM: z.string().trim().min(1).default('support@keel.local'),
  KEEL_SMTP_ACCEPT: z
    .string()
    .transform((v) => list(v.toLowerCase()))
    .pipe(z.array(z.string().regex(/^(\*|@?[^\s@,]+|[^\s@,]+@[^\s@,]+)$/, 'KEEL_SMTP_ACCEPT takes domains (example.com), addresses (support@example.com) or *, comma-separated')).min(1, 'KEEL_SMTP_ACCEPT names no recipient'))
    .optional(),
  KEEL_DRAIN_MS: z.coerce.number({ error: 'KEEL_DRAIN_MS must be a number' }).int().min(0).default(10_000),
  KEEL_SQLITE_SYNC: z.string().transform((v) => v.toUpperCase()).pipe(z.enum(['FULL', 'NORMAL'], { error: 'KEEL_SQLITE_SYNC must be FULL or NORMAL' })).default('FULL'),
  KEEL_AGENT_HOSTS: z
    .string()
    .transform((v, ctx) => {
      const r = parseAgentHosts(v);
      if (typeof r === 'string' && r !== 'all') {
        ctx.addIssue({ code: 'custom', message: r });
        return z.NEVER;
      }
      return r;
    })
    .optional(),
  KEEL_AGENT_NATS_CREDENTIALS: z
    .string()
    .transform((v, ctx) => {
      try {
        return z.record(z.string(), z.object({ user: z.string().min(1), password: z.string().min(1) })).parse(JSON.parse(v));
      } catch {
        ctx.addIssue({ code: 'custom', message: 'KEEL_AGENT_NATS_CREDENTIALS must be JSON: { "<agent>": { "user": ..., "password": ... } }' });
        return z.NEVER;
      }
    })
    .optional(),
  KEEL_AGENT_NATS_USER: z.string().min(1).optional(),
  KEEL_AGENT_NATS_PASSWORD: z.string().min(1).optional(),
  KEEL_SUPERVISOR_PID: z.coerce.number().int().min(0).optional(),
});

export type PolicyMode = 'approve' | 'audit' | 'auto';

/** An inbound rate limit: at most `points` messages per `durationMs` window. */
export interface RateLimitSpec {
  points: number;
  durationMs: number;
}

/** One process that hosts several agents (KEEL_AGENT_HOSTS). */
export interface AgentHostGroup {
  name: string;
  /** agent names (or module paths) as in KEEL_AGENTS, without replica counts */
  agents: string[];
}

/**
 * Parses KEEL_AGENT_HOSTS: `all`, or `;`-separated groups `[name:]agent,agent,...`. Returns the
 * problem as a string when the value is malformed.
 */
export function parseAgentHosts(value: string): 'all' | AgentHostGroup[] | string {
  const v = value.trim();
  if (v === 'all') return 'all';
  const groups: AgentHostGroup[] = [];
  const seen = new Set<string>();
  for (const [i, raw] of v.split(';').map((g) => g.trim()).filter(Boolean).entries()) {
    // `name:agents` (a module URL's `file://` is not a name)
    const named = /^([^,:]+):(?!\/\/)(.*)$/.exec(raw);
    const name = named ? named[1]!.trim() : `host${i + 1}`;
    const agents = list(named ? named[2] : raw).map((a) => a.replace(/@\d+$/, ''));
    if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) return `KEEL_AGENT_HOSTS: invalid host name '${name}' (lowercase letters, digits and '-')`;
    if (agents.length === 0) return `KEEL_AGENT_HOSTS: host '${name}' names no agent`;
    for (const a of agents) {
      if (seen.has(a)) return `KEEL_AGENT_HOSTS: agent '${a}' is in two hosts`;
      seen.add(a);
    }
    if (groups.some((g) => g.name === name)) return `KEEL_AGENT_HOSTS: host '${name}' is named twice`;
    groups.push({ name, agents });
  }
  if (groups.length === 0) return 'KEEL_AGENT_HOSTS: give `all` or groups like `inbound:intake,triage`';
  return groups;
}

export interface KeelConfig {
  dataDir: string;
  /** KEEL_MIN_FREE_MB in bytes: free space under dataDir below which new work is refused (0 = no guard) */
  minFreeBytes: number;
  natsUrl: string | undefined;
  natsPort: number;
  natsServerBin: string | undefined;
  /** KEEL_NATS_USER / KEEL_NATS_PASSWORD: the engine's and the CLI's bus credentials on KEEL_NATS_URL */
  natsUser: string | undefined;
  natsPassword: string | undefined;
  /** KEEL_NATS_TLS_CA: the CA file clients verify the server's certificate with (connectBus reads the variable itself) */
  natsTlsCa: string | undefined;
  /** KEEL_NATS_CLUSTER: nodes of the local nats-server cluster `keel start` runs (1 = one node, no cluster) */
  natsCluster: 1 | 3 | 5;
  /** KEEL_NATS_REPLICAS: replicas of Keel's streams and buckets */
  natsReplicas: 1 | 3 | 5;
  /** KEEL_NATS_MAX_BYTES: bytes all of Keel's streams together may hold, per replica (undefined: the bus's default, 1 GiB) */
  natsMaxBytes: number | undefined;
  /** KEEL_NATS_SYNC: `always` or an interval (`1s`, `2m`): the JetStream sync_interval of the servers Keel configures */
  natsSync: string;
  httpHost: string;
  httpPort: number;
  smtpHost: string;
  smtpPort: number;
  smtpMaxBytes: number;
  /** `sqlite:/abs/path` or a MongoDB URL */
  state: string;
  subjectPrefix: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  /** KEEL_LOG_FORMAT: readable lines on a terminal (`auto`), or always JSON / pretty */
  logFormat: 'auto' | 'json' | 'pretty';
  toolsDir: string | undefined;
  autoProvision: boolean;
  /** KEEL_AGENTS: names or module paths (`name@N` for replicas), `none`, or undefined for the defaults */
  agents: string[] | 'none' | undefined;
  /** KEEL_WORKFLOWS: extra workflow definition modules */
  workflowModules: string[];
  /** KEEL_FEATURES: extra feature modules */
  featureModules: string[];
  workflowSweepMs: number;
  /** KEEL_METRICS_PORT: an agent's own /metrics port (undefined = none) */
  metricsPort: number | undefined;
  metricsHost: string;
  /** KEEL_AGENT_METRICS: `keel start`'s agent processes serve /metrics (free ports, listed at /metrics/targets) */
  agentMetrics: boolean;
  supportSignature: string;
  operatorEmail: string;
  /** who the CLI records as the actor: KEEL_OPERATOR, else $USER, else `operator` */
  operator: string;
  /** KEEL_TRACES_UI: a trace UI's base URL the console links trace ids to (`<url>/trace/<id>`) */
  tracesUi?: string;
  /** KEEL_OPERATOR_TOKEN: an HTTP API token of `operator` from the environment (compose, CI); never logged */
  operatorToken: string | undefined;
  smtpRelay: string | undefined;
  smtpFrom: string;
  /** KEEL_SMTP_ACCEPT: lower-cased domains and addresses the SMTP ingress takes mail for (`*`: any); default the domain of KEEL_SMTP_FROM */
  smtpAccept: string[];
  /** KEEL_RATE_LIMIT_SENDER / KEEL_RATE_LIMIT_CHANNEL: inbound limits per sender (address, chat handle) and per channel; null = off */
  rateLimits: { sender: RateLimitSpec | null; channel: RateLimitSpec | null };
  drainMs: number;
  sqliteSync: 'FULL' | 'NORMAL';
  /** KEEL_POLICY_<ACTION>: policy modes by action key (`reply.email` …); unset = approve */
  policies: Record<string, PolicyMode>;
  /** KEEL_SECRET_<NAME> values by NAME; each agent receives only the ones it declares */
  secrets: Record<string, string>;
  /** KEEL_AGENT_HOSTS: agents `keel start` runs together in one process (`all`, or named groups); undefined = one process per agent */
  agentHosts: 'all' | AgentHostGroup[] | undefined;
  /** a host process's bus credentials, by agent (set by the supervisor when it co-hosts agents) */
  agentNatsCredentials: Record<string, { user: string; password: string }>;
  /** an agent process's own bus credentials (set by the supervisor) */
  agentNatsUser: string | undefined;
  agentNatsPassword: string | undefined;
  /** set by `keel start` for its agent processes: they leave when it is gone */
  supervisorPid: number | undefined;
  /** KEEL_MEMORY: `sqlite-vec:/abs/path` or a Qdrant `http(s)://` URL */
  memory: string;
  /** KEEL_EMBEDDINGS: `provider:model` */
  embeddings: string;
  /** KEEL_MODELS_DIR: local model files (absolute) */
  modelsDir: string;
  /** KEEL_MEMORY_WEIGHTS parsed: relative weights of the recall components */
  memoryWeights: { vector: number; lexical: number; recency: number; importance: number };
  /** KEEL_BUDGET_ON_REFUSAL */
  budgetOnRefusal: 'cheaper' | 'tier0' | 'ask';
  /** KEEL_INTENT_CACHE_TTL in seconds (0 = off) */
  intentCacheTtlS: number;
  batchWindowMs: number;
  batchSize: number;
  /** the launch feature (agents/launch/): KEEL_LAUNCH_* */
  launch: { searchUrl: string | undefined; followUpMs: number; dueMs: number; reviewDueMs: number; sweepMs: number };
  /** KEEL_RUN_RETENTION (null: off) and KEEL_RETENTION_INTERVAL, in ms (docs/operations.md) */
  retention: { runsMs: number | null; intervalMs: number };
  /** `OTEL_*` variables, for initTelemetry */
  telemetryEnv: Record<string, string>;
  /** model variables (KEEL_MODEL_*, endpoints, API keys, KEEL_PRICES), for createModelRegistry */
  modelEnv: Record<string, string>;
}

/** The variables of one family, by exact name or prefix, as a plain map. */
function pick(env: Record<string, string | undefined>, names: readonly string[], prefixes: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && (names.includes(k) || prefixes.some((p) => k.startsWith(p)))) out[k] = v;
  return out;
}

/** Names of environment variables an agent process must not inherit (it gets only its own). */
const PRIVATE_ENV = /^(KEEL_SECRET_|KEEL_AGENT_NATS_|KEEL_NATS_USER$|KEEL_NATS_PASSWORD$|KEEL_NATS_USER_|KEEL_NATS_PASSWORD_|KEEL_OPERATOR_TOKEN$)/;

/** The environment an agent process inherits from `keel start`: everything but secrets and bus credentials. */
export function inheritedEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !PRIVATE_ENV.test(k)) out[k] = v;
  return out;
}

/** The standard OpenTelemetry variables (`OTEL_*`) for `initTelemetry({ env })`. */
export function telemetryEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  return pick(env, [], ['OTEL_']);
}

/** The model variables (`KEEL_MODEL_*`, endpoints, API keys, `KEEL_PRICE_*`, `KEEL_PRICES`) for `createModelRegistry(env)`. */
export function modelEnv(env: Record<string, string | undefined> = process.env): Record<string, string> {
  return pick(env, ['KEEL_OPENAI_BASE_URL', 'KEEL_OLLAMA_URL', 'KEEL_PRICES', 'OPENAI_API_KEY', 'ANTHROPIC_API_KEY'], ['KEEL_MODEL_', 'KEEL_PRICE_']);
}

export const DEFAULT_MEMORY_WEIGHTS = Object.freeze({ vector: 0.55, lexical: 0.3, recency: 0.1, importance: 0.05 });

/** `vector=0.6,lexical=0.3` → weights (unnamed components keep their defaults); a string names the problem. */
export function parseMemoryWeights(v: string | undefined): KeelConfig['memoryWeights'] | string {
  const out: KeelConfig["memoryWeights"] = { ...DEFAULT_MEMORY_WEIGHTS };
  for (const part of list(v)) {
    const m = /^(vector|lexical|recency|importance)\s*=\s*([0-9]*\.?[0-9]+)$/.exec(part);
    if (!m) return `KEEL_MEMORY_WEIGHTS: '${part}' is not name=weight (names: vector, lexical, recency, importance)`;
    out[m[1] as keyof typeof out] = Number(m[2]);
  }
  if (out.vector + out.lexical + out.recency + out.importance <= 0) return 'KEEL_MEMORY_WEIGHTS: the weights add up to 0';
  return out;
}

const expandHome = (p: string): string => (p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p);

const list = (v: string | undefined): string[] => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);

/** `support@keel.local` or `Support <support@keel.local>` → `keel.local`. */
function domainOf(address: string): string {
  const m = /@([^\s@<>,]+)>?\s*$/.exec(address.trim());
  return (m?.[1] ?? address.trim()).toLowerCase();
}

/**
 * KEEL_NATS_CLUSTER and KEEL_NATS_REPLICAS together: the local cluster's size and the replicas of
 * Keel's streams (default 1, 3 with a local cluster). A string names the problem.
 */
export function natsTopologyOf(v: { KEEL_NATS_URL?: string; KEEL_NATS_CLUSTER?: string; KEEL_NATS_REPLICAS?: string }): { cluster: 1 | 3 | 5; replicas: 1 | 3 | 5 } | string {
  const cluster = (v.KEEL_NATS_CLUSTER === '3' || v.KEEL_NATS_CLUSTER === '5' ? Number(v.KEEL_NATS_CLUSTER) : 1) as 1 | 3 | 5;
  const replicas = (v.KEEL_NATS_REPLICAS ? Number(v.KEEL_NATS_REPLICAS) : cluster > 1 ? 3 : 1) as 1 | 3 | 5;
  if (cluster > 1 && v.KEEL_NATS_URL) return `KEEL_NATS_CLUSTER=${cluster} runs a local cluster, KEEL_NATS_URL names a running one: set only one of them`;
  if (!v.KEEL_NATS_URL && replicas > cluster) {
    return cluster === 1
      ? `KEEL_NATS_REPLICAS=${replicas} needs ${replicas} JetStream servers, and keel start runs one: set KEEL_NATS_CLUSTER=${replicas === 5 ? 5 : 3} (a local cluster) or KEEL_NATS_URL (a running cluster), or KEEL_NATS_REPLICAS=1`
      : `KEEL_NATS_REPLICAS=${replicas} is more than the ${cluster} nodes of KEEL_NATS_CLUSTER: use at most ${cluster}`;
  }
  return { cluster, replicas };
}

/** KEEL_NATS_REPLICAS as every Keel process reads it (createBus provisions with it); 1 when unset or invalid (loadConfig reports it). */
export function natsReplicasFromEnv(env: Record<string, string | undefined> = process.env): 1 | 3 | 5 {
  const r = natsTopologyOf({ KEEL_NATS_URL: env.KEEL_NATS_URL || undefined, KEEL_NATS_CLUSTER: env.KEEL_NATS_CLUSTER || undefined, KEEL_NATS_REPLICAS: ['1', '3', '5'].includes(env.KEEL_NATS_REPLICAS ?? '') ? env.KEEL_NATS_REPLICAS : undefined });
  return typeof r === 'string' ? 1 : r.replicas;
}

/** `512MB`, `4GB`, `1.5GiB`, `1048576` → bytes (K/M/G/T are powers of 1024, as in nats-server); undefined when it is not a size. */
export function parseBytes(v: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$/i.exec(v);
  if (!m) return undefined;
  const unit = (m[2] ?? 'B').toUpperCase()[0]!;
  const pow = { B: 0, K: 1, M: 2, G: 3, T: 4 }[unit as 'B'] ?? 0;
  return Math.floor(Number(m[1]) * 1024 ** pow);
}

/** KEEL_NATS_MAX_BYTES as every Keel process reads it (createBus provisions with it); undefined when unset or invalid (loadConfig reports it). */
export function natsMaxBytesFromEnv(env: Record<string, string | undefined> = process.env): number | undefined {
  const n = env.KEEL_NATS_MAX_BYTES ? parseBytes(env.KEEL_NATS_MAX_BYTES) : undefined;
  return n !== undefined && n >= 64 * 1024 * 1024 ? n : undefined;
}

export class ConfigError extends KeelError {
  declare readonly code: 'KEEL_CONFIG_INVALID';
  readonly issues: string[];
  constructor(issues: string[]) {
    super('KEEL_CONFIG_INVALID', `invalid configuration:\n  ${issues.join('\n  ')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Reads and validates the configuration; throws {@link ConfigError} naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): KeelConfig {
  const picked: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== '') picked[key] = v;
  }
  const parsed = schema.safeParse(picked);
  const issues = parsed.success ? [] : parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  const policies: Record<string, PolicyMode> = {};
  const secrets: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith('KEEL_SECRET_')) secrets[k.slice('KEEL_SECRET_'.length)] = v;
    if (k.startsWith('KEEL_POLICY_') && v) {
      const mode = v.trim().toLowerCase();
      if (mode === 'approve' || mode === 'audit' || mode === 'auto') policies[k.slice('KEEL_POLICY_'.length).toLowerCase().replace(/_/g, '.')] = mode;
      else issues.push(`${k}: '${v}' is not a policy: use approve, audit or auto`);
    }
  }
  const memoryWeights = parseMemoryWeights(env.KEEL_MEMORY_WEIGHTS);
  if (typeof memoryWeights === 'string') issues.push(memoryWeights);
  if (!parsed.success || issues.length) throw new ConfigError(issues);
  const c = parsed.data;
  const nats = natsTopologyOf(c);
  if (typeof nats === 'string') throw new ConfigError([nats]);
  const dataDir = resolve(c.KEEL_DATA_DIR);
  return {
    dataDir,
    minFreeBytes: Math.round(c.KEEL_MIN_FREE_MB * 1024 * 1024),
    natsUrl: c.KEEL_NATS_URL,
    natsPort: c.KEEL_NATS_PORT,
    natsServerBin: c.KEEL_NATS_SERVER_BIN,
    natsUser: c.KEEL_NATS_USER,
    natsPassword: c.KEEL_NATS_PASSWORD,
    natsTlsCa: c.KEEL_NATS_TLS_CA,
    natsCluster: nats.cluster,
    natsReplicas: nats.replicas,
    natsSync: c.KEEL_NATS_SYNC,
    natsMaxBytes: c.KEEL_NATS_MAX_BYTES,
    httpHost: c.KEEL_HTTP_HOST,
    httpPort: c.KEEL_HTTP_PORT,
    smtpHost: c.KEEL_SMTP_HOST,
    smtpPort: c.KEEL_SMTP_PORT,
    smtpMaxBytes: c.KEEL_SMTP_MAX_BYTES,
    state: c.KEEL_STATE ?? `sqlite:${join(dataDir, 'keel.db')}`,
    subjectPrefix: c.KEEL_SUBJECT_PREFIX,
    logLevel: c.KEEL_LOG_LEVEL,
    logFormat: c.KEEL_LOG_FORMAT,
    toolsDir: c.KEEL_TOOLS_DIR,
    autoProvision: c.KEEL_AUTO_PROVISION === '1' || c.KEEL_AUTO_PROVISION === 'true',
    agents: c.KEEL_AGENTS?.trim() === 'none' ? 'none' : list(c.KEEL_AGENTS).length ? list(c.KEEL_AGENTS) : undefined,
    workflowModules: list(c.KEEL_WORKFLOWS),
    featureModules: list(c.KEEL_FEATURES),
    workflowSweepMs: c.KEEL_WORKFLOW_SWEEP_MS,
    metricsPort: c.KEEL_METRICS_PORT,
    metricsHost: c.KEEL_METRICS_HOST,
    agentMetrics: c.KEEL_AGENT_METRICS === '1',
    supportSignature: c.KEEL_SUPPORT_SIGNATURE,
    operatorEmail: c.KEEL_OPERATOR_EMAIL,
    operator: c.KEEL_OPERATOR ?? c.USER ?? 'operator',
    operatorToken: c.KEEL_OPERATOR_TOKEN,
    tracesUi: c.KEEL_TRACES_UI?.replace(/\/+$/, ''),
    smtpRelay: c.KEEL_SMTP_RELAY,
    smtpFrom: c.KEEL_SMTP_FROM,
    smtpAccept: c.KEEL_SMTP_ACCEPT ?? [domainOf(c.KEEL_SMTP_FROM)],
    rateLimits: { sender: c.KEEL_RATE_LIMIT_SENDER, channel: c.KEEL_RATE_LIMIT_CHANNEL },
    drainMs: c.KEEL_DRAIN_MS,
    sqliteSync: c.KEEL_SQLITE_SYNC,
    policies,
    secrets,
    agentHosts: c.KEEL_AGENT_HOSTS,
    agentNatsCredentials: c.KEEL_AGENT_NATS_CREDENTIALS ?? {},
    agentNatsUser: c.KEEL_AGENT_NATS_USER,
    agentNatsPassword: c.KEEL_AGENT_NATS_PASSWORD,
    supervisorPid: c.KEEL_SUPERVISOR_PID,
    memory: c.KEEL_MEMORY ?? `sqlite-vec:${join(dataDir, 'memory.db')}`,
    embeddings: c.KEEL_EMBEDDINGS,
    modelsDir: resolve(expandHome(c.KEEL_MODELS_DIR ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'keel', 'models'))),
    memoryWeights: memoryWeights as KeelConfig['memoryWeights'],
    budgetOnRefusal: c.KEEL_BUDGET_ON_REFUSAL,
    intentCacheTtlS: c.KEEL_INTENT_CACHE_TTL,
    batchWindowMs: c.KEEL_BATCH_WINDOW_MS,
    batchSize: c.KEEL_BATCH_SIZE,
    launch: { searchUrl: c.KEEL_LAUNCH_SEARCH_URL, followUpMs: c.KEEL_LAUNCH_FOLLOW_UP_MS, dueMs: c.KEEL_LAUNCH_DUE_MS, reviewDueMs: c.KEEL_LAUNCH_REVIEW_DUE_MS, sweepMs: c.KEEL_LAUNCH_SWEEP_MS },
    retention: { runsMs: c.KEEL_RUN_RETENTION, intervalMs: c.KEEL_RETENTION_INTERVAL! },
    telemetryEnv: telemetryEnv(env),
    modelEnv: modelEnv(env),
  };
}

export { KeelError, isKeelError, toKeelError } from './errors.ts';
export type { KeelErrorOptions } from './errors.ts';
export { findTool, provision, toolsDir, REPO_ROOT, PROVISION_SCRIPT, ProvisionError } from './tools.ts';
export type { ToolName } from './tools.ts';
export { KEEL_VERSION } from './version.ts';
