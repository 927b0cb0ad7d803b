// smoke: a minute of light chat for CI pipelines. Checks that /readyz answers 200
// "ready" with the replica's color, that every WebSocket opens, and that 2 rooms × 5
// members × 1 msg/s get every message once, with p99 under MAX_P99. k6 exits non-zero
// (99) when a threshold is crossed.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:8080 k6/smoke.js
//
// Twin: roomcast-loadgen -scenario smoke.

import { check } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';

import { httpURL } from './lib/client.js';
import { duration, int, num, readParams, str, urls } from './lib/env.js';
import { runToken } from './lib/envelope.js';
import { roomMetrics, roomsScenario, summaryTrendStats, thresholds } from './lib/metrics.js';
import { runRoom } from './lib/room.js';

export const PARAMS = readParams({
  URL: urls('ws://127.0.0.1:8080'),
  DURATION: duration('1m'),
  ROOMS: int(2, 1),
  MEMBERS: int(5, 1),
  RATE: num(1),
  GRACE: duration('2s', false),
  MAX_P99: duration('1s'),
  MAX_LOST: int(0),
  MAX_DUPLICATED: int(0),
  TOKEN: str(''),
});

const metrics = roomMetrics(false);

export const options = {
  scenarios: { smoke: roomsScenario(PARAMS.ROOMS, PARAMS.DURATION + PARAMS.GRACE) },
  thresholds: thresholds('smoke', PARAMS),
  summaryTrendStats,
};

export function setup() {
  return { run: runToken() };
}

export default async function (data) {
  const room = exec.vu.idInTest - 1; // one VU per room; read before any await
  if (room === 0) {
    for (const base of PARAMS.URL) {
      const res = await http.asyncRequest('GET', httpURL(base, '/readyz'));
      check(res, {
        'readyz is 200': (r) => r.status === 200,
        'readyz says ready': (r) => readyStatus(r) === 'ready',
        'readyz names its color': (r) => Boolean(r.headers['X-Roomcast-Color']),
      });
    }
  }
  await runRoom({
    run: data.run,
    room,
    size: PARAMS.MEMBERS,
    firstConn: room * PARAMS.MEMBERS,
    urls: PARAMS.URL,
    token: PARAMS.TOKEN,
    sendEveryMs: 1000 / PARAMS.RATE,
    durationMs: PARAMS.DURATION,
    graceMs: PARAMS.GRACE,
    reconnect: null,
    metrics,
    onOpen: (ok) => check(ok, { 'websocket opens': (v) => v }),
  });
}

function readyStatus(res) {
  try {
    return JSON.parse(res.body).status;
  } catch (_) {
    return undefined;
  }
}
