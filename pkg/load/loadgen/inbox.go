package loadgen

// Inbox remembers which messages have reached one member, so that a message counts as
// delivered the first time it arrives there and as a duplicate every later time. It is
// not safe for concurrent use: each member's read loop owns its Inbox.
type Inbox struct {
	senders []seqSet
}

// NewInbox returns an Inbox for messages from senders senders, numbered from 0.
func NewInbox(senders int) *Inbox { return &Inbox{senders: make([]seqSet, senders)} }

// Receive records message seq of sender and reports whether it is the first receipt.
// A sender out of range, or a seq so far ahead of the ones missing that it cannot be a
// real message (over 64 Mi), is not recorded and reports false.
func (in *Inbox) Receive(sender int, seq uint64) bool {
	if sender < 0 || sender >= len(in.senders) {
		return false
	}
	return in.senders[sender].add(seq)
}

// Has reports whether message seq of sender has been received.
func (in *Inbox) Has(sender int, seq uint64) bool {
	if sender < 0 || sender >= len(in.senders) {
		return false
	}
	return in.senders[sender].has(seq)
}

// maxSpanWords bounds one seqSet: 2^20 words, 64 Mi sequence numbers beyond the lowest
// missing one.
const maxSpanWords = 1 << 20

// seqSet is a set of sequence numbers that stays small when they arrive roughly in
// order: every number below base has arrived, and words holds a bit per number from
// base on. Leading words that fill up are dropped.
type seqSet struct {
	base  uint64
	words []uint64
}

func (s *seqSet) has(seq uint64) bool {
	if seq < s.base {
		return true
	}
	off := seq - s.base
	w := off / 64
	return w < uint64(len(s.words)) && s.words[w]&(uint64(1)<<(off%64)) != 0
}

func (s *seqSet) add(seq uint64) bool {
	if seq < s.base {
		return false
	}
	off := seq - s.base
	w := off / 64
	if w >= maxSpanWords {
		return false
	}
	if w >= uint64(len(s.words)) {
		s.words = append(s.words, make([]uint64, int(w)+1-len(s.words))...)
	}
	bit := uint64(1) << (off % 64)
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	for len(s.words) > 0 && s.words[0] == ^uint64(0) {
		s.words = s.words[1:]
		s.base += 64
	}
	return true
}

// Counts is the delivery accounting of a set of messages.
type Counts struct {
	// Sent is the number of messages sent.
	Sent int64 `json:"sent"`
	// Expected is, summed over the messages sent, the member count of their room.
	Expected int64 `json:"expected"`
	// Delivered counts (message, member) pairs that arrived at least once.
	Delivered int64 `json:"delivered"`
	// Duplicated counts receipts beyond the first of a (message, member) pair.
	Duplicated int64 `json:"duplicated"`
}

// Lost is Expected − Delivered: deliveries that never happened (once the grace period
// has passed; before that it includes messages still in flight).
func (c Counts) Lost() int64 { return max(c.Expected-c.Delivered, 0) }
