package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/cli"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/fleet/autoscale/promtest"
	"roomcast/pkg/fleet/swarm/swarmtest"
	"roomcast/pkg/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHelpDocumentsEveryVariableWithItsDefault(t *testing.T) {
	// The contract's variables and defaults, word for word.
	out := clitest.Help(t, name, run,
		"PROMETHEUS_URL", "http://prometheus:9090",
		"DOCKER_HOST", "unix:///var/run/docker.sock",
		"AUTOSCALER_EDGE_SERVICE", "edge_nginx",
		"AUTOSCALER_APP_SERVICE", "{color}_app",
		"AUTOSCALER_QUERY", `sum(roomcast_connections_active{color="{color}"})`,
		"AUTOSCALER_TARGET", "5000",
		"AUTOSCALER_MIN_REPLICAS", "AUTOSCALER_MAX_REPLICAS", "20",
		"AUTOSCALER_TOLERANCE", "0.1",
		"AUTOSCALER_INTERVAL", "15s",
		"AUTOSCALER_SCALE_DOWN_WINDOW", "5m",
		"AUTOSCALER_DRY_RUN", "false",
		"AUTOSCALER_ADDR", ":8081",
		"roomcast.active", "roomcast.promoting=true", "healthcheck",
		"roomcast_autoscaler_desired_replicas", "roomcast_autoscaler_scale_events_total", "roomcast_autoscaler_errors_total",
	)
	// And every variable of the config struct and its sections, each on a line with
	// its default.
	var check func(ct reflect.Type)
	check = func(ct reflect.Type) {
		for i := range ct.NumField() {
			f := ct.Field(i)
			variable, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if variable == "" && f.Type.Kind() == reflect.Struct {
				check(f.Type)
				continue
			}
			def := f.Tag.Get("envDefault")
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(variable) + ` +` + regexp.QuoteMeta(def) + ` `).MatchString(out) {
				t.Errorf("-h has no line for %s with its default %q", variable, def)
			}
		}
	}
	check(reflect.TypeFor[config]())
}

func TestDefaults(t *testing.T) {
	// A set but empty variable means its default.
	cfg, err := loadConfig(map[string]string{"AUTOSCALER_TARGET": "", "PROMETHEUS_URL": ""})
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.autoscale()
	if cfg.PrometheusURL != "http://prometheus:9090" || cfg.DockerHost != "unix:///var/run/docker.sock" || cfg.Addr != ":8081" ||
		a.EdgeService != "edge_nginx" || a.AppService != "{color}_app" || a.Query != `sum(roomcast_connections_active{color="{color}"})` ||
		a.Policy.Target != 5000 || a.Policy.Min != 2 || a.Policy.Max != 20 || a.Policy.Tolerance != 0.1 ||
		a.Interval != 15*time.Second || a.Policy.ScaleDownWindow != 5*time.Minute || a.DryRun ||
		a.AgeQuery == "" || a.MaxDataAge != 2*time.Minute || a.Timeout != 5*time.Second {
		t.Fatalf("defaults: %+v %+v", cfg, a)
	}
	if cfg, err := loadConfig(map[string]string{"AUTOSCALER_AGE_QUERY": "off", "AUTOSCALER_SCALE_DOWN_WINDOW": "0s", "AUTOSCALER_TOLERANCE": "0"}); err != nil ||
		cfg.autoscale().AgeQuery != "" || cfg.ScaleDownWindow != 0 || cfg.Tolerance != 0 {
		t.Fatalf("off/zero values: %+v %v", cfg, err)
	}
}

func TestInvalidEnvironmentExitsTwoWithOneLineNamingTheVariable(t *testing.T) {
	tests := []struct {
		name, value string
		extra       map[string]string
	}{
		{"PROMETHEUS_URL", "prometheus:9090", nil},
		{"PROMETHEUS_URL", "ftp://prometheus", nil},
		{"PROMETHEUS_URL", "http://", nil},
		{"DOCKER_HOST", "/var/run/docker.sock", nil},
		{"DOCKER_HOST", "tcp://nohost", nil},
		{"AUTOSCALER_EDGE_SERVICE", "edge nginx", nil},
		{"AUTOSCALER_APP_SERVICE", "app", nil},
		{"AUTOSCALER_APP_SERVICE", "{color} app", nil},
		{"AUTOSCALER_QUERY", "   ", nil},
		{"AUTOSCALER_MAX_DATA_AGE", "-1s", nil},
		{"AUTOSCALER_TARGET", "0", nil},
		{"AUTOSCALER_TARGET", "-5", nil},
		{"AUTOSCALER_TARGET", "lots", nil},
		{"AUTOSCALER_TARGET", "NaN", nil},
		{"AUTOSCALER_TARGET", "+Inf", nil},
		{"AUTOSCALER_MIN_REPLICAS", "0", nil},
		{"AUTOSCALER_MIN_REPLICAS", "two", nil},
		{"AUTOSCALER_MAX_REPLICAS", "1", map[string]string{"AUTOSCALER_MIN_REPLICAS": "2"}},
		{"AUTOSCALER_TOLERANCE", "1", nil},
		{"AUTOSCALER_TOLERANCE", "-0.1", nil},
		{"AUTOSCALER_TOLERANCE", "10%", nil},
		{"AUTOSCALER_INTERVAL", "15", nil},
		{"AUTOSCALER_INTERVAL", "1ms", nil},
		{"AUTOSCALER_SCALE_DOWN_WINDOW", "-5m", nil},
		{"AUTOSCALER_SCALE_DOWN_WINDOW", "five minutes", nil},
		{"AUTOSCALER_TIMEOUT", "1ns", nil},
		{"AUTOSCALER_DRY_RUN", "maybe", nil},
		{"AUTOSCALER_ADDR", "8081", nil},
		{"ROOMCAST_LOG_FORMAT", "xml", nil},
		{"ROOMCAST_LOG_LEVEL", "loud", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			env := map[string]string{tt.name: tt.value}
			for k, v := range tt.extra {
				env[k] = v
			}
			clitest.InvalidEnv(t, name, run, env, tt.name, tt.value)
		})
	}
}

func TestUnknownFlagOrArgumentExitsTwo(t *testing.T) {
	clitest.UsageErrors(t, name, run, []string{"-interval", "1s"}, []string{"scale"}, []string{"healthcheck", "extra"})
}

// process is one run() of the autoscaler in this process.
type process struct {
	*clitest.Process
	addr string
}

func start(t *testing.T, env map[string]string) *process {
	t.Helper()
	full := map[string]string{
		"AUTOSCALER_ADDR":              "127.0.0.1:0",
		"AUTOSCALER_INTERVAL":          "100ms",
		"AUTOSCALER_SCALE_DOWN_WINDOW": "1s",
		"AUTOSCALER_TIMEOUT":           "500ms",
		"AUTOSCALER_TARGET":            "20",
	}
	for k, v := range env {
		full[k] = v
	}
	p := &process{Process: clitest.Start(t, name, run, full)}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	re := regexp.MustCompile(`"msg":"listening","addr":"([^"]+)"`)
	clitest.Eventually(t, 5*time.Second, "listening", func() error {
		if m := re.FindStringSubmatch(p.Stderr.String()); m != nil {
			p.addr = m[1]
			return nil
		}
		return errors.New("no listening line yet")
	})
	return p
}

var client = &http.Client{Timeout: 3 * time.Second}

func (p *process) get(path string) (int, string) {
	resp, err := client.Get("http://" + p.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric is the value of one series of /metrics, -1 if absent.
func (p *process) metric(series string) float64 {
	return clitest.Scrape("http://"+p.addr+"/metrics", series)
}

func ptr(n uint64) *uint64 { return &n }

func TestScalesTheActiveColorEndToEnd(t *testing.T) {
	docker := swarmtest.NewServer(t)
	docker.SetService("edge_nginx", map[string]string{"roomcast.active": "green"}, ptr(1))
	docker.SetService("green_app", nil, ptr(2))
	docker.SetService("blue_app", nil, ptr(0))
	prom := promtest.NewServer(t)
	// The samples are stamped now; the test runs well within AUTOSCALER_MAX_DATA_AGE.
	prom.Set(`sum(roomcast_connections_active{color="green"})`, promtest.Value(100, time.Now()))
	prom.Set(`time() - max(timestamp(roomcast_connections_active{color="green"}))`, promtest.Value(1, time.Now()))
	p := start(t, map[string]string{"DOCKER_HOST": docker.Host(), "PROMETHEUS_URL": prom.URL()})

	clitest.Eventually(t, 5*time.Second, "green_app scaled to 5", func() error {
		if n, _ := docker.Replicas("green_app"); n != 5 {
			return fmt.Errorf("green_app at %d", n)
		}
		return nil
	})
	if n, _ := docker.Replicas("blue_app"); n != 0 {
		t.Fatalf("the idle color was scaled to %d", n)
	}
	clitest.Eventually(t, 5*time.Second, "metrics", func() error {
		if v := p.metric("roomcast_autoscaler_desired_replicas"); v != 5 {
			return fmt.Errorf("desired_replicas %v", v)
		}
		if v := p.metric(`roomcast_autoscaler_scale_events_total{direction="up"}`); v != 1 {
			return fmt.Errorf("scale up events %v", v)
		}
		if v := p.metric(`roomcast_autoscaler_errors_total{kind="prometheus_api"}`); v != 0 {
			return fmt.Errorf("prometheus_api errors %v", v)
		}
		return nil
	})
	if code, body := p.get("/healthz"); code != 200 || !strings.Contains(body, `"status":"ok"`) || !strings.Contains(body, "last_tick") {
		t.Fatalf("/healthz %d %s", code, body)
	}
	if err := run(context.Background(), []string{"healthcheck"}, map[string]string{"AUTOSCALER_ADDR": p.addr}, io.Discard, io.Discard); err != nil {
		t.Fatalf("healthcheck of a running autoscaler: %v", err)
	}
	if !regexp.MustCompile(`"msg":"decision".*"load":100.*"current":2.*"desired":5`).MatchString(p.Stderr.String()) {
		t.Fatalf("no decision logged with its inputs:\n%s", p.Stderr)
	}

	// The release begins: nothing more happens, even with more load.
	docker.SetLabel("edge_nginx", "roomcast.promoting", "true")
	prom.Set(`sum(roomcast_connections_active{color="green"})`, promtest.Value(400, time.Now()))
	clitest.Eventually(t, 5*time.Second, "paused", func() error {
		if v := p.metric("roomcast_autoscaler_paused"); v != 1 {
			return fmt.Errorf("paused %v", v)
		}
		return nil
	})
	paused := p.metric(`roomcast_autoscaler_decisions_total{reason="paused"}`)
	clitest.Eventually(t, 5*time.Second, "three more paused ticks", func() error {
		if v := p.metric(`roomcast_autoscaler_decisions_total{reason="paused"}`); v < paused+3 {
			return fmt.Errorf("paused decisions %v", v)
		}
		return nil
	})
	if n, _ := docker.Replicas("green_app"); n != 5 {
		t.Fatalf("green_app scaled to %d during a release", n)
	}

	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestPrometheusUnreachableKeepsTheCountAndKeepsRunning(t *testing.T) {
	docker := swarmtest.NewServer(t)
	docker.SetService("edge_nginx", map[string]string{"roomcast.active": "blue"}, ptr(1))
	docker.SetService("blue_app", nil, ptr(3))
	// Nothing listens there: what the edge stack sees before Prometheus exists.
	deadAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := start(t, map[string]string{"DOCKER_HOST": docker.Host(), "PROMETHEUS_URL": "http://" + deadAddr})
	clitest.Eventually(t, 5*time.Second, "errors counted", func() error {
		if v := p.metric(`roomcast_autoscaler_errors_total{kind="prometheus_api"}`); v < 3 {
			return fmt.Errorf("prometheus_api errors %v", v)
		}
		return nil
	})
	if n, _ := docker.Replicas("blue_app"); n != 3 {
		t.Fatalf("blue_app changed to %d without data", n)
	}
	if n := docker.Count("/update"); n != 0 {
		t.Fatalf("%d updates without data", n)
	}
	if v := p.metric("roomcast_autoscaler_desired_replicas"); v != 3 {
		t.Fatalf("desired_replicas %v, want the kept 3", v)
	}
	if code, body := p.get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d %s: errors are not a reason to restart", code, body)
	}
	var line map[string]any
	for _, l := range strings.Split(p.Stderr.String(), "\n") {
		if strings.Contains(l, `"kind":"prometheus_api"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if line["level"] != "WARN" || line["current"] != 3.0 || line["desired"] != 3.0 || !strings.Contains(fmt.Sprint(line["error"]), "connect") {
		t.Fatalf("error line %v", line)
	}
}

func TestHealthcheckFailsWithoutAnAutoscaler(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	err := run(context.Background(), []string{"healthcheck"}, map[string]string{"AUTOSCALER_ADDR": addr}, io.Discard, io.Discard)
	if code := cli.ExitCode(name, err, io.Discard); code != 1 {
		t.Fatalf("healthcheck with nothing listening: exit %d (%v), want 1", code, err)
	}
}

func TestATakenPortIsAnErrorAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	docker := swarmtest.NewServer(t)
	err = run(context.Background(), nil, map[string]string{"AUTOSCALER_ADDR": ln.Addr().String(), "DOCKER_HOST": docker.Host()}, io.Discard, io.Discard)
	if code := cli.ExitCode(name, err, io.Discard); code != 1 || !strings.Contains(err.Error(), "listener") {
		t.Fatalf("exit %d (%v), want 1 naming the listener", code, err)
	}
}
