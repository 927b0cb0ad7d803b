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
    this.open = new Map(); // key -> { pending: Set(member), reached }
    this.pendingCount = 0;
    this.told = new Array(size).fill(false); // a history_truncated or history_unavailable came
    this.conns = []; // { sender, from, to, cut, refused } of every ended connection
  }

  key(sender, seq) {
    return seq * this.size + sender;
  }

  // sent records message seq of sender, expected by recipients (member numbers), and
  // returns how many deliveries it expects.
  sent(sender, seq, recipients) {
    this.sentBy[sender] = Math.max(this.sentBy[sender], seq + 1);
    if (recipients.length > 0) {
      this.open.set(this.key(sender, seq), { pending: new Set(recipients), reached: false });
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

  // toldOfGap records that member got history_truncated or history_unavailable: the
  // server said it may have missed messages.
  toldOfGap(member) {
    this.told[member] = true;
  }

  // connectionEnded records the messages [from, to) that sender sent on a connection
  // now ended: cut by the server, or closed at the end of the test; refused is how many
  // unavailable frames came on it, each the answer to one of those messages.
  connectionEnded(sender, from, to, cut, refused) {
    this.conns.push({ sender, from, to, cut, refused });
  }

  // finish returns the deliveries still expected (lost) and, as roomcast-loadgen counts
  // them: the messages that reached no member beyond the unavailable frames that came on
  // the connection each was sent on, unconfirmed when the server cut it and unanswered
  // when it lasted; and the lost deliveries of messages another member got, at members
  // never told of a gap (untold).
  finish() {
    let unconfirmed = 0;
    let unanswered = 0;
    for (const c of this.conns) {
      let nowhere = 0;
      for (let seq = c.from; seq < c.to; seq++) {
        const e = this.open.get(this.key(c.sender, seq));
        if (e !== undefined && !e.reached) {
          nowhere++;
        }
      }
      const n = Math.max(nowhere - c.refused, 0);
      if (c.cut) {
        unconfirmed += n;
      } else {
        unanswered += n;
      }
    }
    let untold = 0;
    for (const e of this.open.values()) {
      if (e.reached) {
        for (const member of e.pending) {
          if (!this.told[member]) {
            untold++;
          }
        }
      }
    }
    return { lost: this.pendingCount, unconfirmed, unanswered, untold };
  }
}
