/**
 * `npm run bench -- NAME [--json] [--quick]`
 *
 * Runs one benchmark. Human-readable by default; with `--json` stdout is exactly one JSON object:
 * `{ bench, machine, results: [{ scenario, throughput_per_s, p50_ms, p99_ms, baseline, ratio }] }`.
 * Progress goes to stderr.
 */
import { Command } from 'commander';
import { BENCHES } from './registry.ts';
import { machineInfo, type BenchReport } from './lib.ts';
import { isKeelError } from '../config/index.ts';

const program = new Command()
  .name('npm run bench --')
  .argument('[name]', `benchmark to run: ${Object.keys(BENCHES).join(', ') || '(none yet)'}`)
  .option('--json', 'print one JSON object on stdout')
  .option('--quick', 'a short run (smoke test), not for quoting')
  .option('--list', 'list the benchmarks')
  // a bench's own flags (e.g. soak's --duration 30m) follow its name; it reads them itself
  .allowUnknownOption()
  .allowExcessArguments()
  .action(async (name: string | undefined, opts: { json?: boolean; quick?: boolean; list?: boolean }) => {
    if (opts.list || !name) {
      for (const b of Object.values(BENCHES)) console.log(`${b.name.padEnd(10)} ${b.description}`);
      if (!name) process.exitCode = opts.list ? 0 : 2;
      return;
    }
    const bench = BENCHES[name];
    if (!bench) {
      const msg = `unknown benchmark '${name}'; available: ${Object.keys(BENCHES).join(', ')}`;
      if (opts.json) console.log(JSON.stringify({ error: 'unknown_bench', message: msg }));
      else console.error(msg);
      process.exitCode = 2;
      return;
    }
    let ran: Awaited<ReturnType<typeof bench.run>>;
    try {
      ran = await bench.run({ progress: (m) => process.stderr.write(`[bench ${name}] ${m}\n`), quick: !!opts.quick });
    } catch (err) {
      // a bench's own errors (a bad flag, a server it cannot get) say what to do: no stack trace
      if (!isKeelError(err)) throw err;
      if (opts.json) console.log(JSON.stringify({ error: err.code, message: err.message }));
      else console.error(`bench ${name}: ${err.message}`);
      process.exitCode = 1;
      return;
    }
    const { results, machine } = ran;
    const report: BenchReport = { bench: name, machine: { ...machineInfo(), ...machine }, results };
    if (opts.json) {
      console.log(JSON.stringify(report));
      return;
    }
    console.log(`bench ${name} on ${String(report.machine.cpus)} x ${String(report.machine.cpu_model)}, node ${String(report.machine.node)}`);
    for (const r of results) {
      console.log(`\n  ${r.scenario}`);
      console.log(`    throughput ${r.throughput_per_s}/s   p50 ${r.p50_ms} ms   p99 ${r.p99_ms} ms`);
      if (r.baseline) console.log(`    baseline ${r.baseline.scenario ?? ''}: ${r.baseline.throughput_per_s}/s   p50 ${r.baseline.p50_ms} ms   p99 ${r.baseline.p99_ms} ms   ratio ${r.ratio}`);
      if (r.notes) console.log(`    ${JSON.stringify(r.notes)}`);
    }
  });

await program.parseAsync(process.argv);
