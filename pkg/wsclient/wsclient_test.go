package wsclient_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/wsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startServer(t *testing.T) string {
	t.Helper()
	r, err := replica.New(replica.Config{
		Addr: "127.0.0.1:0", Identity: httpapi.Identity{Color: "c", Instance: "i"},
		MaxMessageBytes: 4096, SendQueueFrames: 256, SendQueueBytes: 1 << 20, RateLimit: 1000, RateBurst: 1000,
		PingInterval: time.Minute, DrainTimeout: 100 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Serve() }()
	t.Cleanup(func() { r.Close(); <-done })
	return r.Addr().String()
}

func TestARefusedUpgradeReportsTheStatus(t *testing.T) {
	addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := wsclient.Dial(ctx, "ws://"+addr+"/ws/chat/a.b/", wsclient.Options{})
	if err == nil {
		c.Close()
		t.Fatal("dialed an invalid room")
	}
	if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("response %v, err %v", resp, err)
	}
}

func TestCloseEndsAClientThatNobodyReads(t *testing.T) {
	addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := wsclient.Dial(ctx, "ws://"+addr+"/ws/chat/r/", wsclient.Options{Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := c.Send("unread"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // the read loop is now blocked on the full buffer
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a client whose frames were not read")
	}
	if code := c.CloseCode(); code == 0 {
		t.Fatal("no close code after Close")
	}
}
