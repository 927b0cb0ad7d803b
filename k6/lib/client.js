// Small pieces of a roomcast client, shared with roomcast-loadgen's (pkg/load/loadgen):
// the room and resume URLs, the connection's parameters (the token), the reconnect
// backoff and reading a close code.

// roomURL is the WebSocket URL of room on a base URL (ws://host:port).
export function roomURL(base, room) {
  return `${base.replace(/\/+$/, '')}/ws/chat/${room}/`;
}

// resumeURL adds the contract's resume query to a room URL: ?since=<seq>, plus
// &epoch=<epoch> when the client has one.
export function resumeURL(url, seq, epoch) {
  let u = `${url}?since=${seq}`;
  if (epoch) {
    u += `&epoch=${encodeURIComponent(epoch)}`;
  }
  return u;
}

// connectParams are the k6/websockets parameters of a connection to base: one name tag
// for every room and resume query (k6's series stay few) and, when there is a token
// (TOKEN, the server's ROOMCAST_JWT_SECRET), Authorization: Bearer <token>, sent on
// every connect and reconnect like roomcast-loadgen's -token.
export function connectParams(base, token) {
  const params = { tags: { name: `${base}/ws/chat/{room}/` } };
  if (token) {
    params.headers = { Authorization: `Bearer ${token}` };
  }
  return params;
}

// httpURL is the http(s) URL of path on the replica (or proxy) at a ws(s) base URL.
export function httpURL(base, path) {
  return base.replace(/\/+$/, '').replace(/^ws(s?):\/\//, 'http$1://') + path;
}

// backoff is the wait in milliseconds before reconnect attempt n (from 0): exponential
// backoff with full jitter, a random time in [0, min(maxMs, baseMs × 2^n)).
export function backoff(n, baseMs, maxMs, random = Math.random) {
  const ceil = Math.min(maxMs, baseMs * 2 ** Math.min(n, 60));
  return Math.floor(random() * ceil);
}

// closeCode is the server's close code: the close event's code (k6 sets it on recent
// versions), else the one in the error that preceded it ("websocket: close 1012 (service
// restart)"), else 1006 (the connection ended without a close frame).
export function closeCode(closeEvent, lastError) {
  if (closeEvent && typeof closeEvent.code === 'number' && closeEvent.code > 0) {
    return closeEvent.code;
  }
  const m = /close (\d{4})/.exec(lastError || '');
  return m ? Number(m[1]) : 1006;
}

// eventTime is when k6 saw an event (its timestamp, with sub-millisecond precision),
// or now.
export function eventTime(e) {
  return e && typeof e.timestamp === 'number' ? e.timestamp : Date.now();
}
