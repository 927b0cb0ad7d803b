package monitoring_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/testenv"
)

// alertmanagerTemplate is Alertmanager's configuration template, rendered by
// roomcast-release (bluegreen.RenderAlertmanagerConfig).
const alertmanagerTemplate = "alertmanager/alertmanager.yml.tmpl"

// renderAlertmanager writes the configuration roomcast-release would make with
// webhookURL into a temporary file and returns its path.
func renderAlertmanager(t *testing.T, webhookURL string) string {
	t.Helper()
	tmpl, err := os.ReadFile(alertmanagerTemplate)
	if err != nil {
		t.Fatal(err)
	}
	out, err := bluegreen.RenderAlertmanagerConfig(tmpl, bluegreen.AlertmanagerConfig{WebhookURL: webhookURL})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "alertmanager.yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAlertmanagerConfigIsValid(t *testing.T) {
	amtool := testenv.Program(t, "amtool")
	for _, tt := range []struct{ name, url string }{
		{"without a webhook", ""},
		{"with a webhook", "https://hooks.example.com/services/T0/B0/x?a=1&b=\"2\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, amtool, "check-config", renderAlertmanager(t, tt.url)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "SUCCESS") || !strings.Contains(string(out), " - 1 receivers") {
				t.Fatalf("amtool check-config: %v\n%s", err, out)
			}
		})
	}
}

// webhookPayload is what Alertmanager posts to a webhook (version 4), the parts read.
type webhookPayload struct {
	Version  string `json:"version"`
	Status   string `json:"status"`
	Receiver string `json:"receiver"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

// TestAFiringAlertReachesTheWebhook runs Debian's Prometheus on the config derived from
// prometheus.yml (its alerting block pointed at a local Alertmanager) with rules.yml
// plus one rule that always fires, and Debian's Alertmanager on the configuration
// roomcast-release renders, with the webhook URL of a test server: the alert arrives
// there, through the route and receiver of the template.
func TestAFiringAlertReachesTheWebhook(t *testing.T) {
	promBin := testenv.Program(t, "prometheus")
	amBin := testenv.Program(t, "prometheus-alertmanager", "alertmanager")

	var (
		mu       sync.Mutex
		payloads []webhookPayload
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p webhookPayload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || r.URL.Path != "/hook/secret" {
			t.Errorf("webhook got %s %s: %v", r.Method, r.URL, err)
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		payloads = append(payloads, p)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)

	amAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	am := start(t, "alertmanager", amBin,
		"--config.file="+renderAlertmanager(t, hook.URL+"/hook/secret"),
		"--storage.path="+t.TempDir(),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=",
		"--log.level=warn")
	am.waitHTTP(t, "http://"+amAddr+"/-/ready", 30*time.Second)

	always := filepath.Join(t.TempDir(), "always.yml")
	if err := os.WriteFile(always, []byte(`groups:
  - name: test
    rules:
      - alert: RoomcastTestAlwaysFiring
        expr: vector(1)
        labels: {severity: critical, color: blue}
        annotations: {summary: "fires from the start"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	var cfg map[string]any
	if err := yaml.Unmarshal(localConfig(t, map[string][]string{
		"tasks.edge_alertmanager": {amAddr},
		"localhost:9090":          {promAddr},
	}), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["rule_files"] = append(asList(cfg["rule_files"]), always)
	config, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	startPrometheus(t, promBin, promAddr, config)

	ready := time.Now()
	// Critical alerts wait 10s in Alertmanager (group_wait), after a rule evaluation.
	deadline := time.Now().Add(90 * time.Second)
	for {
		mu.Lock()
		got := append([]webhookPayload(nil), payloads...)
		mu.Unlock()
		for _, p := range got {
			for _, a := range p.Alerts {
				if a.Labels["alertname"] == "RoomcastTestAlwaysFiring" && a.Status == "firing" && p.Receiver == "operators" && p.Version == "4" {
					if a.Annotations["summary"] != "fires from the start" || a.Labels["severity"] != "critical" {
						t.Errorf("alert %+v: want its labels and annotations", a)
					}
					t.Logf("the alert arrived %s after Prometheus was ready", time.Since(ready).Round(time.Second))
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no firing RoomcastTestAlwaysFiring at the webhook after 90s; it got %+v", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
