// Command grafana-standin stands in for Grafana in a Swarm test where the Grafana image
// cannot be had (it is not in Debian and no registry is reachable). It is NOT Grafana:
// it answers GET /api/health, and only after checking that the provisioning files
// stack/edge.yml mounts are where Grafana reads them and that every dashboard parses as
// JSON; and it lets in whom Grafana would, so that a test can prove who gets in. The
// dashboards themselves are checked against a real Prometheus by monitoring/'s tests.
//
// It listens on GF_SERVER_HTTP_PORT (default 3000) and reads GF_PATHS_PROVISIONING
// (default /etc/grafana/provisioning) and ROOMCAST_GRAFANA_DASHBOARDS (default
// /etc/grafana/dashboards). It honours Grafana's variables for who gets in:
// GF_SECURITY_ADMIN_USER and GF_SECURITY_ADMIN_PASSWORD (default admin and admin), each
// also as <name>__FILE, a file whose content without trailing newlines is the value (as
// the Grafana image's entrypoint reads it; both forms at once are an error);
// GF_AUTH_ANONYMOUS_ENABLED (default false: an anonymous viewer when true) and
// GF_USERS_ALLOW_SIGN_UP (default false). Behind basic authentication it answers
// GET /api/org (the admin, or anyone when anonymous access is on), GET /api/user (the
// admin) and POST /api/user/signup (401 while sign-up is off), with Grafana's status
// codes. Unlike Grafana, which sets the admin password in its database once, when the
// database is new, the stand-in reads it at every start.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, "grafana-standin:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done; listening is sent the bound address when not nil.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer, listening chan<- net.Addr) error {
	port := or(getenv("GF_SERVER_HTTP_PORT"), "3000")
	provisioning := or(getenv("GF_PATHS_PROVISIONING"), "/etc/grafana/provisioning")
	dashboards := or(getenv("ROOMCAST_GRAFANA_DASHBOARDS"), "/etc/grafana/dashboards")
	fmt.Fprintln(stdout, "grafana-standin: a STAND-IN for Grafana, answering /api/health and a few authenticated calls; this is not Grafana")

	access, err := loadAccess(getenv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "grafana-standin: admin user %q, anonymous access %v, sign-up %v\n", access.user, access.anonymous, access.signUp)

	problems := check(provisioning, dashboards)
	for _, p := range problems {
		fmt.Fprintln(stdout, "grafana-standin: provisioning problem:", p)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, _ *http.Request) {
		body := map[string]any{"database": "ok", "version": "stand-in", "standin": true}
		if len(problems) > 0 {
			body["database"], body["problems"] = "provisioning files missing or invalid", problems
			reply(w, http.StatusServiceUnavailable, body)
			return
		}
		reply(w, http.StatusOK, body)
	})
	access.routes(mux)
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return fmt.Errorf("listening on :%s: %w", port, err)
	}
	if listening != nil {
		listening <- ln.Addr()
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// check lists what Grafana would not find: a provider file in each provisioning
// directory, and at least one dashboard, each valid JSON with a uid.
func check(provisioning, dashboards string) []string {
	var problems []string
	for _, dir := range []string{"datasources", "dashboards"} {
		files, _ := filepath.Glob(filepath.Join(provisioning, dir, "*.y*ml"))
		if len(files) == 0 {
			problems = append(problems, fmt.Sprintf("no YAML file in %s", filepath.Join(provisioning, dir)))
		}
	}
	files, _ := filepath.Glob(filepath.Join(dashboards, "*.json"))
	if len(files) == 0 {
		problems = append(problems, fmt.Sprintf("no dashboard in %s", dashboards))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		var d struct {
			UID string `json:"uid"`
		}
		if err == nil {
			err = json.Unmarshal(b, &d)
		}
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", f, err))
		case strings.TrimSpace(d.UID) == "":
			problems = append(problems, fmt.Sprintf("%s: no uid", f))
		}
	}
	return problems
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// access is who gets in, from Grafana's variables.
type access struct {
	user, password    string
	anonymous, signUp bool
}

func loadAccess(getenv func(string) string) (access, error) {
	var a access
	var err error
	value := func(name, def string) string {
		v, e := fromFile(getenv, name)
		if e != nil && err == nil {
			err = e
		}
		return or(v, def)
	}
	a.user = value("GF_SECURITY_ADMIN_USER", "admin")
	a.password = value("GF_SECURITY_ADMIN_PASSWORD", "admin")
	for _, b := range []struct {
		name string
		to   *bool
	}{{"GF_AUTH_ANONYMOUS_ENABLED", &a.anonymous}, {"GF_USERS_ALLOW_SIGN_UP", &a.signUp}} {
		switch v := strings.ToLower(value(b.name, "false")); v {
		case "true", "false":
			*b.to = v == "true"
		default:
			return a, fmt.Errorf("%s=%q, want true or false", b.name, v)
		}
	}
	return a, err
}

// fromFile is the variable name, or the content of the file <name>__FILE names without
// its trailing newlines, as the Grafana image's entrypoint reads it.
func fromFile(getenv func(string) string, name string) (string, error) {
	file := getenv(name + "__FILE")
	if file == "" {
		return getenv(name), nil
	}
	if getenv(name) != "" {
		return "", fmt.Errorf("both %s and %s__FILE are set (but are exclusive)", name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading %s__FILE: %w", name, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// routes adds the API behind authentication. Grafana answers a request without valid
// credentials with 401 unless anonymous access is on, and refuses wrong credentials
// even then.
func (a access) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/org", func(w http.ResponseWriter, r *http.Request) {
		if admin, ok := a.authenticate(w, r); ok && (admin || a.anonymous) {
			reply(w, http.StatusOK, map[string]any{"id": 1, "name": "Main Org."})
		} else if ok {
			reply(w, http.StatusUnauthorized, map[string]any{"message": "Unauthorized"})
		}
	})
	mux.HandleFunc("GET /api/user", func(w http.ResponseWriter, r *http.Request) {
		if admin, ok := a.authenticate(w, r); ok && admin {
			reply(w, http.StatusOK, map[string]any{"id": 1, "login": a.user, "isGrafanaAdmin": true})
		} else if ok {
			reply(w, http.StatusUnauthorized, map[string]any{"message": "Unauthorized"})
		}
	})
	mux.HandleFunc("POST /api/user/signup", func(w http.ResponseWriter, _ *http.Request) {
		if !a.signUp {
			reply(w, http.StatusUnauthorized, map[string]any{"message": "User signup is disabled"})
			return
		}
		reply(w, http.StatusOK, map[string]any{"message": "Sign up started (stand-in: nobody is created)"})
	})
}

// authenticate reports whether r carries the admin's credentials; it answers 401 and
// returns ok false when r carries others.
func (a access) authenticate(w http.ResponseWriter, r *http.Request) (admin, ok bool) {
	user, password, given := r.BasicAuth()
	if !given {
		return false, true
	}
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(a.user)) == 1
	passwordOK := subtle.ConstantTimeCompare([]byte(password), []byte(a.password)) == 1
	if userOK && passwordOK {
		return true, true
	}
	reply(w, http.StatusUnauthorized, map[string]any{"message": "Invalid username or password"})
	return false, false
}

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
