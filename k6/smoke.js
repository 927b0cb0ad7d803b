// smoke: a minute of light chat for CI pipelines. Checks that /readyz answers 200
// "ready" with the replica's color, that every WebSocket opens, and that 2 rooms × 5
// members × 1 msg/s get every message once, with p99 under MAX_P99, no failed
// connection and at least one delivery. k6 exits non-zero (99) when a threshold is
// crossed.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:8080 k6/smoke.js
//
// Twin: roomcast-loadgen -scenario smoke.

import { check } from 'k6';
import http from 'k6/http';

import { httpURL } from './lib/client.js';
import { duration, int, num, readParams, str, urls } from './lib/env.js';
import { roomMetrics } from './lib/metrics.js';
import { roomIndex, roomsOptions, runRoomOf } from './lib/rooms.js';

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

export const options = roomsOptions('smoke', PARAMS);

export { setup } from './lib/rooms.js';

export default async function (data) {
  const room = roomIndex(); // before any await
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
  await runRoomOf(data, room, PARAMS, metrics, {
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
