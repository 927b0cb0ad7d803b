// fanout: ROOMS rooms × MEMBERS members, each member sending RATE messages/s for
// DURATION; every message goes to every member of its room. Thresholds: delivery latency
// p95 under MAX_P95 and p99 under MAX_P99, at most MAX_LOST lost deliveries.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:8080 k6/fanout.js
//   k6 run -e ROOMS=100 -e MEMBERS=20 k6/fanout.js     # roomcast-loadgen -scenario fanout-large
//
// Twin: roomcast-loadgen -scenario fanout-small (the defaults) or fanout-large.

import exec from 'k6/execution';

import { duration, int, num, readParams, str, urls } from './lib/env.js';
import { runToken } from './lib/envelope.js';
import { roomMetrics, roomsScenario, summaryTrendStats, thresholds } from './lib/metrics.js';
import { runRoom } from './lib/room.js';

export const PARAMS = readParams({
  URL: urls('ws://127.0.0.1:8080'),
  DURATION: duration('30s'),
  ROOMS: int(10, 1),
  MEMBERS: int(10, 1),
  RATE: num(1),
  GRACE: duration('2s', false),
  MAX_P95: duration('100ms'),
  MAX_P99: duration('250ms'),
  MAX_LOST: int(0),
  TOKEN: str(''),
});

const metrics = roomMetrics(false);

export const options = {
  scenarios: { fanout: roomsScenario(PARAMS.ROOMS, PARAMS.DURATION + PARAMS.GRACE) },
  thresholds: thresholds('fanout', PARAMS),
  summaryTrendStats,
};

export function setup() {
  return { run: runToken() };
}

export default function (data) {
  const room = exec.vu.idInTest - 1; // one VU per room
  return runRoom({
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
  });
}
