package natsbroker

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// History is kept in shards: streams that each take the rooms whose name hashes to them.
// JetStream keeps no index of a subject's messages, so when a full room stores a message
// and drops its oldest, the stream looks for the room's new oldest by walking its
// sequences from the one it dropped, past every other room's messages stored since
// (nats-server's memStore.recalculateForSubj; the file store walks one block). With one
// stream that walk grows with the number of busy rooms: 533-606 µs per stored message at
// 10,000 rooms in the memory store, against 11-12 µs at 100 (BenchmarkHistoryStoreByRooms,
// a quiet room in each stream). Each shard walks only its own rooms' messages: 47-58 µs
// at 10,000 rooms with EmbeddedShards.
//
// The root stream (HistoryConfig.Stream, subjects roomcast.room.<room>) is the history's
// layout: its metadata says how many shards there are, and a replica finding it uses its
// number, whatever its own configuration says, so that replicas of two releases put a
// room in the same stream. A root stream without that metadata (releases before shards)
// is one shard. Shard i > 0 is the stream <root>_<i>, with subjects
// roomcast.room.<i>.<room> (one token more than the root's, so no subject is in two
// streams); every shard republishes on roomcast.live.<room>.

// MaxShards bounds HistoryConfig.Shards.
const MaxShards = 16

// EmbeddedShards is the number of shards of the embedded server's memory stream.
const EmbeddedShards = 8

// shardsMetadataKey is the root stream's metadata saying how many shards there are.
const shardsMetadataKey = "roomcast_shards"

// shard is one of the history's streams.
type shard struct {
	index   int    // of the layout's shards, the root 0
	name    string // the stream's name
	subject string // its subjects are subject + a room's name

	mu     sync.Mutex
	stream jetstream.Stream // nil until the stream is known
	epoch  string           // its creation time: a room's epoch is its shard's
	// known is stream != nil; batched says the stream keeps batches (batch.go), and
	// batchBytes bounds one. All three are read on every publish.
	known      atomic.Bool
	batched    atomic.Bool
	batchBytes atomic.Int64
}

func newShard(root string, i int) *shard {
	if i == 0 {
		return &shard{name: root, subject: SubjectPrefix}
	}
	n := strconv.Itoa(i)
	return &shard{index: i, name: root + "_" + n, subject: SubjectPrefix + n + "."}
}

// shardIndex is the shard of room among n: FNV-1a of its name, written out so that the
// per-message path does not allocate a hash.Hash.
func shardIndex(room string, n int) int {
	if n <= 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(room); i++ {
		h ^= uint32(room[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

func (s *shard) set(st jetstream.Stream, epoch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stream, s.epoch = st, epoch
	s.known.Store(st != nil)
}

func (s *shard) current() (jetstream.Stream, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream, s.epoch
}

func (s *shard) currentEpoch() string {
	_, e := s.current()
	return e
}
