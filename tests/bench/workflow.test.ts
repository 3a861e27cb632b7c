/**
 * The workflow bench's pure parts: how results are paired with their baselines (by mode and
 * in-flight count for the raw chain; also by store and sync for the durable chain and LangGraph),
 * the fields every result carries, and the windowed driver's in-flight bound. No timings asserted.
 */
import { describe, expect, it } from 'vitest';
import { assembleResults, benchSelection, SERIAL, WINDOW, MONGO_WINDOW, type Measured } from '../../bench/workflow.ts';
import { windowed, writeConcernLabel } from '../../bench/baselines.ts';
import { figures } from '../../bench/lib.ts';

// distinct figures per scenario so a wrong pairing shows as a wrong ratio
let k = 0;
function m(partial: Omit<Measured, 'scenario' | 'figures'>): Measured {
  k++;
  return { ...partial, scenario: `${partial.system} ${partial.sync} ${partial.in_flight} #${k}`, figures: figures(100 * k, 1000, [k, k + 1]) };
}

describe('workflow bench results', () => {
  const measured: Measured[] = [
    m({ system: 'raw-nats', store: 'none', sync: 'none', mode: 'throughput', in_flight: WINDOW }),
    m({ system: 'raw-nats', store: 'none', sync: 'none', mode: 'serial', in_flight: SERIAL }),
    m({ system: 'durable-nats', store: 'sqlite', sync: 'FULL', mode: 'throughput', in_flight: WINDOW }),
    m({ system: 'durable-nats', store: 'sqlite', sync: 'NORMAL', mode: 'throughput', in_flight: WINDOW }),
    m({ system: 'durable-nats', store: 'sqlite', sync: 'NORMAL', mode: 'serial', in_flight: SERIAL }),
    m({ system: 'langgraph', store: 'sqlite', sync: 'NORMAL', mode: 'throughput', in_flight: WINDOW }),
    m({ system: 'keel', store: 'sqlite', sync: 'FULL', mode: 'throughput', in_flight: WINDOW }),
    m({ system: 'keel', store: 'sqlite', sync: 'NORMAL', mode: 'throughput', in_flight: WINDOW }),
    m({ system: 'keel', store: 'sqlite', sync: 'NORMAL', mode: 'serial', in_flight: SERIAL }),
    m({ system: 'raw-nats', store: 'none', sync: 'none', mode: 'throughput', in_flight: MONGO_WINDOW }),
    m({ system: 'durable-nats', store: 'mongodb', sync: 'w:majority,j:true', mode: 'throughput', in_flight: MONGO_WINDOW }),
    m({ system: 'keel', store: 'mongodb', sync: 'w:majority,j:true', mode: 'throughput', in_flight: MONGO_WINDOW }),
  ];
  const results = assembleResults(measured);
  const by = (system: string, sync: string, inFlight: number) => results.find((r) => r.system === system && r.sync === sync && r.in_flight === inFlight)!;
  const input = (system: string, sync: string, inFlight: number) => measured.find((r) => r.system === system && r.sync === sync && r.in_flight === inFlight)!;

  it('keeps the agreed fields and adds store, sync, mode and in_flight to every result', () => {
    expect(results).toHaveLength(measured.length);
    for (const [i, r] of results.entries()) {
      expect(r).toMatchObject({ scenario: measured[i]!.scenario, store: measured[i]!.store, sync: measured[i]!.sync, mode: measured[i]!.mode, in_flight: measured[i]!.in_flight });
      for (const f of ['throughput_per_s', 'p50_ms', 'p99_ms', 'baseline', 'ratio'] as const) expect(r).toHaveProperty(f);
    }
  });

  it('compares each scenario with the raw chain of the same mode and in-flight count', () => {
    expect(by('raw-nats', 'none', WINDOW)).toMatchObject({ baseline: null, ratio: null });
    for (const [system, sync, inFlight] of [['keel', 'FULL', WINDOW], ['keel', 'NORMAL', SERIAL], ['durable-nats', 'FULL', WINDOW], ['keel', 'w:majority,j:true', MONGO_WINDOW]] as const) {
      const r = by(system, sync, inFlight);
      const raw = input('raw-nats', 'none', inFlight);
      expect(r.baseline?.scenario).toBe(raw.scenario);
      expect(r.ratio).toBeCloseTo(r.throughput_per_s / raw.figures.throughput_per_s, 3);
    }
  });

  it("compares Keel with the durable chain and LangGraph of the same store and sync, or says there is none", () => {
    const full = by('keel', 'FULL', WINDOW);
    expect(full.durable_baseline?.scenario).toBe(input('durable-nats', 'FULL', WINDOW).scenario);
    expect(full.ratio_to_durable).toBeCloseTo(full.throughput_per_s / input('durable-nats', 'FULL', WINDOW).figures.throughput_per_s, 3);
    expect(full).toMatchObject({ langgraph_baseline: null, ratio_to_langgraph: null }); // no LangGraph FULL measured
    const normal = by('keel', 'NORMAL', WINDOW);
    expect(normal.langgraph_baseline?.scenario).toBe(input('langgraph', 'NORMAL', WINDOW).scenario);
    expect(normal.ratio_to_langgraph).toBeCloseTo(normal.throughput_per_s / input('langgraph', 'NORMAL', WINDOW).figures.throughput_per_s, 3);
    expect(by('keel', 'NORMAL', SERIAL).durable_baseline?.scenario).toBe(input('durable-nats', 'NORMAL', SERIAL).scenario);
    const mongo = by('keel', 'w:majority,j:true', MONGO_WINDOW);
    expect(mongo.durable_baseline?.scenario).toBe(input('durable-nats', 'w:majority,j:true', MONGO_WINDOW).scenario);
    // baselines are not compared with other baselines
    expect(by('durable-nats', 'FULL', WINDOW)).toMatchObject({ durable_baseline: null, langgraph_baseline: null });
  });

  it('labels write concerns', () => {
    expect(writeConcernLabel({ w: 'majority', journal: true })).toBe('w:majority,j:true');
    expect(writeConcernLabel({ w: 1 })).toBe('w:1');
  });
});

describe('windowed driver', () => {
  for (const window of [1, 4]) {
    it(`keeps exactly ${window} in flight and counts every operation`, async () => {
      let inFlight = 0;
      let peak = 0;
      const seen: number[] = [];
      const f = await windowed(25, window, async (i) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setImmediate(r));
        seen.push(i);
        inFlight--;
      });
      expect(peak).toBe(window);
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 25 }, (_, i) => i));
      expect(f.p99_ms).toBeGreaterThanOrEqual(f.p50_ms);
    });
  }
});

describe('workflow bench subsets (KEEL_BENCH_SYSTEMS, KEEL_BENCH_SYNCS, KEEL_BENCH_STORES)', () => {
  it('runs everything by default', () => {
    const s = benchSelection({});
    expect([...s.systems].sort()).toEqual(['durable-nats', 'keel', 'langgraph', 'raw-nats']);
    expect(s.syncs).toEqual(['FULL', 'NORMAL']);
    expect([...s.stores].sort()).toEqual(['mongodb', 'sqlite']);
  });
  it('narrows to what is named; KEEL_BENCH_SKIP_MONGO=1 drops MongoDB; only MongoDB runs no SQLite scenario', () => {
    const s = benchSelection({ KEEL_BENCH_SYSTEMS: 'keel, durable-nats', KEEL_BENCH_SYNCS: 'full', KEEL_BENCH_SKIP_MONGO: '1' });
    expect([...s.systems].sort()).toEqual(['durable-nats', 'keel']);
    expect(s.syncs).toEqual(['FULL']);
    expect([...s.stores]).toEqual(['sqlite']);
    expect(benchSelection({ KEEL_BENCH_STORES: 'mongodb' }).syncs).toEqual([]);
  });
  it('refuses an unknown name, naming the known ones', () => {
    expect(() => benchSelection({ KEEL_BENCH_SYSTEMS: 'bullmq' })).toThrow(/unknown system 'bullmq'.*keel, raw-nats, durable-nats, langgraph/);
    expect(() => benchSelection({ KEEL_BENCH_SYNCS: 'OFF' })).toThrow(/unknown sync 'OFF'/);
    expect(() => benchSelection({ KEEL_BENCH_STORES: 'postgres' })).toThrow(/unknown store 'postgres'/);
  });
});
