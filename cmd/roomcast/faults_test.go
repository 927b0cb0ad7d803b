package main_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
)

// Faults under traffic, with real processes: replicas drained one at a time, a replica
// killed, NATS stopped for ten seconds, a node of a NATS cluster lost. The clients are
// roomcast-loadgen's release scenario: they reconnect with backoff to the next replica
// and resume with ?since=&epoch=.
func TestFaultsUnderLoad(t *testing.T) {
	bins := buildBinaries(t)
	tests := []struct {
		name string
		run  func(*testing.T, binaries)
	}{
		{"EveryReplicaDrainedInTurnLosesNothing", testDrainEachReplica},
		{"AKilledReplicasClientsResumeElsewhere", testKillAReplica},
		{"NATSStoppedForTenSeconds", testNATSOutage},
		{"ANATSClusterLosingANode", testNATSClusterNodeLoss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, bins) })
	}
}

// startJetStream starts nats-server with JetStream on port (free if 0), storing in dir.
func startJetStream(t *testing.T, bins binaries, port int, dir string, extra ...string) *natsProc {
	t.Helper()
	if port == 0 {
		port = testenv.FreePort(t)
	}
	args := append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir}, extra...)
	p := startProcess(t, "nats-server", bins.natsServer, nil, args...)
	deadline := time.Now().Add(20 * time.Second)
	for !p.stderr.has("Server is ready") {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("nats-server on %d not ready (exited: %v):\n%s", port, p.exited(), p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &natsProc{process: p, port: port}
}

// replicaSet is three replicas on fixed ports, so that one can be restarted where its
// clients expect it.
type replicaSet struct {
	bins  binaries
	env   []string
	ports []int
	procs []*roomcastProc
}

func startReplicaSet(t *testing.T, bins binaries, natsURL string, env ...string) *replicaSet {
	t.Helper()
	s := &replicaSet{bins: bins, env: append([]string{"NATS_URL=" + natsURL, "ROOMCAST_RATE_LIMIT=1000", "ROOMCAST_RATE_BURST=1000",
		"ROOMCAST_DRAIN_DELAY=300ms", "ROOMCAST_DRAIN_TIMEOUT=1s"}, env...)}
	for i := range 3 {
		s.ports = append(s.ports, testenv.FreePort(t))
		s.procs = append(s.procs, nil)
		s.start(t, i)
	}
	return s
}

func (s *replicaSet) start(t *testing.T, i int) {
	t.Helper()
	env := append(append([]string{}, s.env...), fmt.Sprintf("ROOMCAST_ADDR=127.0.0.1:%d", s.ports[i]))
	s.procs[i] = startRoomcast(t, s.bins, fmt.Sprintf("f%d", i), env...)
	waitReadyz(t, s.procs[i], 200, "ready")
}

func (s *replicaSet) urls() []string {
	var out []string
	for _, p := range s.ports {
		out = append(out, fmt.Sprintf("ws://127.0.0.1:%d", p))
	}
	return out
}

// startTraffic starts the release scenario over every replica: 6 rooms of 5 clients,
// 2 messages a second each, every room spread over the replicas.
func startTraffic(t *testing.T, urls []string) *loadgen.Session {
	t.Helper()
	cfg := loadgen.DefaultConfig(loadgen.Release)
	cfg.URLs = urls
	cfg.Rooms, cfg.Members, cfg.Rate = 6, 5, 2
	cfg.Duration = 5 * time.Minute // stopped long before
	cfg.Grace = 5 * time.Second
	cfg.Log = testenv.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := loadgen.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting the traffic: %v", err)
	}
	t.Cleanup(func() { _, _ = s.Stop() })
	return s
}

// stopTraffic ends the traffic and returns the report, logging its summary.
func stopTraffic(t *testing.T, s *loadgen.Session) *loadgen.Report {
	t.Helper()
	rep, err := s.Stop()
	if err != nil || rep == nil {
		t.Fatalf("stopping the traffic: %v", err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b)
	t.Logf("traffic report:\n%s", b.String())
	return rep
}

type tally struct{ sent, lost, duplicated, unconfirmed, refused, reconnects, resumed int64 }

func tallyOf(rep *loadgen.Report) tally {
	var x tally
	for _, s := range rep.Steps {
		x.sent, x.lost, x.duplicated = x.sent+s.Sent, x.lost+s.Lost, x.duplicated+s.Duplicated
	}
	x.refused = rep.ErrorFrames["unavailable"]
	if rc := rep.Reconnect; rc != nil {
		x.unconfirmed, x.reconnects, x.resumed = rc.Unconfirmed, rc.Reconnects, rc.Resumed
	}
	return x
}

func (x tally) String() string {
	return fmt.Sprintf("%d sent, %d deliveries lost, %d duplicated, %d unconfirmed, %d refused (unavailable), %d reconnects (%d resumed)",
		x.sent, x.lost, x.duplicated, x.unconfirmed, x.refused, x.reconnects, x.resumed)
}

// trafficFlows waits until the traffic has run for d.
func trafficFlows(d time.Duration) { time.Sleep(d) }

func testDrainEachReplica(t *testing.T, bins binaries) {
	nats := startJetStream(t, bins, 0, t.TempDir())
	set := startReplicaSet(t, bins, fmt.Sprintf("nats://127.0.0.1:%d", nats.port))
	traffic := startTraffic(t, set.urls())
	trafficFlows(time.Second)
	for i := range set.procs {
		set.procs[i].signal(syscall.SIGTERM)
		if code := set.procs[i].wait(t, 20*time.Second); code != 0 {
			t.Fatalf("replica %d exited %d after SIGTERM", i, code)
		}
		trafficFlows(500 * time.Millisecond)
		set.start(t, i)
		trafficFlows(time.Second)
	}
	rep := stopTraffic(t, traffic)
	x := tallyOf(rep)
	t.Logf("drained every replica in turn: %s", x)
	fmt.Printf("=== drain each of 3 replicas under load: %s\n", x)
	if x.lost != 0 || x.duplicated != 0 || x.unconfirmed != 0 {
		t.Errorf("want nothing lost, duplicated or unconfirmed: %s", x)
	}
	if x.reconnects == 0 || x.resumed < x.reconnects {
		t.Errorf("every reconnect should resume: %s", x)
	}
}

func testKillAReplica(t *testing.T, bins binaries) {
	nats := startJetStream(t, bins, 0, t.TempDir())
	set := startReplicaSet(t, bins, fmt.Sprintf("nats://127.0.0.1:%d", nats.port))
	traffic := startTraffic(t, set.urls())
	trafficFlows(time.Second)
	set.procs[1].signal(syscall.SIGKILL)
	set.procs[1].wait(t, 10*time.Second)
	trafficFlows(3 * time.Second)
	rep := stopTraffic(t, traffic)
	x := tallyOf(rep)
	fmt.Printf("=== kill -9 one of 3 replicas under load: %s\n", x)
	// What the killed replica never read cannot be delivered (unconfirmed, never
	// acknowledged); everything that reached any member reaches every member once.
	if x.lost != x.unconfirmed*int64(rep.Members) || x.duplicated != 0 {
		t.Errorf("lost deliveries beyond the unconfirmed messages, or duplicates: %s", x)
	}
	if x.reconnects == 0 || x.resumed < x.reconnects {
		t.Errorf("the killed replica's clients should reconnect and resume: %s", x)
	}
}

func testNATSOutage(t *testing.T, bins binaries) {
	dir := t.TempDir()
	nats := startJetStream(t, bins, 0, dir)
	set := startReplicaSet(t, bins, fmt.Sprintf("nats://127.0.0.1:%d", nats.port), "ROOMCAST_PING_INTERVAL=25s")
	traffic := startTraffic(t, set.urls())
	trafficFlows(time.Second)
	nats.signal(syscall.SIGTERM)
	nats.wait(t, 10*time.Second)
	for _, r := range set.procs {
		waitReadyz(t, r, 503, "not_ready")
	}
	trafficFlows(10 * time.Second)
	for i, r := range set.procs {
		if r.exited() {
			t.Fatalf("replica %d died during the NATS outage:\n%s", i, r.stderr)
		}
	}
	startJetStream(t, bins, nats.port, dir)
	for _, r := range set.procs {
		waitReadyz(t, r, 200, "ready")
	}
	trafficFlows(3 * time.Second)
	rep := stopTraffic(t, traffic)
	x := tallyOf(rep)
	fmt.Printf("=== NATS stopped for 10s under load: %s\n", x)
	if x.refused == 0 {
		t.Errorf("no message was refused with unavailable during the outage: %s", x)
	}
	// Refused and unconfirmed messages were never accepted; nothing accepted is lost.
	if x.lost > (x.refused+x.unconfirmed)*int64(rep.Members) || x.duplicated != 0 {
		t.Errorf("accepted messages lost, or duplicates: %s", x)
	}
	if rep.UnexpectedCloses != 0 {
		t.Errorf("%d connections closed by the outage; they should have stayed open", rep.UnexpectedCloses)
	}
}

func testNATSClusterNodeLoss(t *testing.T, bins binaries) {
	ports, routes := make([]int, 3), make([]int, 3)
	for i := range 3 {
		ports[i], routes[i] = testenv.FreePort(t), testenv.FreePort(t)
	}
	var routeURLs []string
	for _, r := range routes {
		routeURLs = append(routeURLs, fmt.Sprintf("nats://127.0.0.1:%d", r))
	}
	var nodes []*natsProc
	var clientURLs []string
	for i := range 3 {
		nodes = append(nodes, startJetStream(t, bins, ports[i], t.TempDir(),
			"-n", fmt.Sprintf("n%d", i), "--cluster_name", "roomcast",
			"--cluster", routeURLs[i], "--routes", strings.Join(routeURLs, ",")))
		clientURLs = append(clientURLs, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	// Each replica prefers a different node, so the lost node had replicas on it.
	set := &replicaSet{bins: bins, env: []string{"ROOMCAST_RATE_LIMIT=1000", "ROOMCAST_RATE_BURST=1000",
		"ROOMCAST_HISTORY_REPLICAS=3"}}
	for i := range 3 {
		order := []string{clientURLs[i], clientURLs[(i+1)%3], clientURLs[(i+2)%3]}
		set.ports = append(set.ports, testenv.FreePort(t))
		env := append(append([]string{}, set.env...), "NATS_URL="+strings.Join(order, ","),
			fmt.Sprintf("ROOMCAST_ADDR=127.0.0.1:%d", set.ports[i]))
		set.procs = append(set.procs, startRoomcast(t, bins, fmt.Sprintf("c%d", i), env...))
	}
	// The JetStream cluster elects its leaders before the history stream can be made.
	for _, r := range set.procs {
		waitReadyz(t, r, 200, "ready")
	}
	waitHistory(t, set)
	traffic := startTraffic(t, set.urls())
	trafficFlows(time.Second)
	nodes[0].signal(syscall.SIGKILL)
	nodes[0].wait(t, 10*time.Second)
	trafficFlows(6 * time.Second)
	for i, r := range set.procs {
		if r.exited() {
			t.Fatalf("replica %d died when a NATS node went:\n%s", i, r.stderr)
		}
	}
	rep := stopTraffic(t, traffic)
	x := tallyOf(rep)
	unstored := publishErrors(t, set)
	fmt.Printf("=== a 3-node NATS cluster losing a node under load: %s; %d publishes not acknowledged by JetStream\n", x, unstored)
	// A message JetStream acknowledged reaches every member once, even when the old
	// stream leader died before republishing it: the replicas that missed it see the gap
	// (or reconnected) and catch up from history, retrying while the new leader is
	// elected. Only messages that were never stored may be lost: refused and unconfirmed
	// ones, and those sent live only while the stream had no leader (core NATS, at most
	// once: a replica still reconnecting from the lost node misses them). The publishes
	// JetStream did not acknowledge, refused or sent live only, are
	// roomcast_history_errors_total{op="publish"}. Measured over 33 runs: at most 5
	// deliveries lost, all within this allowance; each stored message a replica missed
	// was caught up.
	if beyond := x.lost - (x.refused+x.unconfirmed+unstored)*int64(rep.Members); beyond > 0 || x.duplicated != 0 {
		t.Errorf("deliveries of stored messages lost, or duplicates: %s; %d publishes not acknowledged", x, unstored)
	}
	if rep.UnexpectedCloses != 0 {
		t.Errorf("%d connections closed when a NATS node went", rep.UnexpectedCloses)
	}
	// After the loss, a room spanning the three replicas still carries every message.
	var members []*wsclient.Client
	for _, r := range set.procs {
		members = append(members, dial(t, r, "after-node-loss"))
	}
	everyoneGetsEveryoneOnce(t, members, "after")
}

// publishErrors sums roomcast_history_errors_total{op="publish"} over the replicas: the
// publishes JetStream did not acknowledge (refused, or sent live only without a seq).
func publishErrors(t *testing.T, set *replicaSet) int64 {
	t.Helper()
	const series = `roomcast_history_errors_total{op="publish"} `
	var n int64
	for _, r := range set.procs {
		found := false
		for _, line := range strings.Split(string(get(t, "http://"+r.addr+"/metrics").body), "\n") {
			if v, ok := strings.CutPrefix(line, series); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("replica %s: %s%s: %v", r.addr, series, v, err)
				}
				n, found = n+int64(f), true
			}
		}
		if !found {
			t.Fatalf("replica %s exposes no %s", r.addr, series)
		}
	}
	return n
}

// waitHistory waits until every replica reports its history stream.
func waitHistory(t *testing.T, set *replicaSet) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range set.procs {
		for {
			m := get(t, "http://"+r.addr+"/metrics")
			// The sample line, not the HELP line (whose text begins with "1 while").
			if strings.Contains(string(m.body), "\nroomcast_history_available 1\n") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s has no history stream after 60s:\n%s", r.addr, r.stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
