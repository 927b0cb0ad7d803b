package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"roomcast/pkg/auth"
	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestInvalidEnvironmentExitsTwoWithOneLineNamingTheVariable(t *testing.T) {
	tests := []struct {
		name, value string
	}{
		{"ROOMCAST_ADDR", "8080"},
		{"ROOMCAST_PROBE_ADDR", "8091"},
		{"ROOMCAST_PROBE_ADDR", ":8080"}, // the public listener's port
		{"ROOMCAST_PPROF_ADDR", "6060"},
		{"ROOMCAST_PPROF_ADDR", ":8080"}, // the public listener's port
		{"ROOMCAST_MAX_HANDSHAKES", "-1"},
		{"ROOMCAST_MAX_HANDSHAKES", "many"},
		{"ROOMCAST_EMBEDDED_NATS_ADDR", "localhost"},
		{"ROOMCAST_MAX_MESSAGE_BYTES", "0"},
		{"ROOMCAST_MAX_MESSAGE_BYTES", "huge"},
		{"ROOMCAST_MAX_MESSAGE_BYTES", "2000000"},
		{"ROOMCAST_SEND_QUEUE", "abc"},
		{"ROOMCAST_SEND_QUEUE", "0"},
		{"ROOMCAST_SEND_QUEUE_BYTES", "100"},
		{"ROOMCAST_RATE_LIMIT", "-1"},
		{"ROOMCAST_RATE_LIMIT", "fast"},
		{"ROOMCAST_RATE_BURST", "0"},
		{"ROOMCAST_DRAIN_DELAY", "soon"},
		{"ROOMCAST_DRAIN_DELAY", "-5s"},
		{"ROOMCAST_DRAIN_TIMEOUT", "20"},
		{"ROOMCAST_READY_WAIT", "-1s"},
		{"ROOMCAST_READY_WAIT", "a while"},
		{"ROOMCAST_PING_INTERVAL", "1ms"},
		{"ROOMCAST_BATCH_DELAY", "-1ms"},
		{"ROOMCAST_BATCH_DELAY", "2s"},
		{"ROOMCAST_BATCH_DELAY", "soon"},
		{"ROOMCAST_LOG_FORMAT", "xml"},
		{"ROOMCAST_JWT_SECRET_FILE", "/nonexistent/jwt-secret"},
		{"ROOMCAST_JWT_SECRET_FILE", "/dev/null"}, // empty
		{"ROOMCAST_LOG_LEVEL", "loud"},
		{"ROOMCAST_HISTORY_SIZE", "-1"},
		{"ROOMCAST_HISTORY_SIZE", "lots"},
		{"ROOMCAST_HISTORY_SIZE", "100000"},
		{"ROOMCAST_HISTORY_TTL", "forever"},
		{"ROOMCAST_HISTORY_TTL", "10ms"},
		{"ROOMCAST_CATCHUP_TIMEOUT", "100ms"},
		{"ROOMCAST_CATCHUP_TIMEOUT", "1h"},
		{"ROOMCAST_CATCHUP_TIMEOUT", "soon"},
		{"ROOMCAST_TRUSTED_PROXIES", "10.0.0.0/33"},
		{"ROOMCAST_TRUSTED_PROXIES", "10.0.0.0/8, nginx"},
		{"ROOMCAST_MAX_CONNECTIONS", "-1"},
		{"ROOMCAST_HISTORY_REPLICAS", "7"},
		{"ROOMCAST_HISTORY_MAX_BYTES", "0"},
		{"ROOMCAST_HISTORY_MAX_BYTES", "-1"},
		{"ROOMCAST_HISTORY_MAX_BYTES", "1048575"},
		{"ROOMCAST_HISTORY_MAX_BYTES", "256MiB"},
		{"ROOMCAST_HISTORY_SHARDS", "-1"},
		{"ROOMCAST_HISTORY_SHARDS", "17"},
		{"ROOMCAST_HISTORY_SHARDS", "eight"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), nil, map[string]string{tt.name: tt.value}, &stdout, &stderr)
			if err == nil {
				t.Fatal("run accepted the value")
			}
			var out bytes.Buffer
			if code := cli.ExitCode("roomcast", err, &out); code != 2 {
				t.Fatalf("exit code %d, want 2 (%v)", code, err)
			}
			line := out.String()
			if strings.Count(line, "\n") != 1 || !strings.Contains(line, tt.name) || !strings.Contains(line, `"`+tt.value+`"`) {
				t.Fatalf("message %q should be one line naming %s and %q", line, tt.name, tt.value)
			}
			if !strings.Contains(line, "want") {
				t.Fatalf("message %q does not say what is allowed", line)
			}
		})
	}
}

func TestHistoryMaxBytesHoldsSeveralOfTheLargestMessages(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"defaults", nil, true},
		{"1 MiB with the default message size", map[string]string{"ROOMCAST_HISTORY_MAX_BYTES": "1048576"}, true},
		{"2 MB with 1 MiB messages", map[string]string{"ROOMCAST_HISTORY_MAX_BYTES": "2000000", "ROOMCAST_MAX_MESSAGE_BYTES": "1048576", "ROOMCAST_SEND_QUEUE_BYTES": "8388608"}, false},
		{"2 MB with 1 MiB messages and history off", map[string]string{"ROOMCAST_HISTORY_MAX_BYTES": "2000000", "ROOMCAST_MAX_MESSAGE_BYTES": "1048576", "ROOMCAST_SEND_QUEUE_BYTES": "8388608", "ROOMCAST_HISTORY_SIZE": "0"}, true},
		{"1 MiB in 2 shards", map[string]string{"ROOMCAST_HISTORY_MAX_BYTES": "1048576", "ROOMCAST_HISTORY_SHARDS": "2"}, true},
		{"1 MiB in 3 shards", map[string]string{"ROOMCAST_HISTORY_MAX_BYTES": "1048576", "ROOMCAST_HISTORY_SHARDS": "3"}, false},
		{"the default bound in 16 shards", map[string]string{"ROOMCAST_HISTORY_SHARDS": "16"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.env)
			var e *envconfig.Error
			switch {
			case tt.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tt.ok && (!errors.As(err, &e) || !strings.HasPrefix(e.Var, "ROOMCAST_HISTORY_") || !strings.Contains(err.Error(), "largest message")):
				t.Fatalf("got %v, want an error naming ROOMCAST_HISTORY_MAX_BYTES or _SHARDS", err)
			}
		})
	}
}

func TestDefaultsAndEmptyValues(t *testing.T) {
	cfg, err := loadConfig(map[string]string{"ROOMCAST_SEND_QUEUE": "", "ROOMCAST_ALLOWED_ORIGINS": "https://a, ,https://b"})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Server
	if s.HTTP.Addr != ":8080" || s.Hub.SendQueueFrames != 256 || s.Gateway.MaxMessageBytes != 4096 || s.Gateway.RateLimit.PerSecond != 20 ||
		s.Gateway.RateLimit.Burst != 40 || s.Drain.Delay != 5*time.Second || s.Drain.Timeout != 20*time.Second ||
		s.Hub.PingInterval != 25*time.Second || s.HTTP.Identity.Color != "local" || cfg.Log.Format != "json" || s.HTTP.Identity.Instance == "" {
		t.Fatalf("defaults: %+v", cfg)
	}
	if len(s.Gateway.AllowedOrigins) != 2 || s.Gateway.AllowedOrigins[1] != "https://b" {
		t.Fatalf("origins: %q", s.Gateway.AllowedOrigins)
	}
}

func TestHelpDocumentsEveryVariableWithItsDefault(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, nil, &stdout, &stderr)
	if code := cli.ExitCode("roomcast", err, &stderr); code != 0 {
		t.Fatalf("-h exit code %d: %v", code, err)
	}
	for _, want := range []string{
		"ROOMCAST_ADDR", ":8080", "NATS_URL", "ROOMCAST_EMBEDDED_NATS_ADDR", "ROOMCAST_COLOR", "local",
		"ROOMCAST_INSTANCE", "hostname", "ROOMCAST_MAX_MESSAGE_BYTES", "4096", "ROOMCAST_SEND_QUEUE", "256",
		"ROOMCAST_RATE_LIMIT", "20", "ROOMCAST_RATE_BURST", "40", "ROOMCAST_ALLOWED_ORIGINS",
		"ROOMCAST_DRAIN_DELAY", "5s", "ROOMCAST_DRAIN_TIMEOUT", "20s", "ROOMCAST_PING_INTERVAL", "25s",
		"ROOMCAST_LOG_FORMAT", "json", "ROOMCAST_LOG_LEVEL", "info", "healthcheck",
		"ROOMCAST_HISTORY_SIZE", "100", "ROOMCAST_HISTORY_TTL", "1h",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("-h output lacks %q", want)
		}
	}
}

func TestUnknownFlagOrArgumentExitsTwo(t *testing.T) {
	for _, args := range [][]string{{"-port", "1"}, {"serve"}, {"healthcheck", "extra"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, nil, &stdout, &stderr)
		if code := cli.ExitCode("roomcast", err, &bytes.Buffer{}); code != 2 {
			t.Errorf("args %q: exit code %d (%v), want 2", args, code, err)
		}
	}
}

func TestValuesAreParsedOnceIntoWhatTheServerUses(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(map[string]string{
		"ROOMCAST_TRUSTED_PROXIES": "10.1.2.3/8, ,192.168.0.7",
		"ROOMCAST_JWT_SECRET_FILE": keyFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.7/32")}
	if got := cfg.Server.Gateway.Limits.TrustedProxies; !slices.Equal(got, want) {
		t.Errorf("trusted proxies %v, want %v", got, want)
	}
	v := cfg.Server.Auth.Verifier
	if v == nil {
		t.Fatal("no verifier built from ROOMCAST_JWT_SECRET_FILE")
	}
	tok, err := auth.Mint([]byte(testKey), auth.Claims{Subject: "a", Expires: time.Now().Add(time.Minute), Rooms: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("the verifier refuses a token of the file's key: %v", err)
	}
}

func TestLoggedConfigurationMasksSecrets(t *testing.T) {
	tests := []struct {
		name, value, hidden, shown string
	}{
		{"NATS_URL", "nats://alice:hunter22@nats:4222", "hunter22", "alice"},
		{"NATS_URL", "nats://s3cret-token@nats:4222,nats://n2:4222", "s3cret-token", "nats://n2:4222"},
		{"NATS_URL", "nats://nats:4222", "", "nats://nats:4222"},
		{"ROOMCAST_JWT_SECRET", "a secret of thirty-two bytes or more", "thirty-two", "********"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			cfg, err := loadConfig(map[string]string{tt.name: tt.value})
			if err != nil {
				t.Fatal(err)
			}
			var logged string
			for _, a := range envconfig.LogValue(cfg).Group() {
				if a.Key == tt.name {
					logged = a.Value.String()
				}
			}
			if tt.hidden != "" && strings.Contains(logged, tt.hidden) || !strings.Contains(logged, tt.shown) {
				t.Errorf("logged %s=%q, want %q hidden and %q shown", tt.name, logged, tt.hidden, tt.shown)
			}
		})
	}
}

func TestVersionFlagPrintsTheVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-version"}, nil, &stdout, &stderr)
	if code := cli.ExitCode("roomcast", err, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "roomcast ") {
		t.Fatalf("-version: exit %d (%v), stdout %q", code, err, stdout.String())
	}
}
