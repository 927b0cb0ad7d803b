package bluegreen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/template"
)

// alertmanagerSecretPrefix starts the name of the secret holding Alertmanager's
// rendered configuration (which holds the webhook URL).
const alertmanagerSecretPrefix = "roomcast_alertmanager_"

// AlertmanagerConfig is what the Alertmanager configuration template
// (monitoring/alertmanager/alertmanager.yml.tmpl) is rendered with.
type AlertmanagerConfig struct {
	// WebhookURL receives every notification; empty: none is sent.
	WebhookURL string
}

// RenderAlertmanagerConfig renders the Alertmanager configuration template tmpl with c.
// The template writes strings with yamlString, which quotes any text safely. A webhook
// URL must be an absolute http or https URL.
func RenderAlertmanagerConfig(tmpl []byte, c AlertmanagerConfig) ([]byte, error) {
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL is a credential: the error does not show it.
			return nil, errors.New("the webhook URL is not an absolute http:// or https:// URL")
		}
	}
	t, err := template.New("alertmanager.yml").Option("missingkey=error").Funcs(template.FuncMap{
		// A JSON string is a YAML double-quoted scalar.
		"yamlString": func(s string) (string, error) {
			b, err := json.Marshal(s)
			return string(b), err
		},
	}).Parse(string(tmpl))
	if err != nil {
		return nil, fmt.Errorf("parsing the Alertmanager configuration template: %w", err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, c); err != nil {
		return nil, fmt.Errorf("rendering the Alertmanager configuration: %w", err)
	}
	return out.Bytes(), nil
}

// ensureAlertmanagerSecret renders AlertmanagerTemplate with the URL of
// AlertmanagerWebhookURLFile (when set) and returns the ID of the Swarm secret holding
// the result, creating the secret if missing.
func (r *Release) ensureAlertmanagerSecret(ctx context.Context) (string, error) {
	tmpl, err := os.ReadFile(r.Config.AlertmanagerTemplate)
	if err != nil {
		return "", fmt.Errorf("reading the Alertmanager configuration template: %w", err)
	}
	var c AlertmanagerConfig
	if f := r.Config.AlertmanagerWebhookURLFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("reading ALERTMANAGER_WEBHOOK_URL_FILE: %w", err)
		}
		if c.WebhookURL = strings.TrimSpace(string(b)); c.WebhookURL == "" {
			return "", fmt.Errorf("ALERTMANAGER_WEBHOOK_URL_FILE=%s is empty", f)
		}
	} else {
		r.logf("warning: ALERTMANAGER_WEBHOOK_URL_FILE is not set: alerts reach no one (Alertmanager's UI shows them)")
	}
	data, err := RenderAlertmanagerConfig(tmpl, c)
	if err != nil {
		return "", fmt.Errorf("ALERTMANAGER_WEBHOOK_URL_FILE=%s: %w", r.Config.AlertmanagerWebhookURLFile, err)
	}
	return r.ensureSecretData(ctx, alertmanagerSecretPrefix, "roomcast.alertmanager", "the Alertmanager configuration", data)
}
