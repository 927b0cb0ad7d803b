package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/auth"
	"roomcast/pkg/cli"
	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/load/loadgen/historytest"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/server/wsgateway"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// signal.Notify starts one watcher goroutine for the life of the process.
		goleak.IgnoreTopFunction("os/signal.signal_recv"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func TestBadFlagsExitWithStatus2(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the one-line message
	}{
		{"unknown flag", []string{"-bogus"}, "-bogus"},
		{"unknown scenario", []string{"-scenario", "burst"}, "-scenario"},
		{"not a duration", []string{"-duration", "10"}, "-duration"},
		{"zero duration", []string{"-duration", "0s"}, "-duration"},
		{"zero rooms", []string{"-rooms", "0"}, "-rooms"},
		{"negative members", []string{"-members", "-1"}, "-members"},
		{"zero rate", []string{"-rate", "0"}, "-rate"},
		{"not a number", []string{"-rate", "fast"}, "-rate"},
		{"zero idle conns", []string{"-scenario", "idle", "-conns", "0"}, "-conns"},
		{"http URL", []string{"-url", "http://127.0.0.1:8080"}, "-url"},
		{"empty URL", []string{"-url", " , "}, "-url"},
		{"room path in URL", []string{"-url", "ws://127.0.0.1:8080/ws/chat/x/"}, "-url"},
		{"PID not a number", []string{"-server-pid", "12,abc"}, "-server-pid"},
		{"PID of no process", []string{"-server-pid", "1073741824"}, "-server-pid"},
		{"ramp factor", []string{"-scenario", "ramp", "-ramp-factor", "0.5"}, "-ramp-factor"},
		{"ramp step", []string{"-scenario", "ramp", "-ramp-step", "-1s"}, "-ramp-step"},
		{"positional argument", []string{"fanout-small"}, "unexpected argument"},
		{"zero soak conns", []string{"-scenario", "soak", "-conns", "0"}, "-conns"},
		{"negative send-every", []string{"-scenario", "soak", "-send-every", "-1s"}, "-send-every"},
		{"zero reconnect base", []string{"-scenario", "release", "-reconnect-base", "0s"}, "-reconnect-base"},
		{"reconnect max under base", []string{"-scenario", "release", "-reconnect-max", "10ms"}, "-reconnect-max"},
		{"negative max-lost", []string{"-max-lost", "-1"}, "-max-lost"},
		{"max-lost not a number", []string{"-max-lost", "some"}, "-max-lost"},
		{"zero max-p99", []string{"-scenario", "smoke", "-max-p99", "0s"}, "-max-p99"},
		{"zero storm conns", []string{"-scenario", "reconnect-storm", "-conns", "0"}, "-conns"},
		{"settle over duration", []string{"-scenario", "reconnect-storm", "-settle", "1m", "-duration", "30s"}, "-settle"},
		{"unknown protocol", []string{"-protocol", "mqtt"}, "-protocol"},
		{"centrifugo soak", []string{"-scenario", "soak", "-protocol", "centrifugo"}, "invalid -protocol centrifugo: want -scenario fanout-small, fanout-large or ramp with it, not soak"},
		{"centrifugo batched", []string{"-protocol", "centrifugo", "-batch", "true"}, "-batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, nil, &stdout, &stderr)
			if err == nil {
				t.Fatal("run succeeded, want a usage error")
			}
			var msg bytes.Buffer
			if code := cli.ExitCode(name, err, &msg); code != 2 {
				t.Fatalf("exit code %d for %v, want 2", code, err)
			}
			line := msg.String()
			if strings.Count(line, "\n") != 1 || !strings.Contains(line, tt.want) {
				t.Fatalf("message %q: want one line naming %q", line, tt.want)
			}
			if stdout.Len() > 0 {
				t.Fatalf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, nil, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) || cli.ExitCode(name, err, io.Discard) != 0 {
		t.Fatalf("run -h = %v, want flag.ErrHelp and exit 0", err)
	}
	for _, want := range []string{
		"Usage: roomcast-loadgen", "-scenario", "fanout-large", "-server-pid", "-ramp-step", "-json",
		"smoke", "soak", "release", "k6/release.js", "-no-thresholds", "99", "[ROOMS]", "[RECONNECT_BASE]",
		"reconnect-storm", "-settle", "-token TOKEN  [TOKEN]", "-token-file FILE", "Retry-After",
		"(default 10; fanout-large 100; smoke 2; release 20)", "-protocol NAME", "centrifugo",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	var printed bytes.Buffer
	if err := run(context.Background(), []string{"-version"}, nil, &printed, io.Discard); cli.ExitCode(name, err, io.Discard) != 0 || !strings.HasPrefix(printed.String(), name+" ") {
		t.Errorf("-version: %v, printed %q", err, printed.String())
	}
}

func TestConnectFailureExitsWith1(t *testing.T) {
	// Port 1 on localhost: nothing listens there.
	err := run(context.Background(), []string{"-url", "ws://127.0.0.1:1", "-rooms", "1", "-members", "1", "-connect-timeout", "2s"},
		nil, io.Discard, io.Discard)
	if err == nil || cli.ExitCode(name, err, io.Discard) != 1 {
		t.Fatalf("run = %v, want an error with exit status 1", err)
	}
}

func startReplica(t *testing.T, opts ...replicatest.Option) string {
	t.Helper()
	rep := replicatest.Start(t, append([]replicatest.Option{replicatest.Instance("a")}, opts...)...)
	// Drain, not Close: see pkg/load/loadgen's run_test.go.
	t.Cleanup(func() { rep.Shutdown(t) })
	return rep.WSURL()
}

func TestRunPrintsSummaryAndJSON(t *testing.T) {
	url := startReplica(t)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{
		"-scenario", "fanout-small", "-url", url, "-rooms", "2", "-members", "3", "-rate", "4",
		"-duration", "1s", "-grace", "20s", "-json",
	}, nil, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
	}
	out := stdout.String()
	text, js, ok := strings.Cut(out, "\n{")
	if !ok {
		t.Fatalf("no JSON after the summary in %q", out)
	}
	for _, want := range []string{"sent", "expected", "delivered", "lost", "duplicated", "p99"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte("{"+js), &rep); err != nil {
		t.Fatalf("JSON summary: %v\n%s", err, js)
	}
	if len(rep.Steps) != 1 || rep.Connections != 6 {
		t.Fatalf("report %+v: want 6 connections and one step", rep)
	}
	s := rep.Steps[0]
	if s.Sent == 0 || s.Delivered != s.Expected || s.Expected != 3*s.Sent || s.Lost != 0 || s.Duplicated != 0 {
		t.Fatalf("step %+v: want everything delivered once", s)
	}
}

func TestEverySettingIsAFlag(t *testing.T) {
	for _, st := range loadgen.Settings() {
		for _, s := range loadgen.Scenarios() {
			if !st.UsedBy(s) || st.Flag == "server-pid" {
				continue
			}
			v := st.String(loadgen.DefaultConfig(s))
			cfg, _, err := parseFlags([]string{"-scenario", string(s), "-" + st.Flag, v}, io.Discard)
			if err != nil || st.String(cfg) != v {
				t.Errorf("-scenario %s -%s %q: %v, reads back %q", s, st.Flag, v, err, st.String(cfg))
			}
		}
	}
}

func TestFlagsOverrideTheScenarioDefaults(t *testing.T) {
	cfg, _, err := parseFlags([]string{"-rooms", "3", "-scenario", "release", "-reconnect-max", "1s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := loadgen.DefaultConfig(loadgen.Release)
	if cfg.Rooms != 3 || cfg.Members != want.Members || cfg.Rate != want.Rate || cfg.ReconnectMax != time.Second || cfg.Grace != want.Grace {
		t.Fatalf("config %+v: want release's defaults but 3 rooms and -reconnect-max 1s", cfg)
	}
}

func TestCrossedThresholdExitsWith99(t *testing.T) {
	url := startReplica(t)
	args := []string{"-url", url, "-rooms", "1", "-members", "2", "-rate", "5", "-duration", "300ms", "-grace", "10s", "-max-p95", "1ns"}
	var stdout bytes.Buffer
	err := run(context.Background(), args, nil, &stdout, io.Discard)
	var msg bytes.Buffer
	if code := cli.ExitCode(name, err, &msg); code != 99 || !strings.Contains(msg.String(), "thresholds") {
		t.Fatalf("exit %d (%v, %q), want 99 naming the thresholds", code, err, msg.String())
	}
	if !strings.Contains(stdout.String(), "✗ roomcast_delivery_latency p(95)<0.000001") {
		t.Errorf("summary does not show the crossed threshold:\n%s", stdout.String())
	}
	if err := run(context.Background(), append(args, "-no-thresholds"), nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("with -no-thresholds: %v, want success", err)
	}
}

func TestReleaseRunsUntilSignalled(t *testing.T) {
	srv := httptest.NewServer(historytest.New(1000, "e1", "blue"))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		time.Sleep(700 * time.Millisecond)
		cancel() // what SIGINT does to run's context
	}()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-scenario", "release", "-url", "ws" + strings.TrimPrefix(srv.URL, "http"),
		"-rooms", "2", "-members", "3", "-duration", "1h", "-json"}, nil, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v (exit %d)\n%s", err, cli.ExitCode(name, err, io.Discard), stderr.String())
	}
	text, js, _ := strings.Cut(stdout.String(), "\n{")
	for _, want := range []string{"== release: 2 rooms × 3 members", "reconnects", "path          6× blue", "thresholds"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte("{"+js), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Interrupted || rep.Reconnect == nil || rep.Metrics[loadgen.MetricSent].Value == 0 || rep.Steps[0].Lost != 0 {
		t.Fatalf("report %+v: want a complete release run, nothing lost", rep)
	}
}

// usageLine runs args, which must fail with a usage error, and returns its one line.
func usageLine(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, nil, &stdout, &stderr)
	var msg bytes.Buffer
	if code := cli.ExitCode(name, err, &msg); code != 2 {
		t.Fatalf("%v: exit code %d (%v), want 2", args, code, err)
	}
	if strings.Count(msg.String(), "\n") != 1 || stdout.Len() > 0 {
		t.Fatalf("%v: message %q, stdout %q; want one line and no output", args, msg.String(), stdout.String())
	}
	return msg.String()
}

func TestBadTokenFlagsExitWithStatus2(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.jwt", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln\n")
	unreadable := file("unreadable.jwt", "eyJ.secret.part")
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"both -token and -token-file", []string{"-token", "abc", "-token-file", good}, "-token and -token-file are both set"},
		{"no such file", []string{"-token-file", filepath.Join(dir, "missing.jwt")}, "no such file or directory"},
		{"a directory", []string{"-token-file", dir}, "-token-file"},
		{"empty file", []string{"-token-file", file("empty.jwt", " \n\t\n")}, "the file is empty"},
		{"spaces inside, from the file", []string{"-token-file", file("spaces.jwt", "secret part one\nsecret part two\n")}, "invalid -token-file (not shown)"},
		{"spaces inside, from the flag", []string{"-token", "secret part one"}, "invalid -token (not shown)"},
	}
	if os.Geteuid() != 0 { // root reads a file whatever its mode
		tests = append(tests, struct {
			name string
			args []string
			want string
		}{"unreadable file", []string{"-token-file", unreadable}, "permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := usageLine(t, tt.args...)
			if !strings.Contains(line, tt.want) {
				t.Fatalf("message %q lacks %q", line, tt.want)
			}
			if strings.Contains(line, "secret") {
				t.Fatalf("message %q shows the token", line)
			}
		})
	}
	cfg, _, err := parseFlags([]string{"-token-file", good}, io.Discard)
	if err != nil || cfg.Token != "eyJhbGciOiJIUzI1NiJ9.e30.c2ln" {
		t.Fatalf("-token-file %s: %v, token %q; want the file's content, trimmed", good, err, cfg.Token)
	}
}

func TestTokenFileOpensAServerThatRequiresATokenOnEveryConnect(t *testing.T) {
	secret := []byte("roomcast-loadgen test secret of 32+ bytes")
	v, err := auth.New(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Mint(secret, auth.Claims{Subject: "loadgen", Expires: time.Now().Add(time.Hour), Rooms: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "token.jwt")
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startReplica(t, replicatest.Auth(v), replicatest.Limits(wsgateway.Limits{AcceptRate: 100, AcceptBurst: 20}))
	// A reconnect storm: the connects and every reconnect need the token.
	args := []string{"-scenario", "reconnect-storm", "-url", url, "-rooms", "2", "-members", "3", "-rate", "4",
		"-conns", "40", "-settle", "500ms", "-duration", "1m", "-grace", "20s", "-reconnect-base", "20ms", "-json"}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), append(args, "-token-file", path), nil, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v (exit %d)\n%s\n%s", err, cli.ExitCode(name, err, io.Discard), stdout.String(), stderr.String())
	}
	text, js, _ := strings.Cut(stdout.String(), "\n{")
	for _, want := range []string{"== reconnect-storm", "storm window", "back          40 of 40", "refused 503=", "thresholds"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(stdout.String()+stderr.String(), tok) {
		t.Error("the token is in the output")
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte("{"+js), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Storm == nil || rep.Storm.Back != 40 || rep.Steps[1].Lost != 0 {
		t.Fatalf("report %+v: want every storm client back and nothing lost", rep.Storm)
	}

	// Without the token: exit 1 at once, the refusal named.
	var msg bytes.Buffer
	err = run(context.Background(), args, nil, io.Discard, io.Discard)
	if code := cli.ExitCode(name, err, &msg); code != 1 || !strings.Contains(msg.String(), "HTTP 401") || !strings.Contains(msg.String(), "-token-file") {
		t.Fatalf("without a token: exit %d, %q; want 1 and the 401 with its advice", code, msg.String())
	}
}
