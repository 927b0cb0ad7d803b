package stack_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
)

// withNATSPasswords gives env NATS passwords in files of its own, so the recipes never
// make the repository's default .secrets/nats-*-password; the Swarm secrets made of
// them are removed after the stacks (a secret in use cannot be).
func withNATSPasswords(t *testing.T, env *swarmEnv) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []struct{ variable, file string }{
		{"NATS_APP_PASSWORD_FILE", "nats-app-password"}, {"NATS_ROUTE_PASSWORD_FILE", "nats-route-password"},
	} {
		path := filepath.Join(dir, f.file)
		if err := os.WriteFile(path, []byte(randomPassword(t)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env.vars = append(env.vars, f.variable+"="+path)
	}
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "secret", "ls", "-q", "--filter", "label=roomcast.nats=true").Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			_ = exec.Command("docker", append([]string{"secret", "rm"}, ids...)...).Run()
		}
	})
}

// envFile is the content of the file a variable of env names, white space trimmed.
func envFile(t *testing.T, env swarmEnv, variable string) string {
	t.Helper()
	for _, v := range env.vars {
		if file, ok := strings.CutPrefix(v, variable+"="); ok {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("env has no %s", variable)
	return ""
}

// The networks as the stack files have them: NATS on the backend network with the app
// only, its monitoring port with its exporter only, the autoscaler with Prometheus only;
// nothing with a published port shares a network with NATS or the autoscaler.
func TestStackNetworksKeepNATSAndTheAutoscalerFromThePublic(t *testing.T) {
	type stackFile struct {
		Services map[string]struct {
			Ports    []any          `yaml:"ports"`
			Networks map[string]any `yaml:"networks"`
		} `yaml:"services"`
		Networks map[string]struct {
			Name       string `yaml:"name"`
			Internal   bool   `yaml:"internal"`
			Attachable bool   `yaml:"attachable"`
			External   bool   `yaml:"external"`
		} `yaml:"networks"`
	}
	render := func(file string, env ...string) stackFile {
		out, err := stackConfig(t, file, env...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", file, err, out)
		}
		var s stackFile
		if err := yaml.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	edge := render("edge.yml", "ACTIVE_COLOR=blue")
	app := render("app.yml", "COLOR=blue", "TAG=t", "REPLICAS=1", "JWT_SECRET_ID=t", "NATS_APP_SECRET_ID=t")

	// members maps a network's name (as Swarm names it) to the services on it.
	members := map[string][]string{}
	published := map[string]bool{}
	networkName := func(s stackFile, key string) string {
		if n := s.Networks[key].Name; n != "" {
			return n
		}
		return "edge_" + key
	}
	for _, s := range []struct {
		stack string
		file  stackFile
	}{{"edge", edge}, {"blue", app}} {
		for name, svc := range s.file.Services {
			svcName := s.stack + "_" + name
			published[svcName] = len(svc.Ports) > 0
			for key := range svc.Networks {
				members[networkName(s.file, key)] = append(members[networkName(s.file, key)], svcName)
			}
		}
	}
	for _, tt := range []struct {
		network string
		want    []string
	}{
		{"roomcast-backend", []string{"blue_app", "edge_nats"}},
		{"edge_nats-monitoring", []string{"edge_nats", "edge_nats-exporter"}},
		{"roomcast-autoscale", []string{"edge_autoscaler", "edge_prometheus"}},
		{"edge_edge-control", []string{"edge_controller", "edge_nginx"}},
	} {
		if got := slices.Sorted(slices.Values(members[tt.network])); !slices.Equal(got, tt.want) {
			t.Errorf("%s joined by %v, want %v", tt.network, got, tt.want)
		}
	}
	for key, n := range edge.Networks {
		if key != "roomcast" && n.Attachable {
			t.Errorf("network %s is attachable: `docker run --network` could join it", key)
		}
		if (key == "backend" || key == "nats-monitoring" || key == "autoscale") && !n.Internal {
			t.Errorf("network %s is not internal", key)
		}
	}
	for network, svcs := range members {
		for _, svc := range svcs {
			if published[svc] && (slices.Contains(members[network], "edge_nats") || slices.Contains(members[network], "edge_autoscaler")) {
				t.Errorf("%s publishes a port and joins %s with NATS or the autoscaler", svc, network)
			}
		}
	}
	// Prometheus shares a network with everything it scrapes.
	for _, scraped := range []string{"blue_app", "edge_nginx", "edge_nginx-exporter", "edge_nats-exporter", "edge_autoscaler"} {
		shared := false
		for _, svcs := range members {
			shared = shared || (slices.Contains(svcs, "edge_prometheus") && slices.Contains(svcs, scraped))
		}
		if !shared {
			t.Errorf("Prometheus shares no network with %s, which it scrapes", scraped)
		}
	}
}

// natsProtocol sends lines of the NATS client protocol to addr (host:port) from the
// network namespace of container and returns what the server answered within a few
// seconds: INFO when the port is reachable at all, -ERR for what it refuses.
func natsProtocol(t *testing.T, env swarmEnv, container, addr string, lines ...string) string {
	t.Helper()
	nsenter := testenv.Program(t, "nsenter")
	pid := strings.TrimSpace(mustSh(t, env, 30*time.Second, "docker", "inspect", "-f", "{{.State.Pid}}", container))
	cmd := exec.Command(nsenter, "-t", pid, "-n", "curl", "-sS", "-m", "3", "telnet://"+addr)
	// The lines go on stdin, never on a command line: one holds the app's password.
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\r\n") + "\r\n")
	out, _ := cmd.Output() // curl ends on its -m timeout: the answer is what counts
	return string(out)
}

// natsAddresses are the NATS task's addresses on every network it joins.
func natsAddresses(t *testing.T, env swarmEnv) []string {
	t.Helper()
	ids := strings.Fields(mustSh(t, env, 30*time.Second, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=edge_nats"))
	if len(ids) == 0 {
		t.Fatal("no running edge_nats task")
	}
	out := mustSh(t, env, 30*time.Second, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", ids[0])
	return strings.Fields(out)
}

// containerOf is a running container of service.
func containerOf(t *testing.T, env swarmEnv, service string) string {
	t.Helper()
	ids := strings.Fields(mustSh(t, env, 30*time.Second, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service))
	if len(ids) == 0 {
		t.Fatalf("no running task of %s", service)
	}
	return ids[0]
}

// TestNATSIsClosedToThePublicOnARealSwarm deploys the stacks and attacks NATS from where
// an attacker could stand: the public network (nginx's task, a container of one's own)
// cannot reach it; on the backend network, a client without credentials is refused and
// the app's credentials cannot delete the history stream or publish on roomcast.live.*.
func TestNATSIsClosedToThePublicOnARealSwarm(t *testing.T) {
	requireSwarm(t)
	env := newSwarmEnv(t, "TAG=ns1")
	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "ns1")
	mustSh(t, env, 5*time.Minute, "just", "deploy")
	expectEdgeColor(t, env, "blue")
	chatThroughNginx(t, env) // the stream exists and the app uses NATS with its user

	addrs := natsAddresses(t, env)
	app, nginx := containerOf(t, env, "blue_app"), containerOf(t, env, "edge_nginx")
	// The app reaches NATS (so the probe below can see a port): INFO.
	reachable := ""
	for _, a := range addrs {
		if strings.HasPrefix(natsProtocol(t, env, app, a+":4222"), "INFO ") {
			reachable = a
		}
	}
	if reachable == "" {
		t.Fatalf("the app's task reaches NATS at none of %v", addrs)
	}
	for _, a := range addrs {
		if out := natsProtocol(t, env, nginx, a+":4222"); strings.Contains(out, "INFO") {
			t.Errorf("nginx's task (public) reaches NATS at %s:4222", a)
		}
		if out := natsProtocol(t, env, nginx, a+":8222"); out != "" {
			t.Errorf("nginx's task (public) reaches NATS' monitoring at %s:8222: %.80q", a, out)
		}
	}
	// A container of one's own (a NATS server of the stack's image, which runs without
	// arguments): on the public network it runs, but NATS is not there; onto the backend
	// network it is refused.
	image := cmp.Or(envVar(env, "NATS_IMAGE"), "nats:2.10")
	if out, err := sh(t, env, time.Minute, "docker", "run", "--rm", "--network", "roomcast-backend", image, "--version"); err == nil {
		t.Errorf("docker run --network roomcast-backend was allowed:\n%s", out)
	} else if !strings.Contains(out, "attach") {
		t.Errorf("docker run --network roomcast-backend failed, but not for being unattachable:\n%s", out)
	}
	own := strings.TrimSpace(mustSh(t, env, time.Minute, "docker", "run", "-d", "--network", "roomcast", image))
	t.Cleanup(func() { _, _ = sh(t, env, time.Minute, "docker", "rm", "-f", own) })
	clitest.Poll(t, 30*time.Second, 250*time.Millisecond, "the container of one's own running", func() error {
		if out, _ := sh(t, env, 30*time.Second, "docker", "inspect", "-f", "{{.State.Running}}", own); strings.TrimSpace(out) != "true" {
			logs, _ := sh(t, env, 30*time.Second, "docker", "logs", own)
			return fmt.Errorf("not running: %s", logs)
		}
		return nil
	})
	// The control: from there, nginx answers.
	nginxIP := strings.TrimSpace(mustSh(t, env, 30*time.Second, "docker", "inspect", "-f",
		`{{(index .NetworkSettings.Networks "roomcast").IPAddress}}`, nginx))
	if out := natsProtocol(t, env, own, nginxIP+":8080", "GET /healthz HTTP/1.0", ""); !strings.Contains(out, "HTTP/") {
		t.Fatalf("a container on the public network does not reach nginx at %s:8080 (the probe's control): %q", nginxIP, out)
	}
	for _, a := range addrs {
		if out := natsProtocol(t, env, own, a+":4222"); strings.Contains(out, "INFO") {
			t.Errorf("a container of one's own on the public network reaches NATS at %s:4222", a)
		}
	}

	// On the backend network (the app's task): no credentials, or a guessed password.
	for _, connect := range []string{`CONNECT {"verbose":false}`, `CONNECT {"verbose":false,"user":"roomcast","pass":"roomcast"}`} {
		if out := natsProtocol(t, env, app, reachable+":4222", connect, "PING"); !strings.Contains(out, "-ERR 'Authorization Violation'") {
			t.Errorf("%s: NATS answered %.200q, want an authorization violation", connect, out)
		}
	}
	password := envFile(t, env, "NATS_APP_PASSWORD_FILE")
	connect := `CONNECT {"verbose":false,"user":"roomcast","pass":"` + password + `"}`
	stream := natsbroker.DefaultStream
	out := natsProtocol(t, env, app, reachable+":4222", connect,
		"SUB _INBOX.t 1",
		"PUB $JS.API.STREAM.DELETE."+stream+" _INBOX.t 0", "",
		"PUB $JS.API.STREAM.PURGE."+stream+" _INBOX.t 0", "",
		"PUB "+natsbroker.LivePrefix+"hello 2", "hi",
		"PUB $JS.API.STREAM.INFO."+stream+" _INBOX.t 0", "",
		"PING")
	if strings.Contains(out, password) {
		t.Fatal("NATS echoed the password")
	}
	for _, subject := range []string{"$JS.API.STREAM.DELETE." + stream, "$JS.API.STREAM.PURGE." + stream, natsbroker.LivePrefix + "hello"} {
		if !strings.Contains(out, `Permissions Violation for Publish to "`+subject+`"`) {
			t.Errorf("the app's credentials were not refused %s:\n%s", subject, out)
		}
	}
	if !strings.Contains(out, `"name":"`+stream+`"`) {
		t.Errorf("the app's credentials cannot read its stream's info, or the stream is gone:\n%s", out)
	}
	chatThroughNginx(t, env)

	// Prometheus still reaches everything it scrapes, over roomcast-monitoring and
	// roomcast-autoscale (the NATS exporter where an image of it runs).
	prometheus := containerOf(t, env, "edge_prometheus")
	want := []string{"roomcast", "edge", "nginx", "autoscaler", "prometheus"}
	if !slices.Contains(env.vars, "NATS_EXPORTER_REPLICAS=0") {
		want = append(want, "nats")
	}
	clitest.Poll(t, 90*time.Second, time.Second, "every scrape job up", func() error {
		var targets struct {
			Data struct {
				ActiveTargets []struct {
					Labels    map[string]string `json:"labels"`
					Health    string            `json:"health"`
					LastError string            `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := json.Unmarshal(inContainer(t, env, prometheus, "http://127.0.0.1:9090/api/v1/targets"), &targets); err != nil {
			return err
		}
		up := map[string]bool{}
		for _, tg := range targets.Data.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("job %s target %s is %s: %s", tg.Labels["job"], tg.Labels["instance"], tg.Health, tg.LastError)
			}
			up[tg.Labels["job"]] = true
		}
		for _, job := range want {
			if !up[job] {
				return fmt.Errorf("no target of job %s up", job)
			}
		}
		return nil
	})
}
