package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

// A replica's NATS member tells the stream's leader of a new subscription over the
// cluster route, after the flush that confirmed it locally. Here that route is slowed
// down, so a message stored on the leader right after a join that did not wait for the
// leader is not sent to the joining replica.
func TestAJoinInANATSClusterWaitsUntilTheStreamsLeaderHasTheRoomsInterest(t *testing.T) {
	const routeDelay = 200 * time.Millisecond
	// Two JetStream servers whose route crosses a proxy that holds everything for
	// routeDelay. Each lists both routes (JetStream in a cluster wants them configured):
	// its own, and the other's through the proxy.
	ports := [2]int{testenv.FreePort(t), testenv.FreePort(t)}
	var servers [2]*server.Server
	for i := range servers {
		other := delayedProxy(t, fmt.Sprintf("127.0.0.1:%d", ports[1-i]), routeDelay)
		servers[i] = natstest.Start(t, natstest.JetStream(t), func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i)
			o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "roomcast", "127.0.0.1", ports[i]
			o.Cluster.PoolSize = -1 // as the stack's cluster (stack/nats-cluster.conf)
			o.Routes = []*url.URL{
				{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])},
				{Scheme: "nats-route", Host: other},
			}
		})
	}
	clitest.Eventually(t, 30*time.Second, "the two servers routed, with a JetStream leader", func() error {
		for _, s := range servers {
			if s.NumRoutes() != 1 {
				return fmt.Errorf("%s has %d routes, want 1", s.Name(), s.NumRoutes())
			}
		}
		if !servers[0].JetStreamIsLeader() && !servers[1].JetStreamIsLeader() {
			return errors.New("no JetStream meta leader")
		}
		return nil
	})

	// The sender is on the stream's leader (which republishes what it stores); the
	// joiner on the other server, where its subscription starts.
	first := connectBounded(t, servers[0].ClientURL(), prometheus.NewRegistry())
	var leaderAt int
	clitest.Eventually(t, 10*time.Second, "the stream's leader known", func() error {
		for i, s := range servers {
			if s.JetStreamIsStreamLeader(globalAccount, natsbroker.DefaultStream) {
				leaderAt = i
				return nil
			}
		}
		return errors.New("no leader")
	})
	sender := first
	if leaderAt != 0 {
		sender = connectBounded(t, servers[leaderAt].ClientURL(), prometheus.NewRegistry())
	}
	reg := prometheus.NewRegistry()
	joiner := connectBounded(t, servers[1-leaderAt].ClientURL(), reg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for i := range 3 {
		room := fmt.Sprintf("fresh-%d", i)
		got := make(chan chat.Message, 1)
		sub, err := joiner.Subscribe(ctx, room, func(m chat.Message) { got <- m })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		want := chat.Message{ID: fmt.Sprintf("first-%d", i), Room: room, Text: "hello"}
		if err := sender.Publish(ctx, want); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.ID != want.ID {
				t.Fatalf("room %s delivered %q, want %q", room, m.ID, want.ID)
			}
		case <-time.After(4*routeDelay + 5*time.Second):
			t.Fatalf("room %s: the message stored right after the join never came to the joined replica", room)
		}
	}
	if n := testenv.Metric(t, reg, "roomcast_history_errors_total", "op", "join"); n != 0 {
		t.Fatalf("%v joins not confirmed by the leader, want 0", n)
	}
}

// globalAccount is the account of a nats-server without accounts configured.
const globalAccount = "$G"

// delayedProxy forwards connections to target, holding each chunk for delay, both ways,
// in order. It returns its host:port.
func delayedProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			go func() { defer wg.Done(); forwardLate(out, in, delay); in.Close() }()
			go func() { defer wg.Done(); forwardLate(in, out, delay); out.Close() }()
		}
	}()
	return ln.Addr().String()
}

// forwardLate copies from src to dst, each chunk delay after it was read.
func forwardLate(src io.Reader, dst io.Writer, delay time.Duration) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32*1024)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{time.Now().Add(delay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil {
			for range chunks { // let the reader end
			}
			return
		}
	}
}
