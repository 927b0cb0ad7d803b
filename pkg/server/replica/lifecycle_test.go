package replica_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/server/replica"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
	"roomcast/pkg/wsclient"
)

func TestASlowReaderIsClosedWith1013AndTheRoomKeepsItsPace(t *testing.T) {
	r := startReplica(t, "slowpoke", "", func(c *replica.Config) {
		c.Hub.SendQueueFrames = 64
		c.Hub.SendQueueBytes = 256 << 10
	})
	// The slow client reads nothing once one frame is waiting, and has a tiny socket
	// buffer, so the server's queue for it fills up.
	slow := dialURL(t, r.wsURL("pace"), wsclient.Options{Buffer: 1, ReceiveBuffer: 4096})
	fast := r.dial(t, "pace")
	sender := r.dial(t, "pace")
	payload := strings.Repeat("p", 2000)
	sent := 0
	for testenv.Metric(t, r.Registry(), "roomcast_errors_total", "kind", "slow_consumer") == 0 {
		if sent >= 20000 {
			t.Fatal("20000 messages sent and the slow reader was never disconnected")
		}
		// In steps of 20, each step read in full by the fast member and the sender, so
		// that only the slow one falls behind.
		for range 20 {
			if err := sender.Send(payload); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		for range 20 {
			next(t, fast)
			next(t, sender)
		}
	}
	// Once the slow client reads again it finds the close frame after what was sent.
	expectClose(t, slow, 1013)
	if err := sender.Send("after"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, fast); f.Message != "after" {
		t.Fatalf("fast member got %s", f.Raw)
	}
	t.Logf("slow reader disconnected after %d messages of %d bytes", sent, len(payload))
}

func TestDrainGoesNotReadyThenCloses1012ThenStops(t *testing.T) {
	ns := natstest.Start(t)
	draining := startReplica(t, "old", ns.ClientURL(), func(c *replica.Config) {
		c.Drain.Delay = time.Second
		c.Drain.Timeout = 300 * time.Millisecond
		c.HTTP.ProbeAddr = "127.0.0.1:0"
	})
	survivor := startReplica(t, "new", ns.ClientURL(), nil)
	var clients []*wsclient.Client
	for range 3 {
		clients = append(clients, draining.dial(t, "drain"))
	}
	peer := survivor.dial(t, "drain")

	drained := make(chan error, 1)
	go func() { drained <- draining.Drain(context.Background()) }()

	// 1. Not ready at once, new upgrades refused, existing connections untouched.
	eventually(t, "/readyz answers draining", func() bool {
		code, status := readyStatus(t, draining)
		return code == 503 && status == "draining"
	})
	if code, body, _ := getJSON(t, "http://"+draining.ProbeAddr().String()+"/readyz"); code != 503 || body["status"] != "draining" {
		t.Errorf("the probe listener's /readyz while draining: %d %v", code, body)
	}
	for i, c := range clients {
		select {
		case <-c.Done():
			t.Fatalf("client %d closed before the drain delay was over", i)
		default:
		}
	}
	resp := rawGet(t, draining.url("/ws/chat/drain/"), upgradeHeader(nil))
	if resp.status != 503 {
		t.Fatalf("upgrade while draining: %d %s, want 503", resp.status, resp.body)
	}
	if v := testenv.Metric(t, draining.Registry(), "roomcast_ready"); v != 0 {
		t.Errorf("roomcast_ready = %v while draining", v)
	}
	if v := testenv.Metric(t, draining.Registry(), "roomcast_draining"); v != 1 {
		t.Errorf("roomcast_draining = %v while draining", v)
	}
	// Messages still flow during the delay.
	if err := peer.Send("during delay"); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if f := next(t, c); f.Message != "during delay" {
			t.Fatalf("got %s", f.Raw)
		}
	}
	next(t, peer)

	// 2. Every connection is closed with 1012 (service restart).
	for _, c := range clients {
		expectClose(t, c, 1012)
	}
	// 3. Drain returns, the NATS connection is gone, the other replica is unaffected.
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Drain did not return")
	}
	eventually(t, "the drained replica's NATS connection is closed", func() bool { return ns.NumClients() == 1 })
	reconnected := survivor.dial(t, "drain")
	if err := reconnected.Send("on the new one"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, peer); f.Message != "on the new one" {
		t.Fatalf("got %s", f.Raw)
	}
}

func TestWhileNATSIsAwayMessagesAreRefusedAndServiceResumesByItself(t *testing.T) {
	ns := natstest.Start(t)
	port := natsPort(ns)
	url := ns.ClientURL()
	r1 := startReplica(t, "r1", url, nil)
	r2 := startReplica(t, "r2", url, nil)
	c1 := r1.dial(t, "outage")
	c2 := r2.dial(t, "outage")

	ns.Shutdown()
	ns.WaitForShutdown()
	for _, r := range []*testReplica{r1, r2} {
		eventually(t, r.name+" answers not_ready", func() bool {
			code, status := readyStatus(t, r)
			return code == 503 && status == "not_ready"
		})
	}
	_, body, _ := getJSON(t, r1.url("/readyz"))
	if body["reason"] == "" {
		t.Errorf("not_ready without a reason: %v", body)
	}
	if err := c1.Send("into the void"); err != nil {
		t.Fatal(err)
	}
	expectError(t, c1, "unavailable")
	if v := testenv.Metric(t, r1.Registry(), "roomcast_errors_total", "kind", "broker"); v != 1 {
		t.Errorf("errors_total{kind=broker} = %v, want 1", v)
	}
	if resp := rawGet(t, r1.url("/ws/chat/outage/"), upgradeHeader(nil)); resp.status != 503 {
		t.Errorf("upgrade without NATS: %d, want 503", resp.status)
	}
	// A replica can also start while NATS is down.
	r3 := startReplica(t, "r3", url, nil)
	if code, status := readyStatus(t, r3); code != 503 || status != "not_ready" {
		t.Errorf("replica started without NATS: %d %s", code, status)
	}

	natstest.Start(t, natstest.Port(port))
	for _, r := range []*testReplica{r1, r2, r3} {
		eventually(t, r.name+" is ready again", func() bool {
			code, _ := readyStatus(t, r)
			return code == 200
		})
	}
	// The old connections still work, across replicas, without reconnecting.
	if err := c1.Send("back"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c2); f.Message != "back" {
		t.Fatalf("after the outage r2 got %s", f.Raw)
	}
	if f := next(t, c1); f.Message != "back" {
		t.Fatalf("after the outage r1 got %s", f.Raw)
	}
	c3 := r3.dial(t, "outage")
	if err := c3.Send("late joiner"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsclient.Client{c1, c2, c3} {
		if f := next(t, c); f.Message != "late joiner" {
			t.Fatalf("got %s", f.Raw)
		}
	}
}

func TestASilentClientIsClosedAfterTwoPingIntervals(t *testing.T) {
	r := startReplica(t, "pinger", "", func(c *replica.Config) { c.Hub.PingInterval = 200 * time.Millisecond })
	// A well-behaved client answers pings and stays.
	good := r.dial(t, "keepalive")
	// A raw client completes the handshake, then never sends anything, not even pongs.
	conn, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /ws/chat/keepalive/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	pings := 0
	for {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil {
			break // the server closed the connection
		}
		payload := make([]byte, hdr[1]&0x7f)
		if _, err := io.ReadFull(br, payload); err != nil {
			break
		}
		if hdr[0] == 0x89 {
			pings++
		}
	}
	if pings == 0 {
		t.Fatal("no ping before the silent client was closed")
	}
	select {
	case <-good.Done():
		t.Fatalf("a client that answers pings was closed too: %d", good.CloseCode())
	default:
	}
	if err := good.Send("alive"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, good); f.Message != "alive" {
		t.Fatalf("got %s", f.Raw)
	}
}

func TestHTTPSurface(t *testing.T) {
	r := startReplica(t, "surface", "", nil)
	code, body, header := getJSON(t, r.url("/healthz"))
	if code != 200 || body["status"] != "ok" {
		t.Errorf("/healthz: %d %v", code, body)
	}
	for _, h := range []http.Header{header} {
		if h.Get("X-Roomcast-Color") != "test" || h.Get("X-Roomcast-Instance") != "surface" {
			t.Errorf("identity headers missing: %v", h)
		}
	}
	code, body, _ = getJSON(t, r.url("/readyz"))
	want := map[string]string{"status": "ready", "color": "test", "instance": "surface", "version": "v-test"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("/readyz %s = %q, want %q (%d %v)", k, body[k], v, code, body)
		}
	}
	code, body, _ = getJSON(t, r.url("/no/such/thing"))
	if code != 404 || body["error"] == "" {
		t.Errorf("unknown path: %d %v", code, body)
	}
	resp, err := http.Get(r.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(page), "/ws/chat/") || resp.Header.Get("X-Roomcast-Color") != "test" {
		t.Errorf("chat page: %d %s %d bytes", resp.StatusCode, resp.Header, len(page))
	}
	metrics, err := http.Get(r.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	if !strings.Contains(string(text), "roomcast_build_info{") {
		t.Errorf("/metrics lacks roomcast_build_info")
	}
	// The 101 carries the identity too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, up, err := wsclient.Dial(ctx, r.wsURL("lobby"), wsclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if up.StatusCode != 101 || up.Header.Get("X-Roomcast-Color") != "test" || up.Header.Get("X-Roomcast-Instance") != "surface" {
		t.Errorf("101 response: %d %v", up.StatusCode, up.Header)
	}
	if resp := rawGet(t, r.url("/ws/chat/lobby"), upgradeHeader(nil)); resp.status != 101 {
		t.Errorf("room path without trailing slash: %d %s", resp.status, resp.body)
	}
}
