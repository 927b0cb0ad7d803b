package natsbroker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/chat"
	"roomcast/pkg/envconfig"
)

// HistoryConfig sizes the JetStream stream that keeps each room's recent messages.
type HistoryConfig struct {
	// Size is the number of messages kept per room; 0 turns history off.
	Size int `env:"ROOMCAST_HISTORY_SIZE" envDefault:"100" help:"messages kept per room for clients that resume with ?since=; 0 turns history off"`
	// TTL is how long a message is kept.
	TTL time.Duration `env:"ROOMCAST_HISTORY_TTL" envDefault:"1h" help:"how long history keeps a message"`
	// Memory keeps the stream in memory (the embedded default) instead of on disk.
	Memory bool
	// Stream names the stream (default ROOMCAST_ROOMS).
	Stream string
	// Replicas is the stream's replication in a NATS cluster (1 on a single server; 3
	// keeps history and the live path up when one of three nodes goes).
	Replicas int `env:"ROOMCAST_HISTORY_REPLICAS" envDefault:"1" help:"replication of the history stream in a NATS cluster (3 survives the loss of a node)"`
	// MaxBytes bounds the whole stream, every room together: at the bound the oldest
	// messages go first, so a client cycling through fresh room names cannot grow
	// memory or disk without bound, and the rooms quiet the longest lose their history
	// first.
	MaxBytes int64 `env:"ROOMCAST_HISTORY_MAX_BYTES" envDefault:"268435456" help:"bound of the history stream in bytes, all rooms together (default 256 MiB; at least 1 MiB and 16 of the largest messages); at the bound the oldest messages, so the quietest rooms, go first"`
	// Shards is how many streams share the rooms (shard.go), 1 to MaxShards; 0 lets the
	// replica choose (EmbeddedShards on the embedded server, 1 on an external one). A
	// stream that exists already keeps the number it was made with.
	Shards int `env:"ROOMCAST_HISTORY_SHARDS" envDefault:"0" help:"streams the rooms' history is spread over, by a hash of the room's name (1 to 16; 0: 8 on the embedded server, 1 on an external NATS); an existing history stream keeps its own number"`
	// MaxMsgSize is the largest message the stream stores: the envelope of the largest
	// accepted message (EnvelopeLimit); 0 for no limit.
	MaxMsgSize int32
	// ReadTimeout bounds one request for a stored message (default DefaultReadTimeout).
	ReadTimeout time.Duration
}

// DefaultReadTimeout bounds one request for a stored message. A healthy leader answers
// in milliseconds; one sent to a leader whose node has just died is never answered (the
// other members do not know yet, and only the leader answers), and the caller reads
// again once a new leader is elected. It bounds each request, not a whole read: a
// replay of thousands of messages on a loaded machine takes longer than that and is not
// stuck.
const DefaultReadTimeout = 5 * time.Second

// MinHistoryBytes bounds MaxBytes from below: a stream smaller than that keeps too
// little to be worth a resume.
const MinHistoryBytes = 1 << 20

// EnvelopeLimit is the largest envelope of a message of at most maxText bytes: JSON
// escapes a byte into at most six (\u003c), plus the other fields.
func EnvelopeLimit(maxText int) int32 { return int32(6*maxText + 1024) }

// MaxHistorySize bounds Size: one replay, which a resuming connection holds in memory,
// is at most that many messages.
const MaxHistorySize = 10000

// Validate checks the stream's size, age and replication; environ supplies the raw
// values for the error.
func (c HistoryConfig) Validate(environ map[string]string) error {
	bad := func(name, allowed string) error { return envconfig.Invalid(environ, name, allowed) }
	switch {
	case c.Size < 0 || c.Size > MaxHistorySize:
		return bad("ROOMCAST_HISTORY_SIZE", fmt.Sprintf("want an integer from 0 (off) to %d", MaxHistorySize))
	case c.Shards < 0 || c.Shards > MaxShards:
		return bad("ROOMCAST_HISTORY_SHARDS", fmt.Sprintf("want an integer from 1 to %d, or 0 for the replica's choice", MaxShards))
	case c.Replicas < 1 || c.Replicas > 5:
		return bad("ROOMCAST_HISTORY_REPLICAS", "want an integer from 1 to 5")
	case c.TTL < time.Second:
		return bad("ROOMCAST_HISTORY_TTL", "want a duration of at least 1s, such as 10m or 1h")
	case c.MaxBytes < MinHistoryBytes:
		return bad("ROOMCAST_HISTORY_MAX_BYTES", fmt.Sprintf("want a number of bytes of at least %d (1 MiB), such as 268435456 (256 MiB)", MinHistoryBytes))
	}
	return nil
}

// DefaultStream is the history stream's name.
const DefaultStream = "ROOMCAST_ROOMS"

// publishTimeout bounds the wait for JetStream's acknowledgement of one message.
const publishTimeout = 2 * time.Second

// history is the chat.History on JetStream streams (shards, shard.go) whose RePublish
// puts every stored message, with its stream sequence in the Nats-Sequence header, on
// the room's live subject: every replica sees one order and one seq per room. The
// streams are created by the first replica that finds them missing and are otherwise
// used as they are, so replicas of two releases with other limits share them; a
// stream's creation time is the epoch of its rooms.
type history struct {
	b   *Broker
	cfg HistoryConfig
	js  jetstream.JetStream
	win *window // publishes awaiting their acknowledgement

	root *shard
	// layout is every shard, the root first: only the root until it is found, then as
	// many as its metadata says. Read on every publish.
	layout atomic.Pointer[[]*shard]
	// finding is held by the one findStream at a time, so that two (run's and a live
	// handler's) do not each make a layout of their own.
	finding chan struct{}

	warned   bool // only touched by run
	kick     chan struct{}
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	available prometheus.Gauge
	errors    *prometheus.CounterVec
	replayed  prometheus.Counter
	batchSize prometheus.Histogram

	// beforeReplayRead, when set (tests), runs in ReadSince before each read of a stored
	// message, with the number read so far.
	beforeReplayRead func(read int)
}

func newHistory(b *Broker, cfg HistoryConfig, reg prometheus.Registerer) (*history, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	cfg.Shards = max(cfg.Shards, 1)
	js, err := jetstream.New(b.nc)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	f := promauto.With(reg)
	h := &history{
		b: b, cfg: cfg, js: js, root: newShard(cfg.Stream, 0), finding: make(chan struct{}, 1),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		available: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_history_available", Help: "1 while the history stream is reachable (every shard of it).",
		}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_history_errors_total",
			Help: "History operations that failed, by operation (publish: not stored: refused as unavailable, or sent live only by a server without JetStream; replay; stream; join: in a NATS cluster, a room's subscription not confirmed by the stream's leader).",
		}, []string{"op"}),
		replayed: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_history_replayed_messages_total", Help: "Stored messages read from history: replayed to resuming clients, or delivered by rooms catching up on a gap.",
		}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "roomcast_history_batch_messages",
			Help:    "Messages per message this replica stored in a history stream that keeps batches: a room's messages queued together are stored as one.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
	}
	h.layout.Store(&[]*shard{h.root})
	for _, op := range []string{"publish", "replay", "stream", "join"} {
		h.errors.WithLabelValues(op)
	}
	if err := reg.Register(streamCollector{h}); err != nil {
		return nil, fmt.Errorf("registering the history stream's metrics: %w", err)
	}
	if h.win, err = newWindow(h); err != nil {
		return nil, err
	}
	go h.run()
	return h, nil
}

func (h *history) stop() {
	if h == nil {
		return
	}
	h.stopOnce.Do(func() {
		close(h.quit)
		h.win.stop()
	})
	<-h.done
}

// run keeps the streams known: at start, every 10 seconds (every second while one is
// not), and when asked.
func (h *history) run() {
	defer close(h.done)
	for {
		if h.b.nc.IsConnected() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			had := h.unknown() == nil
			if err := h.findStream(ctx); err != nil {
				h.errors.WithLabelValues("stream").Inc()
				if had || !h.warned {
					h.b.log.Warn("history stream unavailable; live messages still flow", "err", err)
					h.warned = true
				}
			}
			cancel()
		}
		wait := 10 * time.Second
		if h.unknown() != nil {
			wait = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-h.quit:
			t.Stop()
			return
		case <-t.C:
		case <-h.kick:
			t.Stop()
		}
	}
}

func (h *history) kickRefresh() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *history) shards() []*shard { return *h.layout.Load() }

// shardOf is the shard that keeps room's messages.
func (h *history) shardOf(room string) *shard {
	l := h.shards()
	return l[shardIndex(room, len(l))]
}

// unknown returns a shard whose stream is not known now, or nil when all are.
func (h *history) unknown() *shard {
	for _, s := range h.shards() {
		if !s.known.Load() {
			return s
		}
	}
	return nil
}

// findStream finds the root stream, creating it if it is missing, and from its layout
// every other shard's stream, reading each one's epoch.
func (h *history) findStream(ctx context.Context) error {
	select {
	case h.finding <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("finding history stream %s: %w", h.root.name, ctx.Err())
	}
	defer func() { <-h.finding }()
	return h.findStreamHeld(ctx)
}

// findStreamHeld is findStream, h.finding held.
func (h *history) findStreamHeld(ctx context.Context) error {
	defer func() { h.available.Set(b2f(h.unknown() == nil)) }()
	info, err := h.findShard(ctx, h.root, h.cfg.Shards)
	if err != nil {
		for _, s := range h.shards()[1:] {
			s.set(nil, s.currentEpoch())
		}
		return err
	}
	n := layoutShards(info.Config.Metadata)
	layout := h.shards()
	if len(layout) != n {
		if n != h.cfg.Shards {
			h.b.log.Info("using the existing history stream's shards", "stream", h.root.name, "shards", n, "configured_shards", h.cfg.Shards)
		}
		layout = make([]*shard, n)
		layout[0] = h.root
		for i := 1; i < n; i++ {
			layout[i] = newShard(h.cfg.Stream, i)
		}
		h.layout.Store(&layout)
	}
	var errs []error
	for _, s := range layout[1:] {
		if _, err := h.findShard(ctx, s, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// layoutShards reads the number of shards from the root stream's metadata: 1 when it
// has none (a stream of a release before shards) or one out of range.
func layoutShards(meta map[string]string) int {
	n, err := strconv.Atoi(meta[shardsMetadataKey])
	if err != nil || n < 1 || n > MaxShards {
		return 1
	}
	return n
}

// findShard finds s's stream, creating it (as one of n shards) if it is missing, and
// reads its epoch.
func (h *history) findShard(ctx context.Context, s *shard, n int) (*jetstream.StreamInfo, error) {
	st, err := h.js.Stream(ctx, s.name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = h.js.CreateStream(ctx, h.streamConfig(s, n))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = h.js.Stream(ctx, s.name) // another replica was first
		}
		if err == nil {
			h.b.log.Info("history stream created", "stream", s.name, "per_room", h.cfg.Size, "ttl", h.cfg.TTL.String(),
				"max_bytes", st.CachedInfo().Config.MaxBytes, "max_msg_size", h.cfg.MaxMsgSize)
		}
	}
	if err != nil {
		// The epoch stays: a lookup fails while the stream's leader is being replaced,
		// and the new leader republishes what the old one may have already. Labelled
		// with no epoch, those copies passed the rooms' check for what they delivered and
		// reached members twice (seen in the lab, a stream leader's node killed).
		s.set(nil, s.currentEpoch())
		return nil, fmt.Errorf("finding history stream %s: %w", s.name, err)
	}
	info := st.CachedInfo()
	if s == h.root {
		n = layoutShards(info.Config.Metadata) // its limits are a part of its layout's
	}
	epoch := strconv.FormatInt(info.Created.UnixNano(), 36)
	if old := s.currentEpoch(); old != epoch {
		want := h.streamConfig(s, n)
		if got := info.Config; got.MaxMsgsPerSubject != want.MaxMsgsPerSubject || got.MaxAge != want.MaxAge ||
			got.MaxBytes != want.MaxBytes || got.MaxMsgSize != want.MaxMsgSize {
			h.b.log.Info("using the existing history stream with its own limits", "stream", s.name,
				"per_room", got.MaxMsgsPerSubject, "ttl", got.MaxAge.String(),
				"max_bytes", got.MaxBytes, "max_msg_size", got.MaxMsgSize,
				"configured_per_room", want.MaxMsgsPerSubject, "configured_ttl", want.MaxAge.String(),
				"configured_max_bytes", want.MaxBytes, "configured_max_msg_size", want.MaxMsgSize)
		}
		if old != "" {
			h.b.log.Warn("history stream was recreated", "stream", s.name, "old_epoch", old, "epoch", epoch)
		}
	}
	s.batchBytes.Store(int64(batchBytes(info.Config.MaxMsgSize, h.b.nc.MaxPayload())))
	s.batched.Store(info.Config.Metadata[batchMetadataKey] == batchMetadataValue)
	s.set(st, epoch)
	return info, nil
}

// streamConfig is s's stream as one of n shards: the byte bound is shared among them.
func (h *history) streamConfig(s *shard, n int) jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if h.cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	maxBytes := int64(-1)
	if h.cfg.MaxBytes > 0 {
		maxBytes = h.cfg.MaxBytes / int64(n)
	}
	desc := "roomcast: the recent messages of each room (created by roomcast)"
	meta := map[string]string{batchMetadataKey: batchMetadataValue}
	if s == h.root {
		meta[shardsMetadataKey] = strconv.Itoa(n)
	}
	if n > 1 {
		desc = fmt.Sprintf("roomcast: the recent messages of the rooms of shard %d of %d (created by roomcast)", s.index, n)
	}
	return jetstream.StreamConfig{
		Name:              s.name,
		Description:       desc,
		Subjects:          []string{s.subject + "*"},
		MaxMsgsPerSubject: int64(h.cfg.Size),
		MaxAge:            h.cfg.TTL,
		MaxBytes:          maxBytes,
		MaxMsgSize:        cmp.Or(h.cfg.MaxMsgSize, -1),
		Storage:           storage,
		Replicas:          max(h.cfg.Replicas, 1),
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		// No Nats-Msg-Id is sent (a publish is never retried), so the dedupe window only
		// costs: keep it at the server's minimum.
		Duplicates: time.Second,
		Metadata:   meta,
		RePublish: &jetstream.RePublish{
			Source:      s.subject + "*",
			Destination: LivePrefix + "{{wildcard(1)}}",
		},
	}
}

// liveSubscription is a room's subscription to its live subject, history on.
type liveSubscription struct {
	h     *history
	room  string
	sub   *nats.Subscription
	ended atomic.Bool
	once  sync.Once
}

// Unsubscribe implements chat.Subscription: delivery stops at once, while the NATS
// subscription may be kept for the copies that acknowledge this replica's publishes.
func (s *liveSubscription) Unsubscribe() error {
	var err error
	s.once.Do(func() {
		s.ended.Store(true)
		err = s.h.win.unsubscribed(s.room, s.sub)
	})
	return err
}

// liveHandler decodes republished messages, numbered by the stream. A sequence that goes
// backwards means the stream was recreated: the epoch is read again before delivering.
// A copy of this replica's own publish answers it first.
func (h *history) liveHandler(ls *liveSubscription, deliver func(chat.Message)) nats.MsgHandler {
	var last uint64 // only touched by this subscription's goroutine
	return func(m *nats.Msg) {
		var seq, prev uint64
		var epoch string
		shift := false
		if s, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64); err == nil && s > 0 {
			if s <= last {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if err := h.findStream(ctx); err != nil {
					h.errors.WithLabelValues("stream").Inc()
				}
				cancel()
			}
			sh := h.shardOf(ls.room)
			last, seq, epoch, shift = s, s, sh.currentEpoch(), sh.batched.Load()
			prev, _ = strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
		}
		_, bad, err := unpack(m.Data, func(i uint64, msg chat.Message) {
			h.win.copied(msg.ID)
			if ls.ended.Load() {
				return
			}
			switch {
			case seq == 0: // not numbered: sent live by a server without JetStream
			case !shift:
				msg.Seq, msg.Epoch, msg.PrevSeq = seq, epoch, prev
			default:
				// The message before the first of a batch is in the room's previous
				// stored message: its first is a lower bound of that one's seq, which
				// is what the rooms' checks for gaps need (they compare it with the
				// last seq a member has, and a member has all of a batch or none).
				msg.Seq, msg.Epoch, msg.PrevSeq = batchSeq(seq, i), epoch, batchSeq(prev, 0)
				if i > 0 {
					msg.PrevSeq = batchSeq(seq, i-1)
				}
			}
			deliver(msg)
		})
		if bad > 0 {
			h.b.decodeErrors.Add(float64(bad))
			h.b.log.Warn("dropping NATS message that is not a roomcast envelope", "subject", m.Subject, "err", err)
		}
	}
}

// ReadSince implements chat.History.
func (h *history) ReadSince(ctx context.Context, room string, since uint64, epoch string) (chat.Stored, error) {
	sh := h.shardOf(room)
	s, cur := sh.current()
	if s == nil {
		h.kickRefresh()
		h.errors.WithLabelValues("replay").Inc()
		if js, _ := h.b.nc.ConnectedServerJetStream(); js {
			// Being looked up again (its leader is replaced): found within seconds.
			return chat.Stored{}, fmt.Errorf("replaying room %q: %w %w: the history stream is being looked up", room, chat.ErrHistoryUnavailable, chat.ErrHistoryTemporary)
		}
		return chat.Stored{}, fmt.Errorf("replaying room %q: %w", room, chat.ErrHistoryUnavailable)
	}
	res := chat.Stored{Epoch: cur}
	if epoch != "" && epoch != cur {
		res.Truncated, since = true, 0
	}
	fail := func(err error) (chat.Stored, error) {
		h.errors.WithLabelValues("replay").Inc()
		return res, fmt.Errorf("replaying room %q: %w: %w", room, chat.ErrHistoryUnavailable, err)
	}
	// In a stream of batches, the client's since is in the stored message sinceStored,
	// and a stored message's messages are numbered by its sequence (batch.go).
	batched := sh.batched.Load()
	sinceStored, next := since, since+1
	numbered := func(seq, i uint64) uint64 { return seq }
	if batched {
		sinceStored, next, numbered = since>>seqShift, max(since>>seqShift, 1), batchSeq
	}
	subject := sh.subject + room
	newest, err := h.storedMsg(ctx, sh.name, msgGetRequest{LastFor: subject})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Nothing kept for this room. If the stream has dropped messages after the
		// client's since (its bytes bound, or their age), the room may have had some.
		res.Last = since
		if since > 0 && !res.Truncated {
			info, err := s.Info(ctx)
			if err != nil {
				return fail(err)
			}
			res.Truncated = sinceStored < info.State.FirstSeq
		}
		return res, nil
	}
	if err != nil {
		return fail(err)
	}
	newestSeq := numbered(newest.Sequence, batchLen(newest.Data)-1)
	if since == newestSeq {
		res.Last = since // nothing newer than what the client has: live only
		return res, nil
	}
	if since > newestSeq {
		// A since from the future: nothing to replay, and everything live from the
		// member's join on is new to it. Last 0, not newest: a message stored after the
		// join but before this read is held for the member, and must not count as had.
		return res, nil
	}
	// The stream drops a room's oldest messages first (its per-room bound, the byte
	// bound, their age), so an anchor (since, or a message this replay read) still kept
	// at a check means nothing after it was dropped before then: every read that began
	// after it skipped nothing. Gone, a read may have skipped dropped messages, and the
	// replay says Truncated. since is checked right after the first read, later anchors
	// every replayCheckEvery reads and at the end. Checked once before the reads, since
	// let a room that outran its bound meanwhile lose the messages right after it from
	// the replay, silently (seen in the lab: a resume that waited through a stream
	// leader's election, with 100 messages kept per room, 5 s of that room's traffic).
	anchor, unchecked, every := sinceStored, 0, 1
	check := func() error {
		if anchor == 0 || res.Truncated {
			return nil
		}
		kept, err := h.kept(ctx, sh.name, anchor, subject)
		if err != nil {
			return err
		}
		res.Truncated = !kept
		return nil
	}
	res.Last = since
	for next <= newest.Sequence {
		if h.beforeReplayRead != nil {
			h.beforeReplayRead(len(res.Messages))
		}
		m, err := h.storedMsg(ctx, sh.name, msgGetRequest{Seq: next, NextFor: subject})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fail(err)
		}
		if m.Sequence > newest.Sequence {
			break
		}
		n, bad, _ := unpack(m.Data, func(i uint64, msg chat.Message) {
			if seq := numbered(m.Sequence, i); seq > since {
				msg.Seq, msg.Epoch = seq, cur
				res.Messages = append(res.Messages, msg)
				h.replayed.Inc()
			}
		})
		h.b.decodeErrors.Add(float64(bad))
		res.Last = max(numbered(m.Sequence, n-1), since)
		next = m.Sequence + 1
		if batched && m.Sequence == sinceStored {
			continue // since's own, read for the rest of its batch: since stays the anchor
		}
		if anchor == 0 {
			// since 0 asks for everything kept: the first read is what is kept.
			anchor, every = m.Sequence, replayCheckEvery
			continue
		}
		if unchecked++; unchecked >= every {
			if err := check(); err != nil {
				return fail(err)
			}
			anchor, unchecked, every = m.Sequence, 0, replayCheckEvery
		}
	}
	if err := check(); err != nil {
		return fail(err)
	}
	return res, nil
}

// replayCheckEvery is how many reads of a replay one check that nothing was dropped
// before them covers (ReadSince).
const replayCheckEvery = 16

// kept reports whether message seq of stream is still stored, as one of subject's.
func (h *history) kept(ctx context.Context, stream string, seq uint64, subject string) (bool, error) {
	m, err := h.storedMsg(ctx, stream, msgGetRequest{Seq: seq})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return m.Subject == subject, nil
}

// leaderInterestTimeout bounds a join's wait for the stream's leader (leaderHasInterest).
const leaderInterestTimeout = 2 * time.Second

// leaderHasInterest returns once the stream's leader knows of this replica's new
// subscription to room, in a NATS cluster. The flush that confirmed the subscription
// reached only this replica's NATS member; the leader, which republishes each stored
// message, learns of it over the cluster route, and a message stored meanwhile is not
// sent here: a member's first messages after its join were lost (seen once in the 3-node
// lab, a release's smoke test). A request to the leader crosses the same route after the
// subscription (one route connection per pair of members, in order: the stack's cluster
// does not pool routes), so its answer means each message stored from then on comes here.
// It is best effort: with no answer within leaderInterestTimeout (no leader) the join
// goes on, as every join did before, and is counted.
func (h *history) leaderHasInterest(ctx context.Context, room string) {
	sh := h.shardOf(room)
	if h.b.nc.ConnectedClusterName() == "" || !sh.known.Load() {
		return // one NATS server: the flush was enough
	}
	ctx, cancel := context.WithTimeout(ctx, leaderInterestTimeout)
	defer cancel()
	_, err := h.storedMsg(ctx, sh.name, msgGetRequest{LastFor: sh.subject + room})
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		h.errors.WithLabelValues("join").Inc()
		h.b.log.Warn("joined a room before the history stream's leader confirmed the subscription: messages of the next moments may be missed",
			"room", room, "err", err)
	}
}

// msgGetRequest is JetStream's request for one stored message: by sequence, the first
// of a subject at or after a sequence, or the last of a subject.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// storedMsg reads one message from the stream's leader, never by a direct get: with
// AllowDirect (which streams of earlier releases have, and which the app's NATS user may
// not change) any replica of a clustered stream may answer a direct get, and a follower
// that has not yet applied what the leader has republished answers with less than the
// live members have already seen. A resume then counted as truncated, or stopped short
// and lost what came between (seen when a node's NATS member left under load).
func (h *history) storedMsg(ctx context.Context, stream string, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encoding the stored message request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, h.cfg.ReadTimeout)
	defer cancel()
	reply, err := h.b.nc.RequestWithContext(rctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("reading a stored message: no answer within %v (%w): %w", h.cfg.ReadTimeout, chat.ErrHistoryTemporary, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading a stored message: %w", err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("decoding the stored message: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil && resp.Error.Code == 503:
		// "JetStream system temporarily unavailable": a member that has lost the
		// stream's leader answers so until a new one is elected.
		return nil, fmt.Errorf("reading a stored message: %s (%d, %w)", resp.Error.Description, resp.Error.Code, chat.ErrHistoryTemporary)
	case resp.Error != nil:
		return nil, fmt.Errorf("reading a stored message: %s (%d)", resp.Error.Description, resp.Error.Code)
	case resp.Message == nil:
		return nil, errors.New("reading a stored message: an empty answer")
	}
	m := resp.Message
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Data: m.Data, Time: m.Time}, nil
}

// streamCollector exports the history stream's size and bound, read from the streams
// at each scrape (nothing while one is unknown): how close history is to its byte bound,
// past which the oldest rooms' messages are dropped. With shards, the sizes and bounds
// are their sums.
type streamCollector struct{ h *history }

var (
	streamBytesDesc = prometheus.NewDesc("roomcast_history_stream_bytes",
		"Bytes the history stream holds, all rooms (and shards) together.", nil, nil)
	streamMessagesDesc = prometheus.NewDesc("roomcast_history_stream_messages",
		"Messages the history stream holds, all rooms (and shards) together.", nil, nil)
	streamMaxBytesDesc = prometheus.NewDesc("roomcast_history_stream_max_bytes",
		"The history stream's byte bound (its own, which an existing stream keeps; the sum of its shards'); -1 for none. At the bound the oldest messages are dropped.", nil, nil)
	streamShardsDesc = prometheus.NewDesc("roomcast_history_stream_shards",
		"Streams the history is spread over, each keeping the rooms whose name hashes to it (the number the existing stream was made with).", nil, nil)
	streamFullestDesc = prometheus.NewDesc("roomcast_history_stream_fullest_ratio",
		"Bytes over the byte bound of the fullest stream of history (of its shards, each bounded by its part of the total); -1 when no stream has a bound. A shard at its bound drops its own oldest messages, however empty the others are.", nil, nil)
	streamFirstSeqDesc = prometheus.NewDesc("roomcast_history_stream_first_seq",
		"Sequence of the oldest message the history stream holds (its root stream's, with shards); it moves on as old messages are dropped.", nil, nil)
)

// streamInfoTimeout bounds the stream lookups of one scrape.
const streamInfoTimeout = time.Second

func (c streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamBytesDesc
	ch <- streamMessagesDesc
	ch <- streamMaxBytesDesc
	ch <- streamShardsDesc
	ch <- streamFullestDesc
	ch <- streamFirstSeqDesc
}

func (c streamCollector) Collect(ch chan<- prometheus.Metric) {
	if c.h.unknown() != nil || !c.h.b.nc.IsConnected() {
		return // a scrape does not wait out a reconnect
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamInfoTimeout)
	defer cancel()
	var bytes, msgs, firstSeq uint64
	maxBytes := int64(0)
	fullest := -1.0
	shards := c.h.shards()
	for _, sh := range shards {
		s, _ := sh.current()
		if s == nil {
			return
		}
		info, err := s.Info(ctx)
		if err != nil {
			return // history_available and the stream errors say why
		}
		bytes, msgs = bytes+info.State.Bytes, msgs+info.State.Msgs
		if sh == c.h.root {
			firstSeq = info.State.FirstSeq
		}
		if maxBytes >= 0 && info.Config.MaxBytes > 0 {
			maxBytes += info.Config.MaxBytes
		} else {
			maxBytes = -1
		}
		if info.Config.MaxBytes > 0 {
			fullest = max(fullest, float64(info.State.Bytes)/float64(info.Config.MaxBytes))
		}
	}
	ch <- prometheus.MustNewConstMetric(streamBytesDesc, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(streamMessagesDesc, prometheus.GaugeValue, float64(msgs))
	ch <- prometheus.MustNewConstMetric(streamMaxBytesDesc, prometheus.GaugeValue, float64(maxBytes))
	ch <- prometheus.MustNewConstMetric(streamShardsDesc, prometheus.GaugeValue, float64(len(shards)))
	ch <- prometheus.MustNewConstMetric(streamFullestDesc, prometheus.GaugeValue, fullest)
	ch <- prometheus.MustNewConstMetric(streamFirstSeqDesc, prometheus.GaugeValue, float64(firstSeq))
}
