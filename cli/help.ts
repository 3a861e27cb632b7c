/**
 * An example under every `--help`, by command path. A command group without its own
 * (`keel run --help`) shows its subcommands' first examples. tests/cli/cli.test.ts checks that
 * every command has one.
 */
import type { Command } from 'commander';

export const EXAMPLES: Readonly<Record<string, readonly string[]>> = {
  '': ['keel tickets --status open', 'keel approvals', 'keel ticket show tkt-3f2a9c0d1e4b5a67 --json', 'keel cost --by customer --since 7d'],
  init: ['KEEL_DATA_DIR=/srv/keel keel init'],
  start: ['keel start', 'KEEL_AGENTS=intake,triage@2 KEEL_HTTP_PORT=8081 keel start'],
  agents: ['keel agents', 'keel agents --json'],
  'agent start': ['keel agent start triage', 'keel agent start ./my-agents/notes.ts --metrics-port 9465'],
  'entity list': ['keel entity list --type customer --where status=lead --limit 20'],
  'entity show': ['keel entity show cus-0a1b2c3d4e5f6a7b --history', 'keel entity show tkt-3f2a9c0d1e4b5a67 --at 3 --json'],
  changes: ['keel changes --since 2h --type ticket', 'keel changes --after 1042 --json'],
  'audit export': ['keel audit export --since 7d > audit.jsonl', 'keel audit export --after 120', 'keel audit export --format csv > audit.csv'],
  'audit verify': ['keel audit verify'],
  cost: ['keel cost --by customer --since 7d', 'keel cost --by agent,capability --customer alice@example.com --json'],
  'budget set': ['keel budget set --customer alice@example.com --usd 5 --period month', 'keel budget set --workflow inbound-message --usd 20 --period day --soft'],
  'budget clear': ['keel budget clear --customer alice@example.com --period month'],
  budgets: ['keel budgets', 'keel budgets --json'],
  'run start': ['keel run start inbound-message --input \'{"message": {...}}\' --id my-run-1'],
  'run show': ['keel run show in-5d41402abc4b2a76b9719d91'],
  'run retry': ['keel run retry in-5d41402abc4b2a76b9719d91 --from triage'],
  'run cancel': ['keel run cancel in-5d41402abc4b2a76b9719d91'],
  runs: ['keel runs --status failed --since 24h', 'keel runs --customer alice@example.com --json'],
  approvals: ['keel approvals', 'keel approvals --state approved --json'],
  approve: ['keel approve in-5d41402abc4b2a76b9719d91_approve', 'keel approve in-5d41402abc4b2a76b9719d91_approve --text "Refunded today."'],
  reject: ['keel reject in-5d41402abc4b2a76b9719d91_approve --reason "already answered by phone"'],
  'approval show': ['keel approval show in-5d41', 'keel approval show in-5d41402abc4b2a76b9719d91_approve --json'],
  'dlq list': ['keel dlq list', 'keel dlq list --capability inbound.intake --json'],
  'dlq show': ['keel dlq show 12'],
  'dlq redrive': ['keel dlq redrive 12'],
  replay: ['keel replay in-5d41402abc4b2a76b9719d91 --json'],
  tickets: ['keel tickets --status open --since 1d', 'keel tickets --customer alice@example.com', 'keel tickets --customer bob42 --json'],
  'memory search': ['keel memory search "charged twice, wants the money back" --customer alice@example.com --explain', 'keel memory search "printer wifi" --type ticket --limit 5 --json'],
  'memory show': ['keel memory show mem-7fab943974dcdf178ee06b84 --json'],
  'memory add': ['keel memory add --text "Prefers phone calls after 5 pm" --customer alice@example.com'],
  'memory forget': ['keel memory forget --customer alice@example.com', 'keel memory forget --source tkt-3f2a9c0d1e4b5a67 --json'],
  'memory policy': ['keel memory policy', 'keel memory policy --json'],
  'memory policy set': ['keel memory policy set --type ticket --raw-days 7 --retain-days 180', 'keel memory policy set --type ticket --opt-out'],
  'memory sweep': ['keel memory sweep', 'keel memory sweep --now 2027-01-01T00:00:00Z --json'],
  'memory reindex': ['KEEL_EMBEDDINGS=openai:text-embedding-3-small keel memory reindex', 'keel memory reindex --batch-size 128 --json'],
  'ticket show': ['keel ticket show tkt-3f2a9c0d1e4b5a67', 'keel ticket show tkt-3f2a9c0d1e4b5a67 --json'],
  'ticket retriage': ['keel ticket retriage tkt-3f2a9c0d1e4b5a67 --intent cancellation', 'keel ticket retriage tkt-3f2a9c0d1e4b5a67 --intent refund --urgency high --escalate --json'],
  'triage examples': ['keel triage examples', 'keel triage examples --all --json'],
  'triage forget': ['keel triage forget tex-9c1f2ab34d5e6f70', 'keel triage forget tex-9c1f2ab34d5e6f70 --json'],
  why: ['keel why tkt-3f2a9c0d1e4b5a67', 'keel why in-5d41402abc4b2a76b9719d91 --json'],
  'product create': ['keel product create --name "Focus Timer" --pitch "A timer that blocks distractions" --audience "remote developers" --price 29 --doc notes.md', 'keel product create --name "Focus Timer" --pitch "..." --audience "..." --notes @notes.txt --subscribers @subscribers.txt --json'],
  'product subscribe': ['keel product subscribe focus-timer ada@example.com bob@example.com'],
  'product show': ['keel product show focus-timer', 'keel product show focus-timer --json'],
  products: ['keel products', 'keel products --json'],
  'launch start': ['keel launch start focus-timer --at +2h --budget 5', 'keel launch start focus-timer --at 2026-12-01T09:00:00+01:00 --follow-up-after 3d --json'],
  launches: ['keel launches', 'keel launches --json'],
  'content show': ['keel content show focus-timer-page', 'keel content show focus-timer-email-1 --version 1 --json'],
  'content diff': ['keel content diff focus-timer-page 1 2', 'keel content diff focus-timer-page 1 2 --json'],
  calendar: ['keel calendar', 'keel calendar --product focus-timer --json'],
  'deploy nats-config': ['keel deploy nats-config', 'keel deploy nats-config --tls-cert /etc/nats/tls/server.pem --tls-key /etc/nats/tls/server-key.pem --tls-ca /etc/nats/tls/ca.pem --json'],
  'deploy mongo-users': ['keel deploy mongo-users --out deploy/secrets/keel-users.js', 'keel deploy mongo-users --database keel --json'],
  'operator token create': ['keel operator token create --name laptop', 'keel operator token create --name ci --operator ada --json'],
  'operator token list': ['keel operator token list', 'keel operator token list --json'],
  'operator token revoke': ['keel operator token revoke 3f2a9c0d1e4b'],
  backup: ['keel backup --to /backups/keel-2026-12-03', 'keel backup --to /backups/keel-$(date +%F-%H%M) --quiet --json'],
  'backup verify': ['keel backup verify /backups/keel-2026-12-03', 'keel backup verify /backups/keel-2026-12-03 --json'],
  restore: ['keel restore /backups/keel-2026-12-03 --data-dir /srv/keel-restored', 'KEEL_DATA_DIR=/srv/keel keel restore /backups/keel-2026-12-03 --json'],
  'customer erase': ['keel customer erase alice@example.com', 'keel customer erase cus-3f2a9c0d1e4b5a6f --yes --reason "GDPR request 42" --json'],
};

/** `run start` for the command `start` under `run`; '' for the program itself. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** The examples `--help` shows for a command: its own, else its subcommands' first ones. */
export function examplesOf(cmd: Command): string[] {
  const own = EXAMPLES[commandPath(cmd)];
  if (own?.length) return [...own];
  return cmd.commands.flatMap((c) => examplesOf(c).slice(0, 1));
}

/** Adds the examples under every command's help (call after the commands are registered). */
export function addExamples(program: Command): void {
  const visit = (cmd: Command) => {
    const ex = examplesOf(cmd);
    if (ex.length) cmd.addHelpText('after', `\nExample${ex.length > 1 ? 's' : ''}:\n${ex.map((e) => `  $ ${e}`).join('\n')}\n`);
    for (const c of cmd.commands) visit(c);
  };
  visit(program);
}
