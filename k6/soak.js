// soak: CONNS mostly idle connections (rooms of MEMBERS; each connection sends one
// message every SEND_EVERY, 0s for never) held for DURATION, counting every close the
// server makes (roomcast_unexpected_closes, tagged with the code). A closed client
// reconnects with backoff and full jitter (RECONNECT_BASE, RECONNECT_MAX), resuming with
// ?since=<seq>&epoch=<epoch>, so the population holds. Thresholds: at most
// MAX_UNEXPECTED_CLOSES closes and MAX_LOST lost deliveries.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:8080 -e CONNS=5000 -e DURATION=2h k6/soak.js
//
// Twin: roomcast-loadgen -scenario soak.

import exec from 'k6/execution';

import { duration, int, readParams, str, urls } from './lib/env.js';
import { runToken } from './lib/envelope.js';
import { roomMetrics, roomsScenario, summaryTrendStats, thresholds } from './lib/metrics.js';
import { runRoom } from './lib/room.js';

export const PARAMS = readParams({
  URL: urls('ws://127.0.0.1:8080'),
  DURATION: duration('30m'),
  CONNS: int(1000, 1),
  MEMBERS: int(10, 1),
  SEND_EVERY: duration('1m', false),
  GRACE: duration('5s', false),
  RECONNECT_BASE: duration('100ms'),
  RECONNECT_MAX: duration('5s'),
  MAX_LOST: int(0),
  MAX_UNEXPECTED_CLOSES: int(0),
  TOKEN: str(''),
});

const rooms = Math.ceil(PARAMS.CONNS / PARAMS.MEMBERS);
const metrics = roomMetrics(true);

export const options = {
  scenarios: { soak: roomsScenario(rooms, PARAMS.DURATION + PARAMS.GRACE) },
  thresholds: thresholds('soak', PARAMS),
  summaryTrendStats,
};

export function setup() {
  return { run: runToken() };
}

export default function (data) {
  const room = exec.vu.idInTest - 1; // one VU per room; the last may be smaller
  const firstConn = room * PARAMS.MEMBERS;
  return runRoom({
    run: data.run,
    room,
    size: Math.min(PARAMS.MEMBERS, PARAMS.CONNS - firstConn),
    firstConn,
    urls: PARAMS.URL,
    token: PARAMS.TOKEN,
    sendEveryMs: PARAMS.SEND_EVERY,
    durationMs: PARAMS.DURATION,
    graceMs: PARAMS.GRACE,
    reconnect: { baseMs: PARAMS.RECONNECT_BASE, maxMs: PARAMS.RECONNECT_MAX },
    metrics,
  });
}
