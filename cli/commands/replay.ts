import type { Command } from 'commander';
import { agentCatalog } from '../../agents/index.ts';
import { loadAgent, loadAgentModule, replayRun, type AgentDefinition } from '../../runtime/index.ts';
import { resolveRunId } from '../../workflows/index.ts';
import { openCli, print, table } from '../context.ts';

export function registerReplay(program: Command): void {
  program
    .command('replay')
    .argument('<runId>', 'run id, or a unique prefix of it')
    .option('--agent <module...>', 'agent module(s) whose handlers to replay (default: the built-in agents and KEEL_AGENTS modules)')
    .option('--json', 'print JSON: { runId, steps: [...], divergences, modelCalls, sideEffects } (calls and effects that reached the outside during the replay: 0 when faithful)')
    .description('Re-execute a finished run from its log with the recorded model answers and side-effect results: no model calls, no side effects. Reports every step whose decision now differs (exit 1 when one does).')
    .action(async (runIdArg: string, o: { agent?: string[]; json?: boolean }) => {
      const c = await openCli();
      try {
        const runId = await resolveRunId(c.store, runIdArg);
        const agents: AgentDefinition[] = [];
        for (const a of Object.values(agentCatalog(c.features))) agents.push(await loadAgent(a.module));
        const fromEnv = c.cfg.agents === 'none' ? [] : (c.cfg.agents ?? []);
        const extra = [...(o.agent ?? []), ...fromEnv.map((s) => s.replace(/@\d+$/, '')).filter((s) => /\.(ts|js|mjs)$/.test(s))];
        for (const p of extra) agents.push(...(await loadAgentModule(p)));
        const r = await replayRun(c.store, runId, agents);
        print(o.json, r, () => {
          console.log(`replay of ${r.runId} (${r.workflow} v${r.version}): ${r.divergences === 0 ? 'no divergence' : `${r.divergences} divergence(s)`}; model calls ${r.modelCalls}, side effects ${r.sideEffects}\n`);
          table(['STEP', 'CAPABILITY', 'RESULT', 'EFFECTS READ BACK', 'MODEL ANSWERS', 'WRITES SUPPRESSED', 'WHY'], r.steps.map((s) => [s.step, s.capability ?? '(approval)', s.result, String(s.effectsReadBack), String(s.modelAnswersReadBack), String(s.writesSuppressed), s.reason ?? '']));
          for (const s of r.steps) for (const c of s.promptChanges ?? []) console.log(`\n${s.step}: ${c.diff}`);
          for (const s of r.steps.filter((x) => x.result === 'diverged' && x.replayed !== undefined)) console.log(`\n${s.step}: recorded ${JSON.stringify(s.recorded)}\n${' '.repeat(s.step.length)}  now      ${JSON.stringify(s.replayed)}`);
        });
        if (r.divergences > 0) process.exitCode = 1;
      } finally {
        await c.close();
      }
    });
}
