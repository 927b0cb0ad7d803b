// Package monitoring_test checks monitoring/: the Prometheus scrape config and rules
// (promtool, and unit tests of every alert), the Grafana provisioning and dashboard
// (parsed, datasource uids, metric names against live /metrics), and every expression
// of the dashboard and the rules on a real Prometheus scraping local replicas under load.
//
// Tests that need an outside program (promtool, prometheus, nginx,
// nginx-prometheus-exporter) skip without it unless ROOMCAST_TEST_ALL=1.
package monitoring_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// net/http keeps idle-connection goroutines for a moment after use.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// The files under test, relative to this directory.
const (
	configFile     = "prometheus/prometheus.yml"
	rulesFile      = "prometheus/rules.yml"
	rulesTestFile  = "prometheus/rules_test.yml"
	datasourceFile = "grafana/provisioning/datasources/roomcast.yml"
	providerFile   = "grafana/provisioning/dashboards/roomcast.yml"
	dashboardFile  = "grafana/dashboards/roomcast.json"
	nginxTemplate  = "../nginx/nginx.conf.tmpl"
)

// mustYAML decodes the YAML file at path into v, failing on unknown fields.
func mustYAML(tb testing.TB, path string, v any) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

// readYAML decodes the YAML file at path into v, ignoring fields v does not have.
func readYAML(tb testing.TB, path string, v any) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

// --- rules ---------------------------------------------------------------------------

type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (r rule) name() string {
	if r.Alert != "" {
		return "alert " + r.Alert
	}
	return "record " + r.Record
}

func loadRules(tb testing.TB) []rule {
	tb.Helper()
	var f ruleFile
	mustYAML(tb, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		tb.Fatalf("%s has no rules", rulesFile)
	}
	return rules
}

// levelLabels are the labels a recorded series keeps, from its name's level
// (level:metric:operations, the level being the labels joined by "_").
func levelLabels(record string) []string {
	level, _, ok := strings.Cut(record, ":")
	if !ok || level == "" {
		return nil
	}
	return strings.Split(level, "_")
}

var templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// alertLabels are the series labels an alert's annotations print.
func alertLabels(r rule) []string {
	var out []string
	for _, text := range r.Annotations {
		for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
			out = append(out, m[1])
		}
	}
	return uniq(out)
}

// --- dashboard -------------------------------------------------------------------------

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboard struct {
	UID      string  `json:"uid"`
	Title    string  `json:"title"`
	Editable bool    `json:"editable"`
	Panels   []panel `json:"panels"`
	// Templating holds the variables color and instance, which the tests substitute
	// as Grafana does for "All" (dashboardVariables).
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
}

// variable is a template variable of the dashboard.
type variable struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Datasource *datasourceRef `json:"datasource"`
	Definition string         `json:"definition"`
	Query      struct {
		Query string `json:"query"`
	} `json:"query"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

// labelValues is a query variable's label_values(selector, label): its selector and
// label.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// annotation is a Prometheus annotation query of the dashboard.
type annotation struct {
	Name        string         `json:"name"`
	Datasource  *datasourceRef `json:"datasource"`
	Expr        string         `json:"expr"`
	TitleFormat string         `json:"titleFormat"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []target       `json:"targets"`
	Panels     []panel        `json:"panels"` // a collapsed row's panels
}

type target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   *datasourceRef `json:"datasource"`
}

func loadDashboard(tb testing.TB) dashboard {
	tb.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		tb.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		tb.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// panels are the dashboard's panels, rows' panels included, rows themselves not.
func (d dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

type datasourceFileYAML struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name      string         `yaml:"name"`
		UID       string         `yaml:"uid"`
		Type      string         `yaml:"type"`
		Access    string         `yaml:"access"`
		URL       string         `yaml:"url"`
		IsDefault bool           `yaml:"isDefault"`
		Editable  bool           `yaml:"editable"`
		JSONData  map[string]any `yaml:"jsonData"`
	} `yaml:"datasources"`
}

// provisionedDatasource is the one datasource of the provisioning file: its uid and
// its scrape interval (jsonData.timeInterval).
func provisionedDatasource(tb testing.TB) (uid string, scrapeInterval time.Duration) {
	tb.Helper()
	var f datasourceFileYAML
	mustYAML(tb, datasourceFile, &f)
	if len(f.Datasources) != 1 {
		tb.Fatalf("%s: want exactly one datasource, got %d", datasourceFile, len(f.Datasources))
	}
	ds := f.Datasources[0]
	if ds.UID == "" || ds.Type != "prometheus" {
		tb.Fatalf("%s: datasource %q has uid %q and type %q; want a fixed uid and type prometheus", datasourceFile, ds.Name, ds.UID, ds.Type)
	}
	ti, _ := ds.JSONData["timeInterval"].(string)
	d, err := time.ParseDuration(ti)
	if err != nil || d <= 0 {
		tb.Fatalf("%s: jsonData.timeInterval %q is not Prometheus' scrape interval: %v", datasourceFile, ti, err)
	}
	return ds.UID, d
}

// dashboardVariables are the dashboard's template variables, named without the $.
var dashboardVariables = []string{"color", "instance"}

// grafanaVariables replaces the variables the dashboard uses with what Grafana would
// send for a short time range with every color and replica chosen: $__rate_interval is
// four scrape intervals (Grafana's floor for it), a template variable set to All is its
// allValue, .* (TestDashboardIsProvisionedAsCode checks that).
func grafanaVariables(expr string, scrapeInterval time.Duration) string {
	pairs := []string{
		"$__rate_interval", promDuration(4 * scrapeInterval),
		"${__rate_interval}", promDuration(4 * scrapeInterval),
	}
	for _, v := range dashboardVariables {
		pairs = append(pairs, "${"+v+"}", ".*", "$"+v, ".*")
	}
	return strings.NewReplacer(pairs...).Replace(expr)
}

// variableUse finds the variables an expression names ($name or ${name}).
var variableUse = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`)

// promDuration writes d as PromQL does: 1m, 15s, 1500ms.
func promDuration(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// --- PromQL --------------------------------------------------------------------------

var promql = parser.NewParser(parser.Options{})

func mustParse(tb testing.TB, from, expr string) parser.Expr {
	tb.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		tb.Fatalf("%s: %q does not parse: %v", from, expr, err)
	}
	return e
}

// selectors are the vector selectors of e.
func selectors(e parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// metricNames are the metric names e reads.
func metricNames(e parser.Expr) []string {
	var out []string
	for _, vs := range selectors(e) {
		if vs.Name != "" {
			out = append(out, vs.Name)
		}
	}
	return uniq(out)
}

// measured is the quantity an alert compares: the left side of its threshold
// comparisons and of its and/unless filters, the argument of absent(). It is not
// empty while the system runs, whether the alert fires or not.
func measured(e parser.Expr) parser.Expr {
	for {
		switch n := e.(type) {
		case *parser.ParenExpr:
			e = n.Expr
		case *parser.BinaryExpr:
			if !n.Op.IsComparisonOperator() && n.Op != parser.LAND && n.Op != parser.LUNLESS {
				return e
			}
			e = n.LHS
		case *parser.Call:
			if n.Func.Name != "absent" {
				return e
			}
			e = n.Args[0]
		default:
			return e
		}
	}
}

// grouping is the labels e's outermost aggregation keeps (by (...)).
func grouping(e parser.Expr) []string {
	for {
		switch n := e.(type) {
		case *parser.ParenExpr:
			e = n.Expr
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			return n.Grouping
		default:
			return nil
		}
	}
}

func uniq(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

// --- what the live test queries ------------------------------------------------------

// query is one PromQL expression to evaluate, where it comes from, and the labels
// every series of its result must carry.
type query struct {
	from   string
	expr   string
	labels []string
	// mayBeEmpty: an alert's full expression, empty while nothing is wrong; it only has
	// to evaluate.
	mayBeEmpty bool
	// bothColors: the result has a series of each color.
	bothColors bool
}

// ruleQueries: for a recording rule its expression and its recorded series, with the
// labels its level names; for an alert the quantity it measures, with the labels its
// annotations print, and its full expression.
func ruleQueries(tb testing.TB, rules []rule) []query {
	tb.Helper()
	var out []query
	for _, r := range rules {
		e := mustParse(tb, r.name(), r.Expr)
		if r.Record != "" {
			out = append(out,
				query{from: r.name(), expr: r.Expr, labels: levelLabels(r.Record)},
				query{from: r.name() + " (recorded)", expr: r.Record, labels: levelLabels(r.Record)})
			continue
		}
		out = append(out,
			query{from: r.name() + " (measured quantity)", expr: measured(e).String(), labels: alertLabels(r)},
			query{from: r.name(), expr: r.Expr, mayBeEmpty: true})
	}
	return out
}

// dashboardQueries: every panel target, with the labels its legend prints and its
// outermost aggregation keeps; every template variable's selector, with the label whose
// values it lists; every annotation query, which may be empty (nothing happened), with
// its selectors left to selectorQueries.
func dashboardQueries(tb testing.TB, d dashboard, scrapeInterval time.Duration) []query {
	tb.Helper()
	var out []query
	for _, v := range d.Templating.List {
		m := labelValues.FindStringSubmatch(v.Query.Query)
		if m == nil {
			tb.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Query.Query)
		}
		out = append(out, query{from: "variable " + v.Name, expr: grafanaVariables(m[1], scrapeInterval), labels: []string{m[2]}})
	}
	for _, a := range d.Annotations.List {
		out = append(out, query{from: "annotation " + strconv.Quote(a.Name), expr: grafanaVariables(a.Expr, scrapeInterval), mayBeEmpty: true})
	}
	for _, p := range d.panels() {
		for _, tg := range p.Targets {
			from := "panel " + strconv.Quote(p.Title) + " " + tg.RefID
			expr := grafanaVariables(tg.Expr, scrapeInterval)
			var labels []string
			for _, m := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
				labels = append(labels, m[1])
			}
			labels = append(labels, grouping(mustParse(tb, from, expr))...)
			out = append(out, query{from: from, expr: expr, labels: uniq(labels)})
		}
	}
	return out
}

// selectorQueries: every vector selector of the queries, once each: each must find
// series on its own, so that no part of an expression reads nothing.
func selectorQueries(tb testing.TB, qs []query) []query {
	tb.Helper()
	seen := map[string]bool{}
	var out []query
	for _, q := range qs {
		for _, vs := range selectors(mustParse(tb, q.from, q.expr)) {
			s := vs.String()
			if !seen[s] {
				seen[s] = true
				out = append(out, query{from: "selector of " + q.from, expr: s})
			}
		}
	}
	return out
}
