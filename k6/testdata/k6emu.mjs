// k6emu runs a k6 script of this repository in node, where k6 is not installed, with
// stubs for the k6 modules it uses (stubs/): enough to check what a script declares and
// to run its rooms against a real server. It is a test harness, not k6: one process,
// every VU in one event loop, only the per-vu-iterations executor with one iteration.
//
//   node [--experimental-websocket] k6emu.mjs inspect SCRIPT
//   node [--experimental-websocket] k6emu.mjs run SCRIPT
//
// The script's environment (__ENV) is the JSON object in K6EMU_ENV. The result is one
// JSON object on stdout: for inspect, the script's PARAMS, the __ENV names it read, its
// options, the metrics it created and every import of the k6 directory's files; for run,
// the metrics and checks recorded, the thresholds' verdicts, the VUs' errors and the
// timers left behind.

import { register } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel } from 'node:worker_threads';

const [mode, script] = process.argv.slice(2);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = pathToFileURL(path.resolve(here, '..')).href + '/';
const stubFiles = {
  k6: 'k6.mjs',
  'k6/metrics': 'metrics.mjs',
  'k6/websockets': 'websockets.mjs',
  'k6/timers': 'timers.mjs',
  'k6/execution': 'execution.mjs',
  'k6/http': 'http.mjs',
};
const stubs = {};
for (const [name, file] of Object.entries(stubFiles)) {
  stubs[name] = pathToFileURL(path.join(here, 'stubs', file)).href;
}

const imports = [];
let flushed;
const flushedPromise = new Promise((r) => {
  flushed = r;
});
const { port1, port2 } = new MessageChannel();
port1.on('message', (m) => {
  if (m.flushed) {
    flushed();
  } else {
    imports.push({ parent: m.parent.slice(root.length), specifier: m.specifier, url: m.url.startsWith(root) ? m.url.slice(root.length) : m.url });
  }
});
register('./hooks.mjs', import.meta.url, { data: { port: port2, root, stubs }, transferList: [port2] });

const env = JSON.parse(process.env.K6EMU_ENV || '{}') || {};
const envRead = new Set();
globalThis.__ENV = new Proxy(env, {
  get(target, key) {
    if (typeof key === 'string') {
      envRead.add(key);
    }
    return target[key];
  },
});
globalThis.__VU = 0;
globalThis.__ITER = 0;
globalThis.__k6emu = { vu: 0, init: true, metrics: new Map(), checks: new Map() };

function out(v) {
  process.stdout.write(JSON.stringify(v) + '\n');
}

let mod;
try {
  mod = await import(pathToFileURL(path.resolve(script)).href);
} catch (e) {
  out({ error: `importing ${script}: ${e && e.stack ? e.stack : e}` });
  process.exit(1);
}
globalThis.__k6emu.init = false;
port1.postMessage('flush');
await flushedPromise;
port1.close();

function metricsList() {
  return [...globalThis.__k6emu.metrics].map(([name, m]) => ({ name, type: m.type, isTime: m.isTime }));
}

if (mode === 'inspect') {
  const params = {};
  for (const [k, v] of Object.entries(mod.PARAMS || {})) {
    params[k] = Array.isArray(v) ? v.join(',') : String(v);
  }
  out({
    params,
    envRead: [...envRead].sort(),
    options: mod.options,
    metrics: metricsList(),
    imports,
    exports: Object.keys(mod).sort(),
    hasSetup: typeof mod.setup === 'function',
    hasDefault: typeof mod.default === 'function',
  });
  process.exit(0);
}

if (mode !== 'run') {
  out({ error: `unknown mode ${mode}` });
  process.exit(2);
}

const errors = [];
const scenarios = Object.entries(mod.options.scenarios || {});
if (scenarios.length !== 1) {
  out({ error: `want one scenario, got ${scenarios.length}` });
  process.exit(1);
}
const [name, sc] = scenarios[0];
if (sc.executor !== 'per-vu-iterations' || sc.iterations !== 1) {
  out({ error: `scenario ${name}: only per-vu-iterations with one iteration is emulated` });
  process.exit(1);
}
const data = typeof mod.setup === 'function' ? await mod.setup() : undefined;
const started = Date.now();
const tasks = [];
for (let vu = 1; vu <= sc.vus; vu++) {
  // The default function reads its VU number synchronously, before any await.
  globalThis.__k6emu.vu = vu;
  globalThis.__VU = vu;
  let p;
  try {
    p = Promise.resolve(mod.default(data));
  } catch (e) {
    p = Promise.reject(e);
  }
  tasks.push(p);
}
globalThis.__k6emu.vu = 0;
const maxMs = Number(String(sc.maxDuration).replace(/s$/, '')) * 1000;
const timeout = new Promise((r) => {
  const t = setTimeout(() => r('timeout'), maxMs);
  t.unref();
});
const settled = await Promise.race([Promise.allSettled(tasks), timeout]);
if (settled === 'timeout') {
  errors.push(`the VUs did not finish within maxDuration ${sc.maxDuration}`);
} else {
  for (const r of settled) {
    if (r.status === 'rejected') {
      errors.push(String(r.reason && r.reason.stack ? r.reason.stack : r.reason));
    }
  }
}
// A real k6 iteration lasts until its event loop is empty: a timer left behind would
// hold the VU until maxDuration.
await new Promise((r) => setTimeout(r, 100));
const leftover = process.getActiveResourcesInfo().filter((t) => t === 'Timeout' || t === 'Immediate').length;

function quantile(sorted, q) {
  if (sorted.length === 0) {
    return 0;
  }
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

const metrics = {};
for (const [mname, m] of globalThis.__k6emu.metrics) {
  const e = { type: m.type, isTime: m.isTime, samples: m.count, sum: m.sum, byTag: m.byTag };
  if (m.type === 'trend') {
    const v = [...m.values].sort((a, b) => a - b);
    e.p95 = quantile(v, 0.95);
    e.p99 = quantile(v, 0.99);
    e.max = v.length ? v[v.length - 1] : 0;
  }
  if (m.type === 'rate') {
    e.passes = m.sum;
    e.fails = m.count - m.sum;
  }
  metrics[mname] = e;
}
// evalThreshold evaluates a threshold expression as k6 does, on the aggregations the
// scripts use; a metric without samples passes, as it does in k6 (which is why the
// scripts record zeros on the counters their thresholds guard).
function evalThreshold(expr, m) {
  const g = /^(count|rate|max|med|p\((\d+(?:\.\d+)?)\))\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)$/.exec(expr);
  if (!g) {
    throw new Error(`k6emu: threshold ${expr} is not understood`);
  }
  if (!m || m.count === 0) {
    return { value: null, pass: true };
  }
  let value;
  if (g[1] === 'count') {
    value = m.type === 'counter' ? m.sum : m.count;
  } else if (g[1] === 'rate') {
    value = m.sum / m.count;
  } else {
    const v = [...m.values].sort((a, b) => a - b);
    value = g[1] === 'max' ? v[v.length - 1] : quantile(v, g[1] === 'med' ? 0.5 : Number(g[2]) / 100);
  }
  const limit = Number(g[4]);
  const pass = { '<': value < limit, '<=': value <= limit, '>': value > limit, '>=': value >= limit, '==': value === limit, '!=': value !== limit }[g[3]];
  return { value, pass };
}

const thresholdResults = [];
for (const [mname, exprs] of Object.entries(mod.options.thresholds || {})) {
  for (const expr of exprs) {
    thresholdResults.push({ metric: mname, expr, ...evalThreshold(expr, globalThis.__k6emu.metrics.get(mname)) });
  }
}

out({
  scenario: name,
  vus: sc.vus,
  seconds: (Date.now() - started) / 1000,
  errors,
  leftoverTimers: leftover,
  metrics,
  checks: Object.fromEntries(globalThis.__k6emu.checks),
  thresholds: mod.options.thresholds,
  thresholdResults,
});
process.exit(0);
