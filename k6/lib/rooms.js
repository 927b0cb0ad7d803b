// What every rooms script (fanout, release, smoke, soak) shares around runRoom: one VU
// per room for one iteration, a run token drawn in setup, and the room's options taken
// from the script's parameters (URL, TOKEN, MEMBERS, RATE, DURATION, GRACE).

import exec from 'k6/execution';

import { runToken } from './envelope.js';
import { roomsScenario, summaryTrendStats, thresholds } from './metrics.js';
import { runRoom } from './room.js';

// roomsOptions are the k6 options of script: its one scenario, of one VU per room for
// the test's DURATION and GRACE, and its thresholds.
export function roomsOptions(script, params, rooms = params.ROOMS) {
  return {
    scenarios: { [script]: roomsScenario(rooms, params.DURATION + params.GRACE) },
    thresholds: thresholds(script, params),
    summaryTrendStats,
  };
}

// setup draws the run token that names the test's rooms and stamps its messages.
export function setup() {
  return { run: runToken() };
}

// roomIndex is the room of this VU (one VU per room). Read it before any await.
export function roomIndex() {
  return exec.vu.idInTest - 1;
}

// reconnectOf is runRoom's reconnect option from RECONNECT_BASE and RECONNECT_MAX.
export function reconnectOf(params) {
  return { baseMs: params.RECONNECT_BASE, maxMs: params.RECONNECT_MAX };
}

// runRoomOf runs room with the script's parameters: MEMBERS members sending RATE
// messages/s each, without reconnecting; more adds to or overrides runRoom's options.
export function runRoomOf(data, room, params, metrics, more = {}) {
  return runRoom({
    run: data.run,
    room,
    size: params.MEMBERS,
    firstConn: room * params.MEMBERS,
    urls: params.URL,
    token: params.TOKEN,
    sendEveryMs: 1000 / params.RATE,
    durationMs: params.DURATION,
    graceMs: params.GRACE,
    reconnect: null,
    metrics,
    ...more,
  });
}
