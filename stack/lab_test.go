package stack_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/testenv"
)

// lab is the Swarm of several nodes on this machine made by stack/lab (node 1 the
// manager, the others workers). The lab tests share one: the first that needs it starts
// it (or finds one up), and TestMain tears down the one it started.
type lab struct {
	registry string
	nodes    []labNode // nodes[0] is the manager
	// started is true when this test process made the lab (and must remove it).
	started bool
}

// labNode is one node: its engine's DOCKER_HOST, its address on the lab's bridge (where
// its host-mode ports listen) and its Swarm node ID.
type labNode struct{ dockerHost, addr, id string }

var (
	labOnce sync.Once
	theLab  *lab
	labErr  error
)

const labNodes = 3

func TestMain(m *testing.M) {
	code := m.Run()
	if theLab != nil && theLab.started {
		start := time.Now()
		if out, err := labCmd(2*time.Minute, "down"); err != nil {
			fmt.Fprintf(os.Stderr, "stack/lab down: %v\n%s", err, out)
			code = 1
		}
		fmt.Printf("=== lab down: %.1fs\n", time.Since(start).Seconds())
	}
	os.Exit(code)
}

// labCmd runs stack/lab with args, bounded, and returns its standard output.
func labCmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./lab", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// requireLab returns the lab, started on first use. Without root or the programs it
// needs, the test is skipped with the reason (a failure under ROOMCAST_TEST_ALL=1); a lab
// that does not start is a failure.
func requireLab(t *testing.T) *lab {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		testenv.Unavailable(t, "the Swarm lab (stack/lab) needs Linux and root: network namespaces, a bridge, dockerd")
	}
	for _, p := range []string{"docker", "dockerd", "ip", "iptables", "just", "curl", "go"} {
		testenv.Program(t, p)
	}
	labOnce.Do(func() {
		start := time.Now()
		l := &lab{}
		out, err := labCmd(10*time.Second, "env")
		if err != nil {
			l.started = true
			if out, err = labCmd(10*time.Minute, "up", fmt.Sprint(labNodes)); err != nil {
				labErr = fmt.Errorf("stack/lab up %d: %v\n%s", labNodes, err, out)
				theLab = l // down removes what a failed up made
				return
			}
			fmt.Printf("=== lab up (%d nodes, registry): %.1fs\n", labNodes, time.Since(start).Seconds())
		}
		vars := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			for _, f := range strings.Fields(strings.TrimPrefix(sc.Text(), "export ")) {
				if k, v, ok := strings.Cut(f, "="); ok {
					vars[k] = v
				}
			}
		}
		l.registry = vars["REGISTRY"]
		for i := 1; vars[fmt.Sprintf("LAB_NODE%d_ADDR", i)] != ""; i++ {
			n := labNode{dockerHost: vars[fmt.Sprintf("LAB_NODE%d_DOCKER_HOST", i)], addr: vars[fmt.Sprintf("LAB_NODE%d_ADDR", i)]}
			id, err := exec.Command("docker", "-H", n.dockerHost, "info", "--format", "{{.Swarm.NodeID}}").Output()
			if err != nil {
				labErr = fmt.Errorf("node %d (%s): %v", i, n.dockerHost, err)
				theLab = l
				return
			}
			n.id = strings.TrimSpace(string(id))
			l.nodes = append(l.nodes, n)
		}
		theLab = l
		if len(l.nodes) < labNodes || l.registry == "" {
			labErr = fmt.Errorf("stack/lab env printed %d nodes and registry %q, want %d nodes and a registry:\n%s",
				len(l.nodes), l.registry, labNodes, out)
		}
	})
	if labErr != nil {
		t.Fatal(labErr)
	}
	return theLab
}

// labEnv is newSwarmEnv against the lab's manager: images through the lab's registry,
// nginx reached at the manager's address, NATS as a cluster (one member per node) and no
// app replica on the manager, so that nginx, NATS and the app talk across nodes. Once the
// test ends, the stacks are removed and the volumes they left on every node too.
func labEnv(t *testing.T, l *lab, vars ...string) swarmEnv {
	t.Helper()
	manager := l.nodes[0]
	t.Setenv("DOCKER_HOST", manager.dockerHost)
	// Registered before newSwarmEnv's teardown, so it runs after it.
	t.Cleanup(func() { l.removeVolumes(t) })
	env := newSwarmEnv(t, append([]string{"REGISTRY=" + l.registry, "NATS_CLUSTER=true",
		"APP_FREE_NODES=" + manager.id, "HEALTH_TIMEOUT=120"}, vars...)...)
	env.host = manager.addr
	env.vars = append(env.vars, fmt.Sprintf("EDGE_URL=http://%s:%d", manager.addr, env.port))
	return env
}

// removeVolumes removes the stacks' volumes on every node once their containers are
// gone: a next deploy on the same lab must not find the old NATS stores.
func (l *lab) removeVolumes(t *testing.T) {
	for _, n := range l.nodes {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			out, err := exec.Command("docker", "-H", n.dockerHost, "ps", "-aq", "--filter", "label=com.docker.stack.namespace").Output()
			if err != nil || len(strings.TrimSpace(string(out))) == 0 {
				break
			}
			time.Sleep(time.Second)
		}
		out, err := exec.Command("docker", "-H", n.dockerHost, "volume", "ls", "-q", "--filter", "label=com.docker.stack.namespace").Output()
		if err != nil {
			continue // a killed node
		}
		if vols := strings.Fields(string(out)); len(vols) > 0 {
			if out, err := exec.Command("docker", append([]string{"-H", n.dockerHost, "volume", "rm", "-f"}, vols...)...).CombinedOutput(); err != nil {
				t.Logf("removing volumes on %s: %v\n%s", n.addr, err, out)
			}
		}
	}
}

// nodeOf names a node ID by its lab address.
func (l *lab) nodeOf(id string) string {
	for _, n := range l.nodes {
		if n.id == id {
			return n.addr
		}
	}
	return id
}

// tasksOn counts the running tasks of service by node address.
func (l *lab) tasksOn(t *testing.T, service string) map[string]int {
	t.Helper()
	out, err := exec.Command("docker", "service", "ps", "-q", "--filter", "desired-state=running", service).Output()
	if err != nil {
		t.Fatalf("listing the tasks of %s: %v", service, err)
	}
	ids := strings.Fields(string(out))
	got := map[string]int{}
	if len(ids) == 0 {
		return got
	}
	out, err = exec.Command("docker", append([]string{"inspect", "--format", "{{.NodeID}} {{.Status.State}}"}, ids...)...).Output()
	if err != nil {
		t.Fatalf("inspecting the tasks of %s: %v", service, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if id, state, _ := strings.Cut(line, " "); state == "running" {
			got[l.nodeOf(id)]++
		}
	}
	return got
}

// checkPlacement checks where the stacks run: nginx on the manager, one NATS member on
// each node, Prometheus and Grafana on the manager (labelled for monitoring by the
// first deploy) and the color's replicas spread over the workers.
func (l *lab) checkPlacement(t *testing.T, color string) {
	t.Helper()
	manager := l.nodes[0].addr
	for service, want := range map[string]map[string]int{
		"edge_nginx":      {manager: 1},
		"edge_prometheus": {manager: 1},
		"edge_grafana":    {manager: 1},
	} {
		if got := l.tasksOn(t, service); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s runs on %v, want %v", service, got, want)
		}
	}
	if nats := l.tasksOn(t, "edge_nats"); len(nats) != len(l.nodes) {
		t.Errorf("edge_nats runs on %v, want one member on each of the %d nodes", nats, len(l.nodes))
	}
	app := l.tasksOn(t, color+"_app")
	if app[manager] != 0 || len(app) < 2 {
		t.Errorf("%s_app runs on %v, want its replicas spread over the workers, none on the manager %s", color, app, manager)
	}
	t.Logf("placement: %s_app on %v", color, app)
}

func TestLabReleaseUnderLoadOnThreeNodes(t *testing.T) {
	l := requireLab(t)
	start := time.Now()
	env := labEnv(t, l, "TAG=t1")
	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "t1")
	mustSh(t, env, 5*time.Minute, "just", "build", "t2")
	fmt.Printf("=== lab: stand-ins and two app builds pushed to the registry: %.1fs\n", time.Since(start).Seconds())

	t.Run("deploy", func(t *testing.T) {
		start := time.Now()
		mustSh(t, env, 5*time.Minute, "just", "deploy")
		fmt.Printf("=== lab: just deploy of the stacks on %d nodes (NATS cluster): %.1fs\n", len(l.nodes), time.Since(start).Seconds())
		expectEdgeColor(t, env, "blue")
		l.checkPlacement(t, "blue")
		chatThroughNginx(t, env)
	})
	if t.Failed() {
		return
	}
	t.Run("promote under load across nodes", func(t *testing.T) {
		took := promoteUnderLoad(t, env, "t2")
		fmt.Printf("=== lab: just promote under 200 clients on %d nodes: %.1fs\n", len(l.nodes), took.Seconds())
		l.checkPlacement(t, "green")
	})
	fmt.Printf("=== lab: TestLabReleaseUnderLoadOnThreeNodes took %.1fs (without teardown)\n", time.Since(start).Seconds())
}
