package stack_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/wsclient"
)

// labMeasureVar asks for the lab's measurements (TestLabOverlayHopCost).
const labMeasureVar = "ROOMCAST_LAB_MEASURE"

// TestLabOverlayHopCost measures what the overlay between nodes costs a room: the same
// fanout-large load through nginx on one deployment, with the app's replicas on the
// workers (every message crosses the overlay from nginx to a replica and from the
// replica to NATS, and each delivery back from NATS and on to nginx) and on the manager
// beside nginx and the one nats-server (no hop leaves the node), in the order workers,
// manager, manager, workers, so that a drift of the machine's other load weighs on both
// alike. Speed is printed, not asserted: that load moves it more than the hop does.
func TestLabOverlayHopCost(t *testing.T) {
	// A measurement, not a check: four runs of 40,000 deliveries a second hold both cores
	// for over a minute, which would only slow down the tests that run alongside.
	if os.Getenv(labMeasureVar) != "1" {
		t.Skipf("a measurement, run on request: %s=1 with the lab's variables (README: the overlay hop's cost)", labMeasureVar)
	}
	l := requireLab(t)
	start := time.Now()
	manager := l.nodes[0]
	// One nats-server, on the manager: with a cluster, each replica would talk to a
	// member on a random node and the stream would be replicated across nodes whatever
	// the app's placement. Labels of an earlier cluster deploy would let it land on a
	// worker; label-nodes adds them again for a later one.
	for _, n := range l.nodes[1:] {
		_ = exec.Command("docker", "-H", manager.dockerHost, "node", "update", "--label-rm", "roomcast.nats", n.id).Run()
	}
	env := labDeploy(t, l, "NATS_CLUSTER=false", "NATS_NODES="+manager.id)
	fmt.Printf("=== lab: stacks deployed (one nats-server) in %.1fs\n", time.Since(start).Seconds())
	for service, want := range map[string]map[string]int{"edge_nginx": {manager.addr: 1}, "edge_nats": {manager.addr: 1}} {
		if got := l.tasksOn(t, service); !maps.Equal(got, want) {
			t.Fatalf("%s runs on %v, want %v", service, got, want)
		}
	}

	// The deploy keeps the app off the manager (APP_FREE_NODES); the moves swap that
	// constraint for one on the manager's node ID and back.
	offManager, onManager := "node.labels.roomcast.app != false", "node.id == "+manager.id
	onWorkers := func(app map[string]int) bool { return app[manager.addr] == 0 && len(app) == 2 }
	if app := l.tasksOn(t, "blue_app"); !onWorkers(app) {
		t.Fatalf("blue_app runs on %v, want one replica on each worker", app)
	}
	var runs []fanoutRun
	runs = append(runs, l.fanoutThroughNginx(t, env, "replicas on the workers"))
	l.moveApp(t, env, offManager, onManager, func(app map[string]int) bool { return maps.Equal(app, map[string]int{manager.addr: 2}) })
	runs = append(runs, l.fanoutThroughNginx(t, env, "replicas on the manager"), l.fanoutThroughNginx(t, env, "replicas on the manager"))
	l.moveApp(t, env, onManager, offManager, onWorkers)
	runs = append(runs, l.fanoutThroughNginx(t, env, "replicas on the workers"))

	fmt.Printf("=== lab: overlay hop, fanout-large through nginx (%d rooms × %d members, 1 msg/s each, %.0fs), one nats-server, nginx and NATS on node 1; CPU of nginx, nats-server and both replicas:\n",
		runs[0].rooms, runs[0].members, runs[0].SendSeconds)
	for _, r := range runs {
		fmt.Printf("=== lab:   %-24s %s\n", r.name+":", r)
	}
	// ratio is the workers' two runs' figure over the manager's two runs' figure.
	ratio := func(figure func(fanoutRun) float64) float64 {
		return (figure(runs[0]) + figure(runs[3])) / (figure(runs[1]) + figure(runs[2]))
	}
	fmt.Printf("=== lab:   workers / manager, the two runs of each summed: p50 ×%.2f, p90 ×%.2f, p99 ×%.2f, CPU per delivery ×%.2f\n",
		ratio(func(r fanoutRun) float64 { return r.Latency.P50MS }), ratio(func(r fanoutRun) float64 { return r.Latency.P90MS }),
		ratio(func(r fanoutRun) float64 { return r.Latency.P99MS }), ratio(func(r fanoutRun) float64 { return r.Server.CPUMicrosPerDelivery }))
	fmt.Printf("=== lab: TestLabOverlayHopCost took %.1fs (without teardown)\n", time.Since(start).Seconds())
}

// moveApp swaps blue_app's placement constraint rm for add and waits until its
// replicas run where placed says and the rolling update has completed.
func (l *lab) moveApp(t *testing.T, env swarmEnv, rm, add string, placed func(map[string]int) bool) {
	t.Helper()
	mustSh(t, env, time.Minute, "docker", "service", "update", "--detach", "--quiet", "--constraint-rm", rm, "--constraint-add", add, "blue_app")
	if err := pollUntil(4*time.Minute, func() error {
		if app := l.tasksOn(t, "blue_app"); !placed(app) {
			return fmt.Errorf("blue_app on %v", app)
		}
		out, err := exec.Command("docker", "service", "inspect", "-f", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", "blue_app").Output()
		if state := strings.TrimSpace(string(out)); err != nil || state != "completed" {
			return fmt.Errorf("update %q, %v", state, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("moving the app (constraint %q instead of %q): %v", add, rm, err)
	}
}

// fanoutRun is one fanout-large run's step.
type fanoutRun struct {
	name           string
	rooms, members int
	// load is the machine's load average over the last minute, when the run ended.
	load string
	loadgen.Step
}

func (r fanoutRun) String() string {
	return fmt.Sprintf("%.0f deliveries/s (%d of %d, %d lost, %d duplicated), latency p50 %.1f ms p90 %.1f ms p99 %.1f ms max %.1f ms, CPU %.1f µs/delivery (%.0f%% of a core), machine load %s",
		r.DeliveriesPerSecond, r.Delivered, r.Expected, r.Lost, r.Duplicated,
		r.Latency.P50MS, r.Latency.P90MS, r.Latency.P99MS, r.Latency.MaxMS, r.Server.CPUMicrosPerDelivery, r.Server.CPUPercent, r.load)
}

// fanoutThroughNginx runs fanout-large (20 s) through nginx against blue as it is placed
// now, with the CPU time of nginx, NATS and the replicas measured, and fails unless
// every delivery arrived once and nginx used only the replicas placed before and after.
func (l *lab) fanoutThroughNginx(t *testing.T, env swarmEnv, name string) fanoutRun {
	t.Helper()
	running := func() map[string]bool {
		got := map[string]bool{}
		for _, task := range l.tasks(t, "blue_app") {
			got[task.instance] = true
		}
		return got
	}
	placed := running()
	if err := pollUntil(time.Minute, func() error { return instancesThroughNginx(t, env, placed) }); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var pids []int
	for _, service := range []string{"edge_nginx", "edge_nats", "blue_app"} {
		for _, task := range l.tasks(t, service) {
			pids = append(pids, l.processes(t, task)...)
		}
	}
	cfg := loadgen.DefaultConfig(loadgen.FanoutLarge)
	cfg.URLs = []string{fmt.Sprintf("ws://%s:%d", env.host, env.port)}
	cfg.Token = env.token(t)
	cfg.Duration = 20 * time.Second
	cfg.Grace = 5 * time.Second // the hops' queues through a loaded machine
	cfg.ServerPIDs = pids
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("%s: fanout-large through nginx: %v", name, err)
	}
	var text strings.Builder
	_ = rep.WriteText(&text)
	t.Logf("%s: fanout-large through nginx, blue on %v:\n%s", name, l.tasksOn(t, "blue_app"), text.String())
	if len(rep.Steps) != 1 || rep.Steps[0].Server == nil {
		t.Fatalf("%s: the report has %d steps, want one with the servers' CPU", name, len(rep.Steps))
	}
	r := fanoutRun{name: name, rooms: rep.Rooms, members: rep.Members, Step: rep.Steps[0]}
	if avg, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.load, _, _ = strings.Cut(string(avg), " ")
	}
	if r.Delivered == 0 || r.Lost != 0 || r.Duplicated != 0 || rep.Interrupted {
		t.Errorf("%s: %s; want every delivery once", name, r)
	}
	if after := running(); !maps.Equal(after, placed) {
		t.Errorf("%s: blue's replicas changed during the run: %v, then %v", name, slices.Sorted(maps.Keys(placed)), slices.Sorted(maps.Keys(after)))
	}
	return r
}

// instancesThroughNginx opens a few WebSockets through nginx and checks that each was
// answered by one of want (X-Roomcast-Instance): nginx resolves the replicas again only
// every few seconds.
func instancesThroughNginx(t *testing.T, env swarmEnv, want map[string]bool) error {
	t.Helper()
	for range 6 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := wsclient.Dial(ctx, env.wsURL("placement"), env.dialOptions(t))
		cancel()
		if err != nil {
			return fmt.Errorf("WebSocket through nginx: %w", err)
		}
		c.Close()
		if got := resp.Header.Get("X-Roomcast-Instance"); !want[got] {
			return fmt.Errorf("nginx reached instance %q, want one of %v", got, slices.Sorted(maps.Keys(want)))
		}
	}
	return nil
}

// processes are the PIDs (in this machine's PID namespace) of task's container: its
// first process and every descendant, such as nginx's workers.
func (l *lab) processes(t *testing.T, task labTask) []int {
	t.Helper()
	i := slices.IndexFunc(l.nodes, func(n labNode) bool { return n.addr == task.addr })
	if i < 0 || task.container == "" {
		t.Fatalf("task %s on node %s: no container of a known node", task.instance, task.addr)
	}
	out, err := exec.Command("docker", "-H", l.nodes[i].dockerHost, "inspect", "-f", "{{.State.Pid}}", task.container).Output()
	if err != nil {
		t.Fatalf("the process of %s (container %s): %v", task.instance, task.container, err)
	}
	root, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || root <= 0 {
		t.Fatalf("the process of %s: %q", task.instance, out)
	}
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		stat, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		end := bytes.LastIndexByte(stat, ')')
		if end < 0 {
			continue
		}
		f := bytes.Fields(stat[end+1:])
		if len(f) < 2 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		ppid, _ := strconv.Atoi(string(f[1]))
		children[ppid] = append(children[ppid], pid)
	}
	pids := []int{root}
	for i := 0; i < len(pids); i++ {
		pids = append(pids, children[pids[i]]...)
	}
	return pids
}
