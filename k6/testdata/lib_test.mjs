// Unit tests of k6/lib, run by k6_test.go with node (the library's pure parts need no
// k6): node lib_test.mjs GO_TEXT, where GO_TEXT is a message text made by
// roomcast-loadgen. It prints {"jsText": ...}, a text for the Go side to parse, and
// exits non-zero on the first failure.

import assert from 'node:assert/strict';

import { backoff, closeCode, connectParams, httpURL, resumeURL, roomURL } from '../lib/client.js';
import { parseDuration, readParams, duration, int, num, str, urls } from '../lib/env.js';
import { formatText, messageFrame, parseText, runToken } from '../lib/envelope.js';
import { Ledger } from '../lib/ledger.js';

const goText = process.argv[2];

// Durations, as Go writes and parses them.
for (const [text, ms] of [
  ['0', 0],
  ['250ms', 250],
  ['30s', 30000],
  ['1m', 60000],
  ['1m30s', 90000],
  ['1.5s', 1500],
  ['2h', 7200000],
  ['500us', 0.5],
  ['1ns', 0.000001],
]) {
  assert.equal(parseDuration(text), ms, text);
}
for (const text of ['', '10', 's', '1x', '-1s', '1s ', 'ms']) {
  assert.equal(parseDuration(text), null, JSON.stringify(text));
}

// Parameters: defaults, values from __ENV, and errors naming the variable.
globalThis.__ENV = { ROOMS: '7', URL: 'ws://a:1, wss://b/x', RATE: '', DURATION: '90s', TOKEN: ' eyJ.x.y\n' };
const p = readParams({
  ROOMS: int(10, 1), URL: urls('ws://127.0.0.1:8080'), RATE: num(1), DURATION: duration('30s'), GRACE: duration('0s', false),
  TOKEN: str(''), OTHER: str(''),
});
assert.deepEqual({ ...p }, { ROOMS: 7, URL: ['ws://a:1', 'wss://b/x'], RATE: 1, DURATION: 90000, GRACE: 0, TOKEN: 'eyJ.x.y', OTHER: '' });
assert.ok(Object.isFrozen(p));
for (const [name, value, spec, want] of [
  ['ROOMS', 'ten', int(10, 1), /invalid ROOMS="ten": want a whole number of at least 1/],
  ['ROOMS', '0', int(10, 1), /ROOMS/],
  ['RATE', '0', num(1), /invalid RATE="0": want a number above 0/],
  ['DURATION', '10', duration('30s'), /invalid DURATION="10": want a duration/],
  ['DURATION', '0s', duration('30s'), /above 0/],
  ['URL', 'http://x', urls('ws://x'), /invalid URL="http:\/\/x"/],
  ['URL', 'ws://x/ws/chat/a/', urls('ws://x'), /base URLs/],
]) {
  globalThis.__ENV = { [name]: value };
  assert.throws(() => readParams({ [name]: spec }), want, `${name}=${value}`);
}

// The envelope: round trip, the Go text, and what is not ours.
const run = runToken();
assert.match(run, /^[a-z0-9]{6}$/);
const text = formatText(run, 1999, 42, 1764188135123);
assert.equal(text, `lg|${run}-1999-42|1764188135123000000`);
assert.deepEqual(parseText(text), { run, conn: 1999, seq: 42, sentMs: 1764188135123 });
assert.equal(messageFrame(text), `{"message":"${text}"}`);
const fromGo = parseText(goText);
assert.ok(fromGo, `Go text ${goText} does not parse`);
assert.equal(fromGo.run, 'gorun1');
assert.equal(fromGo.conn, 17);
assert.equal(fromGo.seq, 5);
assert.ok(Math.abs(fromGo.sentMs - 1764188135123.4568) < 0.001, String(fromGo.sentMs));
for (const t of ['hi', 'lg|', 'lg|x-1-2', 'lg|X-1-2|3', 'lg|a-1-2|3|4', 'lg|a-b-2|3']) {
  assert.equal(parseText(t), null, t);
}

// URLs, backoff and close codes.
assert.equal(roomURL('ws://h:1/', 'r1'), 'ws://h:1/ws/chat/r1/');
assert.equal(resumeURL('ws://h/ws/chat/r/', 41, ''), 'ws://h/ws/chat/r/?since=41');
assert.equal(resumeURL('ws://h/ws/chat/r/', 41, 'k3v9'), 'ws://h/ws/chat/r/?since=41&epoch=k3v9');
assert.equal(httpURL('ws://h:8080', '/readyz'), 'http://h:8080/readyz');
assert.equal(httpURL('wss://h/', '/readyz'), 'https://h/readyz');
assert.deepEqual(connectParams('ws://h:1', ''), { tags: { name: 'ws://h:1/ws/chat/{room}/' } });
assert.deepEqual(connectParams('ws://h:1', 'eyJ.x.y'), { tags: { name: 'ws://h:1/ws/chat/{room}/' }, headers: { Authorization: 'Bearer eyJ.x.y' } });
for (let n = 0; n < 80; n++) {
  const ceil = Math.min(5000, 100 * 2 ** n);
  assert.equal(backoff(n, 100, 5000, () => 0), 0);
  const top = backoff(n, 100, 5000, () => 0.9999999);
  assert.ok(top < ceil && top >= ceil * 0.99, `attempt ${n}: ${top} for ceiling ${ceil}`);
}
assert.equal(closeCode({ code: 1012 }, ''), 1012);
assert.equal(closeCode({}, 'websocket: close 1012 (service restart)'), 1012);
assert.equal(closeCode({ code: 0 }, 'read tcp: connection reset by peer'), 1006);
assert.equal(closeCode(undefined, undefined), 1006);

// The ledger: first receipts, duplicates, foreign messages, and the lost ones by what
// their sender and members were told.
const l = new Ledger(3);
assert.equal(l.sent(0, 0, [0, 1, 2]), 3);
assert.equal(l.received(0, 0, 0), 'first');
assert.equal(l.received(0, 0, 0), 'duplicate');
assert.equal(l.received(1, 0, 0), 'first');
assert.equal(l.received(2, 0, 0), 'first');
assert.equal(l.open.size, 0, 'a message every member has is forgotten');
assert.equal(l.received(2, 0, 0), 'duplicate');
assert.equal(l.received(0, 0, 1), 'foreign', 'a seq not sent yet');
assert.equal(l.received(0, 3, 0), 'foreign', 'a sender out of the room');
assert.equal(l.pendingCount, 0);
// Sender 1 on a connection the server cut: message 0 reached member 0 only (2 lost, at
// members 1 and 2; member 2 was told of a gap, so 1 untold); message 1 reached nobody
// and was refused; message 2 reached nobody (unconfirmed).
l.sent(1, 0, [0, 1, 2]);
assert.equal(l.received(0, 1, 0), 'first');
l.toldOfGap(2);
l.sent(1, 1, [0, 1, 2]);
l.sent(1, 2, [0, 1, 2]);
l.connectionEnded(1, 0, 3, true, 1);
// Sender 2 on a connection that lasted: message 0 reached nobody (unanswered), message 1
// reached nobody and was refused.
l.sent(2, 0, [0, 1, 2]);
l.sent(2, 1, [0, 1, 2]);
l.connectionEnded(2, 0, 2, false, 1);
assert.equal(l.pendingCount, 14);
assert.deepEqual(l.finish(), { lost: 14, unconfirmed: 1, unanswered: 1, untold: 1 });

process.stdout.write(JSON.stringify({ jsText: formatText('jsrun1', 3, 9, 1764188135999) }) + '\n');
