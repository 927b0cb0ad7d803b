package stack_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// rendered is what the tests read of `docker stack config` output.
type rendered struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Configs     []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"configs"`
		Secrets []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
			UID    string `yaml:"uid"`
			Mode   int    `yaml:"mode"`
		} `yaml:"secrets"`
		Volumes []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"volumes"`
		Ports []struct {
			Mode      string `yaml:"mode"`
			Target    int    `yaml:"target"`
			Published string `yaml:"published"`
		} `yaml:"ports"`
		Deploy struct {
			Replicas     *int   `yaml:"replicas"`
			EndpointMode string `yaml:"endpoint_mode"`
		} `yaml:"deploy"`
	} `yaml:"services"`
	Configs map[string]struct {
		Name string `yaml:"name"`
		File string `yaml:"file"`
	} `yaml:"configs"`
	Secrets map[string]struct {
		Name     string `yaml:"name"`
		External bool   `yaml:"external"`
	} `yaml:"secrets"`
}

func renderEdge(t *testing.T, env ...string) rendered {
	t.Helper()
	out, err := stackConfig(t, "edge.yml", append([]string{"ACTIVE_COLOR=blue"}, env...)...)
	if err != nil {
		t.Fatalf("edge.yml: %v\n%s", err, out)
	}
	var r rendered
	if err := yaml.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("rendered edge.yml: %v\n%s", err, out)
	}
	return r
}

var monitoringServices = map[string]string{ // service: its image variable
	"prometheus":     "PROMETHEUS_IMAGE",
	"alertmanager":   "ALERTMANAGER_IMAGE",
	"grafana":        "GRAFANA_IMAGE",
	"nats-exporter":  "NATS_EXPORTER_IMAGE",
	"nginx-exporter": "NGINX_EXPORTER_IMAGE",
}

func TestEdgeStackMonitoringImagesAreVariablesDefaultingToOfficialImages(t *testing.T) {
	defaults := renderEdge(t)
	for svc, official := range map[string]string{
		"prometheus":     "prom/prometheus:",
		"alertmanager":   "prom/alertmanager:",
		"grafana":        "grafana/grafana:",
		"nats-exporter":  "natsio/prometheus-nats-exporter:",
		"nginx-exporter": "nginx/nginx-prometheus-exporter:",
	} {
		s, ok := defaults.Services[svc]
		if !ok {
			t.Errorf("edge.yml has no service %s", svc)
			continue
		}
		if !strings.HasPrefix(s.Image, official) || strings.HasSuffix(s.Image, ":latest") {
			t.Errorf("%s: default image %q, want a pinned %s...", svc, s.Image, official)
		}
	}
	var env []string
	for svc, v := range monitoringServices {
		env = append(env, v+"=local/"+svc+":1")
	}
	set := renderEdge(t, append(env, "NATS_EXPORTER_REPLICAS=0", "GRAFANA_PORT=3300", "GRAFANA_PUBLISH_MODE=host",
		"GRAFANA_ENDPOINT_MODE=dnsrr", "MONITORING_CONFIG_ID=abc123")...)
	for svc := range monitoringServices {
		if got := set.Services[svc].Image; got != "local/"+svc+":1" {
			t.Errorf("%s: image %q, want the variable's local/%s:1", svc, got, svc)
		}
	}
	if r := set.Services["nats-exporter"].Deploy.Replicas; r == nil || *r != 0 {
		t.Errorf("NATS_EXPORTER_REPLICAS=0 gives replicas %v", r)
	}
	g := set.Services["grafana"]
	if len(g.Ports) != 1 || g.Ports[0].Published != "3300" || g.Ports[0].Mode != "host" || g.Ports[0].Target != 3000 || g.Deploy.EndpointMode != "dnsrr" {
		t.Errorf("grafana ports %+v endpoint mode %q, want 3300 -> 3000 in host mode, dnsrr", g.Ports, g.Deploy.EndpointMode)
	}
	for key, c := range set.Configs {
		// NATS' own configs are versioned by NATS_CONFIG_ID.
		if !strings.HasSuffix(c.Name, "-abc123") && !strings.HasPrefix(key, "nats_") {
			t.Errorf("config %s is named %q: MONITORING_CONFIG_ID does not version it", key, c.Name)
		}
	}
	// The existing services still render as before.
	if set.Services["nginx"].Image != "roomcast/edge:latest" || set.Services["nats"].Image != "nats:2.10" {
		t.Errorf("nginx %q, nats %q changed", set.Services["nginx"].Image, set.Services["nats"].Image)
	}
}

// TestGrafanaLetsInOnlyTheAdminWithThePasswordOfTheSwarmSecret: the admin's password
// is the Swarm secret roomcast-release makes (never a literal in the file), readable by
// Grafana's user only; no sign-up, no anonymous access.
func TestGrafanaLetsInOnlyTheAdminWithThePasswordOfTheSwarmSecret(t *testing.T) {
	for _, tt := range []struct {
		test       string
		env        []string
		user, name string
	}{
		// A deploy that is not roomcast-release's fails on a secret that does not exist.
		{"defaults", nil, "admin", "roomcast_grafana_admin_missing-deploy-with-roomcast-release"},
		{"as roomcast-release deploys", []string{"GRAFANA_ADMIN_SECRET_ID=0123abcd", "GRAFANA_ADMIN_USER=ops"}, "ops", "roomcast_grafana_admin_0123abcd"},
	} {
		t.Run(tt.test, func(t *testing.T) {
			r := renderEdge(t, tt.env...)
			g := r.Services["grafana"]
			want := map[string]string{
				"GF_SECURITY_ADMIN_USER":           tt.user,
				"GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana_admin_password",
				"GF_USERS_ALLOW_SIGN_UP":           "false",
				"GF_AUTH_ANONYMOUS_ENABLED":        "false",
			}
			for k, v := range want {
				if g.Environment[k] != v {
					t.Errorf("grafana %s=%q, want %q", k, g.Environment[k], v)
				}
			}
			if v, ok := g.Environment["GF_SECURITY_ADMIN_PASSWORD"]; ok {
				t.Errorf("grafana's password is a literal in the file: %q", v)
			}
			if len(g.Secrets) != 1 || "/run/secrets/"+g.Secrets[0].Target != want["GF_SECURITY_ADMIN_PASSWORD__FILE"] ||
				g.Secrets[0].UID != "472" || g.Secrets[0].Mode != 0o400 {
				t.Fatalf("grafana mounts secrets %+v, want one at the __FILE path, 0400 for Grafana's uid 472", g.Secrets)
			}
			if s := r.Secrets[g.Secrets[0].Source]; s.Name != tt.name || !s.External {
				t.Errorf("secret %s is %+v, want the external %s", g.Secrets[0].Source, s, tt.name)
			}
		})
	}
}

// TestAlertmanagerReadsTheSecretPrometheusSendsTo: Prometheus' alerting block names the
// Alertmanager service on the port it listens on, and Alertmanager reads its
// configuration from the Swarm secret roomcast-release makes (never a config: it holds
// the webhook URL).
func TestAlertmanagerReadsTheSecretPrometheusSendsTo(t *testing.T) {
	r := renderEdge(t, "ALERTMANAGER_SECRET_ID=0123abcd")
	am, ok := r.Services["alertmanager"]
	if !ok {
		t.Fatal("edge.yml has no alertmanager service")
	}
	if len(am.Secrets) != 1 || "/run/secrets/"+am.Secrets[0].Target != flagValue(am.Command, "--config.file") {
		t.Fatalf("alertmanager mounts secrets %+v and reads %q: want its --config.file to be the secret", am.Secrets, flagValue(am.Command, "--config.file"))
	}
	if s := r.Secrets[am.Secrets[0].Source]; s.Name != "roomcast_alertmanager_0123abcd" || !s.External {
		t.Errorf("secret %s is %+v, want the external roomcast_alertmanager_0123abcd", am.Secrets[0].Source, s)
	}
	if len(am.Configs) != 0 {
		t.Errorf("alertmanager mounts configs %+v: its configuration holds a credential", am.Configs)
	}
	if len(am.Volumes) != 1 || am.Volumes[0].Target != flagValue(am.Command, "--storage.path") {
		t.Errorf("alertmanager volumes %+v, want its --storage.path (silences, notification log) on a volume", am.Volumes)
	}
	var cfg struct {
		Alerting struct {
			Alertmanagers []struct {
				DNSConfigs []struct {
					Names []string `yaml:"names"`
					Type  string   `yaml:"type"`
					Port  int      `yaml:"port"`
				} `yaml:"dns_sd_configs"`
			} `yaml:"alertmanagers"`
		} `yaml:"alerting"`
	}
	readYAMLFile(t, "monitoring/prometheus/prometheus.yml", &cfg)
	port := portOf(t, flagValue(am.Command, "--web.listen-address"), 9093)
	var names []string
	for _, a := range cfg.Alerting.Alertmanagers {
		for _, d := range a.DNSConfigs {
			names = append(names, d.Names...)
			if d.Port != port || d.Type != "A" {
				t.Errorf("prometheus sends alerts to %v:%d (%s), alertmanager listens on %d: want type A on its port", d.Names, d.Port, d.Type, port)
			}
		}
	}
	if !slices.Equal(names, []string{"tasks.edge_alertmanager"}) {
		t.Errorf("prometheus sends alerts to %v, want tasks.edge_alertmanager", names)
	}
}

// mounted returns the host file and its target for each config of service svc.
func mounted(t *testing.T, r rendered, svc string) map[string]string {
	t.Helper()
	out := map[string]string{} // target: file
	for _, c := range r.Services[svc].Configs {
		cfg, ok := r.Configs[c.Source]
		if !ok {
			t.Fatalf("%s mounts config %s, which edge.yml does not define", svc, c.Source)
		}
		out[c.Target] = cfg.File
	}
	return out
}

// repoFile is the absolute path of a file of the repository.
func repoFile(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatal(err)
	}
	return abs
}

func readYAMLFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestPrometheusAndGrafanaGetMonitoringFilesAsConfigs(t *testing.T) {
	r := renderEdge(t)

	prom := r.Services["prometheus"]
	var promCfg struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	readYAMLFile(t, "monitoring/prometheus/prometheus.yml", &promCfg)
	want := map[string]string{"/etc/prometheus/prometheus.yml": repoFile(t, "monitoring/prometheus/prometheus.yml")}
	for _, rf := range promCfg.RuleFiles {
		// rule_files are relative to the config file's directory.
		want[filepath.Join("/etc/prometheus", rf)] = repoFile(t, filepath.Join("monitoring/prometheus", rf))
	}
	if got := mounted(t, r, "prometheus"); !mapsEqual(got, want) {
		t.Errorf("prometheus mounts %v, want %v", got, want)
	}
	for _, flag := range []string{"--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"} {
		if !slices.Contains(prom.Command, flag) {
			t.Errorf("prometheus command %v lacks %s", prom.Command, flag)
		}
	}
	if len(prom.Volumes) != 1 || prom.Volumes[0].Target != "/prometheus" {
		t.Errorf("prometheus volumes %+v, want its data on a volume at /prometheus", prom.Volumes)
	}
	if prom.Deploy.EndpointMode != "dnsrr" {
		t.Errorf("prometheus endpoint mode %q: Grafana and the autoscaler reach it by name, where VIPs may not route", prom.Deploy.EndpointMode)
	}

	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAMLFile(t, "monitoring/grafana/provisioning/dashboards/roomcast.yml", &provider)
	if len(provider.Providers) != 1 {
		t.Fatalf("dashboard provisioning: %+v", provider)
	}
	want = map[string]string{
		"/etc/grafana/provisioning/datasources/roomcast.yml":               repoFile(t, "monitoring/grafana/provisioning/datasources/roomcast.yml"),
		"/etc/grafana/provisioning/dashboards/roomcast.yml":                repoFile(t, "monitoring/grafana/provisioning/dashboards/roomcast.yml"),
		filepath.Join(provider.Providers[0].Options.Path, "roomcast.json"): repoFile(t, "monitoring/grafana/dashboards/roomcast.json"),
	}
	if got := mounted(t, r, "grafana"); !mapsEqual(got, want) {
		t.Errorf("grafana mounts %v, want %v", got, want)
	}

	// The datasource names the edge stack's Prometheus, where it listens.
	var ds struct {
		Datasources []struct {
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAMLFile(t, "monitoring/grafana/provisioning/datasources/roomcast.yml", &ds)
	if len(ds.Datasources) != 1 {
		t.Fatalf("datasources: %+v", ds)
	}
	u, err := url.Parse(ds.Datasources[0].URL)
	if err != nil || u.Hostname() != "edge_prometheus" || u.Port() != "9090" {
		t.Errorf("datasource URL %q, want the edge stack's prometheus service on 9090", ds.Datasources[0].URL)
	}
}

// TestScrapeTargetsAreServicesOfTheStacks checks each DNS name prometheus.yml scrapes
// against the stack files: the service exists (in edge.yml, or app.yml for the colors)
// and listens on the scraped port.
func TestScrapeTargetsAreServicesOfTheStacks(t *testing.T) {
	r := renderEdge(t)
	var cfg struct {
		ScrapeConfigs []struct {
			JobName    string `yaml:"job_name"`
			DNSConfigs []struct {
				Names []string `yaml:"names"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAMLFile(t, "monitoring/prometheus/prometheus.yml", &cfg)

	// listens is the port each edge service serves its metrics on, as its stack entry
	// (or its binary's default) sets it.
	listens := map[string]int{
		"nginx":          portOf(t, r.Services["nginx"].Environment["ROOMCAST_EDGE_METRICS_ADDR"], 9180),
		"nginx-exporter": portOf(t, flagValue(r.Services["nginx-exporter"].Command, "--web.listen-address"), 9113),
		"nats-exporter":  portOf(t, ":"+flagValue(r.Services["nats-exporter"].Command, "-port"), 7777),
	}
	if a, ok := r.Services["autoscaler"]; ok {
		listens["autoscaler"] = portOf(t, a.Environment["AUTOSCALER_ADDR"], 8081)
	}
	for _, sc := range cfg.ScrapeConfigs {
		for _, d := range sc.DNSConfigs {
			for _, name := range d.Names {
				switch {
				case name == "tasks.blue_app" || name == "tasks.green_app":
					out, err := stackConfig(t, "app.yml", "COLOR=blue", "TAG=t", "REPLICAS=1", "JWT_SECRET_ID=t", "NATS_APP_SECRET_ID=t")
					// The probe listener when app.yml sets one, else the public one.
					var app struct {
						Services map[string]struct {
							Environment map[string]string `yaml:"environment"`
						} `yaml:"services"`
					}
					readYAMLFile(t, "stack/app.yml", &app)
					want := portOf(t, app.Services["app"].Environment["ROOMCAST_PROBE_ADDR"], 8080)
					if err != nil || !strings.Contains(out, "  app:") || d.Port != want {
						t.Errorf("job %s: %s:%d is not app.yml's service app on %d: %v", sc.JobName, name, d.Port, want, err)
					}
				case strings.HasPrefix(name, "tasks.edge_"):
					svc := strings.TrimPrefix(name, "tasks.edge_")
					port, ok := listens[svc]
					if _, exists := r.Services[svc]; !exists && svc == "autoscaler" {
						t.Logf("job %s: edge.yml has no autoscaler service yet (its own issue adds it)", sc.JobName)
						continue
					}
					if !ok {
						t.Errorf("job %s: %s is not a service of edge.yml with metrics", sc.JobName, name)
					} else if port != d.Port {
						t.Errorf("job %s: scrapes %s:%d, the service listens on %d", sc.JobName, name, d.Port, port)
					}
				default:
					t.Errorf("job %s: %s is not a tasks.<stack>_<service> name", sc.JobName, name)
				}
			}
		}
	}
}

func TestExportersReachWhatTheyExport(t *testing.T) {
	r := renderEdge(t)

	// nginx-exporter reads the stub_status location of the edge's nginx template, on
	// nginx's status listener (the published port answers 404 for it).
	uri, err := url.Parse(flagValue(r.Services["nginx-exporter"].Command, "--nginx.scrape-uri"))
	if err != nil || uri.Hostname() != "edge_nginx" {
		t.Fatalf("nginx-exporter scrape URI %v (%v), want edge_nginx", uri, err)
	}
	if status := r.Services["nginx"].Environment["ROOMCAST_EDGE_STATUS_PORT"]; uri.Port() != status {
		t.Errorf("nginx-exporter scrapes port %s, nginx's status listener is on %q", uri.Port(), status)
	}
	tmpl, err := os.ReadFile(filepath.Join("..", "nginx", "nginx.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	loc := regexp.MustCompile(`(?s)location = ` + regexp.QuoteMeta(uri.Path) + ` \{[^}]*stub_status;`)
	if !loc.Match(tmpl) {
		t.Errorf("nginx/nginx.conf.tmpl has no stub_status at %s", uri.Path)
	}

	// nats-exporter reads the NATS service's monitoring port.
	cmd := r.Services["nats-exporter"].Command
	natsURL, err := url.Parse(cmd[len(cmd)-1])
	if err != nil || natsURL.Hostname() != "edge_nats" {
		t.Fatalf("nats-exporter reads %q, want edge_nats", cmd[len(cmd)-1])
	}
	conf, err := os.ReadFile(repoFile(t, "stack/nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	httpPort := regexp.MustCompile(`(?m)^http_port: (\d+)$`).FindSubmatch(conf)
	if httpPort == nil || string(httpPort[1]) != natsURL.Port() {
		t.Errorf("nats-exporter reads port %s, stack/nats.conf monitors on %q", natsURL.Port(), httpPort)
	}
}

// flagValue is the value of flag in args, as "flag=value" or "flag value".
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// portOf is the port of a listen address like ":9113", or def when addr is empty.
func portOf(t *testing.T, addr string, def int) int {
	t.Helper()
	if addr == "" || addr == ":" {
		return def
	}
	_, p, ok := strings.Cut(addr[strings.LastIndex(addr, ":"):], ":")
	n, err := strconv.Atoi(p)
	if !ok || err != nil {
		t.Fatalf("listen address %q has no port", addr)
	}
	return n
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestGrafanaOnARealSwarm: the first deploy makes Grafana's admin password a Swarm
// secret, and Grafana lets in its admin with it and nobody else: not admin/admin, not
// an anonymous viewer, no sign-up (GRAFANA_IMAGE is a stand-in that honours Grafana's
// variables for this: stack/images/grafana-standin). A new password file is a new
// secret, which the next deploy mounts; no password is ever in the release's output or
// the service's spec.
func TestGrafanaOnARealSwarm(t *testing.T) {
	requireSwarm(t)
	env := newSwarmEnv(t, "TAG=gf1", "GRAFANA_ADMIN_USER=ops")
	env.vars = append(env.vars, standinVars(t, env)...)
	mustSh(t, env, 5*time.Minute, "just", "build", "gf1")

	out := mustSh(t, env, 5*time.Minute, "just", "deploy")
	first := envVar(env, "GRAFANA_ADMIN_PASSWORD_FILE")
	name, password := grafanaSecretOf(t, first)
	expectMountedOnlyByName(t, out, name, password)
	grafanaLetsInOnly(t, env, "ops", password)
	alertmanagerRuns(t, env)

	// Rotation: a new file, a new secret, mounted by the next deploy.
	second := filepath.Join(filepath.Dir(first), "rotated")
	if err := os.WriteFile(second, []byte(randomPassword(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env.vars = append(env.vars, "GRAFANA_ADMIN_PASSWORD_FILE="+second)
	out = mustSh(t, env, 5*time.Minute, "just", "deploy")
	rotated, newPassword := grafanaSecretOf(t, second)
	if rotated == name {
		t.Fatalf("the new file gave the old secret %s", name)
	}
	expectMountedOnlyByName(t, out, rotated, newPassword)
}

// alertmanagerRuns waits until edge_alertmanager has loaded the configuration
// roomcast-release rendered (without a webhook: the test sets none).
func alertmanagerRuns(t *testing.T, env swarmEnv) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := exec.Command("docker", "service", "logs", "edge_alertmanager").CombinedOutput()
		if strings.Contains(string(out), "Completed loading of configuration file") {
			return
		}
		if time.Now().After(deadline) {
			_, _ = sh(t, env, time.Minute, "docker", "service", "ps", "--no-trunc", "edge_alertmanager")
			t.Fatalf("edge_alertmanager has not loaded its configuration after 90s:\n%s", out)
		}
		time.Sleep(time.Second)
	}
}

// withGrafanaPassword gives env Grafana's admin password in a file of its own, so the
// recipes never make the repository's default .secrets/grafana-admin-password; once
// the test's stacks are gone, it removes the Swarm secret made of each file in that
// file's directory.
func withGrafanaPassword(t *testing.T, env *swarmEnv) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "grafana-admin-password")
	if err := os.WriteFile(file, []byte(randomPassword(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env.vars = append(env.vars, "GRAFANA_ADMIN_PASSWORD_FILE="+file)
	// Registered before newSwarmEnv's teardown, so it runs after: a secret in use
	// cannot be removed.
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			name, _ := grafanaSecretOf(t, f)
			_ = exec.Command("docker", "secret", "rm", name).Run()
		}
	})
}

func randomPassword(t *testing.T) string {
	t.Helper()
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// grafanaSecretOf is the Swarm secret roomcast-release makes of file, and the
// password Grafana reads from it (without trailing newlines).
func grafanaSecretOf(t *testing.T, file string) (name, password string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "roomcast_grafana_admin_" + hex.EncodeToString(sum[:])[:12], strings.TrimRight(string(b), "\n")
}

// envVar is the value of name in env.vars (the last one wins, as in the environment).
func envVar(env swarmEnv, name string) string {
	v := ""
	for _, kv := range env.vars {
		if val, ok := strings.CutPrefix(kv, name+"="); ok {
			v = val
		}
	}
	return v
}

// expectMountedOnlyByName checks that edge_grafana mounts the secret name, and that
// the password is neither in the release's output nor in the service's spec.
func expectMountedOnlyByName(t *testing.T, out, name, password string) {
	t.Helper()
	spec, err := exec.Command("docker", "service", "inspect", "edge_grafana", "--format",
		"{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}\n{{json .Spec}}").Output()
	if err != nil {
		t.Fatalf("inspecting edge_grafana: %v", err)
	}
	mounts, _, _ := strings.Cut(string(spec), "\n")
	if secrets := strings.Fields(mounts); !slices.Equal(secrets, []string{name}) {
		t.Errorf("edge_grafana mounts %v, want %s", secrets, name)
	}
	if strings.Contains(out, password) || strings.Contains(string(spec), password) {
		t.Error("Grafana's password is in the release's output or edge_grafana's spec")
	}
}

// grafanaLetsInOnly waits for Grafana on its published port, then checks that its API
// answers the admin user with password, and nobody else.
func grafanaLetsInOnly(t *testing.T, env swarmEnv, user, password string) {
	t.Helper()
	base := "http://127.0.0.1:" + envVar(env, "GRAFANA_PORT")
	c := http.Client{Timeout: 3 * time.Second}
	do := func(method, path, user, password string) (int, error) {
		var body io.Reader
		if method == http.MethodPost {
			// Grafana reads the form before it says that sign-up is off.
			body = strings.NewReader(`{"email":"someone@example.com"}`)
		}
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, err := do("GET", "/api/health", "", "")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			_, _ = sh(t, env, time.Minute, "docker", "service", "ps", "--no-trunc", "edge_grafana")
			_, _ = sh(t, env, time.Minute, "docker", "service", "logs", "--tail", "50", "edge_grafana")
			t.Fatalf("Grafana at %s: /api/health %d, %v after 90s", base, code, err)
		}
		time.Sleep(time.Second)
	}
	for _, r := range []struct {
		method, path, user, password string
		want                         int
	}{
		{"GET", "/api/org", "", "", http.StatusUnauthorized},
		{"GET", "/api/org", "admin", "admin", http.StatusUnauthorized},
		{"GET", "/api/org", user, "admin", http.StatusUnauthorized},
		{"GET", "/api/user", "", "", http.StatusUnauthorized},
		{"POST", "/api/user/signup", "", "", http.StatusUnauthorized},
		{"GET", "/api/org", user, password, http.StatusOK},
		{"GET", "/api/user", user, password, http.StatusOK},
	} {
		who := "without credentials"
		switch {
		case r.password == password:
			who = "as " + r.user + " with the secret's password"
		case r.user != "":
			who = fmt.Sprintf("as %s:%s", r.user, r.password)
		}
		if code, err := do(r.method, r.path, r.user, r.password); code != r.want {
			t.Errorf("Grafana %s %s %s: %d %v, want %d", r.method, r.path, who, code, err, r.want)
		}
	}
}
