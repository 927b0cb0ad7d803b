package monitoring_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

// localConfig derives a config for local processes from prometheus.yml: every
// dns_sd_configs name and static target found in addrs is replaced by static targets
// carrying the __meta_dns_name that DNS discovery would give them, so the relabeling
// of prometheus.yml runs unchanged; jobs left without targets are dropped. Scrapes and
// rule evaluations run every second, and the rules file is prometheus.yml's, by
// absolute path.
func localConfig(t *testing.T, addrs map[string][]string) []byte {
	t.Helper()
	b, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		t.Fatalf("%s has no global section", configFile)
	}
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = "1s", "1s", "1s"
	var rules []string
	for _, f := range cfg["rule_files"].([]any) {
		abs, err := filepath.Abs(filepath.Join(filepath.Dir(configFile), f.(string)))
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, abs)
	}
	cfg["rule_files"] = rules

	var jobs []any
	for _, j := range cfg["scrape_configs"].([]any) {
		job := j.(map[string]any)
		groups := localTargets(t, fmt.Sprintf("job %s", job["job_name"]), job, addrs)
		for _, s := range asList(job["static_configs"]) {
			for _, tg := range asList(s.(map[string]any)["targets"]) {
				if targets := addrs[tg.(string)]; len(targets) > 0 {
					groups = append(groups, map[string]any{"targets": targets})
				}
			}
		}
		for _, key := range []string{"scrape_interval", "scrape_timeout"} {
			delete(job, key) // the global 1s
		}
		delete(job, "dns_sd_configs")
		if len(groups) == 0 {
			continue
		}
		job["static_configs"] = groups
		jobs = append(jobs, job)
	}
	cfg["scrape_configs"] = jobs

	// Alertmanagers are found like targets; one with nothing local is left out.
	if alerting, _ := cfg["alerting"].(map[string]any); alerting != nil {
		var ams []any
		for _, a := range asList(alerting["alertmanagers"]) {
			am := a.(map[string]any)
			if groups := localTargets(t, "alerting", am, addrs); len(groups) > 0 {
				delete(am, "dns_sd_configs")
				am["static_configs"] = groups
				ams = append(ams, am)
			}
		}
		alerting["alertmanagers"] = ams
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// localTargets are the static target groups standing for the dns_sd_configs names of
// a scrape job or alertmanager entry, each with the __meta_dns_name DNS discovery gives.
func localTargets(t *testing.T, what string, entry map[string]any, addrs map[string][]string) []any {
	t.Helper()
	var groups []any
	for _, d := range asList(entry["dns_sd_configs"]) {
		for _, name := range asList(d.(map[string]any)["names"]) {
			if targets := addrs[name.(string)]; len(targets) > 0 {
				groups = append(groups, map[string]any{"targets": targets, "labels": map[string]string{"__meta_dns_name": name.(string)}})
			} else {
				t.Logf("%s: nothing local stands for %s: left out", what, name)
			}
		}
	}
	return groups
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// autoscalerStandIn exports the metrics of roomcast-autoscaler at rest, under the names
// pkg/fleet/autoscale registers (the real one would need a Docker API and a Prometheus to
// query of its own).
func autoscalerStandIn(t *testing.T) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	desired := prometheus.NewGauge(prometheus.GaugeOpts{Name: "roomcast_autoscaler_desired_replicas", Help: "stand-in"})
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roomcast_autoscaler_scale_events_total", Help: "stand-in"}, []string{"direction"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "roomcast_autoscaler_errors_total", Help: "stand-in"}, []string{"kind"})
	paused := prometheus.NewGauge(prometheus.GaugeOpts{Name: "roomcast_autoscaler_paused", Help: "stand-in"})
	reg.MustRegister(desired, events, errs, paused)
	desired.Set(2)
	events.WithLabelValues("up")
	events.WithLabelValues("down")
	errs.WithLabelValues("prometheus_api")
	errs.WithLabelValues("docker_api")
	return serveMetrics(t, reg)
}

// TestDashboardAndRuleExpressionsOnARealPrometheus runs Debian's Prometheus on a config
// derived from prometheus.yml, scraping two replicas (blue and green, on one NATS
// server), roomcast-edge's core with a real nginx in front of blue, nginx's stub_status
// through nginx-prometheus-exporter, and an autoscaler stand-in, while the load
// generator chats through nginx and straight to green. Then every expression of the
// dashboard and of the rules (recording rules, their recorded series, each alert's
// measured quantity, every selector on its own) returns series with the labels they
// print or group by, and no alert about the system's state fires.
func TestDashboardAndRuleExpressionsOnARealPrometheus(t *testing.T) {
	promBin := testenv.Program(t, "prometheus")
	nginxBin := testenv.Program(t, "nginx")
	exporterBin := testenv.Program(t, "nginx-prometheus-exporter")
	began := time.Now()

	ns := natstest.Start(t, natstest.JetStream(t))
	blue := startReplica(t, "blue", ns.ClientURL())
	green := startReplica(t, "green", ns.ClientURL())
	nginxPort, statusPort, edgeMetrics := runningEdge(t, nginxBin, blue.Addr().(*net.TCPAddr).Port)

	exporterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	exporter := start(t, "nginx-prometheus-exporter", exporterBin,
		fmt.Sprintf("--nginx.scrape-uri=http://127.0.0.1:%d/.roomcast/nginx_status", statusPort),
		"--web.listen-address="+exporterAddr)
	exporter.waitHTTP(t, "http://"+exporterAddr+"/metrics", 20*time.Second)

	promAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	startPrometheus(t, promBin, promAddr, localConfig(t, map[string][]string{
		"tasks.blue_app":            {blue.Addr().String()},
		"tasks.green_app":           {green.Addr().String()},
		"tasks.edge_nginx":          {edgeMetrics},
		"tasks.edge_nginx-exporter": {exporterAddr},
		"tasks.edge_autoscaler":     {autoscalerStandIn(t)},
		"localhost:9090":            {promAddr},
	}))

	// Chat through nginx (to blue) and straight to green: every room has members on
	// both replicas.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	loaded := make(chan error, 1)
	go func() {
		cfg := loadgen.DefaultConfig(loadgen.FanoutSmall)
		cfg.URLs = []string{fmt.Sprintf("ws://127.0.0.1:%d", nginxPort), "ws://" + green.Addr().String()}
		cfg.Rooms, cfg.Members, cfg.Rate = 4, 4, 2
		cfg.Duration = 2 * time.Minute // stopped as soon as the checks are done
		_, err := loadgen.Run(loadCtx, cfg)
		loaded <- err
	}()
	t.Cleanup(func() {
		stopLoad()
		select {
		case err := <-loaded:
			if err != nil {
				t.Errorf("load generator: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("load generator did not stop")
		}
	})

	client, err := api.NewClient(api.Config{Address: "http://" + promAddr})
	if err != nil {
		t.Fatal(err)
	}
	papi := v1.NewAPI(client)

	_, scrape := provisionedDatasource(t)
	qs := append(ruleQueries(t, loadRules(t)), dashboardQueries(t, loadDashboard(t), scrape)...)
	qs = append(qs, selectorQueries(t, qs)...)
	// The load reaches both colors: messages in and out, and measured delivery times.
	for _, expr := range []string{
		"color:roomcast_messages_received:rate1m > 0",
		"color:roomcast_messages_delivered:rate1m > 0",
		"color:roomcast_delivery_latency_seconds:p99_5m >= 0", // not NaN: deliveries were timed
	} {
		qs = append(qs, query{from: "the load on both colors", expr: expr, labels: []string{"color"}, bothColors: true})
	}
	checkAll(t, papi, qs, 60*time.Second)
	checkNoAlert(t, papi, 20*time.Second)
	t.Logf("%d expressions checked, %s after the start", len(qs), time.Since(began).Round(time.Second))
}

// startPrometheus runs Debian's Prometheus on config at addr until the test ends, and
// waits until it is ready. Alerts are resent every second (not every minute): one sent
// before Prometheus knew its Alertmanager would otherwise wait that long.
func startPrometheus(t *testing.T, bin, addr string, config []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, config, 0o644); err != nil {
		t.Fatal(err)
	}
	prom := start(t, "prometheus", bin,
		"--config.file="+path,
		"--storage.tsdb.path="+t.TempDir(),
		"--web.listen-address="+addr,
		"--rules.alert.resend-delay=1s",
		"--log.level=warn")
	prom.waitHTTP(t, "http://"+addr+"/-/ready", 30*time.Second)
}

// checkAll evaluates every query until each returns series with its labels, polling for
// at most within (data appears as scrapes and rule evaluations come in).
func checkAll(t *testing.T, papi v1.API, qs []query, within time.Duration) {
	t.Helper()
	pending := slices.Clone(qs)
	deadline := time.Now().Add(within)
	for {
		var left []query
		var why []string
		for _, q := range pending {
			if reason := check(papi, q); reason != "" {
				left, why = append(left, q), append(why, reason)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for i, q := range left {
				t.Errorf("%s: %s\n    %s", q.from, why[i], q.expr)
			}
			return
		}
		pending = left
		time.Sleep(time.Second)
	}
}

// check evaluates q now and says what is wrong with its result, or "".
func check(papi v1.API, q query) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	val, _, _, err := papi.Query(ctx, q.expr, time.Now())
	if err != nil {
		var apiErr *v1.Error
		if errors.As(err, &apiErr) && apiErr.Type == v1.ErrBadData {
			return "does not evaluate: " + err.Error()
		}
		return "query failed: " + err.Error()
	}
	if q.mayBeEmpty {
		return ""
	}
	vec, ok := val.(model.Vector)
	if !ok {
		return fmt.Sprintf("result is a %s, not an instant vector", val.Type())
	}
	if len(vec) == 0 {
		return "no data"
	}
	colors := map[string]bool{}
	for _, s := range vec {
		for _, l := range q.labels {
			if s.Metric[model.LabelName(l)] == "" {
				return fmt.Sprintf("series %s lacks label %q", s.Metric, l)
			}
		}
		if c, ok := s.Metric["color"]; ok {
			if c != "blue" && c != "green" {
				return fmt.Sprintf("series %s: color is not blue or green", s.Metric)
			}
			colors[string(c)] = true
		}
	}
	if q.bothColors && len(colors) != 2 {
		return "colors " + strconv.Itoa(len(colors)) + " of 2: " + vec.String()
	}
	return ""
}

// timingAlerts depend on how fast this machine is, not on the state of the system.
var timingAlerts = []string{"RoomcastDeliveryLatencyHigh", "RoomcastSlowConsumers", "RoomcastBrokerSlowConsumer"}

// checkNoAlert waits, for at most within, until no alert about the system's state is
// pending or firing (one may be pending for a moment at start, before the edge's
// metrics are first scraped).
func checkNoAlert(t *testing.T, papi v1.API, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		alerts, err := papi.Alerts(ctx)
		cancel()
		if err != nil {
			t.Fatalf("listing alerts: %v", err)
		}
		var active []string
		for _, a := range alerts.Alerts {
			if name := string(a.Labels["alertname"]); !slices.Contains(timingAlerts, name) {
				active = append(active, fmt.Sprintf("%s %s (%s)", name, a.Labels, a.State))
			}
		}
		if len(active) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("alerts active on a healthy system: %v", active)
			return
		}
		time.Sleep(time.Second)
	}
}
