// Stub of the k6 module: check records into the built-in checks rate and per check.

function record(name, ok) {
  const m = globalThis.__k6emu.metrics;
  if (!m.has('checks')) {
    m.set('checks', { type: 'rate', isTime: false, count: 0, sum: 0, values: [], byTag: {} });
  }
  const c = m.get('checks');
  c.count++;
  c.sum += ok ? 1 : 0;
  const per = globalThis.__k6emu.checks.get(name) || { passes: 0, fails: 0 };
  per[ok ? 'passes' : 'fails']++;
  globalThis.__k6emu.checks.set(name, per);
}

export function check(value, sets) {
  let all = true;
  for (const [name, fn] of Object.entries(sets)) {
    let ok;
    try {
      ok = Boolean(fn(value));
    } catch (_) {
      ok = false;
    }
    record(name, ok);
    all = all && ok;
  }
  return all;
}

export function sleep() {
  throw new Error('k6emu: sleep blocks the VU; the scripts use timers');
}

export function fail(message) {
  throw new Error(message);
}

export function group(_, fn) {
  return fn();
}

export default { check, sleep, fail, group };
