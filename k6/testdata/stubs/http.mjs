// Stub of k6/http: asyncRequest with fetch; the blocking calls are not emulated.

function canonical(name) {
  return name.replace(/(^|-)([a-z])/g, (_, d, c) => d + c.toUpperCase());
}

export async function asyncRequest(method, url, body) {
  const res = await fetch(url, { method, body });
  const headers = {};
  res.headers.forEach((v, k) => {
    headers[canonical(k)] = v;
  });
  return { status: res.status, headers, body: await res.text(), url };
}

function blocking() {
  throw new Error('k6emu: blocking k6/http calls are not emulated; use asyncRequest');
}

export const get = blocking;
export const post = blocking;
export const request = blocking;

export default { asyncRequest, get, post, request };
