package natsbroker_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func connect(t *testing.T, url string) (*natsbroker.Broker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b, err := natsbroker.Connect(natsbroker.Config{URL: url, Name: "test", ReconnectWait: 50 * time.Millisecond},
		testenv.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, reg
}

func TestPublishReachesSubscribersOfTheRoomOnly(t *testing.T) {
	ns := natstest.Start(t)
	b, _ := connect(t, ns.ClientURL())
	got := make(chan chat.Message, 10)
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, "lobby", func(m chat.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, "other", func(m chat.Message) { t.Errorf("other room got %+v", m) }); err != nil {
		t.Fatal(err)
	}
	sent := chat.Message{ID: "id1", Room: "lobby", Text: "hi", Accepted: time.Now().UTC().Truncate(time.Microsecond)}
	if err := b.Publish(ctx, sent); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.ID != sent.ID || m.Text != sent.Text || !m.Accepted.Equal(sent.Accepted) || m.Room != "lobby" {
			t.Fatalf("got %+v, want %+v", m, sent)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, sent); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		t.Fatalf("delivered after Unsubscribe: %+v", m)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestEnvelopesFromANewerReleaseAreReadAndGarbageIsCounted(t *testing.T) {
	ns := natstest.Start(t)
	b, reg := connect(t, ns.ClientURL())
	got := make(chan chat.Message, 10)
	if _, err := b.Subscribe(context.Background(), "mixed", func(m chat.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	raw, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A future format version with fields this release does not know.
	_ = raw.Publish(natsbroker.SubjectPrefix+"mixed", []byte(`{"v":2,"id":"x","room":"mixed","msg":"from v2","ts":1,"reactions":["+1"],"thread":{"id":7}}`))
	_ = raw.Publish(natsbroker.SubjectPrefix+"mixed", []byte(`not an envelope`))
	_ = raw.Publish(natsbroker.SubjectPrefix+"mixed", []byte(`{"msg":"no version"}`))
	_ = raw.Flush()
	select {
	case m := <-got:
		if m.Text != "from v2" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the newer envelope was not delivered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for testenv.Metric(t, reg, "roomcast_broker_decode_errors_total") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("decode errors = %v, want 2", testenv.Metric(t, reg, "roomcast_broker_decode_errors_total"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case m := <-got:
		t.Fatalf("garbage delivered: %+v", m)
	default:
	}
}

func TestWithoutAServerEverythingSaysUnavailableAndRecoversLater(t *testing.T) {
	// A port nobody listens on yet: the broker must start anyway.
	probe := natstest.Start(t)
	addr := probe.Addr().(*net.TCPAddr)
	probe.Shutdown()
	probe.WaitForShutdown()
	b, reg := connect(t, "nats://"+addr.String())
	if err := b.Ready(); !errors.Is(err, chat.ErrUnavailable) {
		t.Fatalf("Ready without a server: %v", err)
	}
	if err := b.Publish(context.Background(), chat.Message{Room: "r", Text: "x"}); !errors.Is(err, chat.ErrUnavailable) {
		t.Fatalf("Publish without a server: %v", err)
	}
	if _, err := b.Subscribe(context.Background(), "r", func(chat.Message) {}); !errors.Is(err, chat.ErrUnavailable) {
		t.Fatalf("Subscribe without a server: %v", err)
	}
	if v := testenv.Metric(t, reg, "roomcast_broker_connected"); v != 0 {
		t.Fatalf("connected gauge %v", v)
	}
	natstest.Start(t, natstest.Port(addr.Port))
	deadline := time.Now().Add(10 * time.Second)
	for b.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("never connected after the server started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := testenv.Metric(t, reg, "roomcast_broker_connected"); v != 1 {
		t.Fatalf("connected gauge %v after connecting", v)
	}
}

func TestDrainClosesTheConnection(t *testing.T) {
	ns := natstest.Start(t)
	b, _ := connect(t, ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); err == nil {
		t.Fatal("ready after Drain")
	}
}

func TestRoundTripIsMeasuredOnlyWhileConnected(t *testing.T) {
	ns := natstest.Start(t)
	_, reg := connect(t, ns.ClientURL())
	v, ok := testenv.LookupMetric(t, reg, "roomcast_broker_rtt_seconds")
	if !ok || v <= 0 || v >= 1 {
		t.Fatalf("round trip %v (present %v) while connected, want a positive time under the 1s bound", v, ok)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := testenv.LookupMetric(t, reg, "roomcast_broker_rtt_seconds"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("round trip still exported 10s after the server stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A cut connection (its NATS member went away while others are up) is tried again at
// once, not after ReconnectWait, which paces only the rounds after a failed one: the
// replica is not ready, and refuses clients, until it is back.
func TestACutConnectionIsTriedAgainAtOnce(t *testing.T) {
	ns := natstest.Start(t)
	reg := prometheus.NewRegistry()
	const wait = 20 * time.Second // the first round waits at most a tenth of it
	b, err := natsbroker.Connect(natsbroker.Config{URL: ns.ClientURL(), Name: "cut", ReconnectWait: wait}, testenv.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	cid := func() uint64 {
		connz, err := ns.Connz(&server.ConnzOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range connz.Conns {
			if c.Name == "cut" {
				return c.Cid
			}
		}
		return 0
	}
	first := cid()
	if first == 0 || b.Ready() != nil {
		t.Fatalf("not connected: client %d, ready %v", first, b.Ready())
	}
	if err := ns.DisconnectClientByID(first); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait / 2)
	for {
		if again := cid(); again != 0 && again != first && b.Ready() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back %v after the cut (ReconnectWait %v)", wait/2, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := testenv.Metric(t, reg, "roomcast_broker_disconnects_total"); v != 1 {
		t.Errorf("disconnects_total = %v, want 1", v)
	}
}

// frozenProxy forwards TCP connections to a server until it is frozen; then it stops
// forwarding either way and keeps the connections open, as a server whose node died
// (no reset comes) does.
type frozenProxy struct {
	ln     net.Listener
	frozen chan struct{}
	done   chan struct{}
}

func startFrozenProxy(t *testing.T, target string) *frozenProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &frozenProxy{ln: ln, frozen: make(chan struct{}), done: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			select {
			case <-p.frozen:
				<-p.done // silent until the test ends
				return
			default:
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			wg.Add(2)
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		close(p.done)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *frozenProxy) URL() string { return "nats://" + p.ln.Addr().String() }
func (p *frozenProxy) Freeze()     { close(p.frozen) }

// A NATS member that goes silent (its node died: no reset comes) is left for another
// within seconds, as one that closes its connections is: nats.go's defaults kept a
// replica on it for a minute or more (a PING every 2 minutes, a write allowed a minute),
// its rooms delivering nothing meanwhile.
func TestASilentServerIsLeftForAnotherWithinSeconds(t *testing.T) {
	ns := natstest.Start(t)
	proxy := startFrozenProxy(t, ns.Addr().String())
	reg := prometheus.NewRegistry()
	b, err := natsbroker.Connect(natsbroker.Config{
		URL: proxy.URL() + "," + ns.ClientURL(), Name: "silent", ReconnectWait: 50 * time.Millisecond,
		Options: []nats.Option{nats.DontRandomize()}, // the proxy first
	}, testenv.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	got := make(chan chat.Message, 10)
	sub, err := b.Subscribe(context.Background(), "lobby", func(m chat.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	proxy.Freeze()
	// Stale after three PINGs 3s apart with no answer; the bound leaves room for a loaded
	// machine and is far below nats.go's defaults.
	deadline := time.Now().Add(40 * time.Second)
	for testenv.Metric(t, reg, "roomcast_broker_disconnects_total") == 0 || b.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("still on the silent server 40s after it went silent")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Back on the live server, with the room's subscription.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, chat.Message{ID: "after", Room: "lobby", Text: "still here"}); err != nil {
		t.Fatalf("publishing after leaving the silent server: %v", err)
	}
	select {
	case m := <-got:
		if m.ID != "after" {
			t.Fatalf("got %+v, want the message sent after leaving the silent server", m)
		}
	case <-ctx.Done():
		t.Fatal("the room's subscription did not come back on the live server")
	}
}
