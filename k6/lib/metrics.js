// The custom metrics and thresholds of the scripts, named as roomcast-loadgen reports
// them (pkg/load/loadgen/settings.go: Metrics, Thresholds). Deliveries are counted per
// (message, member): a message sent into a room of 10 members is expected 10 times.

import { Counter, Trend } from 'k6/metrics';

// roomMetrics creates the metrics of a room test, in the init context. withReconnects
// adds those of the scripts whose clients reconnect (soak, release).
export function roomMetrics(withReconnects) {
  const m = {
    sent: new Counter('roomcast_messages_sent'),
    expected: new Counter('roomcast_messages_expected'),
    delivered: new Counter('roomcast_messages_delivered'),
    lost: new Counter('roomcast_messages_lost'),
    duplicated: new Counter('roomcast_messages_duplicated'),
    latency: new Trend('roomcast_delivery_latency', true),
    errorFrames: new Counter('roomcast_error_frames'),
    unexpectedCloses: new Counter('roomcast_unexpected_closes'),
    connectFailures: new Counter('roomcast_connect_failures'),
  };
  if (withReconnects) {
    m.unconfirmed = new Counter('roomcast_messages_unconfirmed');
    m.unanswered = new Counter('roomcast_messages_unanswered');
    m.untold = new Counter('roomcast_messages_lost_untold');
    m.reconnects = new Counter('roomcast_reconnects');
    m.reconnectTime = new Trend('roomcast_reconnect_time', true);
    m.historyTruncated = new Counter('roomcast_history_truncated');
    m.joinFailures = new Counter('roomcast_join_failures');
  }
  return m;
}

// thresholds are the k6 thresholds of a script, from its parameters (durations in
// milliseconds, as k6 compares trends).
//
// k6 passes a threshold whose metric has no sample, so a run that connected nobody
// would pass on latency and loss alone. The thresholds that catch it are on counters
// every room records from its start (runRoom): no failed connection (the reconnecting
// scripts: no member whose first connection failed; their reconnects may fail during a
// release) and at least one delivery, wherever something is sent.
export function thresholds(script, p) {
  const lost = [`count<=${p.MAX_LOST}`];
  const delivered = ['count>0'];
  const connected = ['count==0'];
  switch (script) {
    case 'fanout':
      return {
        roomcast_delivery_latency: [`p(95)<${p.MAX_P95}`, `p(99)<${p.MAX_P99}`],
        roomcast_messages_lost: lost,
        roomcast_connect_failures: connected,
        roomcast_messages_delivered: delivered,
      };
    case 'smoke':
      return {
        checks: ['rate==1'],
        roomcast_delivery_latency: [`p(99)<${p.MAX_P99}`],
        roomcast_messages_lost: lost,
        roomcast_messages_duplicated: [`count<=${p.MAX_DUPLICATED}`],
        roomcast_connect_failures: connected,
        roomcast_messages_delivered: delivered,
      };
    case 'soak': {
      const t = {
        roomcast_unexpected_closes: [`count<=${p.MAX_UNEXPECTED_CLOSES}`],
        roomcast_messages_lost: lost,
        roomcast_join_failures: connected,
      };
      if (p.SEND_EVERY > 0) {
        t.roomcast_messages_delivered = delivered;
      }
      return t;
    }
    case 'release':
      return {
        roomcast_messages_lost: lost,
        roomcast_messages_duplicated: [`count<=${p.MAX_DUPLICATED}`],
        roomcast_join_failures: connected,
        roomcast_messages_delivered: delivered,
      };
  }
  throw new Error(`no thresholds for ${script}`);
}

// roomsScenario runs one VU per room, each for one iteration that lasts the test: its
// members' connections, traffic and accounting. maxDuration leaves room for connecting
// and closing on top of holdMs.
export function roomsScenario(rooms, holdMs) {
  return {
    executor: 'per-vu-iterations',
    vus: rooms,
    iterations: 1,
    maxDuration: `${Math.ceil(holdMs / 1000) + 120}s`,
    gracefulStop: '30s',
  };
}

// summaryTrendStats shows the percentiles the thresholds use.
export const summaryTrendStats = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];
