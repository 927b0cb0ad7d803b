// Script parameters from the environment (k6 run -e NAME=value, or the process
// environment). Every script reads its parameters through readParams() and nothing else
// touches __ENV: the names a script passes are its parameters, and roomcast-loadgen's
// twin scenario takes the same ones as flags (NAME_X is -name-x), with the same
// defaults. k6/k6_test.go checks both.

// int is a whole number of at least min.
export function int(def, min = 0) {
  return { kind: 'int', def: String(def), min };
}

// num is a number above 0.
export function num(def) {
  return { kind: 'num', def: String(def) };
}

// duration is a Go-style duration (250ms, 30s, 1m30s, 2h); its value is in milliseconds.
// positive: 0 is refused.
export function duration(def, positive = true) {
  return { kind: 'duration', def, positive };
}

// str is any text (a token); its value is the text, surrounding whitespace trimmed.
export function str(def = '') {
  return { kind: 'str', def };
}

// urls is a comma-separated list of ws:// or wss:// base URLs; its value is an array.
export function urls(def) {
  return { kind: 'urls', def };
}

// readParams returns, for each NAME of spec, the parsed value of __ENV[NAME] or of its
// default when unset or empty. A bad value throws an Error naming the variable, the value
// and what is allowed, which stops k6 before any VU starts.
export function readParams(spec) {
  const out = {};
  for (const name of Object.keys(spec)) {
    const p = spec[name];
    const raw = __ENV[name];
    const text = raw === undefined || raw === '' ? p.def : String(raw);
    out[name] = parseValue(name, text.trim(), p);
  }
  return Object.freeze(out);
}

function bad(name, text, want) {
  return new Error(`invalid ${name}=${JSON.stringify(text)}: want ${want}`);
}

function parseValue(name, text, p) {
  switch (p.kind) {
    case 'int': {
      if (!/^-?\d+$/.test(text) || Number(text) < p.min || !Number.isSafeInteger(Number(text))) {
        throw bad(name, text, `a whole number of at least ${p.min}`);
      }
      return Number(text);
    }
    case 'num': {
      const v = Number(text);
      if (text === '' || !Number.isFinite(v) || !(v > 0)) {
        throw bad(name, text, 'a number above 0');
      }
      return v;
    }
    case 'duration': {
      const ms = parseDuration(text);
      if (ms === null || (p.positive && ms <= 0)) {
        throw bad(name, text, `a duration such as 30s, 250ms or 1m30s${p.positive ? ', above 0' : ''}`);
      }
      return ms;
    }
    case 'str':
      return text;
    case 'urls': {
      const list = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
      for (const u of list) {
        if (!/^wss?:\/\/[^/?#\s]+(\/[^?#\s]*)?$/.test(u) || u.includes('/ws/chat')) {
          throw bad(name, u, 'comma-separated base URLs such as ws://127.0.0.1:8080 (the /ws/chat/{room}/ path is added)');
        }
      }
      if (list.length === 0) {
        throw bad(name, text, 'at least one ws:// or wss:// base URL');
      }
      return list;
    }
  }
  throw new Error(`parameter ${name}: unknown kind ${p.kind}`);
}

const units = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };

// parseDuration parses a Go duration ("1m30s", "250ms", "0") into milliseconds, or
// returns null.
export function parseDuration(text) {
  if (text === '0') {
    return 0;
  }
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let ms = 0;
  let i = 0;
  while (i < text.length) {
    re.lastIndex = i;
    const m = re.exec(text);
    if (m === null) {
      return null;
    }
    ms += Number(m[1]) * units[m[2]];
    i = re.lastIndex;
  }
  return i === 0 ? null : ms;
}
