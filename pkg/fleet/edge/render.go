package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"text/template"
	"time"
)

// TimeFormat is how applied_at is written: RFC 3339 in UTC with milliseconds, so two
// applications within one second still differ.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Params are the values of the nginx config template (nginx/nginx.conf.tmpl).
type Params struct {
	// Color is the active color, "blue" or "green".
	Color string
	// AppliedAt is when this config was rendered; /.roomcast/edge reports it.
	AppliedAt time.Time
	// Backend is the name nginx resolves on every request for Color (e.g. green_app),
	// or an IP address.
	Backend string
	// BackendPort is the app's port on every replica.
	BackendPort int
	// ListenPort is nginx's port on all IPv4 interfaces.
	ListenPort int
	// ListenIPv6 also listens on [::]:ListenPort.
	ListenIPv6 bool
	// StatusPort is the second listener (all IPv4 interfaces), never published: it
	// alone serves /.roomcast/edge and stub_status, which ListenPort answers with 404.
	StatusPort int
	// LimitConn caps the open connections (WebSockets included) of one client address
	// on ListenPort; 0 sets no cap.
	LimitConn int
	// Resolver is the DNS server nginx asks, address[:port] (Docker's is 127.0.0.11).
	Resolver string
	// ResolverValid is how long nginx caches an answer.
	ResolverValid time.Duration
	// WorkerShutdownTimeout bounds how long workers of an old config keep their
	// connections (WebSockets) after a reload or a graceful stop.
	WorkerShutdownTimeout time.Duration
	// ConnectTimeout is proxy_connect_timeout: short, so a replica that went away is
	// skipped quickly for the next one.
	ConnectTimeout time.Duration
	// WSIdleTimeout is how long a WebSocket may carry nothing from its replica before
	// nginx closes it (proxy_read_timeout, proxy_send_timeout): longer than the app's
	// ping interval, so that only a replica that is gone without closing its
	// connections (its node lost power) is noticed, and its clients reconnect.
	WSIdleTimeout time.Duration
	// NextUpstreamTries is proxy_next_upstream_tries.
	NextUpstreamTries int
	// PidPath is nginx's pid file.
	PidPath string
	// ErrorLog is a file path or "stderr".
	ErrorLog string
	// AccessLog is a file path (/dev/stdout in a container) or "off".
	AccessLog string
	// ResponseLogPort is the UDP port on 127.0.0.1 where nginx sends the status of every
	// response of the public listeners (syslog), for roomcast-edge to count
	// (roomcast_edge_http_responses_total); 0 sends none. The edge sets it (see
	// Config.CountResponses).
	ResponseLogPort int
	// TempDir holds nginx's temp directories (it must exist; nginx creates the rest).
	TempDir string
	// HealthDir holds HealthFile, which the edge writes before nginx starts and removes
	// as soon as it is told to stop: the public /edgez, the load balancer's health
	// check, answers 200 while the file is there and 503 without it. Empty: no /edgez.
	HealthDir string
	// User is nginx's user directive; empty leaves it out (nginx's built-in default
	// user when started as root, the current user otherwise).
	User string
	// TLSCertFile and TLSKeyFile are the certificate chain and its key (PEM). Both set:
	// HTTPS and WSS on TLSListenPort, and ListenPort answers everything but /healthz
	// with a redirect to https on TLSPublicPort. Both empty: HTTP only.
	TLSCertFile string
	TLSKeyFile  string
	// TLSListenPort is nginx's HTTPS port on all IPv4 interfaces (and [::] with
	// ListenIPv6).
	TLSListenPort int
	// TLSPublicPort is the HTTPS port clients reach (what the redirect names); 443 is
	// left out of the URL.
	TLSPublicPort int
}

// TLS reports whether p serves HTTPS.
func (p Params) TLS() bool { return p.TLSCertFile != "" }

// HealthFile is the package's HealthFile, for the template.
func (Params) HealthFile() string { return HealthFile }

// RedirectPort is the ":port" of the redirect's URL, empty for https' default 443.
func (p Params) RedirectPort() string {
	if p.TLSPublicPort == 443 {
		return ""
	}
	return fmt.Sprintf(":%d", p.TLSPublicPort)
}

// safe is what an unquoted value (a name, an address) may contain: nothing that
// could end a directive or open a block in the rendered config.
var safe = regexp.MustCompile(`^[A-Za-z0-9._:/\[\]@+-]+$`)

// safePath is what a path may contain: it is written double-quoted, so anything but
// a quote, a backslash, a variable's $ or a control character.
var safePath = regexp.MustCompile(`^[^"\\$\x00-\x1f\x7f]+$`)

// Validate reports the first value that cannot be rendered.
func (p Params) Validate() error {
	var errs []error
	check := func(re *regexp.Regexp, name, v string, required bool) {
		if v == "" {
			if required {
				errs = append(errs, fmt.Errorf("template value %s is empty", name))
			}
			return
		}
		if !re.MatchString(v) {
			errs = append(errs, fmt.Errorf("template value %s=%q has characters nginx would misread", name, v))
		}
	}
	check(safe, "Color", p.Color, true)
	check(safe, "Backend", p.Backend, true)
	check(safe, "Resolver", p.Resolver, true)
	check(safe, "User", p.User, false)
	check(safePath, "PidPath", p.PidPath, true)
	check(safePath, "ErrorLog", p.ErrorLog, true)
	check(safePath, "AccessLog", p.AccessLog, true)
	check(safePath, "TempDir", p.TempDir, true)
	check(safePath, "HealthDir", p.HealthDir, false)
	check(safePath, "TLSCertFile", p.TLSCertFile, p.TLSKeyFile != "")
	check(safePath, "TLSKeyFile", p.TLSKeyFile, p.TLSCertFile != "")
	port := func(name string, v int) {
		if v < 1 || v > 65535 {
			errs = append(errs, fmt.Errorf("template value %s=%d is not a port", name, v))
		}
	}
	port("BackendPort", p.BackendPort)
	port("ListenPort", p.ListenPort)
	port("StatusPort", p.StatusPort)
	if p.StatusPort == p.ListenPort {
		errs = append(errs, fmt.Errorf("template value StatusPort=%d is ListenPort too: the status must not be public", p.StatusPort))
	}
	if p.TLS() {
		port("TLSListenPort", p.TLSListenPort)
		port("TLSPublicPort", p.TLSPublicPort)
		if p.TLSListenPort == p.ListenPort || p.TLSListenPort == p.StatusPort {
			errs = append(errs, fmt.Errorf("template value TLSListenPort=%d is ListenPort or StatusPort too", p.TLSListenPort))
		}
	}
	if p.ResponseLogPort != 0 {
		port("ResponseLogPort", p.ResponseLogPort)
	}
	if p.LimitConn < 0 {
		errs = append(errs, fmt.Errorf("template value LimitConn=%d is negative", p.LimitConn))
	}
	positive := func(name string, d time.Duration) {
		if d < time.Millisecond {
			errs = append(errs, fmt.Errorf("template value %s=%s is under 1ms", name, d))
		}
	}
	positive("ResolverValid", p.ResolverValid)
	positive("WorkerShutdownTimeout", p.WorkerShutdownTimeout)
	positive("ConnectTimeout", p.ConnectTimeout)
	positive("WSIdleTimeout", p.WSIdleTimeout)
	if p.NextUpstreamTries < 0 {
		errs = append(errs, fmt.Errorf("template value NextUpstreamTries=%d is negative", p.NextUpstreamTries))
	}
	if p.AppliedAt.IsZero() {
		errs = append(errs, errors.New("template value AppliedAt is not set"))
	}
	return errors.Join(errs...)
}

// Template is a parsed nginx config template.
type Template struct {
	t *template.Template
}

// nginxTime writes d as an nginx time value: whole seconds as "40s", else "1500ms".
func nginxTime(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func timestamp(t time.Time) string { return t.UTC().Format(TimeFormat) }

// quote writes s as an nginx double-quoted string (Validate keeps out what would need
// escaping).
func quote(s string) string { return `"` + s + `"` }

// ParseTemplate reads and parses the template file at path. Templates may use the
// functions nginxTime (a time.Duration as nginx writes it), timestamp (a time in
// TimeFormat) and q (a double-quoted string).
func ParseTemplate(path string) (*Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading nginx template: %w", err)
	}
	return NewTemplate(path, string(b))
}

// NewTemplate parses text as a template named name.
func NewTemplate(name, text string) (*Template, error) {
	t, err := template.New(name).
		Funcs(template.FuncMap{"nginxTime": nginxTime, "timestamp": timestamp, "q": quote}).
		Option("missingkey=error").
		Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parsing nginx template: %w", err)
	}
	return &Template{t: t}, nil
}

// Render writes the config for p to w, after validating p.
func (t *Template) Render(w io.Writer, p Params) error {
	if err := p.Validate(); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.t.Execute(&buf, p); err != nil {
		return fmt.Errorf("rendering nginx template: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// RenderFile writes the config for p to path, replacing it atomically (a new file
// renamed over the old one), so nginx never reads half a config.
func (t *Template) RenderFile(path string, p Params) error {
	var buf bytes.Buffer
	if err := t.Render(&buf, p); err != nil {
		return err
	}
	return writeFileAtomic(path, buf.Bytes())
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("writing nginx config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing nginx config: %w", err)
	}
	return nil
}
