package hub

import (
	"runtime"
	"sync"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsframe"
)

// Member is one connection in one room.
type Member struct {
	hub   *Hub
	room  *room
	index int // position in room.members; guarded by room.mu

	mu             sync.Mutex
	socket         Socket
	pending        [][]byte
	spare          [][]byte // the previous batch's array, reused to avoid an allocation
	pendingBytes   int
	pendingFrames  int     // the frames pending goes out as: see queueFrames
	textRun        int     // text frames at the end of pending, which a batched writer joins
	pendingCounted int     // message frames in pending (the rest are control and error frames)
	accepted       []int64 // acceptance time (Unix ns) of each message frame in pending, if known
	spareAccepted  []int64
	writing        bool // a writer goroutine owns the socket's write side
	closing        bool // no more frames are accepted
	closeSent      bool // Socket.Close has been called or will be by its owner
	closeCode      uint16
	closeReason    string
	left           bool
	onLeave        func() // called once the member has left; see OnLeave
	batched        bool   // text frames queued together go out as one; see Batch

	// While a resuming member's replay runs, its live messages are held; see resume.go.
	holding bool
	held    []heldFrame
	// skipThrough is the seq the replay reached, once the hold has ended: a message
	// stored before the replay read the stream can still come live after the hold (its
	// republished copy was late), and it is dropped for this member until a live message
	// beyond the replay arrives, which is checked for a predecessor the member lacks.
	// 0: nothing to skip. skipEpoch is the epoch of skipThrough.
	skipThrough uint64
	skipEpoch   string
	space       chan struct{} // closed by the writer when it has made room; see SendMessage
}

// Room returns the name of the member's room.
func (m *Member) Room() string { return m.room.name }

// Attach connects the member to its socket once the upgrade has been answered, and
// starts writing what was queued meanwhile.
func (m *Member) Attach(s Socket) {
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		return
	}
	m.socket = s
	m.hub.m.connectionsActive.Inc()
	m.hub.m.connectionsTotal.Inc()
	m.kickLocked()
	abort := m.closeSent && !m.left
	code, reason := m.closeCode, m.closeReason
	m.mu.Unlock()
	if abort {
		go s.Close(code, reason)
	}
}

// Batch makes the member's writer join the text frames it writes together into one text
// frame, their payloads separated by '\n' (the batched subprotocol; see
// wsframe.AppendBatched). Call it before Attach.
func (m *Member) Batch() {
	m.mu.Lock()
	m.batched = true
	m.mu.Unlock()
}

// OnLeave arranges for f to be called once the member has left its room (at once if it
// has already), so that work done for it, such as a replay that reads again while the
// store says "for now", stops with its client. One f per member: a later call replaces
// an earlier one.
func (m *Member) OnLeave(f func()) {
	m.mu.Lock()
	left := m.left
	if !left {
		m.onLeave = f
	}
	m.mu.Unlock()
	if left {
		f()
	}
}

// Send queues a frame for this member only, such as an error frame or a pong. It does not
// count as a delivered message.
func (m *Member) Send(frame []byte) { m.enqueue(frame, false, 0) }

// Close closes the member's connection with code once the frames queued so far have
// been written. Frames queued after Close are dropped.
func (m *Member) Close(code uint16, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return
	}
	m.closing = true
	m.closeCode, m.closeReason = code, reason
	m.kickLocked()
}

// enqueue queues frame; a counted frame is a chat message, accepted at that Unix time in
// nanoseconds (0 if unknown), which the writer turns into delivery latency.
func (m *Member) enqueue(frame []byte, counted bool, accepted int64) {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return
	}
	frames, run := m.queueFrames(frame)
	if frames > m.hub.cfg.SendQueueFrames || m.pendingBytes+len(frame) > m.hub.cfg.SendQueueBytes {
		m.abortLocked(wsframe.CloseTryAgainLater, "slow consumer: send queue full")
		return
	}
	m.pending = append(m.pending, frame)
	m.pendingBytes += len(frame)
	m.pendingFrames, m.textRun = frames, run
	if counted {
		m.pendingCounted++
		if accepted > 0 {
			m.accepted = append(m.accepted, accepted)
		}
	}
	m.kickLocked()
	m.mu.Unlock()
}

// queueFrames is how many frames the queue goes out as once frame is added, and the run
// of text frames it then ends with; m.mu is held. A frame is one, except that a batched
// member's writer joins a run of text frames into frames of wsframe.MaxBatched messages,
// so a batched client's queue counts what it will receive: a message joins the frame
// its run is making until that is full.
func (m *Member) queueFrames(frame []byte) (frames, run int) {
	if !m.batched || !wsframe.IsText(frame) {
		return m.pendingFrames + 1, 0
	}
	if m.textRun%wsframe.MaxBatched == 0 {
		return m.pendingFrames + 1, m.textRun + 1
	}
	return m.pendingFrames, m.textRun + 1
}

// abortLocked drops what is queued and closes at once, without waiting for the writer.
// It unlocks m.mu.
func (m *Member) abortLocked(code uint16, reason string) {
	m.closing, m.closeSent = true, true
	m.closeCode, m.closeReason = code, reason
	m.pending, m.pendingBytes, m.pendingCounted, m.accepted = nil, 0, 0, nil
	m.pendingFrames, m.textRun = 0, 0
	m.held = nil
	m.wakeSenderLocked()
	s := m.socket
	m.mu.Unlock()
	m.hub.errs.Count(chat.KindSlowConsumer)
	if s != nil {
		// Close may wait for a write in progress; the enqueuing goroutine must not.
		go s.Close(code, reason)
	}
}

// wakeSenderLocked lets a SendMessage waiting for room look again.
func (m *Member) wakeSenderLocked() {
	if m.space != nil {
		close(m.space)
		m.space = nil
	}
}

// kickLocked starts the writer if there is something for it to do.
func (m *Member) kickLocked() {
	if m.writing || m.socket == nil {
		return
	}
	if len(m.pending) == 0 && !(m.closing && !m.closeSent) {
		return
	}
	m.writing = true
	go m.write()
}

// write is the member's writer: it writes everything queued in one call, until the queue
// is empty, then sends the close frame if one was asked for.
//
// A batched member's writer first waits Config.BatchDelay, so that the frames queued
// meanwhile go out in the same frame: one write instead of several, for some latency.
//
// Before each write the writer yields (runtime.Gosched), for two reasons measured on a
// replica with one P (GOMAXPROCS=1, as the stacks run it):
//   - The fan-out that started the writer goes on queuing the messages it already has
//     (for this member too), so that they go out in the same write: a write is a system
//     call, most of a delivery's CPU. 0.28 writes per delivery against 0.53 at 90k
//     deliveries/s.
//   - A new goroutine runs before those waiting in the global run queue, where the
//     goroutines reading the clients' frames land when the network wakes them. Writers
//     started for every message kept that queue waiting (up to sysmon's 10 ms poll of
//     the network, then 1 goroutine in 61), and so did the messages the readers had not
//     read yet: a yielded writer waits in that queue too, its turn after the readers.
//     With history on, the p99 of fanout-large went from 24-31 to 5-7 ms, and the
//     highest rate the ramp held from 90k-128k to 256k-362k deliveries/s.
//
// With nothing else to run, the yield returns at once.
func (m *Member) write() {
	var batch [][]byte
	var accepted []int64
	waited := false
	for {
		runtime.Gosched()
		m.mu.Lock()
		if batch != nil && m.spare == nil {
			m.spare, m.spareAccepted = batch[:0], accepted[:0]
		}
		if delay := m.hub.cfg.BatchDelay; delay > 0 && !waited && m.batched && !m.closing && len(m.pending) > 0 {
			m.mu.Unlock()
			waited = true
			m.hub.cfg.BatchWait(delay)
			continue
		}
		waited = false
		if len(m.pending) == 0 {
			m.writing = false
			sendClose := m.closing && !m.closeSent
			m.closeSent = m.closeSent || sendClose
			s, code, reason := m.socket, m.closeCode, m.closeReason
			m.mu.Unlock()
			if sendClose {
				s.Close(code, reason)
			}
			return
		}
		batch, accepted = m.pending, m.accepted
		counted := m.pendingCounted
		m.wakeSenderLocked()
		m.pending, m.spare = m.spare, nil
		m.accepted, m.spareAccepted = m.spareAccepted, nil
		m.pendingBytes, m.pendingCounted, m.pendingFrames, m.textRun = 0, 0, 0, 0
		s, batched := m.socket, m.batched
		m.mu.Unlock()

		var err error
		if batched && len(batch) > 1 {
			err = m.hub.writeBatched(s, batch)
		} else {
			err = s.WriteFrames(batch)
		}
		clear(batch)
		if err != nil {
			m.mu.Lock()
			m.writing = false
			m.closing = true
			m.pending, m.pendingBytes, m.pendingCounted, m.accepted = nil, 0, 0, nil
			m.pendingFrames, m.textRun = 0, 0
			m.wakeSenderLocked()
			alreadyClosed := m.closeSent
			m.closeSent = true
			m.mu.Unlock()
			if !alreadyClosed {
				// The transport's read side sees the closed connection and calls Leave.
				s.Close(wsframe.CloseInternalError, "write failed")
			}
			return
		}
		m.hub.m.messagesDelivered.Add(float64(counted))
		if len(accepted) > 0 {
			now := m.hub.cfg.Now().UnixNano()
			for _, at := range accepted {
				m.hub.m.deliveryLatency.Observe(float64(now-at) / 1e9)
			}
		}
	}
}

// batchBuffer is the one frame a batched member's writer writes: reused across members
// (Hub.batchBuffers) so that a writer allocates nothing per write.
type batchBuffer struct {
	b      []byte
	frames [1][]byte
}

// maxPooledBatch bounds the buffers kept for reuse: a rare large batch is not kept.
const maxPooledBatch = 64 << 10

func (h *Hub) writeBatched(s Socket, frames [][]byte) error {
	bb, _ := h.batchBuffers.Get().(*batchBuffer)
	if bb == nil {
		bb = new(batchBuffer)
	}
	bb.b = wsframe.AppendBatched(bb.b[:0], frames)
	bb.frames[0] = bb.b
	err := s.WriteFrames(bb.frames[:])
	bb.frames[0] = nil
	if cap(bb.b) <= maxPooledBatch {
		h.batchBuffers.Put(bb)
	}
	return err
}
