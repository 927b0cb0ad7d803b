package natsbroker_test

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
)

func TestConfigLoadChecksTheNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	file, empty := filepath.Join(dir, "password"), filepath.Join(dir, "empty")
	if err := os.WriteFile(file, []byte(" s3cret-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const url = "nats://nats:4222"
	for _, tt := range []struct {
		name           string
		cfg            natsbroker.Config
		wantVar        string // "" for no error
		wantPassword   string
		forbiddenInErr string
	}{
		{name: "no credentials", cfg: natsbroker.Config{URL: url}},
		{name: "embedded, no credentials", cfg: natsbroker.Config{}},
		{name: "user and file", cfg: natsbroker.Config{URL: url, User: "roomcast", PasswordFile: file}, wantPassword: "s3cret-password"},
		{name: "user without file", cfg: natsbroker.Config{URL: url, User: "roomcast"}, wantVar: "ROOMCAST_NATS_PASSWORD_FILE"},
		{name: "file without user", cfg: natsbroker.Config{URL: url, PasswordFile: file}, wantVar: "ROOMCAST_NATS_USER"},
		{name: "user with white space", cfg: natsbroker.Config{URL: url, User: "room cast", PasswordFile: file}, wantVar: "ROOMCAST_NATS_USER"},
		{name: "missing file", cfg: natsbroker.Config{URL: url, User: "roomcast", PasswordFile: filepath.Join(dir, "none")}, wantVar: "ROOMCAST_NATS_PASSWORD_FILE"},
		{name: "empty file", cfg: natsbroker.Config{URL: url, User: "roomcast", PasswordFile: empty}, wantVar: "ROOMCAST_NATS_PASSWORD_FILE"},
		{name: "embedded with a user", cfg: natsbroker.Config{User: "roomcast", PasswordFile: file}, wantVar: "ROOMCAST_NATS_USER"},
		{name: "embedded with a file", cfg: natsbroker.Config{PasswordFile: file}, wantVar: "ROOMCAST_NATS_PASSWORD_FILE"},
		{name: "credentials twice", cfg: natsbroker.Config{URL: "nats://u:urlpass@nats:4222", User: "roomcast", PasswordFile: file},
			wantVar: "NATS_URL", forbiddenInErr: "urlpass"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.History = natsbroker.HistoryConfig{Size: 1, Replicas: 1, TTL: time.Hour, MaxBytes: natsbroker.MinHistoryBytes}
			environ := map[string]string{"NATS_URL": cfg.URL, "ROOMCAST_NATS_USER": cfg.User, "ROOMCAST_NATS_PASSWORD_FILE": cfg.PasswordFile}
			err := cfg.Load(environ)
			if tt.wantVar == "" {
				if err != nil || cfg.Password != tt.wantPassword {
					t.Fatalf("Load: %v, password %q, want none and %q", err, cfg.Password, tt.wantPassword)
				}
				return
			}
			var e *envconfig.Error
			if !errors.As(err, &e) || e.Var != tt.wantVar {
				t.Fatalf("Load: %v, want an error naming %s", err, tt.wantVar)
			}
			if strings.Contains(err.Error(), "s3cret") || (tt.forbiddenInErr != "" && strings.Contains(err.Error(), tt.forbiddenInErr)) {
				t.Errorf("the error shows a password: %v", err)
			}
		})
	}
}

// With a user and password the broker gets into a server that requires them; the
// same server refuses it with a wrong one (it keeps retrying, never ready).
func TestConnectAuthenticatesWithTheUserAndPassword(t *testing.T) {
	ns := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "roomcast", "right-password" })
	for _, tt := range []struct {
		password string
		ready    bool
	}{{"right-password", true}, {"wrong-password", false}} {
		t.Run(tt.password, func(t *testing.T) {
			b, err := natsbroker.Connect(natsbroker.Config{URL: ns.ClientURL(), Name: "test", User: "roomcast", Password: tt.password,
				ReconnectWait: 50 * time.Millisecond}, testenv.Logger(t), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			if got := b.Ready() == nil; got != tt.ready {
				t.Errorf("ready %v, want %v", got, tt.ready)
			}
		})
	}
}

// A host name in NATS_URL is resolved by the replica's dialer (rawsock.Dialer, which
// nats.go is told to leave host names to): the replica connects by name.
func TestConnectReachesAServerByHostName(t *testing.T) {
	ns := natstest.Start(t)
	u, err := url.Parse(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsbroker.Connect(natsbroker.Config{URL: "nats://localhost:" + u.Port(), Name: "test",
		ReconnectWait: 50 * time.Millisecond}, testenv.Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Ready(); err != nil {
		t.Fatalf("not connected to nats://localhost:%s: %v", u.Port(), err)
	}
}
