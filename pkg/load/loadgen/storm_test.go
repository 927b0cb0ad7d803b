package loadgen_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/load/loadgen/historytest"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/server/wsgateway"
	"roomcast/pkg/testenv"
)

func stormConfig(t *testing.T, urls []string) loadgen.Config {
	cfg := loadgen.DefaultConfig(loadgen.ReconnectStorm)
	cfg.URLs = urls
	cfg.Rooms, cfg.Members, cfg.Rate = 3, 4, 5
	cfg.Conns = 200
	cfg.Settle = time.Second
	cfg.Duration = time.Minute // a bound: the run ends once every storm client is back
	cfg.Grace = 20 * time.Second
	cfg.ReconnectBase, cfg.ReconnectMax = 20*time.Millisecond, 500*time.Millisecond
	cfg.ProgressEvery = 200 * time.Millisecond
	cfg.Log = testenv.Logger(t)
	return cfg
}

func TestReconnectStormHonoursTheAcceptRate(t *testing.T) {
	// 212 clients against 100 upgrades/s (a bucket of 50): the connecting at the start is
	// refused in part, and so are most of the storm's 200 reconnects at once. The server
	// requires a token, so a reconnect without one would never come back.
	r := startReplica(t, "storm", "", withAuth(t), replicatest.Limits(wsgateway.Limits{AcceptRate: 100, AcceptBurst: 50}))
	cfg := stormConfig(t, []string{"ws://" + r.Addr().String()})
	cfg.Token = mintToken(t, testSecret)
	var progress testenv.SyncBuffer
	cfg.Progress = &progress
	rep := mustRun(t, cfg)

	st := rep.Storm
	if st == nil {
		t.Fatal("no storm result")
	}
	if rep.Connections != 212 || st.Clients != 200 || st.Rooms != 50 || st.Dropped != 200 {
		t.Fatalf("connections %d, storm clients %d in %d rooms, dropped %d; want 212, 200 in 50, 200",
			rep.Connections, st.Clients, st.Rooms, st.Dropped)
	}
	// Every storm client comes back, each exactly once, after refusals it waited out.
	if st.Back != 200 || st.NotBack != 0 || st.GaveUp != 0 || st.ReconnectTime.Count != 200 || st.AllBackSeconds <= 0 {
		t.Errorf("back %d, not back %d, gave up %d, reconnect times %d, all back after %vs; want all 200 back",
			st.Back, st.NotBack, st.GaveUp, st.ReconnectTime.Count, st.AllBackSeconds)
	}
	if st.Refused["503"] == 0 || st.RetryAfter != st.Refused["503"] || len(st.Failed) != 0 {
		t.Errorf("refused %v (%d with Retry-After), failed %v; want 503s with Retry-After and nothing else", st.Refused, st.RetryAfter, st.Failed)
	}
	if st.Attempts != 200+st.Refused["503"] {
		t.Errorf("%d attempts, want 200 successes + %d refusals", st.Attempts, st.Refused["503"])
	}
	if st.ConnectRefused["503"] == 0 {
		t.Errorf("no refusal while connecting at the start: %v", st.ConnectRefused)
	}
	// The server counted what the clients saw.
	if got, want := testenv.Metric(t, r.Registry(), "roomcast_admission_rejected_total", "reason", "accept_rate"),
		float64(st.ConnectRefused["503"]+st.Refused["503"]); got != want {
		t.Errorf("the server refused %v upgrades for the accept rate, the clients saw %v", got, want)
	}
	if n := authFailures(t, r); n != 0 {
		t.Errorf("the server refused %v tokens: a reconnect went without it", n)
	}

	// The members lose nothing, before or during the storm.
	checkClean(t, rep)
	if len(rep.Steps) != 2 || rep.Steps[0].Phase != "settle" || rep.Steps[1].Phase != "storm" {
		t.Fatalf("steps %+v: want settle and storm", rep.Steps)
	}
	if rep.UnexpectedCloses != 0 {
		t.Errorf("%d unexpected closes: the drop is not the server's", rep.UnexpectedCloses)
	}

	// Thresholds are computed; only those that do not depend on the machine's speed are
	// asserted.
	verdicts := map[string]bool{}
	for _, th := range rep.Thresholds {
		verdicts[th.Metric+" "+th.Expr] = th.Pass
	}
	for _, want := range []string{"roomcast_messages_lost count<=0", "roomcast_storm_not_back count==0"} {
		if pass, ok := verdicts[want]; !ok || !pass {
			t.Errorf("threshold %s: present %v, passed %v (all: %+v)", want, ok, pass, rep.Thresholds)
		}
	}
	if _, ok := verdicts["roomcast_delivery_latency p(99)<=100"]; !ok {
		t.Errorf("no p99 threshold in %+v", rep.Thresholds)
	}
	if m := rep.Metrics[loadgen.MetricReconnects]; m.Value != 200 {
		t.Errorf("%s = %v, want 200", loadgen.MetricReconnects, m.Value)
	}
	if m := rep.Metrics[loadgen.MetricSent]; m.Value != float64(rep.Steps[1].Sent) {
		t.Errorf("%s = %v, want the storm window's %d", loadgen.MetricSent, m.Value, rep.Steps[1].Sent)
	}

	out := progress.String()
	for _, want := range []string{"connecting", "settle", "dropped 200 storm connections", "storm back", "refused 503="} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
}

func TestReconnectStormWithoutLimit(t *testing.T) {
	// No accept rate: nothing is refused; two replicas share the rooms.
	cfg := stormConfig(t, twoReplicas(t))
	cfg.Conns = 50
	rep := mustRun(t, cfg)
	st := rep.Storm
	if st.Dropped != 50 || st.Back != 50 || st.NotBack != 0 || len(st.Refused) != 0 || len(st.ConnectRefused) != 0 || st.Attempts != 50 {
		t.Fatalf("storm %+v: want 50 dropped and back at the first attempt", st)
	}
	checkClean(t, rep)
}

func TestReconnectStormThatCannotFinishIsBounded(t *testing.T) {
	// One upgrade a second for 20 storm clients: they cannot all be back before the
	// run's Duration runs out, which ends the storm window and fails the threshold.
	r := startReplica(t, "slow", "", replicatest.Limits(wsgateway.Limits{AcceptRate: 1, AcceptBurst: 30}))
	cfg := stormConfig(t, []string{"ws://" + r.Addr().String()})
	cfg.Rooms, cfg.Members, cfg.Conns = 1, 2, 20
	cfg.Settle, cfg.Duration = 500*time.Millisecond, 4*time.Second
	start := time.Now()
	rep := mustRun(t, cfg)
	if took := time.Since(start); took > time.Minute {
		t.Errorf("the run took %v, far beyond its -duration", took)
	}
	st := rep.Storm
	if st.NotBack == 0 || !strings.Contains(st.StopReason, "-duration ran out") {
		t.Fatalf("storm %+v: want clients not back when -duration ran out", st)
	}
	if rep.ThresholdsPassed() {
		t.Fatalf("thresholds %+v passed with %d storm clients not back", rep.Thresholds, st.NotBack)
	}
}

// refusing answers its first pass upgrades with next, then the refusals in order
// (each a status and Retry-After value, "" for none), then next again.
type refusing struct {
	next     http.Handler
	pass     int
	refusals [][2]string

	mu   sync.Mutex
	seen int
}

func (h *refusing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	i := h.seen - h.pass
	if strings.HasPrefix(r.URL.Path, "/ws/") {
		h.seen++
	}
	h.mu.Unlock()
	if !strings.HasPrefix(r.URL.Path, "/ws/") || i < 0 || i >= len(h.refusals) {
		h.next.ServeHTTP(w, r)
		return
	}
	status, _ := strconv.Atoi(h.refusals[i][0])
	if ra := h.refusals[i][1]; ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	http.Error(w, `{"error":"busy"}`, status)
}

func TestReconnectStormRefusalsWithAndWithoutRetryAfter(t *testing.T) {
	// After the 12 connects, the storm's reconnects meet 10 refusals 429 with an HTTP
	// date as Retry-After, then 5 refusals 503 without one (backoff), then success.
	h := &refusing{next: historytest.New(100, "e1", "blue"), pass: 12}
	date := time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
	for range 10 {
		h.refusals = append(h.refusals, [2]string{"429", date})
	}
	for range 5 {
		h.refusals = append(h.refusals, [2]string{"503", ""})
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	cfg := stormConfig(t, []string{"ws" + strings.TrimPrefix(srv.URL, "http")})
	cfg.Rooms, cfg.Members, cfg.Conns = 1, 2, 10
	rep := mustRun(t, cfg)
	st := rep.Storm
	if st.Back != 10 || st.NotBack != 0 {
		t.Fatalf("storm %+v: want all 10 back", st)
	}
	// The HTTP date counts as a Retry-After; a 503 without one falls back to the backoff.
	if st.Refused["429"] != 10 || st.Refused["503"] != 5 || st.RetryAfter != 10 || st.Attempts != 25 {
		t.Fatalf("refused %v, %d with Retry-After, %d attempts; want 429=10 (with), 503=5 (without), 25 attempts",
			st.Refused, st.RetryAfter, st.Attempts)
	}
	checkClean(t, rep)
}
