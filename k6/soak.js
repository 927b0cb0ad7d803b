// soak: CONNS mostly idle connections (rooms of MEMBERS; each connection sends one
// message every SEND_EVERY, 0s for never) held for DURATION, counting every close the
// server makes (roomcast_unexpected_closes, tagged with the code). A closed client
// reconnects with backoff and full jitter (RECONNECT_BASE, RECONNECT_MAX), resuming with
// ?since=<seq>&epoch=<epoch>, so the population holds. Thresholds: at most
// MAX_UNEXPECTED_CLOSES closes and MAX_LOST lost deliveries, no member whose first
// connection failed (roomcast_join_failures) and, when members send, at least one
// delivery.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:8080 -e CONNS=5000 -e DURATION=2h k6/soak.js
//
// Twin: roomcast-loadgen -scenario soak.

import { duration, int, readParams, str, urls } from './lib/env.js';
import { roomMetrics } from './lib/metrics.js';
import { reconnectOf, roomIndex, roomsOptions, runRoomOf } from './lib/rooms.js';

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

export const options = roomsOptions('soak', PARAMS, rooms);

export { setup } from './lib/rooms.js';

export default function (data) {
  const room = roomIndex();
  return runRoomOf(data, room, PARAMS, metrics, {
    size: Math.min(PARAMS.MEMBERS, PARAMS.CONNS - room * PARAMS.MEMBERS), // the last room may be smaller
    sendEveryMs: PARAMS.SEND_EVERY,
    reconnect: reconnectOf(PARAMS),
  });
}
