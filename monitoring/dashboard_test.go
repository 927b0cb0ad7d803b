package monitoring_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/fleet/edge"
)

// dashboardUID is the dashboard's fixed uid: links to it (and Grafana's provisioning,
// which matches dashboards by uid) rely on it.
const dashboardUID = "roomcast-overview"

func TestDashboardIsProvisionedAsCode(t *testing.T) {
	d := loadDashboard(t)
	uid, _ := provisionedDatasource(t)
	if d.UID != dashboardUID {
		t.Errorf("dashboard uid %q, want the fixed %q", d.UID, dashboardUID)
	}
	if d.Editable {
		t.Error("dashboard is editable: it is provisioned from the JSON file, edit that instead")
	}
	var names []string
	for _, v := range d.Templating.List {
		names = append(names, v.Name)
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != uid || v.Definition != v.Query.Query ||
			!labelValues.MatchString(v.Query.Query) {
			t.Errorf("variable %s: %+v, want a label_values query of the provisioned datasource", v.Name, v)
		}
		if !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("variable %s: includeAll %v, allValue %q; want All as .* (what the tests substitute)", v.Name, v.IncludeAll, v.AllValue)
		}
	}
	if !slices.Equal(names, dashboardVariables) {
		t.Errorf("template variables %v, want %v (the ones the tests substitute)", names, dashboardVariables)
	}
	var exprs []string
	for _, a := range d.Annotations.List {
		if a.Datasource == nil || a.Datasource.UID != uid || strings.TrimSpace(a.Expr) == "" || a.TitleFormat == "" {
			t.Errorf("annotation %q: %+v, want an expression and a title of the provisioned datasource", a.Name, a)
		}
		exprs = append(exprs, a.Expr)
	}
	for _, v := range d.Templating.List {
		exprs = append(exprs, v.Query.Query)
	}
	for _, p := range d.panels() {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, e := range exprs {
		for _, m := range variableUse.FindAllStringSubmatch(e, -1) {
			if !strings.HasPrefix(m[1], "__") && !slices.Contains(dashboardVariables, m[1]) {
				t.Errorf("%q uses $%s, which is neither a template variable nor one of Grafana's", e, m[1])
			}
		}
	}
	ids := map[int]bool{}
	panels := d.panels()
	if len(panels) == 0 {
		t.Fatal("dashboard has no panel")
	}
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource == nil || p.Datasource.UID != uid || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v, want the provisioned prometheus uid %q", p.Title, p.Datasource, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != uid {
				t.Errorf("panel %q query %s: datasource %+v, want uid %q", p.Title, tg.RefID, tg.Datasource, uid)
			}
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
				t.Errorf("panel %q: a query without expr or refId", p.Title)
			}
		}
	}

	var providers struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Type     string
			AllowUIUpdates bool `yaml:"allowUiUpdates"`
			Options        struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, providerFile, &providers)
	if providers.APIVersion != 1 || len(providers.Providers) != 1 {
		t.Fatalf("%s: want apiVersion 1 and one provider: %+v", providerFile, providers)
	}
	if p := providers.Providers[0]; p.Type != "file" || p.AllowUIUpdates || !strings.HasPrefix(p.Options.Path, "/") {
		t.Errorf("%s: provider %+v, want type file, no UI updates, an absolute path", providerFile, p)
	}
}

// expandRecorded replaces recorded series among names by the metrics their rules read,
// recursively.
func expandRecorded(t *testing.T, names []string, rules []rule) []string {
	t.Helper()
	recorded := map[string][]string{}
	for _, r := range rules {
		if r.Record != "" {
			recorded[r.Record] = metricNames(mustParse(t, r.name(), r.Expr))
		}
	}
	var out []string
	var walk func(string, int)
	walk = func(name string, depth int) {
		reads, ok := recorded[name]
		if !ok {
			out = append(out, name)
			return
		}
		if depth > 10 {
			t.Fatalf("recording rules loop through %s", name)
		}
		for _, n := range reads {
			walk(n, depth+1)
		}
	}
	for _, n := range names {
		walk(n, 0)
	}
	return uniq(out)
}

func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	_, scrape := provisionedDatasource(t)
	var names []string
	for _, q := range dashboardQueries(t, loadDashboard(t), scrape) {
		names = append(names, metricNames(mustParse(t, q.from, q.expr))...)
	}
	return expandRecorded(t, names, loadRules(t))
}

func TestDashboardShowsWhatOperatorsNeed(t *testing.T) {
	have := dashboardMetrics(t)
	for what, metric := range map[string]string{
		"connections per color and replica": "roomcast_connections_active",
		"messages received per second":      "roomcast_messages_received_total",
		"messages delivered per second":     "roomcast_messages_delivered_total",
		"delivery latency percentiles":      "roomcast_delivery_latency_seconds_bucket",
		"errors by kind":                    "roomcast_errors_total",
		"ready replicas per color":          "roomcast_ready",
		"NATS connection state":             "roomcast_broker_connected",
		"autoscaler decisions":              "roomcast_autoscaler_desired_replicas",
		"autoscaler scale events":           "roomcast_autoscaler_scale_events_total",
		"the color nginx routes to":         "roomcast_edge_active_color",
		"replica names (for connections)":   "roomcast_build_info",
		"nginx connections (stub_status)":   "nginx_connections_active",
		"rooms per replica":                 "roomcast_rooms_active",
		"memory (RSS)":                      "process_resident_memory_bytes",
		"goroutines":                        "go_goroutines",
		"open file descriptors":             "process_open_fds",
		"GC pauses":                         "go_gc_duration_seconds",
		"admission refusals by reason":      "roomcast_admission_rejected_total",
		"auth refusals by reason":           "roomcast_auth_failures_total",
		"history errors":                    "roomcast_history_errors_total",
		"catch-up retries":                  "roomcast_room_catchup_retries_total",
		"NATS round trip":                   "roomcast_broker_rtt_seconds",
		"new connections per second":        "roomcast_connections_total",
		"color flips (annotation)":          "roomcast_edge_reloads_total",
		"nginx responses by status class":   "roomcast_edge_http_responses_total",
	} {
		if !slices.Contains(have, metric) {
			t.Errorf("the dashboard does not show %s (%s)", what, metric)
		}
	}
}

// TestEveryMetricNamedIsExported checks every metric the dashboard and the rules read
// (through recorded series) against the /metrics of what exports it: a running replica,
// roomcast-edge's metrics (pkg/fleet/edge, built as roomcast-edge builds it). Those of
// nginx-prometheus-exporter and the autoscaler are checked by
// TestDashboardAndRuleExpressionsOnARealPrometheus, which runs them (the autoscaler as a
// stand-in exporting the contract's names).
func TestEveryMetricNamedIsExported(t *testing.T) {
	rep := startReplica(t, "blue", "")
	replicaNames := sampleNames(t, rep.Addr().String())

	reg := prometheus.NewRegistry()
	cfg := edgeConfig(t.TempDir(), 80, 8081, 8080, "127.0.0.11")
	newEdge(t, cfg, edge.NewNginx("nginx", cfg.ConfigPath, nil, nil), reg)
	edgeNames := sampleNames(t, serveMetrics(t, reg))

	rules := loadRules(t)
	var ruleNames []string
	for _, r := range rules {
		ruleNames = append(ruleNames, metricNames(mustParse(t, r.name(), r.Expr))...)
	}
	for _, name := range uniq(append(dashboardMetrics(t), expandRecorded(t, ruleNames, rules)...)) {
		switch {
		case name == "up":
			// Prometheus' own, for every target.
		case strings.HasPrefix(name, "roomcast_edge_"):
			if !edgeNames[name] {
				t.Errorf("%s is not in roomcast-edge's /metrics", name)
			}
		case strings.HasPrefix(name, "nginx_"), strings.HasPrefix(name, "roomcast_autoscaler_"):
			// Checked on a real Prometheus.
		default:
			if !replicaNames[name] {
				t.Errorf("%s is not in a replica's /metrics", name)
			}
		}
	}
}
