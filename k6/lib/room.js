// One room of a test, run by one VU with the k6/websockets module (one event loop, many
// connections): connect its members, have each send a stamped message every
// sendEveryMs for durationMs, account for every delivery (lib/ledger.js), and, for the
// scripts whose clients reconnect, reconnect a closed member with backoff and full
// jitter, resuming with ?since=<seq>&epoch=<epoch> when it has seen a seq.
//
// k6/ws is not used: it blocks a VU for as long as one connection lasts, and
// k6/websockets gives all this script needs, the close code included (older k6 versions
// put it only in the error event that precedes the close: see closeCode).

import { WebSocket } from 'k6/websockets';
import { setTimeout, clearTimeout, setInterval, clearInterval } from 'k6/timers';

import { backoff, closeCode, connectParams, eventTime, resumeURL, roomURL } from './client.js';
import { formatText, messageFrame, parseText } from './envelope.js';
import { Ledger } from './ledger.js';

// runRoom runs room o.room of a test and returns a promise of its counts, settled once
// every connection is closed. The options:
//   run            the test's run token (setup() draws it)
//   room, size     the room's number and its member count
//   firstConn      the number of its first member among all the test's clients
//   urls           base URLs; member c connects to urls[c % urls.length], and each
//                  failed attempt tries the next one
//   token          sent as Authorization: Bearer on every connection attempt, when set
//   sendEveryMs    how often each member sends (0: never)
//   durationMs     how long members send (or hold, when they do not)
//   graceMs        how long deliveries may still arrive once sending stops
//   reconnect      { baseMs, maxMs } to reconnect closed members, or null
//   expectedCloses close codes that are not unexpected (release: [1012])
//   metrics        from roomMetrics()
//   onOpen(ok)     called once per member: its first connection opened, or failed
//                  (a first connection is never retried)
export function runRoom(o) {
  const M = o.metrics;
  const ledger = new Ledger(o.size);
  const roomName = `k6-${o.run}-${o.room}`;
  const expectedCloses = new Set(o.expectedCloses || []);
  const counts = { sent: 0, expected: 0, delivered: 0, duplicated: 0, lost: 0, unconfirmed: 0, unanswered: 0, untold: 0, reconnects: 0 };
  const members = [];
  for (let i = 0; i < o.size; i++) {
    const conn = o.firstConn + i;
    members.push({
      i,
      conn,
      ws: null, // the connection, opening or open
      open: false,
      settled: false, // its first connection opened, or failed for good
      joined: false, // in the room: opened once, expects every message sent since
      sent: 0, // its next seq
      firstSeq: 0, // its first seq sent on the open connection
      refused: 0, // unavailable frames that came on the open connection
      seq: null, // the room's latest seq it has seen, and its epoch
      epoch: '',
      urlIndex: conn % o.urls.length,
      closedAt: 0,
      timers: [],
      retry: null,
    });
  }
  // connecting → sending → draining → closing → done
  let phase = 'connecting';
  let settledCount = 0;
  let recipients = [];
  let live = 0; // connections left to close once closing
  let pollTimer = null;
  let closeTimer = null;
  let resolve;
  const done = new Promise((r) => {
    resolve = r;
  });

  function settle(m, ok) {
    if (m.settled) {
      return;
    }
    m.settled = true;
    settledCount++;
    if (o.onOpen) {
      o.onOpen(ok);
    }
    if (settledCount === o.size && phase === 'connecting') {
      startSending();
    }
  }

  function connect(m, attempt) {
    const idx = (m.urlIndex + attempt) % o.urls.length;
    const base = o.urls[idx];
    let url = roomURL(base, roomName);
    if (m.seq !== null) {
      url = resumeURL(url, m.seq, m.epoch);
    }
    const ws = new WebSocket(url, null, connectParams(base, o.token));
    let opened = false;
    let lastError = '';
    m.ws = ws;
    ws.onopen = (e) => {
      opened = true;
      if (phase === 'closing' || phase === 'done') {
        ws.close(); // it was still connecting when the room closed
        return;
      }
      m.open = true;
      m.urlIndex = idx;
      m.firstSeq = m.sent;
      m.refused = 0;
      if (!m.joined) {
        m.joined = true;
        settle(m, true);
        return;
      }
      counts.reconnects++;
      M.reconnects.add(1);
      M.reconnectTime.add(Math.max(0, eventTime(e) - m.closedAt));
    };
    ws.onmessage = (e) => onFrame(m, e);
    ws.onerror = (e) => {
      lastError = String((e && e.error) || '');
    };
    ws.onclose = (e) => {
      m.open = false;
      if (m.ws === ws) {
        m.ws = null;
      }
      if (phase === 'closing' || phase === 'done') {
        if (opened) {
          ledger.connectionEnded(m.i, m.firstSeq, m.sent, false, m.refused);
        }
        if (phase === 'closing' && --live <= 0) {
          complete();
        }
        return;
      }
      if (!opened) {
        M.connectFailures.add(1);
        if (m.joined && o.reconnect) {
          schedule(m, attempt + 1);
          return;
        }
        // A first connection that fails is not retried, as roomcast-loadgen fails the
        // run on it: the member stays out of the room (a wrong URL or a missing token
        // must fail the run, not retry until maxDuration).
        if (M.joinFailures) {
          M.joinFailures.add(1);
        }
        settle(m, false);
        return;
      }
      const code = closeCode(e, lastError);
      if (!expectedCloses.has(code)) {
        M.unexpectedCloses.add(1, { code: String(code) });
      }
      ledger.connectionEnded(m.i, m.firstSeq, m.sent, true, m.refused);
      if (o.reconnect) {
        m.closedAt = eventTime(e);
        schedule(m, 0);
      }
    };
  }

  function schedule(m, attempt) {
    const wait = backoff(attempt, o.reconnect.baseMs, o.reconnect.maxMs);
    m.retry = setTimeout(() => {
      m.retry = null;
      if (phase !== 'closing' && phase !== 'done') {
        connect(m, attempt);
      }
    }, wait);
  }

  function onFrame(m, e) {
    let f;
    try {
      f = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    if (f.type === 'message') {
      if (typeof f.seq === 'number') {
        const epoch = typeof f.epoch === 'string' ? f.epoch : '';
        if (m.seq === null || epoch !== m.epoch) {
          m.seq = f.seq; // a new epoch is a new history: its seqs start over
          m.epoch = epoch;
        } else if (f.seq > m.seq) {
          m.seq = f.seq;
        }
      }
      const st = typeof f.message === 'string' ? parseText(f.message) : null;
      if (st === null || st.run !== o.run) {
        return;
      }
      switch (ledger.received(m.i, st.conn - o.firstConn, st.seq)) {
        case 'first':
          counts.delivered++;
          M.delivered.add(1);
          M.latency.add(Math.max(0, eventTime(e) - st.sentMs));
          break;
        case 'duplicate':
          counts.duplicated++;
          M.duplicated.add(1);
          break;
      }
    } else if (f.type === 'error') {
      const code = String(f.code || 'unknown');
      M.errorFrames.add(1, { code });
      if (code === 'history_truncated' && M.historyTruncated) {
        M.historyTruncated.add(1);
      }
      if (code === 'history_truncated' || code === 'history_unavailable') {
        ledger.toldOfGap(m.i);
      } else if (code === 'unavailable') {
        m.refused++;
      }
    }
  }

  function send(m) {
    if (phase !== 'sending' || !m.open) {
      return; // a reconnecting member is silent
    }
    const now = Date.now();
    const seq = m.sent++;
    // Counted before it is sent, so that no receiver sees a message not counted yet.
    const n = ledger.sent(m.i, seq, recipients);
    counts.sent++;
    counts.expected += n;
    M.sent.add(1);
    M.expected.add(n);
    try {
      m.ws.send(messageFrame(formatText(o.run, m.conn, seq, now)));
    } catch (_) {
      // Closing under our feet: the message stays expected, so it counts as lost unless
      // it got through.
    }
  }

  function startSending() {
    phase = 'sending';
    recipients = members.filter((m) => m.joined).map((m) => m.i);
    if (o.sendEveryMs > 0) {
      for (const m of members) {
        // Members spread their sends over the period instead of all sending at once.
        const offset = (o.sendEveryMs * m.i) / o.size;
        m.timers.push(
          setTimeout(() => {
            send(m);
            m.timers.push(setInterval(() => send(m), o.sendEveryMs));
          }, offset),
        );
      }
    }
    setTimeout(drain, o.durationMs);
  }

  function drain() {
    phase = 'draining';
    for (const m of members) {
      for (const t of m.timers) {
        clearTimeout(t);
        clearInterval(t);
      }
      m.timers = [];
    }
    const stopAt = Date.now();
    const check = () => {
      if (ledger.pendingCount === 0 || Date.now() - stopAt >= o.graceMs) {
        if (pollTimer !== null) {
          clearInterval(pollTimer);
        }
        closeAll();
        return true;
      }
      return false;
    };
    if (!check()) {
      pollTimer = setInterval(check, 50);
    }
  }

  function closeAll() {
    phase = 'closing';
    for (const m of members) {
      if (m.retry !== null) {
        clearTimeout(m.retry);
        m.retry = null;
      }
      if (m.ws !== null) {
        live++;
        if (m.open) {
          m.ws.close(); // one still connecting closes itself when it opens
        }
      }
    }
    if (live === 0) {
      complete();
    } else {
      closeTimer = setTimeout(complete, 10000);
    }
  }

  function complete() {
    if (phase === 'done') {
      return;
    }
    phase = 'done';
    if (closeTimer !== null) {
      clearTimeout(closeTimer);
    }
    const r = ledger.finish();
    counts.lost = r.lost;
    counts.unconfirmed = r.unconfirmed;
    counts.unanswered = r.unanswered;
    counts.untold = r.untold;
    M.lost.add(r.lost);
    if (M.unconfirmed) {
      M.unconfirmed.add(r.unconfirmed);
      M.unanswered.add(r.unanswered);
      M.untold.add(r.untold);
    }
    resolve(counts);
  }

  // recordZeros adds 0 to every counter, so that each shows in the summary and its
  // thresholds have data.
  function recordZeros() {
    for (const c of [M.sent, M.expected, M.delivered, M.lost, M.duplicated, M.errorFrames, M.unexpectedCloses, M.connectFailures]) {
      c.add(0);
    }
    for (const c of [M.unconfirmed, M.unanswered, M.untold, M.reconnects, M.historyTruncated, M.joinFailures]) {
      if (c) {
        c.add(0);
      }
    }
  }

  // Zeros first, so that the thresholds on these counters have a sample even when the
  // room never completes (k6 passes a threshold on a metric without samples).
  recordZeros();
  for (const m of members) {
    connect(m, 0);
  }
  return done;
}
