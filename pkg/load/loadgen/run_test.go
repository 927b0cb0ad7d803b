package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
)

// testReplica is an in-process server that the test may drain before its cleanup does.
type testReplica struct{ *replicatest.Replica }

// Drain drains the replica (the contract's lame-duck shutdown: 1012 for every client)
// and waits for it to stop serving; later calls, the cleanup's included, do nothing.
func (r *testReplica) Drain(t *testing.T) { r.Shutdown(t) }

// startReplica starts an in-process server; with natsURL empty it runs an embedded NATS
// server that also listens on a free port, for further replicas.
func startReplica(t *testing.T, name, natsURL string, opts ...replicatest.Option) *testReplica {
	t.Helper()
	opts = append([]replicatest.Option{replicatest.Instance(name), replicatest.NATS(natsURL)}, opts...)
	if natsURL == "" {
		opts = append(opts, replicatest.EmbeddedNATS())
	}
	r := &testReplica{replicatest.Start(t, opts...)}
	// Stop it with Drain rather than Close: Replica.Serve sets a field that Close reads
	// without synchronisation, and Drain's HTTP shutdown orders the two (through the
	// http.Server's lock) once the listener is in use.
	t.Cleanup(func() { r.Drain(t) })
	return r
}

// twoReplicas starts two replicas sharing one NATS server and returns their base URLs.
func twoReplicas(t *testing.T) []string {
	t.Helper()
	a := startReplica(t, "a", "")
	b := startReplica(t, "b", a.EmbeddedNATSURL())
	return []string{"ws://" + a.Addr().String(), "ws://" + b.Addr().String()}
}

func mustRun(t *testing.T, cfg loadgen.Config) *loadgen.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:%s", text.String())
	if _, err := json.Marshal(rep); err != nil {
		t.Fatalf("report does not marshal: %v", err)
	}
	return rep
}

// checkClean asserts what must hold for every step whatever the machine's speed: all
// delivered exactly once, nothing odd.
func checkClean(t *testing.T, rep *loadgen.Report) {
	t.Helper()
	if rep.ConnectionsAtEnd != rep.Connections || len(rep.ServerCloses) > 0 || len(rep.ErrorFrames) > 0 {
		t.Errorf("connections %d, at end %d, server closes %v, error frames %v",
			rep.Connections, rep.ConnectionsAtEnd, rep.ServerCloses, rep.ErrorFrames)
	}
	if rep.Foreign+rep.Misrouted+rep.OtherFrames+rep.SendErrors != 0 {
		t.Errorf("foreign %d, misrouted %d, other %d, send errors %d", rep.Foreign, rep.Misrouted, rep.OtherFrames, rep.SendErrors)
	}
	for _, s := range rep.Steps {
		if s.Sent == 0 || s.Expected != s.Sent*int64(rep.Members) {
			t.Errorf("step %d: sent %d, expected %d (members %d)", s.Index, s.Sent, s.Expected, rep.Members)
		}
		if s.Delivered != s.Expected || s.Lost != 0 || s.Duplicated != 0 {
			t.Errorf("step %d: expected %d, delivered %d, lost %d, duplicated %d", s.Index, s.Expected, s.Delivered, s.Lost, s.Duplicated)
		}
		if s.Latency.MaxMS < s.Latency.P99MS || s.Latency.P99MS < s.Latency.P50MS {
			t.Errorf("step %d: latency percentiles out of order: %+v", s.Index, s.Latency)
		}
	}
}

func tinyConfig(t *testing.T, s loadgen.Scenario, urls []string) loadgen.Config {
	cfg := loadgen.DefaultConfig(s)
	cfg.URLs = urls
	cfg.Rooms, cfg.Members, cfg.Rate = 3, 4, 5
	cfg.Duration = 2 * time.Second
	// Generous: the drain ends as soon as everything has arrived.
	cfg.Grace = 20 * time.Second
	cfg.ProgressEvery = 200 * time.Millisecond
	cfg.Log = testenv.Logger(t)
	return cfg
}

func TestFanoutAcrossReplicas(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.FanoutSmall, urls)
	cfg.ServerPIDs = []int{os.Getpid()} // the replicas run in this process
	var progress testenv.SyncBuffer
	cfg.Progress = &progress
	rep := mustRun(t, cfg)

	checkClean(t, rep)
	if rep.Connections != 12 || len(rep.Steps) != 1 {
		t.Fatalf("connections %d, steps %d; want 12, 1", rep.Connections, len(rep.Steps))
	}
	s := rep.Steps[0]
	if s.Server == nil || s.Server.RSSBytes <= 0 || len(s.Server.Processes) != 1 {
		t.Errorf("server usage not measured: %+v", s.Server)
	}
	if !strings.Contains(progress.String(), "delivered") {
		t.Errorf("no progress line in %q", progress.String())
	}
}

func TestRampSteps(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.Ramp, urls)
	cfg.Rooms, cfg.Members = 2, 3
	cfg.Rate, cfg.RampFactor, cfg.RampMaxRate = 2, 2, 8
	cfg.RampStep = 400 * time.Millisecond
	cfg.RampMaxP99 = time.Hour // the test asserts the steps, not the machine's speed
	rep := mustRun(t, cfg)

	checkClean(t, rep)
	if len(rep.Steps) != 3 {
		t.Fatalf("%d steps, want 3 (rates 2, 4, 8)", len(rep.Steps))
	}
	for i, want := range []float64{2, 4, 8} {
		if s := rep.Steps[i]; s.Rate != want || !s.Pass {
			t.Errorf("step %d: rate %v pass %v (%s); want rate %v, pass", i+1, s.Rate, s.Pass, s.Reason, want)
		}
	}
	if rep.Ramp == nil || rep.Ramp.Held == 0 || rep.Ramp.HeldDeliveriesPerSecond <= 0 {
		t.Fatalf("ramp result %+v: want a held step", rep.Ramp)
	}
}

func TestRampStopsAtFailingStep(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.Ramp, urls)
	cfg.Rooms, cfg.Members = 1, 2
	cfg.RampStep = 200 * time.Millisecond
	cfg.RampMaxP99 = time.Nanosecond // no step can pass
	rep := mustRun(t, cfg)

	if len(rep.Steps) != 1 || rep.Steps[0].Pass || rep.Ramp.Held != 0 {
		t.Fatalf("steps %+v, ramp %+v: want one failing step and none held", rep.Steps, rep.Ramp)
	}
	if !strings.Contains(rep.Ramp.StopReason, "p99") {
		t.Fatalf("stop reason %q, want the p99", rep.Ramp.StopReason)
	}
}

func TestIdle(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.Idle, urls)
	cfg.Conns, cfg.Members = 50, 10
	cfg.Duration = 300 * time.Millisecond
	cfg.ServerPIDs = []int{os.Getpid()}
	rep := mustRun(t, cfg)

	if rep.Idle == nil || rep.Connections != 50 || rep.Idle.Open != 50 || rep.Rooms != 5 {
		t.Fatalf("report %+v, idle %+v: want 50 connections in 5 rooms, all open", rep, rep.Idle)
	}
	if rep.Idle.RSSBeforeBytes <= 0 || rep.Idle.RSSAfterBytes <= 0 {
		t.Fatalf("idle RSS not measured: %+v", rep.Idle)
	}
	if len(rep.Steps) != 0 {
		t.Fatalf("idle sent messages: %+v", rep.Steps)
	}
}

func TestIdleClientsAnswerPings(t *testing.T) {
	// The server closes a connection silent for two ping intervals; the clients' pongs
	// keep theirs open for several.
	rep := startReplica(t, "a", "", replicatest.PingInterval(300*time.Millisecond))
	cfg := tinyConfig(t, loadgen.Idle, []string{"ws://" + rep.Addr().String()})
	cfg.Conns, cfg.Members = 5, 5
	cfg.Duration = 2 * time.Second
	res := mustRun(t, cfg)
	if res.Idle.Open != 5 || len(res.ServerCloses) > 0 {
		t.Fatalf("%d of 5 connections open after the hold, server closes %v", res.Idle.Open, res.ServerCloses)
	}
}

func TestConnectFailureIsAnError(t *testing.T) {
	// A port nothing listens on: take a free one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	urls := append(twoReplicas(t), "ws://"+addr)
	cfg := tinyConfig(t, loadgen.FanoutSmall, urls)
	rep, err := loadgen.Run(context.Background(), cfg)
	if err == nil || rep != nil {
		t.Fatalf("Run = %v, %v; want an error", rep, err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Fatalf("error %q does not name the address %s", err, addr)
	}
}

func TestUpgradeRefusedIsAnError(t *testing.T) {
	// /healthz answers HTTP, not a WebSocket upgrade: give a base URL whose room path 404s.
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.FanoutSmall, []string{urls[0] + "/nothing-here"})
	_, err := loadgen.Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("Run error %v, want one naming HTTP 404", err)
	}
}

// cancelOnWrite cancels a context at the first progress line that shows sending.
type cancelOnWrite struct {
	once   sync.Once
	cancel context.CancelFunc
}

func (c *cancelOnWrite) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("sent")) {
		c.once.Do(c.cancel)
	}
	return len(p), nil
}

func TestInterruptedRunReports(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.FanoutSmall, urls)
	cfg.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg.Progress = &cancelOnWrite{cancel: cancel}
	cfg.ProgressEvery = 50 * time.Millisecond
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !rep.Interrupted || len(rep.Steps) != 1 || rep.Steps[0].SendSeconds > 60 {
		t.Fatalf("interrupted %v, steps %+v: want an interrupted run with its one step", rep.Interrupted, rep.Steps)
	}
}
