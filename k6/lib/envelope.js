// The message envelope, shared with roomcast-loadgen (pkg/load/loadgen/stamp.go): a message's
// text is "lg|<run>-<conn>-<seq>|<unix nanoseconds>". The run token tells this test's
// messages from anyone else's, conn (the sending client's number) and seq (its count of
// messages sent) make the message unique, and the send time gives the latency on
// arrival. Nothing in it needs JSON escaping.

export const TEXT_PREFIX = 'lg|';

// runToken is 6 random characters of [a-z0-9]: the rooms and messages of two tests never
// mix. setup() draws it once, so every VU of a test shares it.
export function runToken() {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let s = '';
  for (let i = 0; i < 6; i++) {
    s += alphabet[Math.floor(Math.random() * alphabet.length)];
  }
  return s;
}

// formatText is the text of message seq of client conn, sent at sentMs (Unix
// milliseconds, as Date.now()).
export function formatText(run, conn, seq, sentMs) {
  return `${TEXT_PREFIX}${run}-${conn}-${seq}|${Math.floor(sentMs)}000000`;
}

const textRe = /^lg\|([a-z0-9]+)-(\d{1,10})-(\d{1,16})\|(\d{1,19})$/;

// parseText reads a text made by formatText (or by roomcast-loadgen), or returns null.
// sentMs is in milliseconds, with the nanoseconds' fraction when the sender had them.
export function parseText(text) {
  const m = textRe.exec(text);
  if (m === null) {
    return null;
  }
  return { run: m[1], conn: Number(m[2]), seq: Number(m[3]), sentMs: Number(m[4]) / 1e6 };
}

// messageFrame is the client frame that sends text.
export function messageFrame(text) {
  return `{"message":"${text}"}`;
}
