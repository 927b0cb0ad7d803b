// The delivery accounting of one room, the same as roomcast-loadgen's: a message sent
// into a room is expected once by every member in the room when it was sent (connected or
// reconnecting); it is delivered to a member the first time it arrives there, and
// duplicated every later time; whatever is still expected when the test ends (after its
// grace period) is lost. A room runs in one VU, so its senders and receivers share one
// Ledger and no clock but the VU's.
//
// Memory stays bounded: a message is forgotten once every member has it, so only what is
// in flight, and what is lost, is kept.

export class Ledger {
  // size is the number of members, numbered from 0.
  constructor(size) {
    this.size = size;
    this.sentBy = new Array(size).fill(0); // next seq of each sender
    this.open = new Map(); // key -> { pending: Set(member), reached, unconfirmed }
    this.pendingCount = 0;
  }

  key(sender, seq) {
    return seq * this.size + sender;
  }

  // sent records message seq of sender, expected by recipients (member numbers), and
  // returns how many deliveries it expects.
  sent(sender, seq, recipients) {
    this.sentBy[sender] = Math.max(this.sentBy[sender], seq + 1);
    if (recipients.length > 0) {
      this.open.set(this.key(sender, seq), { pending: new Set(recipients), reached: false, unconfirmed: false });
      this.pendingCount += recipients.length;
    }
    return recipients.length;
  }

  // received records that member got message seq of sender: 'first', 'duplicate', or
  // 'foreign' for a message this room never sent.
  received(member, sender, seq) {
    if (!(sender >= 0 && sender < this.size) || !(seq >= 0 && seq < this.sentBy[sender])) {
      return 'foreign';
    }
    const k = this.key(sender, seq);
    const e = this.open.get(k);
    if (e === undefined) {
      return 'duplicate'; // every member had it already
    }
    e.reached = true;
    if (!e.pending.delete(member)) {
      return 'duplicate';
    }
    this.pendingCount--;
    if (e.pending.size === 0) {
      this.open.delete(k);
    }
    return 'first';
  }

  // closedBeforeEcho marks the messages [from, to) of sender, sent on a connection the
  // server closed before their echo came back on it: if no member ever gets one, it
  // counts as unconfirmed (most likely never read by the server).
  closedBeforeEcho(sender, from, to) {
    for (let seq = from; seq < to; seq++) {
      const e = this.open.get(this.key(sender, seq));
      if (e !== undefined && !e.reached) {
        e.unconfirmed = true;
      }
    }
  }

  // finish returns the deliveries still expected (lost) and the unconfirmed messages.
  finish() {
    let unconfirmed = 0;
    for (const e of this.open.values()) {
      if (e.unconfirmed && !e.reached) {
        unconfirmed++;
      }
    }
    return { lost: this.pendingCount, unconfirmed };
  }
}
