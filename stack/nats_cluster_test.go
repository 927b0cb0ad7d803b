package stack_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
)

func TestNATSClusterStackOptionMergesIntoTheEdgeStack(t *testing.T) {
	out, err := stackConfig(t, "edge.yml", "ACTIVE_COLOR=blue")
	if err != nil {
		t.Fatalf("edge.yml: %v\n%s", err, out)
	}
	if section := serviceSection(t, out, "nats"); !strings.Contains(section, "replicas: 1") || strings.Contains(section, "cluster.conf") {
		t.Errorf("without the option, NATS is one node:\n%s", section)
	}

	merged, err := stackConfigFiles(t, []string{"edge.yml", "nats-cluster.yml"}, "ACTIVE_COLOR=blue", "NATS_CONFIG_ID=abc")
	if err != nil {
		t.Fatalf("edge.yml + nats-cluster.yml: %v\n%s", err, merged)
	}
	nats := serviceSection(t, string(merged), "nats")
	for _, want := range []string{
		"replicas: 1", "endpoint_mode: dnsrr", "- /etc/nats/cluster.conf", "target: /etc/nats/cluster.conf",
		"NATS_SERVER_NAME: edge-nats-1", "source: nats-member-1-data", "roomcast.nats-cluster: \"true\"",
		"- edge_nats-1", "- node.labels.roomcast.nats-1 == true",
	} {
		if !strings.Contains(nats, want) {
			t.Errorf("merged nats service lacks %q:\n%s", want, nats)
		}
	}
	for _, want := range []string{"name: edge_nats-data-1", "name: edge_nats-data-2", "name: edge_nats-data-3", "name: edge_nats_cluster_conf-abc"} {
		if !strings.Contains(string(merged), want) {
			t.Errorf("merged edge stack lacks %q", want)
		}
	}
	// The cluster's nodes are the single node's (nats.conf) with routes; the route URLs,
	// the members' names with the route password, are the secret's.
	for file, wants := range map[string][]string{
		"stack/nats-cluster.conf": {"include nats.conf", "routes: $ROOMCAST_ROUTES", "password: $ROOMCAST_ROUTE_PASSWORD", "no_advertise: true"},
		"stack/nats.conf":         {"server_name: $NATS_SERVER_NAME", "store_dir: /data", "include nats-auth.conf"},
	} {
		b, err := os.ReadFile(repoFile(t, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range wants {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q", file, want)
			}
		}
	}
	if !strings.Contains(string(merged), "name: roomcast_nats_routes_") || !strings.Contains(nats, "target: nats_routes.conf") {
		t.Errorf("the cluster's nodes do not mount the routes secret:\n%s", nats)
	}
}

// Members 2 and 3 are whole services in stack/nats-cluster.yml, member 1 is edge.yml's
// nats with that file's changes: all three must stay alike but for their names, store,
// node and which name they answer to, or one member of the cluster would run another
// image, limit or configuration than the others.
func TestNATSClusterMembersDifferOnlyInTheirNames(t *testing.T) {
	merged, err := stackConfigFiles(t, []string{"edge.yml", "nats-cluster.yml"}, "ACTIVE_COLOR=blue")
	if err != nil {
		t.Fatalf("edge.yml + nats-cluster.yml: %v\n%s", err, merged)
	}
	var stack struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(merged), &stack); err != nil {
		t.Fatal(err)
	}
	var first map[string]any
	for m, service := range []string{"nats", "nats-2", "nats-3"} {
		member := m + 1
		svc, ok := stack.Services[service]
		if !ok {
			t.Fatalf("no service %s", service)
		}
		own := map[string]string{
			"environment.NATS_SERVER_NAME": fmt.Sprintf("edge-nats-%d", member),
			"labels.roomcast.nats-member":  fmt.Sprint(member),
			"volumes":                      fmt.Sprintf("[map[source:nats-member-%d-data target:/data type:volume]]", member),
			"deploy.placement.constraints": fmt.Sprintf("[node.labels.roomcast.nats == true node.labels.roomcast.nats-%d == true]", member),
		}
		aliases := "[edge_nats]" // members 2 and 3 answer to the cluster's name too
		if member == 1 {
			aliases = "[edge_nats-1]" // edge_nats is its service's name
		}
		own["networks.backend.aliases"], own["networks.nats-monitoring.aliases"] = aliases, aliases
		for path, want := range own {
			if got := fmt.Sprint(takePath(svc, path)); got != want {
				t.Errorf("%s: %s is %s, want %s", service, path, got, want)
			}
		}
		// Read by the recipes on edge_nats only.
		if member == 1 {
			if got := fmt.Sprint(takePath(svc, "deploy.labels.roomcast.nats-cluster")); got != "true" {
				t.Errorf("nats: deploy label roomcast.nats-cluster is %s, want true", got)
			}
		}
		for _, list := range []string{"configs", "secrets"} {
			if l, ok := svc[list].([]any); ok {
				slices.SortFunc(l, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			}
		}
		if first == nil {
			first = svc
			continue
		}
		if !reflect.DeepEqual(svc, first) {
			t.Errorf("%s differs from nats in more than its own settings:\n%s\nnats:\n%s", service, dump(t, svc), dump(t, first))
		}
	}
}

// takePath removes the value at a dotted path (keys may hold dots: the longest key that
// matches is taken) from m and returns it, nil if absent.
func takePath(m map[string]any, path string) any {
	for i := len(path); i > 0; i-- {
		if i < len(path) && path[i] != '.' {
			continue
		}
		v, ok := m[path[:i]]
		if !ok {
			continue
		}
		if i == len(path) {
			delete(m, path)
			return v
		}
		if sub, ok := v.(map[string]any); ok {
			got := takePath(sub, path[i+1:])
			if len(sub) == 0 {
				delete(m, path[:i])
			}
			return got
		}
	}
	return nil
}

func dump(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serviceSection is the block of one service in `docker stack config` output.
func serviceSection(t *testing.T, rendered, service string) string {
	t.Helper()
	m := regexp.MustCompile(`(?ms)^  ` + service + `:\n(.*?)(?:^  \S|^\S)`).FindStringSubmatch(rendered)
	if m == nil {
		t.Fatalf("no service %s in:\n%s", service, rendered)
	}
	return m[1]
}

// TestNATSClusterOnARealSwarm deploys the stacks with NATS as a 3-node JetStream cluster
// (NATS_CLUSTER=true: stack/nats-cluster.yml, history stream with 3 replicas), then kills
// one NATS task under chat traffic through nginx: rooms keep working, the task comes back
// with its own store, and a later deploy without the variable keeps the cluster.
func TestNATSClusterOnARealSwarm(t *testing.T) {
	requireSwarm(t)
	// 3 members on one node: `just label-nodes` gives the one node every member's label.
	env := newSwarmEnv(t, "TAG=nc1", "NATS_CLUSTER=true")
	t.Cleanup(func() { // before teardown: what the services said, when it failed
		if t.Failed() {
			for _, svc := range append([]string{"blue_app"}, natsMembers...) {
				_, _ = sh(t, env, 30*time.Second, "docker", "service", "logs", "--no-task-ids", "--tail", "80", svc)
			}
		}
	})
	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "nc1")

	out := mustSh(t, env, 5*time.Minute, "just", "deploy")
	if !strings.Contains(out, "cluster of 3 nodes") {
		t.Errorf("deploy does not say NATS is a cluster:\n%s", out)
	}
	expectEdgeColor(t, env, "blue")
	waitNATSMembers(t)
	// The app made its history stream with 3 replicas, which JetStream only allows
	// once three nodes form one cluster; until then the replicas report no history.
	// Every replica, each asked in its own network namespace (through nginx only one
	// would answer): right after a deploy, a replica still setting up its history was
	// seen to miss the first messages of a room.
	pollFor(t, 90*time.Second, "history available on every replica of the active color", func() error {
		ids := strings.Fields(mustSh(t, env, 30*time.Second, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=blue_app"))
		if len(ids) != 2 {
			return fmt.Errorf("%d blue_app containers, want 2", len(ids))
		}
		for _, id := range ids {
			if !strings.Contains(string(inContainer(t, env, id, "http://127.0.0.1:8080/metrics")), "\nroomcast_history_available 1\n") {
				return fmt.Errorf("blue_app container %s: roomcast_history_available is not 1", id)
			}
		}
		return nil
	})
	if env := serviceEnv(t, "blue_app"); !strings.Contains(env, "ROOMCAST_HISTORY_REPLICAS=3") {
		t.Errorf("blue_app's history stream is not replicated 3 times: %s", env)
	}
	chatThroughNginx(t, env)

	load := startLoad(t, env, 100)
	time.Sleep(5 * time.Second)
	// The node that hurts most: the history stream's leader if app replicas are connected
	// to it, else the one most of them are connected to.
	nodes := natsNodes(t, env)
	victim := nodes[0]
	for _, n := range nodes {
		if n.score() > victim.score() {
			victim = n
		}
	}
	mustSh(t, env, 30*time.Second, "docker", "kill", victim.container)
	t.Logf("killed NATS node %s (container %s, %d client connections, stream leader %v); nodes: %+v",
		victim.name, victim.container, victim.conns, victim.leadsStream, nodes)
	time.Sleep(15 * time.Second)
	report := load.stopAfterAllOn(t, "blue", 30*time.Second)
	t.Logf("load while a NATS node was killed: %s\n%s", report, report.summary)
	// As with processes (cmd/roomcast's fault test): rooms keep working; while
	// JetStream elects a new stream leader a message acknowledged by the old one can
	// miss some replicas, which the catch-up repairs once the election is over.
	// Only messages that were never stored may be lost: those refused (the sender got
	// unavailable while its replica reconnected) and those sent live only, without a seq,
	// while the stream had no leader (core NATS, at most once: a replica still
	// reconnecting misses them and no history has them). Every stored message reaches
	// every member, the catch-up filling what a replica missed.
	unstored := appMetricSum(t, env, "blue_app", `roomcast_history_errors_total{op="publish"}`)
	fmt.Printf("=== Swarm: a 3-node NATS cluster losing node %s (stream leader %v, %d app connections) under load: %d messages sent, %d refused (unavailable), %d not stored (JetStream without a leader), %d of %d deliveries lost (%d messages unconfirmed), %d duplicated, other closes %v\n",
		victim.name, victim.leadsStream, victim.conns, report.sent, report.refused, unstored, report.lost, report.expected, report.unconfirmed, report.duplicated, report.otherCloses)
	if beyond := report.lost - (report.refused+unstored)*report.members; report.expected == 0 || beyond > 0 || report.duplicated != 0 {
		t.Errorf("deliveries of stored messages lost (%d beyond the %d refused and %d unstored messages), or duplicates: %s",
			beyond, report.refused, unstored, report)
	}
	if len(report.otherCloses) != 0 {
		t.Errorf("connections closed when a NATS node went: %v", report.otherCloses)
	}
	// Each replica that lost its node dials the live ones (edge_nats: every member, random
	// order, DefaultConnectTimeout each), never the dead one's advertised address.
	gaps := reconnectGaps(t, env, "blue_app")
	fmt.Printf("=== Swarm: NATS node %s killed: %d replicas reconnected after %v\n", victim.name, len(gaps), gaps)
	for _, g := range gaps {
		if g > 3*time.Second {
			t.Errorf("a replica took %v to reconnect to NATS (want under 3s: the connect timeout is %v)", g, natsbroker.DefaultConnectTimeout)
		}
	}

	// Swarm restarts the member with the same store.
	waitNATSMembers(t)
	vols := mustSh(t, env, 30*time.Second, "docker", "volume", "ls", "-q", "--filter", "name=edge_nats-data-")
	if n := len(strings.Fields(vols)); n != 3 {
		t.Errorf("want a store per member (3 volumes edge_nats-data-<member>), got %q", vols)
	}
	chatThroughNginx(t, env)

	// A deploy without NATS_CLUSTER keeps the cluster: it reads the live option.
	e := env
	e.vars = nil
	for _, v := range env.vars {
		if !strings.HasPrefix(v, "NATS_CLUSTER=") {
			e.vars = append(e.vars, v)
		}
	}
	if out := mustSh(t, e, 5*time.Minute, "just", "deploy"); !strings.Contains(out, "cluster of 3 nodes") {
		t.Errorf("a later deploy without NATS_CLUSTER dropped the cluster:\n%s", out)
	}
	waitNATSMembers(t)
}

// natsMembers are the services of the NATS cluster's members (stack/nats-cluster.yml).
var natsMembers = []string{"edge_nats", "edge_nats-2", "edge_nats-3"}

// waitNATSMembers waits (bounded) until each member of the NATS cluster runs.
func waitNATSMembers(t *testing.T) {
	t.Helper()
	for _, m := range natsMembers {
		waitServiceReplicas(t, m, 1, 90*time.Second)
	}
}

// waitServiceReplicas waits (bounded) until service runs want tasks.
func waitServiceReplicas(t *testing.T, service string, want int, within time.Duration) {
	t.Helper()
	pollFor(t, within, fmt.Sprintf("%s at %d/%d", service, want, want), func() error {
		out, err := exec.Command("docker", "service", "ls", "--filter", "name="+service, "--format", "{{.Name}} {{.Replicas}}").Output()
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == service {
				if f[1] == fmt.Sprintf("%d/%d", want, want) {
					return nil
				}
				return fmt.Errorf("%s %s", service, f[1])
			}
		}
		return fmt.Errorf("no service %s", service)
	})
}

// serviceEnv is the environment of service's task template, one VAR=value per line.
func serviceEnv(t *testing.T, service string) string {
	t.Helper()
	out, err := exec.Command("docker", "service", "inspect", service, "--format",
		`{{ range .Spec.TaskTemplate.ContainerSpec.Env }}{{ println . }}{{ end }}`).Output()
	if err != nil {
		t.Fatalf("docker service inspect %s: %v", service, err)
	}
	return string(out)
}

// natsNode is one member of the NATS cluster as its monitoring endpoint reports it.
type natsNode struct {
	container   string
	name        string
	conns       int
	routes      int  // to other members
	leadsStream bool // of ROOMCAST_ROOMS, the history stream
}

func (n natsNode) score() int {
	s := n.conns
	if n.leadsStream && n.conns > 0 {
		s += 100
	}
	return s
}

// natsNodes asks each NATS container on this node for /varz and /jsz, from inside the
// container's own network namespace (its monitoring port is not published).
func natsNodes(t *testing.T, env swarmEnv) []natsNode {
	t.Helper()
	ids := strings.Fields(mustSh(t, env, 30*time.Second, "docker", "ps", "-q", "--filter", "label=roomcast.nats-member"))
	if len(ids) != 3 {
		t.Fatalf("want 3 nats containers on this node, got %q", ids)
	}
	var nodes []natsNode
	for _, id := range ids {
		nodes = append(nodes, natsNodeOf(t, env, id))
	}
	return nodes
}

// natsNodeOf asks the NATS container id for /varz and /jsz, from inside its network
// namespace.
func natsNodeOf(t *testing.T, env swarmEnv, id string) natsNode {
	t.Helper()
	monitor := func(path string, v any) {
		out := inContainer(t, env, id, "http://127.0.0.1:8222"+path)
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, out)
		}
	}
	var varz struct {
		ServerName  string `json:"server_name"`
		Connections int    `json:"connections"`
		Routes      int    `json:"routes"`
	}
	monitor("/varz", &varz)
	var jsz struct {
		AccountDetails []struct {
			Streams []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	monitor("/jsz?streams=true", &jsz)
	n := natsNode{container: id, name: varz.ServerName, conns: varz.Connections, routes: varz.Routes}
	for _, a := range jsz.AccountDetails {
		for _, st := range a.Streams {
			if st.Name == "ROOMCAST_ROOMS" && st.Cluster.Leader == varz.ServerName {
				n.leadsStream = true
			}
		}
	}
	return n
}

// inContainer GETs url with curl in the network namespace of container, for ports that
// are not published (NATS monitoring, a replica's own /metrics).
func inContainer(t *testing.T, env swarmEnv, container, url string) []byte {
	t.Helper()
	nsenter := testenv.Program(t, "nsenter")
	pid := strings.TrimSpace(mustSh(t, env, 30*time.Second, "docker", "inspect", "-f", "{{.State.Pid}}", container))
	out, err := exec.Command(nsenter, "-t", pid, "-n", "curl", "-fsS", "-m", "5", url).Output()
	if err != nil {
		t.Fatalf("GET %s in the network namespace of container %s: %v", url, container, err)
	}
	return out
}

// appMetricSum sums one series over the running tasks of service on this node, each
// read from the replica's own /metrics.
func appMetricSum(t *testing.T, env swarmEnv, service, series string) int64 {
	t.Helper()
	ids := strings.Fields(mustSh(t, env, 30*time.Second, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service))
	if len(ids) == 0 {
		t.Fatalf("no running task of %s", service)
	}
	var sum int64
	for _, id := range ids {
		found := false
		for _, line := range strings.Split(string(inContainer(t, env, id, "http://127.0.0.1:8080/metrics")), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s of %s: %q: %v", series, id, v, err)
				}
				sum, found = sum+int64(f), true
			}
		}
		if !found {
			t.Fatalf("container %s of %s exposes no %s", id, service, series)
		}
	}
	return sum
}

// reconnectGaps reads the log of every running task of service on this node and returns,
// for each NATS disconnect, the time until the replica logged its reconnect.
func reconnectGaps(t *testing.T, env swarmEnv, service string) []time.Duration {
	t.Helper()
	var gaps []time.Duration
	for _, id := range strings.Fields(mustSh(t, env, 30*time.Second, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)) {
		out, err := exec.Command("docker", "logs", id).CombinedOutput()
		if err != nil {
			t.Fatalf("docker logs %s: %v", id, err)
		}
		var lost time.Time
		for _, line := range strings.Split(string(out), "\n") {
			var e struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &e) != nil {
				continue
			}
			switch {
			case e.Msg == "nats disconnected":
				lost = e.Time
			case e.Msg == "nats reconnected" && !lost.IsZero():
				gaps = append(gaps, e.Time.Sub(lost).Round(time.Millisecond))
				lost = time.Time{}
			}
		}
		if !lost.IsZero() {
			t.Errorf("container %s of %s lost NATS at %v and has not reconnected", id, service, lost)
		}
	}
	return gaps
}
