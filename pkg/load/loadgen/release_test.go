package loadgen_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/load/loadgen/historytest"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
)

func withColor(color string) replicatest.Option { return replicatest.Color(color) }

var withHistory = replicatest.History(1000)

// eventually polls cond every 20ms for up to 20s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func releaseConfig(t *testing.T, urls []string) loadgen.Config {
	cfg := loadgen.DefaultConfig(loadgen.Release)
	cfg.URLs = urls
	cfg.Rooms, cfg.Members, cfg.Rate = 2, 4, 10
	cfg.ReconnectBase, cfg.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	cfg.Grace = 20 * time.Second // the drain ends as soon as everything has arrived
	cfg.ProgressEvery = 200 * time.Millisecond
	cfg.Log = testenv.Logger(t)
	return cfg
}

func mustStart(t *testing.T, cfg loadgen.Config) *loadgen.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := loadgen.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _, _ = s.Stop() })
	return s
}

func mustStop(t *testing.T, s *loadgen.Session) *loadgen.Report {
	t.Helper()
	rep, err := s.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:%s", text.String())
	return rep
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// sendFor lets the session send for d.
func sendFor(d time.Duration) { time.Sleep(d) }

// checkOnlyUnconfirmedLost asserts that every lost delivery is a whole message that no
// member got because it was sent into a closing connection, and that nothing arrived
// twice: what a resume without gap or duplicate leaves.
func checkOnlyUnconfirmedLost(t *testing.T, rep *loadgen.Report) {
	t.Helper()
	s := rep.Steps[0]
	if s.Sent == 0 || s.Duplicated != 0 {
		t.Errorf("sent %d, duplicated %d; want some sent and none duplicated", s.Sent, s.Duplicated)
	}
	// An unconfirmed message was written into a closing connection: the server may have
	// taken it or not, so it may have reached some members (seen: 2 of 3), but nothing
	// else may be lost.
	if most := rep.Reconnect.Unconfirmed * int64(rep.Members); s.Lost > most {
		t.Errorf("lost %d deliveries, more than the %d of the %d unconfirmed messages", s.Lost, most, rep.Reconnect.Unconfirmed)
	}
	if rep.Foreign+rep.Misrouted+rep.OtherFrames != 0 {
		t.Errorf("foreign %d, misrouted %d, other frames %d", rep.Foreign, rep.Misrouted, rep.OtherFrames)
	}
	if rep.Reconnect.LostUntold != 0 || rep.Reconnect.Unanswered != 0 {
		t.Errorf("%d deliveries lost at members never told of a gap, %d messages lost without their sender told; want none",
			rep.Reconnect.LostUntold, rep.Reconnect.Unanswered)
	}
}

func TestReleaseResumesAcrossADrain(t *testing.T) {
	// Two replicas with history on one NATS server, "blue" and "green"; the clients on
	// green are drained (1012), fail to reconnect there, and resume on blue.
	blue := startReplica(t, "blue", "", withHistory, withColor("blue"))
	green := startReplica(t, "green", blue.EmbeddedNATSURL(), withHistory, withColor("green"))
	for _, r := range []*testReplica{blue, green} {
		eventually(t, "history is available", func() bool {
			v, ok := testenv.LookupMetric(t, r.Registry(), "roomcast_history_available")
			return ok && v == 1
		})
	}
	cfg := releaseConfig(t, []string{"ws://" + blue.Addr().String(), "ws://" + green.Addr().String()})
	var progress testenv.SyncBuffer
	cfg.Progress = &progress
	s := mustStart(t, cfg)
	if got := s.Connected(); got["blue"] != 4 || got["green"] != 4 {
		t.Fatalf("connected %v, want 4 on each color", got)
	}
	sendFor(500 * time.Millisecond)
	green.Drain(t)
	eventually(t, "every client is on blue", func() bool { return s.Connected()["blue"] == 8 })
	sendFor(500 * time.Millisecond)
	rep := mustStop(t, s)

	rc := rep.Reconnect
	if rc.Reconnects != 4 || rc.Resumed != 4 || rc.ReconnectTime.Count != 4 {
		t.Errorf("reconnects %d, resumed %d, reconnect times %d; want 4 each", rc.Reconnects, rc.Resumed, rc.ReconnectTime.Count)
	}
	if !maps.Equal(rep.ServerCloses, map[string]int64{"1012": 4}) || rep.UnexpectedCloses != 0 {
		t.Errorf("server closes %v, unexpected %d; want 4 × 1012, all expected", rep.ServerCloses, rep.UnexpectedCloses)
	}
	if want := map[string]int{"blue": 4, "green =1012=> blue": 4}; !maps.Equal(rc.Paths, want) {
		t.Errorf("paths %v, want %v", rc.Paths, want)
	}
	if !maps.Equal(rc.StartColors, map[string]int{"blue": 4, "green": 4}) || !maps.Equal(rc.EndColors, map[string]int{"blue": 8}) {
		t.Errorf("start colors %v, end colors %v", rc.StartColors, rc.EndColors)
	}
	if len(rc.Clients) != 8 {
		t.Fatalf("%d clients in the report, want 8", len(rc.Clients))
	}
	for _, c := range rc.Clients {
		last := c.Connections[len(c.Connections)-1]
		if last.Color != "blue" || last.CloseCode != 0 || (len(c.Connections) == 2 && !last.Resumed) {
			t.Errorf("client %d: connections %+v", c.ID, c.Connections)
		}
	}
	checkOnlyUnconfirmedLost(t, rep)
	if rep.Metrics[loadgen.MetricReconnects].Value != 4 || rep.Metrics[loadgen.MetricReconnectTime].Trend == nil {
		t.Errorf("metrics %+v", rep.Metrics)
	}
	if !strings.Contains(progress.String(), "reconnects") {
		t.Errorf("no reconnects in the progress lines:\n%s", progress.String())
	}
}

// standIn serves one history stand-in on two listeners ("two replicas").
func standIn(t *testing.T, srv *historytest.Server) []string {
	t.Helper()
	var urls []string
	for range 2 {
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		urls = append(urls, "ws"+strings.TrimPrefix(hs.URL, "http"))
	}
	return urls
}

func TestReleaseResumesWithSinceAndEpoch(t *testing.T) {
	srv := historytest.New(1000, "e1", "blue")
	cfg := releaseConfig(t, standIn(t, srv))
	cfg.Rooms, cfg.Members = 2, 3
	// Messages sent into a closing connection never arrive: do not wait long for them.
	cfg.Grace = 2 * time.Second
	s := mustStart(t, cfg)
	reconnected := func(n int) func() bool {
		return func() bool {
			for _, c := range s.Clients() {
				if len(c.Connections) < n || c.Connections[n-1].CloseCode != 0 {
					return false
				}
			}
			return true
		}
	}

	sendFor(300 * time.Millisecond)
	srv.CloseAll(1012, false) // a drain: resume in epoch e1
	eventually(t, "every client has reconnected once", reconnected(2))
	sendFor(300 * time.Millisecond)
	srv.SetEpoch("e2") // a new history store: the clients follow its epoch
	sendFor(300 * time.Millisecond)
	srv.CloseAll(1012, false)
	eventually(t, "every client has reconnected twice", reconnected(3))
	sendFor(300 * time.Millisecond)
	srv.CloseAll(1012, true) // refused for a while, and the store is recreated meanwhile
	sendFor(300 * time.Millisecond)
	srv.SetEpoch("e3")
	srv.Reopen()
	eventually(t, "every client has reconnected three times", reconnected(4))
	sendFor(300 * time.Millisecond)
	rep := mustStop(t, s)

	ups := srv.Upgrades()
	if len(ups) != 24 {
		t.Fatalf("%d upgrades, want 24: %+v", len(ups), ups)
	}
	for i, up := range ups {
		var wantEpoch string
		switch {
		case i < 6:
			wantEpoch = ""
		case i < 12:
			wantEpoch = "e1"
		default:
			wantEpoch = "e2"
		}
		if (i < 6) != (up.Since == "") || up.Epoch != wantEpoch || (up.Since == "0") || up.Truncated != (i >= 18) {
			t.Errorf("upgrade %d: %+v; want since %v, epoch %q, truncated %v", i, up, i >= 6, wantEpoch, i >= 18)
		}
	}
	rc := rep.Reconnect
	if rc.Reconnects != 18 || rc.Resumed != 18 || rc.HistoryTruncated != 6 || rc.ConnectFailures == 0 {
		t.Errorf("reconnects %d, resumed %d, history_truncated %d, failed attempts %d; want 18, 18, 6, some",
			rc.Reconnects, rc.Resumed, rc.HistoryTruncated, rc.ConnectFailures)
	}
	if rep.Metrics[loadgen.MetricHistoryTruncated].Value != 6 {
		t.Errorf("metric %s = %v, want 6", loadgen.MetricHistoryTruncated, rep.Metrics[loadgen.MetricHistoryTruncated].Value)
	}
	checkOnlyUnconfirmedLost(t, rep)
}

func TestLostDeliveriesNoMemberWasToldOfAreCountedApart(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tell       bool
		wantUntold int64
	}{
		{"a silent gap", false, 2},
		{"a gap announced with history_truncated", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := historytest.New(1000, "e1", "blue")
			cfg := releaseConfig(t, standIn(t, srv))
			cfg.Rooms, cfg.Members = 2, 3
			cfg.Grace = 2 * time.Second // the gap never fills: do not wait long for it
			s := mustStart(t, cfg)
			sendFor(300 * time.Millisecond)
			srv.Gap(tc.tell) // one member of each room misses the next message
			sendFor(300 * time.Millisecond)
			rep := mustStop(t, s)

			if lost := rep.Steps[0].Lost; lost != 2 {
				t.Errorf("lost %d deliveries, want 2 (one in each room)", lost)
			}
			if rc := rep.Reconnect; rc.LostUntold != tc.wantUntold || rc.HistoryTruncated != 2-tc.wantUntold {
				t.Errorf("lost untold %d, history_truncated %d; want %d, %d", rc.LostUntold, rc.HistoryTruncated, tc.wantUntold, 2-tc.wantUntold)
			}
		})
	}
}

func TestAMessageThatReachesNoMemberIsUnansweredUnlessRefusedOrCut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse bool
		// cut: the server closes every connection after later messages came back, as
		// one that dies holding unanswered publishes does.
		cut                             bool
		wantUnanswered, wantUnconfirmed int64
	}{
		{"taken and lost", false, false, 2, 0},
		{"refused with unavailable", true, false, 0, 0},
		{"taken and lost, then the connection cut", false, true, 0, 2},
		{"refused, then the connection cut", true, true, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := historytest.New(1000, "e1", "blue")
			cfg := releaseConfig(t, standIn(t, srv))
			cfg.Rooms, cfg.Members = 2, 3
			cfg.Grace = 2 * time.Second // the lost messages never come: do not wait long
			s := mustStart(t, cfg)
			sendFor(300 * time.Millisecond)
			srv.Drop(tc.refuse) // the next message of each room reaches no member
			sendFor(300 * time.Millisecond)
			if tc.cut {
				srv.CloseAll(1012, false)
				sendFor(300 * time.Millisecond)
			}
			rep := mustStop(t, s)

			rc := rep.Reconnect
			// The cut may catch more messages in flight: each is unconfirmed too.
			inFlight := rc.Unconfirmed - tc.wantUnconfirmed
			if rc.Unanswered != tc.wantUnanswered || inFlight < 0 || !tc.cut && inFlight != 0 || rc.LostUntold != 0 {
				t.Errorf("unanswered %d, unconfirmed %d, lost untold %d; want %d, %d (more if cut), 0", rc.Unanswered, rc.Unconfirmed, rc.LostUntold, tc.wantUnanswered, tc.wantUnconfirmed)
			}
			if lost, want := rep.Steps[0].Lost, 6+3*max(inFlight, 0); lost != want {
				t.Errorf("lost %d deliveries, want %d (one message to 3 members in each room, and any cut in flight)", lost, want)
			}
			if refused := rep.ErrorFrames["unavailable"]; tc.refuse != (refused == 2) {
				t.Errorf("%d unavailable frames", refused)
			}
		})
	}
}

func TestReleaseWithoutHistoryReconnectsWithoutSince(t *testing.T) {
	// History off: the frames carry no seq, so a reconnect asks for no resume, and what
	// was sent while a client was away is lost for it.
	a := startReplica(t, "a", "", withColor("blue"))
	b := startReplica(t, "b", a.EmbeddedNATSURL(), withColor("green"))
	cfg := releaseConfig(t, []string{"ws://" + a.Addr().String(), "ws://" + b.Addr().String()})
	cfg.Rooms, cfg.Members = 1, 4
	cfg.Grace = time.Second
	s := mustStart(t, cfg)
	sendFor(300 * time.Millisecond)
	b.Drain(t)
	eventually(t, "every client is on blue", func() bool { return s.Connected()["blue"] == 4 })
	sendFor(300 * time.Millisecond)
	rep := mustStop(t, s)
	if rc := rep.Reconnect; rc.Reconnects != 2 || rc.Resumed != 0 || rc.Paths["green =1012=> blue"] != 2 {
		t.Errorf("reconnect result %+v: want 2 reconnects without resume", rc)
	}
	if s := rep.Steps[0]; s.Delivered+s.Lost != s.Expected || s.Duplicated != 0 {
		t.Errorf("step %+v", s)
	}
}

func TestReleaseRunsUntilCancelled(t *testing.T) {
	srv := historytest.New(1000, "e1", "blue")
	cfg := releaseConfig(t, standIn(t, srv))
	cfg.Duration = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Progress = &cancelOnWrite{cancel: cancel}
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rep.Interrupted || len(rep.Steps) != 1 || rep.Steps[0].Sent == 0 || !rep.ThresholdsPassed() {
		t.Fatalf("report %+v: want a complete run with its thresholds passed", rep)
	}
	checkClean(t, rep)
}

func TestReleaseEndsAfterDuration(t *testing.T) {
	srv := historytest.New(1000, "e1", "blue")
	cfg := releaseConfig(t, standIn(t, srv))
	cfg.Duration = 400 * time.Millisecond
	start := time.Now()
	rep, err := loadgen.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(start); took < cfg.Duration || took > 10*time.Second || rep.Steps[0].SendSeconds < 0.35 {
		t.Fatalf("took %v, sent for %.2fs; want about %v", took, rep.Steps[0].SendSeconds, cfg.Duration)
	}
}

func TestStartTakesOnlyScenariosThatReconnect(t *testing.T) {
	_, err := loadgen.Start(context.Background(), loadgen.DefaultConfig(loadgen.FanoutSmall))
	var ce *loadgen.ConfigError
	if !errors.As(err, &ce) || ce.Setting != "scenario" {
		t.Fatalf("Start(fanout-small) = %v, want a *ConfigError on the scenario", err)
	}
}

func TestStopTwiceReturnsTheSameReport(t *testing.T) {
	srv := historytest.New(10, "e1", "blue")
	cfg := releaseConfig(t, standIn(t, srv))
	s := mustStart(t, cfg)
	a, errA := s.Stop()
	b, errB := s.Stop()
	if a != b || errA != nil || errB != nil {
		t.Fatalf("Stop twice: %p %v, %p %v", a, errA, b, errB)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}

func TestSoakCountsUnexpectedClosesAndReconnects(t *testing.T) {
	srv := historytest.New(1000, "e1", "blue")
	cfg := loadgen.DefaultConfig(loadgen.Soak)
	cfg.URLs = standIn(t, srv)
	cfg.Conns, cfg.Members = 7, 3 // rooms of 3, 3 and 1
	cfg.SendEvery = 50 * time.Millisecond
	cfg.Duration = 1500 * time.Millisecond
	cfg.ReconnectBase, cfg.ReconnectMax = 20*time.Millisecond, 100*time.Millisecond
	cfg.Grace = 20 * time.Second
	cfg.Log = testenv.Logger(t)
	go func() {
		time.Sleep(500 * time.Millisecond)
		srv.CloseAll(1001, false)
	}()
	rep := mustRun(t, cfg)
	if rep.Rooms != 3 || rep.Connections != 7 || rep.UnexpectedCloses != 7 || rep.Reconnect.Reconnects != 7 {
		t.Fatalf("rooms %d, connections %d, unexpected closes %d, reconnects %d; want 3, 7, 7, 7",
			rep.Rooms, rep.Connections, rep.UnexpectedCloses, rep.Reconnect.Reconnects)
	}
	s := rep.Steps[0]
	if s.Delivered+s.Lost != s.Expected || s.Expected <= s.Sent {
		t.Errorf("sent %d, expected %d, delivered %d, lost %d", s.Sent, s.Expected, s.Delivered, s.Lost)
	}
	checkOnlyUnconfirmedLost(t, rep)
	if rep.ThresholdsPassed() {
		t.Errorf("thresholds passed with 7 unexpected closes: %+v", rep.Thresholds)
	}
	if rep.Thresholds[0].Metric != loadgen.MetricUnexpectedCloses || rep.Thresholds[0].Pass || rep.Thresholds[0].Value != 7 {
		t.Errorf("threshold %+v, want unexpected closes 7, failed", rep.Thresholds[0])
	}
}

func TestSmoke(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.Smoke, urls)
	cfg.Duration = time.Second
	rep := mustRun(t, cfg)
	checkClean(t, rep)
	want := map[string]loadgen.CheckResult{
		"readyz is 200":          {Passes: 2},
		"readyz says ready":      {Passes: 2},
		"readyz names its color": {Passes: 2},
		"websocket opens":        {Passes: 12},
	}
	if !maps.Equal(rep.Checks, want) {
		t.Errorf("checks %v, want %v", rep.Checks, want)
	}
	if !rep.ThresholdsPassed() || rep.Metrics[loadgen.MetricChecks].Value != 1 {
		t.Errorf("thresholds %+v, checks metric %+v", rep.Thresholds, rep.Metrics[loadgen.MetricChecks])
	}
	for _, m := range loadgen.Metrics(loadgen.Smoke) {
		if _, ok := rep.Metrics[m.Name]; !ok {
			t.Errorf("report lacks metric %s", m.Name)
		}
	}
}

func TestSmokeFailsItsChecksOnANonReplica(t *testing.T) {
	// A server that upgrades WebSockets but whose /readyz is not roomcast's.
	srv := historytest.New(10, "e1", "")
	cfg := tinyConfig(t, loadgen.Smoke, standIn(t, srv)[:1])
	cfg.Duration = 300 * time.Millisecond
	rep := mustRun(t, cfg)
	if c := rep.Checks["readyz names its color"]; c.Fails != 1 || rep.ThresholdsPassed() {
		t.Fatalf("check %+v, thresholds %+v: want the color check and so the checks threshold failed", c, rep.Thresholds)
	}
}

func TestFanoutThresholds(t *testing.T) {
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.FanoutSmall, urls)
	cfg.Duration = 500 * time.Millisecond
	rep := mustRun(t, cfg)
	if len(rep.Thresholds) != 5 || !rep.ThresholdsPassed() {
		t.Fatalf("thresholds %+v: want 5, passed", rep.Thresholds)
	}
	cfg.MaxP95 = time.Nanosecond
	rep = mustRun(t, cfg)
	if rep.ThresholdsPassed() || rep.Thresholds[0].Pass || !rep.Thresholds[1].Pass || rep.Thresholds[0].Expr != "p(95)<0.000001" {
		t.Fatalf("thresholds %+v: want only the p95 one crossed", rep.Thresholds)
	}
}

func TestNothingDeliveredFailsEveryTwin(t *testing.T) {
	// A server that takes every message and delivers none, with loss allowed: the
	// threshold that fails is the one on deliveries (k6/k6_test.go runs the scripts
	// against the same server).
	for _, tw := range loadgen.K6Twins() {
		if tw.Scenario == loadgen.FanoutLarge {
			continue // fanout-small's script with other parameters
		}
		t.Run(string(tw.Scenario), func(t *testing.T) {
			srv := historytest.New(10, "e1", "blue")
			srv.Mute()
			cfg := tinyConfig(t, tw.Scenario, standIn(t, srv))
			cfg.Conns, cfg.SendEvery = 4, 100*time.Millisecond
			cfg.Duration, cfg.Grace = 500*time.Millisecond, 200*time.Millisecond
			cfg.MaxLost = 1 << 40
			rep := mustRun(t, cfg)
			var failed []string
			for _, th := range rep.Thresholds {
				if !th.Pass {
					failed = append(failed, th.Metric+" "+th.Expr)
				}
			}
			if !slices.Equal(failed, []string{loadgen.MetricDelivered + " count>0"}) {
				t.Fatalf("failed thresholds %q, want only the one on deliveries (all: %+v)", failed, rep.Thresholds)
			}
		})
	}
}
