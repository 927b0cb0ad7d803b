package bluegreen_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"roomcast/pkg/fleet/bluegreen"
)

// alertmanagerTemplate is the repository's Alertmanager configuration template.
var alertmanagerTemplate = filepath.Join("..", "..", "..", "monitoring", "alertmanager", "alertmanager.yml.tmpl")

// webhookURLs are the webhook URLs of a rendered configuration's receivers.
func webhookURLs(t *testing.T, config []byte) []string {
	t.Helper()
	var c struct {
		Receivers []struct {
			Name           string `yaml:"name"`
			WebhookConfigs []struct {
				URL string `yaml:"url"`
			} `yaml:"webhook_configs"`
		} `yaml:"receivers"`
	}
	if err := yaml.Unmarshal(config, &c); err != nil {
		t.Fatalf("the rendered configuration is not YAML: %v\n%s", err, config)
	}
	var urls []string
	for _, r := range c.Receivers {
		for _, w := range r.WebhookConfigs {
			urls = append(urls, w.URL)
		}
	}
	return urls
}

func TestAlertmanagerConfigQuotesTheWebhookURL(t *testing.T) {
	tmpl, err := os.ReadFile(alertmanagerTemplate)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url string
		want      []string
	}{
		{"none", "", nil},
		{"plain", "https://hooks.example.com/T0/B0/x", []string{"https://hooks.example.com/T0/B0/x"}},
		{"YAML's characters", `https://relay.example.com/a?b=c&d="e"#: {x} - y`, []string{`https://relay.example.com/a?b=c&d="e"#: {x} - y`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := bluegreen.RenderAlertmanagerConfig(tmpl, bluegreen.AlertmanagerConfig{WebhookURL: tt.url})
			if err != nil {
				t.Fatal(err)
			}
			if got := webhookURLs(t, out); !slices.Equal(got, tt.want) {
				t.Errorf("webhook URLs %q, want %q\n%s", got, tt.want, out)
			}
		})
	}
	for _, bad := range []string{"hooks.example.com/x", "ftp://example.com/x", "https:///x", "https://exa mple.com/\n  - url: x"} {
		if _, err := bluegreen.RenderAlertmanagerConfig(tmpl, bluegreen.AlertmanagerConfig{WebhookURL: bad}); err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("URL %q: error %v, want one that does not show the URL", bad, err)
		}
	}
}

// The rendered configuration, webhook URL included, is a Swarm secret named after its
// content: made once, mounted by the edge stack (ALERTMANAGER_SECRET_ID), never logged.
func TestAlertmanagerConfigIsASwarmSecretWithTheWebhookURL(t *testing.T) {
	h := newHarness(t)
	const url = "https://hooks.example.com/services/T000/B000/secretpart"
	file := filepath.Join(t.TempDir(), "webhook-url")
	if err := os.WriteFile(file, []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.rel.Config.AlertmanagerWebhookURLFile = file
	envs := h.edgeEnv()
	for i := range 2 {
		if err := h.rel.Deploy(h.ctx()); err != nil {
			t.Fatalf("deploy %d: %v\n%s", i+1, err, h.out)
		}
	}
	id := (*envs)[0]["ALERTMANAGER_SECRET_ID"]
	if id == "" || (*envs)[1]["ALERTMANAGER_SECRET_ID"] != id {
		t.Fatalf("ALERTMANAGER_SECRET_ID %q then %q, want the same secret", id, (*envs)[1]["ALERTMANAGER_SECRET_ID"])
	}
	data, labels, ok := h.fake.Secret("roomcast_alertmanager_" + id)
	if !ok || labels["roomcast.alertmanager"] != "true" {
		t.Fatalf("secret roomcast_alertmanager_%s: %v %v", id, ok, labels)
	}
	if got := webhookURLs(t, data); !slices.Equal(got, []string{url}) {
		t.Errorf("the secret's webhook URLs %q, want %q", got, url)
	}
	h.expectNotLogged(url, *envs)
	if strings.Contains(h.out.String(), "reach no one") {
		t.Errorf("warned of no webhook:\n%s", h.out)
	}
}

func TestAlertmanagerWithoutAWebhookWarnsAndABadURLStopsTheDeploy(t *testing.T) {
	h := newHarness(t)
	if err := h.rel.Deploy(h.ctx()); err != nil {
		t.Fatalf("deploy: %v\n%s", err, h.out)
	}
	if !strings.Contains(h.out.String(), "ALERTMANAGER_WEBHOOK_URL_FILE is not set: alerts reach no one") {
		t.Errorf("no warning that alerts reach no one:\n%s", h.out)
	}

	h = newHarness(t)
	file := filepath.Join(t.TempDir(), "webhook-url")
	if err := os.WriteFile(file, []byte("hooks.example.com/secretpart\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.rel.Config.AlertmanagerWebhookURLFile = file
	err := h.rel.Deploy(h.ctx())
	h.expectErr(err, "ALERTMANAGER_WEBHOOK_URL_FILE="+file+": the webhook URL is not an absolute http:// or https:// URL")
	if strings.Contains(err.Error(), "secretpart") || strings.Contains(h.out.String(), "secretpart") {
		t.Errorf("the URL shows: %v\n%s", err, h.out)
	}
	if d := h.stacks.Deploys(); len(d) != 0 {
		t.Errorf("deployed %v", d)
	}
}
