package monitoring_test

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/testenv"
)

// promtool runs Debian's promtool with args in this directory.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := testenv.Program(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPrometheusConfigIsValid(t *testing.T) {
	// Also checks the rule files it names, resolved as Prometheus resolves them.
	out := promtool(t, "check", "config", configFile)
	if !strings.Contains(out, "1 rule files found") {
		t.Errorf("promtool found no rule file through %s:\n%s", configFile, out)
	}
}

func TestRulesAreValid(t *testing.T) {
	promtool(t, "check", "rules", rulesFile)
}

func TestRuleUnitTestsPass(t *testing.T) {
	promtool(t, "test", "rules", rulesTestFile)
}

// rulesTests is the part of promtool's unit test file that says which alerts fire.
type rulesTests struct {
	RuleFiles          []string `yaml:"rule_files"`
	EvaluationInterval string   `yaml:"evaluation_interval"`
	Tests              []struct {
		Name          string `yaml:"name"`
		Interval      string `yaml:"interval"`
		InputSeries   any    `yaml:"input_series"`
		PromQLExprTst any    `yaml:"promql_expr_test"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func TestEveryAlertHasATestThatFiresItAndOneThatDoesNot(t *testing.T) {
	var f rulesTests
	mustYAML(t, rulesTestFile, &f)
	if !slices.Equal(f.RuleFiles, []string{"rules.yml"}) {
		t.Fatalf("%s tests %v, want rules.yml", rulesTestFile, f.RuleFiles)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname]++
			} else {
				quiet[a.Alertname]++
			}
		}
	}
	alerts := map[string]bool{}
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		alerts[r.Alert] = true
		if fires[r.Alert] == 0 {
			t.Errorf("alert %s: no test case where it fires", r.Alert)
		}
		if quiet[r.Alert] == 0 {
			t.Errorf("alert %s: no test case where it does not fire", r.Alert)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s: want a severity label and summary and description annotations", r.Alert)
		}
	}
	for name := range fires {
		if !alerts[name] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
	for name := range quiet {
		if !alerts[name] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
}

func TestRecordedSeriesAreNamedByTheirLabels(t *testing.T) {
	for _, r := range loadRules(t) {
		if r.Record == "" {
			continue
		}
		parts := strings.Split(r.Record, ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			t.Errorf("record %s: want level:metric:operations", r.Record)
			continue
		}
		// The outermost aggregation keeps exactly the level's labels (a filter such
		// as == 1 may sit around it).
		e := measured(mustParse(t, r.name(), r.Expr))
		if g := grouping(e); g != nil && !slices.Equal(uniq(g), uniq(levelLabels(r.Record))) {
			t.Errorf("record %s: aggregates by %v, its name says %v", r.Record, g, levelLabels(r.Record))
		}
	}
}

// scrapeConfig is what the tests read of prometheus.yml.
type scrapeConfig struct {
	Global        map[string]any `yaml:"global"`
	RuleFiles     []string       `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName    string `yaml:"job_name"`
		DNSConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

func TestReplicasAreFoundThroughTasksDNSNeverTheVIP(t *testing.T) {
	var c scrapeConfig
	readYAML(t, configFile, &c)
	jobs := map[string][]string{}
	for _, sc := range c.ScrapeConfigs {
		for _, d := range sc.DNSConfigs {
			if d.Type != "A" || d.Port == 0 {
				t.Errorf("job %s: dns_sd_configs want type A and a port, got %q %d", sc.JobName, d.Type, d.Port)
			}
			for _, name := range d.Names {
				if !strings.HasPrefix(name, "tasks.") {
					t.Errorf("job %s: %s is a service name (one VIP, or a balanced name): want tasks.%s", sc.JobName, name, name)
				}
				jobs[sc.JobName] = append(jobs[sc.JobName], name)
			}
		}
	}
	if got := uniq(jobs["roomcast"]); !slices.Equal(got, []string{"tasks.blue_app", "tasks.green_app"}) {
		t.Errorf("job roomcast finds %v, want the tasks of both colors", got)
	}
	for _, job := range []string{"edge", "nginx", "nats", "autoscaler"} {
		if len(jobs[job]) == 0 {
			t.Errorf("no DNS-discovered job %s", job)
		}
	}
}
