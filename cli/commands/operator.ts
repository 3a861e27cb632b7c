import type { Command } from 'commander';
import { loadConfig } from '../../config/index.ts';
import { createOperatorToken, listOperatorTokens, operatorsFile, revokeOperatorToken } from '../../engine/index.ts';
import { print, table } from '../context.ts';

/**
 * `keel operator token create|list|revoke`: the tokens of the HTTP API (docs/security.md). They
 * live hashed in `<KEEL_DATA_DIR>/operators.json`, so these commands need neither a running
 * engine nor a store; a running engine sees a change on its next request.
 */
export function registerOperator(program: Command): void {
  const operator = program.command('operator').description('Operator identity on the HTTP API (docs/security.md).');
  const token = operator
    .command('token')
    .description('Operator tokens for the HTTP API (`Authorization: Bearer <token>`, or POST /v1/session for a browser). Stored hashed in <KEEL_DATA_DIR>/operators.json (mode 0600); works with the engine stopped.');

  token
    .command('create')
    .description('Create a token and print it ONCE (only its SHA-256 is kept). Decisions made with it are recorded as actor human:<operator>.')
    .option('--name <name>', 'a label to recognize it by (e.g. laptop, ci)')
    .option('--operator <who>', 'the operator it authenticates (default KEEL_OPERATOR, else $USER)')
    .option('--json', 'print {token, id, name, operator, createdAt} as JSON')
    .action((o: { name?: string; operator?: string; json?: boolean }) => {
      const cfg = loadConfig();
      const { token: secret, record } = createOperatorToken(cfg.dataDir, { name: o.name, operator: o.operator ?? cfg.operator });
      print(o.json, { token: secret, ...record, file: operatorsFile(cfg.dataDir) }, () => {
        console.log(`created operator token ${record.id} (${record.name}) for operator ${record.operator}; it is shown only this once:\n\n  ${secret}\n`);
        console.log(`use it as: Authorization: Bearer <token>   (revoke: keel operator token revoke ${record.id})`);
      });
    });

  token
    .command('list')
    .description('Every token (revoked ones too), without secrets or hashes.')
    .option('--json', 'print {tokens: [...]} as JSON')
    .action((o: { json?: boolean }) => {
      const cfg = loadConfig();
      const tokens = listOperatorTokens(cfg.dataDir);
      print(o.json, { tokens, file: operatorsFile(cfg.dataDir) }, () => {
        if (tokens.length === 0) return console.log(`no operator tokens in ${operatorsFile(cfg.dataDir)} (keel operator token create)`);
        table(['ID', 'NAME', 'OPERATOR', 'CREATED', 'REVOKED'], tokens.map((t) => [t.id, t.name, t.operator, t.createdAt, t.revokedAt ?? '']));
      });
    });

  token
    .command('revoke')
    .description('Revoke a token: the engine refuses it (and ends its browser sessions) from the next request on.')
    .argument('<id>', 'the token id (keel operator token list; the 12 hex characters after keel_op_)')
    .option('--json', 'print {id, revokedAt, changed} as JSON')
    .action((id: string, o: { json?: boolean }) => {
      const cfg = loadConfig();
      const { record, changed } = revokeOperatorToken(cfg.dataDir, id.trim());
      print(o.json, { ...record, changed }, () => console.log(changed ? `revoked operator token ${record.id} (${record.name}, operator ${record.operator})` : `operator token ${record.id} was already revoked at ${record.revokedAt}`));
    });
}
