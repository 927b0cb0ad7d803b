package hub

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/backoff"
	"roomcast/pkg/server/servermetrics"
)

// Socket is the transport side of a member.
type Socket interface {
	// WriteFrames writes encoded frames in order, in as few system calls as it can. It
	// keeps none of them after it returns (a batched member's buffer is reused).
	WriteFrames(frames [][]byte) error
	// Close sends a close frame with code and reason, then closes the connection. It is
	// bounded in time even when the peer does not read, and may be called while a
	// WriteFrames is in progress.
	Close(code uint16, reason string)
}

// Config sizes the hub.
type Config struct {
	// SendQueueFrames and SendQueueBytes bound a member's queue; beyond either it is slow.
	// The frames are those the client will receive: a batched member's queued messages
	// go out joined, wsframe.MaxBatched to a frame, and count so.
	SendQueueFrames int `env:"ROOMCAST_SEND_QUEUE" envDefault:"256" help:"frames queued per connection before it counts as slow"`
	SendQueueBytes  int `env:"ROOMCAST_SEND_QUEUE_BYTES" envDefault:"1048576" help:"bytes queued per connection before it counts as slow"`
	// BatchDelay is how long the writer of a member of the batched subprotocol waits
	// before it writes, so that what is queued meanwhile shares one frame and one system
	// call (Centrifugo's write_delay). 0 writes at once; the batch is then what queued
	// during the previous write.
	BatchDelay time.Duration `env:"ROOMCAST_BATCH_DELAY" envDefault:"0s" help:"for clients of the batched subprotocol (roomcast.batch.v1), how long a connection's writer waits to gather messages into one frame; fewer writes for that much latency (0: write at once)"`
	// HoldFrames bounds the live messages held for a resuming member while its history
	// is replayed (default SendQueueFrames); beyond it the member is slow.
	HoldFrames int
	// PingInterval is how often every member is sent wsframe.Ping; 0 disables pings.
	PingInterval time.Duration `env:"ROOMCAST_PING_INTERVAL" envDefault:"25s" help:"keepalive ping period; silent clients are closed after twice that"`
	// History, when set, lets CatchUp fill the gap of a broker outage.
	History chat.History
	// CatchUpTimeout bounds how long a room keeps retrying to read its gap from History
	// (default DefaultCatchUpTimeout) while its live messages wait; then it gives up: its members get
	// wsframe.Truncated and the messages that waited.
	CatchUpTimeout time.Duration `env:"ROOMCAST_CATCHUP_TIMEOUT" envDefault:"15s" help:"how long a room retries reading what it missed from history (after a NATS reconnect or a gap) while its live messages wait, before it sends history_truncated and goes on"`
	// Sleep waits between two batches of closes while draining; tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// BatchWait waits BatchDelay in a batched member's writer (default time.Sleep, which
	// allocates nothing); tests replace it.
	BatchWait func(d time.Duration)
	// Now is the clock used for delivery latency; tests may replace it.
	Now func() time.Time
}

// Hub is one replica's set of rooms and members.
type Hub struct {
	cfg    Config
	broker chat.Broker
	log    *slog.Logger
	m      *metrics
	errs   *servermetrics.Errors

	mu       sync.Mutex
	rooms    map[string]*room
	members  map[*Member]struct{}
	draining bool
	empty    chan struct{} // closed when draining and the last member has left
	closed   bool          // no catch-up starts any more (Close)

	ctx        context.Context // ended by Close: catch-ups in progress give up
	cancel     context.CancelFunc
	catchUps   sync.WaitGroup // catch-up goroutines; Add under mu while !closed
	gapFetches chan struct{}  // a slot per catch-up's History.Replay in flight

	batchBuffers sync.Pool // of *batchBuffer, for members of the batched subprotocol
}

// New returns a hub that subscribes through broker, counts its errors in errs (shared
// with the gateway) and registers its other metrics with reg.
func New(cfg Config, broker chat.Broker, errs *servermetrics.Errors, log *slog.Logger, reg prometheus.Registerer) *Hub {
	if cfg.BatchWait == nil {
		cfg.BatchWait = time.Sleep
	}
	if cfg.Sleep == nil {
		cfg.Sleep = backoff.Sleep
	}
	if cfg.HoldFrames <= 0 {
		cfg.HoldFrames = cfg.SendQueueFrames
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = DefaultCatchUpTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		cfg:        cfg,
		broker:     broker,
		log:        log,
		m:          newMetrics(reg),
		errs:       errs,
		rooms:      make(map[string]*room),
		members:    make(map[*Member]struct{}),
		ctx:        ctx,
		cancel:     cancel,
		gapFetches: make(chan struct{}, maxGapFetches),
	}
}

// Close stops the catch-ups in progress (each gives up: its room gets wsframe.Truncated and
// what waited) and waits for their goroutines; no catch-up starts afterwards. Call it
// once the members are gone, after CloseAll. It is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.catchUps.Wait()
}

// Len returns the number of members, attached or joining.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.members)
}

// snapshot returns every member, so that pings and closes go out without holding h.mu.
func (h *Hub) snapshot() []*Member {
	h.mu.Lock()
	defer h.mu.Unlock()
	all := make([]*Member, 0, len(h.members))
	for m := range h.members {
		all = append(all, m)
	}
	return all
}
