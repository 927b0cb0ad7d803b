package replica_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"

	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/wsclient"
	"roomcast/pkg/wsclient/wsclienttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// chromedp and net/http keep idle-connection goroutines for a moment after use.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func natsPort(ns *server.Server) int { return ns.Addr().(*net.TCPAddr).Port }

type testReplica struct {
	*replicatest.Replica
	name string
}

// startReplica starts a replica named name on a free port, on natsURL (empty: embedded
// NATS); mod adjusts its configuration.
func startReplica(t *testing.T, name, natsURL string, mod func(*replica.Config)) *testReplica {
	t.Helper()
	opts := []replicatest.Option{replicatest.Instance(name), replicatest.NATS(natsURL)}
	if mod != nil {
		opts = append(opts, mod)
	}
	return &testReplica{replicatest.Start(t, opts...), name}
}

func (r *testReplica) url(path string) string { return r.URL() + path }

func (r *testReplica) wsURL(room string) string {
	return "ws://" + r.Addr().String() + "/ws/chat/" + room + "/"
}

func (r *testReplica) dial(t *testing.T, room string) *wsclient.Client {
	t.Helper()
	return dialURL(t, r.wsURL(room), wsclient.Options{})
}

func dialURL(t *testing.T, url string, opts wsclient.Options) *wsclient.Client {
	t.Helper()
	return wsclienttest.Dial(t, url, opts)
}

// next returns the next frame of c, failing after a generous timeout.
func next(t *testing.T, c *wsclient.Client) wsclient.Frame {
	t.Helper()
	return wsclienttest.Next(t, c)
}

// collect reads message frames until it has want of them, then checks that nothing more
// arrives for a short while (a duplicate would).
func collect(t *testing.T, c *wsclient.Client, want int) []string {
	t.Helper()
	var got []string
	for len(got) < want {
		f := next(t, c)
		if f.Type != "message" {
			t.Fatalf("unexpected frame %s", f.Raw)
		}
		got = append(got, f.Message)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if f, err := c.Next(ctx); err == nil {
		t.Fatalf("extra frame after the %d expected: %s", want, f.Raw)
	}
	slices.Sort(got)
	return got
}

func expectError(t *testing.T, c *wsclient.Client, code string) {
	t.Helper()
	f := next(t, c)
	if f.Type != "error" || f.Code != code {
		t.Fatalf("got frame %s, want an error frame with code %q", f.Raw, code)
	}
	if f.Error == "" {
		t.Fatalf("error frame %s has no text", f.Raw)
	}
}

func expectClose(t *testing.T, c *wsclient.Client, code uint16) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.WaitClosed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != code {
		t.Fatalf("closed with %d (%v), want %d", got, c.CloseError(), code)
	}
}

// eventually polls cond every 10ms until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url string) (int, map[string]string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("GET %s: body %q is not a JSON object of strings: %v", url, body, err)
	}
	return resp.StatusCode, m, resp.Header
}

func readyStatus(t *testing.T, r *testReplica) (int, string) {
	t.Helper()
	code, body, _ := getJSON(t, r.url("/readyz"))
	return code, body["status"]
}

func texts(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, prefix+strconv.Itoa(i))
	}
	slices.Sort(out)
	return out
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
