package natsbroker

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"roomcast/pkg/chat"
)

// A stream this release creates keeps a room's messages in batches: the messages a
// replica's senders published to one room while its publisher was busy go to the stream
// as one stored message. The stream's work per stored message (the store, its per-room
// bound, the republish with its headers, the header map each receiving replica decodes)
// is most of what history costs per message, and under load it is shared by the batch.
// A batch's messages are numbered from the stored message's sequence S: S<<seqShift + i
// for the i-th, so that seq still increases strictly within a room and is the same on
// every replica. A quiet room's batches hold one message: nothing waits for a batch to
// fill.
//
// The numbering is the stream's: a stream created by this release says so in its
// metadata (batchMetadataKey); one created by an earlier release keeps one message per
// stored message and its sequence as seq, and is used that way. An earlier release
// cannot read batches, so it must not serve a stream this release created.

// seqShift makes room in seq for the index of a message within its batch.
const seqShift = 6

// maxBatchMessages is the most messages one stored message holds (the index's room).
const maxBatchMessages = 1 << seqShift

// batchMetadataKey, set to batchMetadataValue in the stream's metadata, says the stream
// keeps batches numbered as above.
const (
	batchMetadataKey   = "roomcast_batch"
	batchMetadataValue = "v1"
)

// batchMarker begins a stored message that is a batch; the envelopes follow, one per
// line (JSON strings never hold a raw newline: they are escaped).
var batchMarker = []byte("roomcast.batch.v1\n")

// packBatch joins envelopes into one batch.
func packBatch(envelopes [][]byte) []byte {
	n := len(batchMarker)
	for _, e := range envelopes {
		n += len(e) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, batchMarker...)
	for i, e := range envelopes {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, e...)
	}
	return b
}

// isBatch reports whether data is a batch rather than one envelope.
func isBatch(data []byte) bool { return bytes.HasPrefix(data, batchMarker) }

// unpack decodes a stored message: one envelope, or a batch of them; n is how many it
// holds. An envelope that does not decode is skipped and counted in bad, keeping the
// others' indexes, which their seq is made from.
func unpack(data []byte, each func(i uint64, msg chat.Message)) (n uint64, bad int, err error) {
	if !isBatch(data) {
		msg, err := decode(data)
		if err != nil {
			return 1, 1, err
		}
		each(0, msg)
		return 1, 0, nil
	}
	rest := data[len(batchMarker):]
	for n = 0; len(rest) > 0 || n == 0; n++ {
		line := rest
		if j := bytes.IndexByte(rest, '\n'); j >= 0 {
			line, rest = rest[:j], rest[j+1:]
		} else {
			rest = nil
		}
		if n >= maxBatchMessages {
			return n, bad + 1, errors.New("decoding batch: more messages than a batch holds")
		}
		msg, derr := decode(line)
		if derr != nil {
			bad, err = bad+1, fmt.Errorf("decoding batch message %d: %w", n, derr)
			continue
		}
		each(n, msg)
	}
	return n, bad, err
}

// batchLen is how many messages a stored message holds, as unpack counts them, without
// decoding them.
func batchLen(data []byte) uint64 {
	if !isBatch(data) {
		return 1
	}
	return min(1+uint64(bytes.Count(data[len(batchMarker):], []byte{'\n'})), maxBatchMessages)
}

// batchSeq is the seq of the i-th message of the stored message at stream sequence seq.
func batchSeq(seq, i uint64) uint64 { return seq<<seqShift + i }

// defaultBatchBytes bounds a batch when neither the stream nor the server bounds a
// message: a batch's bytes are then those of a few large messages, as a replay holds.
const defaultBatchBytes = 64 << 10

// batchBytes is a batch's bound: never more than one message may be, so that a batch
// is stored wherever its messages alone would be; room is left for the republish's
// headers.
func batchBytes(maxMsgSize int32, maxPayload int64) int {
	n := int64(defaultBatchBytes)
	if maxMsgSize > 0 {
		n = min(n, int64(maxMsgSize))
	}
	if maxPayload > 0 {
		n = min(n, maxPayload-1024)
	}
	return int(max(n, 1))
}

// queued is a publish waiting for the batcher.
type queued struct {
	id   uint64 // the window's
	data []byte
	copy bool // acknowledged by its republished copy, so it may share a batch
}

// batcher sends a replica's history publishes, a room's queued ones together.
type batcher struct {
	w *window

	mu    sync.Mutex
	rooms map[string][]queued
	order []string // rooms in the order their first queued publish came
	kick  chan struct{}
	quit  chan struct{}
	done  chan struct{}
	// beforeSend, when set (tests), runs before each round of sends.
	beforeSend atomic.Pointer[func()]
}

func newBatcher(w *window) *batcher {
	b := &batcher{
		w: w, rooms: make(map[string][]queued),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	go b.run()
	return b
}

func (b *batcher) add(room string, q queued) {
	b.mu.Lock()
	list, ok := b.rooms[room]
	if !ok {
		b.order = append(b.order, room)
	}
	b.rooms[room] = append(list, q)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *batcher) run() {
	defer close(b.done)
	for {
		select {
		case <-b.quit:
			return
		case <-b.kick:
		}
		// With one P, the goroutine that queued the first publish readied this one to
		// run right after it; yielding lets the other senders woken with it queue
		// theirs first, so that they share the batch (the hub's writers do the same).
		runtime.Gosched()
		if f := b.beforeSend.Load(); f != nil {
			(*f)()
		}
		b.mu.Lock()
		rooms, order := b.rooms, b.order
		b.rooms, b.order = make(map[string][]queued, len(rooms)), nil
		b.mu.Unlock()
		for _, room := range order {
			b.send(room, rooms[room])
		}
	}
}

// send publishes a room's queued publishes in their order: the runs of those
// acknowledged by their copy in batches, the others alone.
func (b *batcher) send(room string, list []queued) {
	sh := b.w.h.shardOf(room)
	subject, maxBytes := sh.subject+room, int(sh.batchBytes.Load())
	for len(list) > 0 {
		if !list[0].copy {
			q := list[0]
			list = list[1:]
			b.w.sent(room, q.id, b.w.h.b.nc.PublishRequest(subject, b.w.replySubject(q.id), q.data))
			continue
		}
		n, size := 1, len(batchMarker)+len(list[0].data)
		for n < len(list) && n < maxBatchMessages && list[n].copy && size+1+len(list[n].data) <= maxBytes {
			size += 1 + len(list[n].data)
			n++
		}
		batch := list[:n]
		list = list[n:]
		data := batch[0].data
		if n > 1 {
			envelopes := make([][]byte, n)
			for i, q := range batch {
				envelopes[i] = q.data
			}
			data = packBatch(envelopes)
		}
		err := b.w.h.b.nc.Publish(subject, data)
		if err == nil {
			b.w.h.batchSize.Observe(float64(n))
		}
		for _, q := range batch {
			b.w.sent(room, q.id, err)
		}
	}
}

// stop ends the batcher; what it still holds is failed by the window's stop.
func (b *batcher) stop() {
	close(b.quit)
	<-b.done
}
