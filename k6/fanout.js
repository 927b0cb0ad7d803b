// fanout: ROOMS rooms × MEMBERS members, each member sending RATE messages/s for
// DURATION; every message goes to every member of its room. Thresholds: delivery latency
// p95 under MAX_P95 and p99 under MAX_P99, at most MAX_LOST lost deliveries, no failed
// connection and at least one delivery.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:8080 k6/fanout.js
//   k6 run -e ROOMS=100 -e MEMBERS=20 k6/fanout.js     # roomcast-loadgen -scenario fanout-large
//
// Twin: roomcast-loadgen -scenario fanout-small (the defaults) or fanout-large.

import { duration, int, num, readParams, str, urls } from './lib/env.js';
import { roomMetrics } from './lib/metrics.js';
import { roomIndex, roomsOptions, runRoomOf } from './lib/rooms.js';

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

export const options = roomsOptions('fanout', PARAMS);

export { setup } from './lib/rooms.js';

export default function (data) {
  return runRoomOf(data, roomIndex(), PARAMS, metrics);
}
