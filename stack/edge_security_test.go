package stack_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// renderedEdge is what the checks read of a renderedEdge stack file.
type renderedEdge struct {
	Services map[string]struct {
		User        string            `yaml:"user"`
		Environment map[string]string `yaml:"environment"`
		Ports       []struct {
			Target int `yaml:"target"`
		} `yaml:"ports"`
		Volumes []struct {
			Type   string `yaml:"type"`
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"volumes"`
		Networks map[string]any `yaml:"networks"`
		Deploy   struct {
			Placement struct {
				Constraints []string `yaml:"constraints"`
			} `yaml:"placement"`
		} `yaml:"deploy"`
	} `yaml:"services"`
	Networks map[string]struct {
		Internal   bool `yaml:"internal"`
		Attachable bool `yaml:"attachable"`
	} `yaml:"networks"`
}

func TestEdgeStackKeepsTheDockerAPIAwayFromPublishedServices(t *testing.T) {
	out, err := stackConfig(t, "edge.yml", "ACTIVE_COLOR=blue")
	if err != nil {
		t.Fatalf("edge.yml: %v\n%s", err, out)
	}
	var st renderedEdge
	if err := yaml.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	published := 0
	for name, svc := range st.Services {
		if len(svc.Ports) == 0 {
			continue
		}
		published++
		for _, v := range svc.Volumes {
			if strings.Contains(v.Source, "docker.sock") || strings.Contains(v.Target, "docker.sock") {
				t.Errorf("%s publishes a port and mounts %s", name, v.Source)
			}
		}
		if _, ok := svc.Environment["DOCKER_HOST"]; ok {
			t.Errorf("%s publishes a port and sets DOCKER_HOST", name)
		}
		if name == "nginx" && (svc.User == "" || strings.HasPrefix(svc.User, "0") || strings.HasPrefix(svc.User, "root")) {
			t.Errorf("nginx runs as %q, want a non-root user", svc.User)
		}
	}
	if published == 0 {
		t.Fatal("no service publishes a port")
	}
	// nginx publishes its listen port only, never the status listener.
	nginx := st.Services["nginx"]
	listen, status := nginx.Environment["ROOMCAST_EDGE_LISTEN_PORT"], nginx.Environment["ROOMCAST_EDGE_STATUS_PORT"]
	if status == "" || status == listen {
		t.Errorf("nginx: status port %q, listen port %q: want a status listener of its own", status, listen)
	}
	for _, port := range nginx.Ports {
		if strconv.Itoa(port.Target) != listen {
			t.Errorf("nginx publishes %d, want only its listen port %s", port.Target, listen)
		}
	}
	// The controller holds the socket, on a manager, on a network only nginx shares.
	ctrl, ok := st.Services["controller"]
	if !ok {
		t.Fatal("no controller service")
	}
	if !slices.Contains(ctrl.Deploy.Placement.Constraints, "node.role == manager") || len(ctrl.Ports) != 0 {
		t.Errorf("controller: constraints %v, ports %v", ctrl.Deploy.Placement.Constraints, ctrl.Ports)
	}
	if got := slices.Sorted(maps.Keys(ctrl.Networks)); !slices.Equal(got, []string{"edge-control"}) {
		t.Errorf("controller networks %v, want only edge-control", got)
	}
	if n := st.Networks["edge-control"]; !n.Internal || n.Attachable {
		t.Errorf("edge-control: internal %v attachable %v, want internal and not attachable", n.Internal, n.Attachable)
	}
	for name, svc := range st.Services {
		if _, on := svc.Networks["edge-control"]; on && name != "nginx" && name != "controller" {
			t.Errorf("%s joins edge-control", name)
		}
	}
}

// inspectPublishedTasks checks, on the running swarm, every task of every service that
// publishes a port: no Docker socket mounted, no DOCKER_HOST, and (for roomcast-edge
// and nginx) processes that are not root. The controller's network must be internal
// and not attachable, joined by nginx and the controller only.
func inspectPublishedTasks(t *testing.T, env swarmEnv) {
	t.Helper()
	var services []struct {
		Spec struct {
			Name         string
			TaskTemplate struct {
				Networks []struct{ Target string }
			}
		}
		Endpoint struct {
			Ports []struct{ PublishedPort int }
		}
	}
	ids := strings.Fields(mustSh(t, env, time.Minute, "docker", "service", "ls", "-q"))
	decode(t, mustSh(t, env, time.Minute, "docker", append([]string{"service", "inspect"}, ids...)...), &services)
	var nets []struct {
		ID         string
		Internal   bool
		Attachable bool
	}
	decode(t, mustSh(t, env, time.Minute, "docker", "network", "inspect", "edge_edge-control"), &nets)
	if len(nets) != 1 {
		t.Fatalf("edge_edge-control: %d networks", len(nets))
	}
	network := nets[0]
	if !network.Internal || network.Attachable {
		t.Errorf("edge_edge-control: internal %v attachable %v", network.Internal, network.Attachable)
	}
	published := 0
	checked := map[string]int{} // processes of nginx tasks whose user was checked
	for _, svc := range services {
		for _, n := range svc.Spec.TaskTemplate.Networks {
			if n.Target == network.ID && svc.Spec.Name != "edge_nginx" && svc.Spec.Name != "edge_controller" {
				t.Errorf("%s joins the controller's network", svc.Spec.Name)
			}
		}
		// A host-mode port shows in the spec, not in Endpoint.Ports: ask the tasks.
		ctrs := strings.Fields(mustSh(t, env, time.Minute, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+svc.Spec.Name))
		for _, ctr := range ctrs {
			var c []struct {
				Name   string
				Config struct {
					User string
					Env  []string
				}
				Mounts          []struct{ Source, Destination string }
				NetworkSettings struct {
					Ports map[string][]struct{ HostPort string }
				}
			}
			decode(t, mustSh(t, env, time.Minute, "docker", "container", "inspect", ctr), &c)
			if len(c) != 1 || (!hasHostPort(c[0].NetworkSettings.Ports) && len(svc.Endpoint.Ports) == 0) {
				continue
			}
			published++
			for _, m := range c[0].Mounts {
				if strings.Contains(m.Source, "docker.sock") || strings.Contains(m.Destination, "docker.sock") {
					t.Errorf("%s (%s) publishes a port and mounts %s at %s", svc.Spec.Name, c[0].Name, m.Source, m.Destination)
				}
			}
			for _, e := range c[0].Config.Env {
				if strings.HasPrefix(e, "DOCKER_HOST=") {
					t.Errorf("%s (%s) publishes a port and has %s", svc.Spec.Name, c[0].Name, e)
				}
			}
			// The processes' real user, as the kernel sees them.
			// (docker top needs the pid column.)
			top := mustSh(t, env, time.Minute, "docker", "top", ctr, "-eo", "pid,uid,comm")
			for _, line := range strings.Split(strings.TrimSpace(top), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) == 3 && (f[2] == "roomcast-edge" || f[2] == "nginx") {
					checked[f[2]]++
					if f[1] == "0" || f[1] == "root" {
						t.Errorf("%s (%s): %s runs as root", svc.Spec.Name, c[0].Name, f[2])
					}
				}
			}
		}
	}
	if published == 0 || checked["roomcast-edge"] == 0 || checked["nginx"] == 0 {
		t.Fatalf("checked %d tasks that publish a port and the users of %v; want nginx tasks among them", published, checked)
	}
	t.Logf("%d tasks publish a port; users checked of %v", published, checked)
}

// internalPathsAreNotPublished asks the published port, as an internet client would,
// for what is only for the inside: the app's metrics and readiness and nginx's status
// paths all answer 404, while the public paths still answer. The test's client is
// 127.0.0.1 (host mode here), an address nginx once trusted for its status: no client
// address opens them now. The nginx tasks have the nofile ulimit nginx's
// worker_rlimit_nofile needs.
func internalPathsAreNotPublished(t *testing.T, env swarmEnv) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	status := func(path string) int {
		resp, err := c.Get(env.edgeURL(path))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/metrics", "/metrics/", "/metrics?x=1", "/readyz", "/readyz/", "/readyz?x=1",
		"/.roomcast/edge", "/.roomcast/nginx_status"} {
		if got := status(path); got != http.StatusNotFound {
			t.Errorf("GET %s through the published port: %d, want 404", path, got)
		}
	}
	for _, path := range []string{"/", "/healthz"} {
		if got := status(path); got != http.StatusOK {
			t.Errorf("GET %s through the published port: %d, want 200", path, got)
		}
	}
	ctrs := strings.Fields(mustSh(t, env, time.Minute, "docker", "ps", "-q", "--filter", "label=com.docker.swarm.service.name=edge_nginx"))
	if len(ctrs) == 0 {
		t.Fatal("no edge_nginx container")
	}
	for _, ctr := range ctrs {
		var c []struct {
			HostConfig struct {
				Ulimits []struct {
					Name       string
					Soft, Hard int64
				}
			}
		}
		decode(t, mustSh(t, env, time.Minute, "docker", "container", "inspect", ctr), &c)
		found := false
		for _, u := range c[0].HostConfig.Ulimits {
			if u.Name == "nofile" {
				found = u.Soft >= 16384 && u.Hard >= 16384
			}
		}
		if !found {
			t.Errorf("nginx container %s: ulimits %+v, want nofile of at least 16384 (worker_rlimit_nofile)", ctr, c[0].HostConfig.Ulimits)
		}
		// Read inside the container's network namespace, where the value applies.
		pid := strings.TrimSpace(mustSh(t, env, time.Minute, "docker", "inspect", "-f", "{{.State.Pid}}", ctr))
		if out, err := exec.Command("nsenter", "-t", pid, "-n", "cat", "/proc/sys/net/ipv4/tcp_retries2").Output(); err != nil || strings.TrimSpace(string(out)) != "6" {
			t.Errorf("nginx container %s: net.ipv4.tcp_retries2 %q (%v), want 6: a WebSocket to a replica on a dead node would wait out 15 retransmissions", ctr, out, err)
		}
	}
}

func hasHostPort(ports map[string][]struct{ HostPort string }) bool {
	for _, bs := range ports {
		for _, b := range bs {
			if b.HostPort != "" {
				return true
			}
		}
	}
	return false
}

func decode(t *testing.T, out string, v any) {
	t.Helper()
	// mustSh's output is the command's; docker prints JSON only.
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
}
