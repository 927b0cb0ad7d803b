// Stub of k6/metrics: records every sample in globalThis.__k6emu.metrics.

function registry() {
  return globalThis.__k6emu.metrics;
}

class Metric {
  constructor(name, type, isTime = false) {
    if (!globalThis.__k6emu.init) {
      throw new Error(`k6emu: metric ${name} created outside the init context (k6 refuses that)`);
    }
    if (!/^[\p{L}\p{N}._ !?/&#()<>%-]{1,128}$/u.test(name)) {
      throw new Error(`k6emu: invalid metric name ${JSON.stringify(name)}`);
    }
    const known = registry().get(name);
    if (known && known.type !== type) {
      throw new Error(`k6emu: metric ${name} redefined as ${type}, was ${known.type}`);
    }
    if (!known) {
      registry().set(name, { type, isTime: Boolean(isTime), count: 0, sum: 0, values: [], byTag: {} });
    }
    this.name = name;
  }

  add(value, tags) {
    const v = typeof value === 'boolean' ? Number(value) : value;
    if (typeof v !== 'number' || Number.isNaN(v)) {
      throw new Error(`k6emu: ${this.name}.add(${value}): not a number`);
    }
    const m = registry().get(this.name);
    m.count++;
    m.sum += v;
    if (m.type === 'trend') {
      m.values.push(v);
    }
    for (const [k, tv] of Object.entries(tags || {})) {
      const key = `${k}:${tv}`;
      m.byTag[key] = (m.byTag[key] || 0) + v;
    }
  }
}

export class Counter extends Metric {
  constructor(name) {
    super(name, 'counter');
  }
}

export class Gauge extends Metric {
  constructor(name) {
    super(name, 'gauge');
  }
}

export class Rate extends Metric {
  constructor(name) {
    super(name, 'rate');
  }
}

export class Trend extends Metric {
  constructor(name, isTime) {
    super(name, 'trend', isTime);
  }
}
