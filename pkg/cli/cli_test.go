package cli_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/testenv"
)

type childExit struct{ code int }

func (e childExit) Error() string { return fmt.Sprintf("child exited with %d", e.code) }
func (e childExit) ExitCode() int { return e.code }

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
		says string
	}{
		{"success", nil, 0, ""},
		{"help", flag.ErrHelp, 0, ""},
		{"version", cli.ErrVersionPrinted, 0, ""},
		{"usage", cli.Usagef("bad flag %q", "-x"), 2, `cmd: bad flag "-x"`},
		{"wrapped usage", fmt.Errorf("parsing: %w", cli.Usagef("no")), 2, "cmd: parsing: no"},
		{"environment", &envconfig.Error{Var: "V", Value: "x", Allowed: "want y"}, 2, `invalid V="x"`},
		{"child status", fmt.Errorf("nginx: %w", childExit{3}), 3, "child exited with 3"},
		{"failure", errors.New("boom"), 1, "cmd: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := cli.ExitCode("cmd", tt.err, &stderr); got != tt.want {
				t.Errorf("exit code %d, want %d", got, tt.want)
			}
			if !strings.Contains(stderr.String(), tt.says) || (tt.says == "") != (stderr.Len() == 0) {
				t.Errorf("stderr %q, want it to say %q", stderr.String(), tt.says)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		noArgs bool
		want   error
		out    string
	}{
		{"nothing", nil, true, nil, ""},
		{"help", []string{"-h"}, true, flag.ErrHelp, "usage of cmd"},
		{"version", []string{"-version"}, true, cli.ErrVersionPrinted, "cmd v1.2.3"},
		{"unknown flag", []string{"-nope"}, true, cli.UsageError{}, ""},
		{"positional refused", []string{"extra"}, true, cli.UsageError{}, ""},
		{"positional allowed", []string{"extra"}, false, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			fs := cli.NewFlagSet("cmd", &stdout, io.Discard, func(w io.Writer) { fmt.Fprint(w, "usage of cmd") })
			err := cli.Parse(fs, tt.args, "v1.2.3", &stdout, tt.noArgs)
			var ue cli.UsageError
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("got %v, want nil", err)
			case errors.As(tt.want, &ue):
				if !errors.As(err, &ue) {
					t.Fatalf("got %v, want a UsageError", err)
				}
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(stdout.String(), tt.out) {
				t.Fatalf("stdout %q, want %q", stdout.String(), tt.out)
			}
		})
	}
}

func TestVersionFallsBackToBuildInfo(t *testing.T) {
	if got := cli.Version("v9"); got != "v9" {
		t.Fatalf("got %q", got)
	}
	if got := cli.Version("dev"); got == "" {
		t.Fatal("empty version")
	}
}

func TestLog(t *testing.T) {
	tests := []struct {
		log cli.Log
		bad string
	}{
		{cli.Log{Format: "json", Level: "info"}, ""},
		{cli.Log{Format: "text", Level: "DEBUG"}, ""},
		{cli.Log{Format: "xml", Level: "info"}, "ROOMCAST_LOG_FORMAT"},
		{cli.Log{Format: "json", Level: "loud"}, "ROOMCAST_LOG_LEVEL"},
	}
	for _, tt := range tests {
		err := tt.log.Validate(map[string]string{"ROOMCAST_LOG_FORMAT": tt.log.Format, "ROOMCAST_LOG_LEVEL": tt.log.Level})
		var e *envconfig.Error
		if tt.bad == "" && err != nil || tt.bad != "" && (!errors.As(err, &e) || e.Var != tt.bad) {
			t.Errorf("%+v: got %v, want an error for %q", tt.log, err, tt.bad)
		}
	}
	var b bytes.Buffer
	cli.Log{Format: "text", Level: "warn"}.New(&b).Info("hidden")
	cli.Log{Format: "text", Level: "warn"}.New(&b).Warn("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), "msg=shown") {
		t.Fatalf("got %q", b.String())
	}
}

func TestValidListenAddr(t *testing.T) {
	for addr, want := range map[string]bool{":80": true, "127.0.0.1:0": true, "[::1]:9": true, "80": false, "host:": false, "": false} {
		if got := cli.ValidListenAddr(addr); got != want {
			t.Errorf("%q: got %v, want %v", addr, got, want)
		}
	}
}

func TestMetricsServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "cli_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Inc()
	m, err := cli.ListenMetrics("127.0.0.1:0", reg, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	resp, err := http.Get("http://" + m.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "cli_test_total 1") {
		t.Fatalf("metrics lack the counter:\n%s", body)
	}
	if _, err := cli.ListenMetrics(m.Addr().String(), reg, testenv.Logger(t)); err == nil {
		t.Fatal("a second listener on a busy port bound")
	}
	m.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestSignalsStopThenAbort(t *testing.T) {
	stopped, aborted := make(chan struct{}), make(chan struct{})
	execute, interrupt := cli.Signals(context.Background(), testenv.Logger(t),
		func() { close(stopped) }, func() { close(aborted) }, syscall.SIGUSR1)
	done := make(chan error, 1)
	go func() { done <- execute() }()
	send := func() {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(ch <-chan struct{}, what string) {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not called within 10s", what)
		}
	}
	send()
	wait(stopped, "stop")
	select {
	case <-aborted:
		t.Fatal("abort on the first signal")
	default:
	}
	send()
	wait(aborted, "abort")
	interrupt(nil)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("execute returned %v after interrupt", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("execute did not return after interrupt")
	}
}

func TestVersionLineNamesTheBuild(t *testing.T) {
	info := func(main string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "roomcast", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tt := range []struct {
		name    string
		version string
		info    *debug.BuildInfo
		want    string
	}{
		{"ldflags win", "v1.2.3", info("v0.9.0"), "cmd v1.2.3 (go1.26.0 " + platform + ")"},
		{"module version", "dev", info("v0.9.0"), "cmd v0.9.0 (go1.26.0 " + platform + ")"},
		{"VCS revision", "dev", info("(devel)", "vcs.revision", "0123456789abcdef", "vcs.time", "2026-12-06T06:00:00Z", "vcs.modified", "true"),
			"cmd 0123456789ab+dirty (go1.26.0 " + platform + ", committed 2026-12-06T06:00:00Z)"},
		{"nothing recorded", "dev", info("(devel)"), "cmd dev (go1.26.0 " + platform + ")"},
		{"no build info", "dev", nil, "cmd dev (" + platform + ")"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := cli.VersionLineOf("cmd", tt.version, tt.info, tt.info != nil); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAskedVersionAnywhereBeforeDashDash(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // the start of what it prints; "": not asked
	}{
		{[]string{"-version"}, "cmd v7 ("},
		{[]string{"token", "-sub", "a", "--version"}, "cmd token v7 ("},
		{[]string{"controller", "healthcheck", "-version=true"}, "cmd controller healthcheck v7 ("},
		{[]string{"-scenario", "smoke", "-version"}, "cmd v7 ("},
		{[]string{"token", "-sub", "a"}, ""},
		{[]string{"run", "--", "-version"}, ""},
	} {
		var out bytes.Buffer
		err := cli.AskedVersion("cmd", "v7", tt.args, &out)
		if errors.Is(err, cli.ErrVersionPrinted) != (tt.want != "") || !strings.HasPrefix(out.String(), tt.want) {
			t.Errorf("%q: err %v, printed %q; want %q", tt.args, err, out.String(), tt.want)
		}
	}
}

// TestEveryCommandAnswersVersionWithoutLdflags builds every command as `go build` does
// without -ldflags and asks each, and each subcommand, for its version: it must print
// it and exit 0, never run.
func TestEveryCommandAnswersVersionWithoutLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every command")
	}
	goBin := testenv.Program(t, "go")
	dir := t.TempDir()
	build := exec.Command(goBin, "build", "-o", dir+"/", "roomcast/cmd/...")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"roomcast", "-version"}, {"roomcast", "token", "-version"}, {"roomcast", "healthcheck", "-version"},
		{"roomcast-autoscaler", "-version"}, {"roomcast-autoscaler", "healthcheck", "-version"},
		{"roomcast-edge", "-version"}, {"roomcast-edge", "controller", "-version"}, {"roomcast-edge", "status", "-version"},
		{"roomcast-loadgen", "-scenario", "smoke", "-version"},
		{"roomcast-release", "-version"}, {"roomcast-release", "deploy", "-version"},
		{"roomcast-smoke", "-version"},
	} {
		cmd := exec.Command(filepath.Join(dir, args[0]), args[1:]...)
		cmd.Env = []string{"PATH=/nonexistent", "DOCKER_HOST=tcp://127.0.0.1:1"} // nothing it could reach if it ran
		out, err := cmd.CombinedOutput()
		if err != nil || !regexp.MustCompile(`^`+args[0]+`( [a-z]+)* \S+ \(go1\.\d+`).Match(out) {
			t.Errorf("%q: %v, printed %q; want the version and exit 0", args, err, out)
		}
	}
}
