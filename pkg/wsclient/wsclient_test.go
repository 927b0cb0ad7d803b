package wsclient_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/wsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startServer(t *testing.T) string {
	t.Helper()
	return replicatest.Start(t, replicatest.RateLimit(1000, 1000), replicatest.PingInterval(time.Minute)).Addr().String()
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
