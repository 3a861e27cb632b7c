/**
 * The must-show test: a new feature folder (its own entity type, agent and workflow) runs end
 * to end under `keel start` without a line changed under shared-state/, workflows/ or runtime/.
 * The feature is tests/agents/fixtures/notes/, loaded with KEEL_FEATURES.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { REPO_ROOT, findTool } from '../../config/index.ts';
import { BUILTIN_FEATURES, entityTypesOf, loadFeatures } from '../../agents/index.ts';
import { createCapabilityTestKit } from '../../runtime/index.ts';
import { FLOORS } from '../../bin/check-floors.ts';
import { reportSkip, startEngineProcess, waitFor } from '../helpers/index.ts';
import { annotate } from './fixtures/notes/scrivener.ts';
import { noteType } from './fixtures/notes/entities.ts';

const FIXTURE = join(REPO_ROOT, 'tests', 'agents', 'fixtures', 'notes');
const FEATURE = join(FIXTURE, 'index.ts');

/** A feature sits on the agents/ floor; it may import the floors below it, each only through its index.ts. */
const FEATURE_FLOOR = FLOORS.agents!;

const filesUnder = (dir: string): string[] =>
  readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : p.endsWith('.ts') ? [p] : [];
  });

const importsOf = (src: string): string[] => [...src.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g)].map((m) => m[1]!);

type RunJson = { run: { status: string; error?: string; steps: Record<string, { status: string; agent?: string; output?: unknown }> } };
type EntityJson = { entityType: string; entityId: string; version: number; state: { title: string; text: string; annotations: string[] } };
type HistoryJson = { events: Array<{ version: number; type: string; data: unknown; meta: { actor: { kind: string; id: string } } }> };

describe('a new feature folder (tests/agents/fixtures/notes)', () => {
  it('imports the floors below it only through their index.ts, and nothing below agents/ names it', async () => {
    for (const file of filesUnder(FIXTURE)) {
      for (const spec of importsOf(readFileSync(file, 'utf8'))) {
        if (!spec.startsWith('.')) continue; // packages (zod, node:*)
        const target = resolve(dirname(file), spec);
        expect(existsSync(target), `${relative(REPO_ROOT, file)}: '${spec}' does not exist`).toBe(true);
        if (target.startsWith(FIXTURE + sep)) continue; // its own files
        const rel = relative(REPO_ROOT, target).split(sep);
        const floor = FLOORS[rel[0]!];
        expect(floor !== undefined && floor < FEATURE_FLOOR, `${relative(REPO_ROOT, file)}: '${spec}' is not a floor below the feature`).toBe(true);
        expect(rel.slice(1), `${relative(REPO_ROOT, file)}: '${spec}' bypasses ${rel[0]}/index.ts`).toEqual(['index.ts']);
      }
    }
    // it is not built in: it joins only through KEEL_FEATURES...
    expect(BUILTIN_FEATURES.map((f) => f.name)).not.toContain('notes');
    const features = await loadFeatures([FEATURE]);
    expect(features.map((f) => f.name)).toContain('notes');
    expect(entityTypesOf(features).map((t) => t.name)).toContain('note');
    // ...and no file of the mechanism floors names it, its workflow, its agent or its capabilities
    const names = ['notes.write', 'notes.annotate', 'note-taking', 'scrivener', 'fixtures/notes'];
    for (const floor of ['shared-state', 'workflows', 'runtime'])
      for (const file of filesUnder(join(REPO_ROOT, floor))) {
        const src = readFileSync(file, 'utf8');
        for (const n of names) expect(src.includes(n), `${relative(REPO_ROOT, file)} names '${n}'`).toBe(false);
      }
  });

  it('its capability runs in a unit test with the capability test kit (docs/add-an-agent.md)', async () => {
    const kit = await createCapabilityTestKit({ entities: [noteType], agent: 'scrivener' });
    try {
      await kit.store.append('note', 'n-1', 0, [{ type: 'created', data: { title: 'T', text: 'one two' } }], { actor: { kind: 'system', id: 'test' } });
      const r = await kit.run(annotate, { noteId: 'n-1', words: 2 });
      expect(r.output).toEqual({ noteId: 'n-1', annotation: '2 words' });
      expect(r.events.map((e) => [e.type, e.meta.actor.id])).toEqual([['annotated', 'scrivener']]);
    } finally {
      await kit.close();
    }
  });

  it('runs end to end under `keel start`: a run of its workflow completes, the note and its history are in the store', async (ctx) => {
    if (!findTool('nats-server')) {
      const reason = 'no nats-server binary: run `npm run provision`';
      reportSkip('a new feature end to end', reason);
      return ctx.skip(reason);
    }
    const env = { KEEL_FEATURES: FEATURE, KEEL_LOG_LEVEL: 'warn' };
    const e = await startEngineProcess({ ...env, KEEL_AGENTS: 'scrivener', KEEL_WORKFLOW_SWEEP_MS: '300' });
    const keel = (args: string[]) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'cli', 'keel.ts'), ...args], {
        env: { ...process.env, ...env, KEEL_DATA_DIR: e.dataDir, KEEL_NATS_PORT: String(e.natsPort), KEEL_LOG_LEVEL: 'silent' },
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`keel ${args.join(' ')} exited with ${r.status}:\n${r.stderr}`);
      return JSON.parse(r.stdout) as unknown;
    };
    try {
      const agents = () => (keel(['agents', '--json']) as { agents: Array<{ agent: string }> }).agents;
      await waitFor(() => agents().some((a) => a.agent === 'scrivener'), { timeoutMs: 30_000, intervalMs: 300, what: 'the scrivener agent' });

      const input = { noteId: 'note-floors', title: 'Floors', text: 'a folder imports only from the floors below it' };
      const started = keel(['run', 'start', 'note-taking', '--input', JSON.stringify(input), '--id', 'run-note-floors', '--json']) as { runId: string; created: boolean };
      expect(started).toMatchObject({ runId: 'run-note-floors', created: true });

      let shown: RunJson | undefined;
      await waitFor(
        () => {
          shown = keel(['run', 'show', started.runId, '--json']) as RunJson;
          if (shown.run.status === 'failed' || shown.run.status === 'cancelled') throw new Error(`run ${shown.run.status}: ${shown.run.error ?? ''}\n${e.output()}`);
          return shown.run.status === 'completed';
        },
        { timeoutMs: 60_000, intervalMs: 300, what: `run ${started.runId} to complete` },
      );
      // the second step ran on the first step's output
      expect(shown!.run.steps.write).toMatchObject({ status: 'completed', agent: 'scrivener', output: { noteId: 'note-floors', words: 9 } });
      expect(shown!.run.steps.annotate).toMatchObject({ status: 'completed', agent: 'scrivener', output: { noteId: 'note-floors', annotation: '9 words' } });

      const note = keel(['entity', 'show', 'note-floors', '--type', 'note', '--json']) as EntityJson;
      expect(note).toMatchObject({ entityType: 'note', entityId: 'note-floors', version: 2, state: { title: 'Floors', text: input.text, annotations: ['9 words'] } });

      const history = keel(['entity', 'show', 'note-floors', '--type', 'note', '--history', '--json']) as HistoryJson;
      expect(history.events.map((h) => h.type)).toEqual(['created', 'annotated']);
      expect(history.events[1]!.data).toEqual({ annotation: '9 words' });
      for (const h of history.events) expect(h.meta.actor).toEqual({ kind: 'agent', id: 'scrivener' });
    } finally {
      await e.stop('SIGINT');
      e.cleanup();
    }
  }, 120_000);
});
