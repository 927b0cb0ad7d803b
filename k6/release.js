// release: constant chat traffic (ROOMS × MEMBERS, RATE messages/s each, for DURATION)
// while someone runs `just promote TAG`. The old color drains its clients with close
// 1012; each reconnects with exponential backoff and full jitter (RECONNECT_BASE,
// RECONNECT_MAX) and, once the server has sent it a seq, resumes with
// ?since=<seq>&epoch=<epoch>. A history_truncated error frame ("may have missed some")
// is counted.
//
// A message is lost when a member that was in the room (connected or reconnecting) when
// it was sent never receives it; duplicates are counted per (message, member);
// roomcast_reconnect_time is from the close to the next 101. Thresholds: at most
// MAX_LOST lost and MAX_DUPLICATED duplicated deliveries, no member whose first
// connection failed (roomcast_join_failures; reconnects may fail while colors flip) and
// at least one delivery.
//
// TOKEN, when set, goes with every connection attempt as Authorization: Bearer <TOKEN>
// (a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY).
//
//   k6 run -e URL=ws://127.0.0.1:80 k6/release.js &   just promote v2
//   just k6 release.js                                  # in the grafana/k6 image
//
// Twin: roomcast-loadgen -scenario release.

import { duration, int, num, readParams, str, urls } from './lib/env.js';
import { roomMetrics } from './lib/metrics.js';
import { reconnectOf, roomIndex, roomsOptions, runRoomOf } from './lib/rooms.js';

export const PARAMS = readParams({
  URL: urls('ws://127.0.0.1:8080'),
  DURATION: duration('5m'),
  ROOMS: int(20, 1),
  MEMBERS: int(10, 1),
  RATE: num(2),
  GRACE: duration('10s', false),
  RECONNECT_BASE: duration('100ms'),
  RECONNECT_MAX: duration('5s'),
  MAX_LOST: int(0),
  MAX_DUPLICATED: int(0),
  TOKEN: str(''),
});

const metrics = roomMetrics(true);

export const options = roomsOptions('release', PARAMS);

export { setup } from './lib/rooms.js';

export default function (data) {
  return runRoomOf(data, roomIndex(), PARAMS, metrics, {
    reconnect: reconnectOf(PARAMS),
    expectedCloses: [1012],
  });
}
