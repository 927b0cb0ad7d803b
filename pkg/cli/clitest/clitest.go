// Package clitest runs a command's run function inside the test's process, the way its
// main does, and watches it from outside: its log, its exit, its /metrics. A Process
// is used from the test's goroutine; its Stderr may be read at any time.
package clitest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/testenv"
)

// RunFunc is a command's run function.
type RunFunc = cli.RunFunc

// StopWithin bounds how long the cleanup waits for run to return once its context ends.
const StopWithin = 15 * time.Second

// Process is one call of a RunFunc, in its own goroutine.
type Process struct {
	// Stderr is what run wrote to stderr (its log).
	Stderr *testenv.SyncBuffer

	t      testing.TB
	cancel context.CancelFunc
	done   chan struct{}
	err    error // run's result, once done is closed
	once   sync.Once
}

// Start calls run with no arguments and env. In t.Cleanup it ends run's context and
// waits (at most StopWithin) for run to return; when the test failed it logs Stderr.
// Cleanups the caller registers before Start run after run has returned.
func Start(t testing.TB, name string, run RunFunc, env map[string]string) *Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Process{Stderr: &testenv.SyncBuffer{}, t: t, cancel: cancel, done: make(chan struct{})}
	go func() {
		p.err = run(ctx, nil, env, io.Discard, p.Stderr)
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cancel()
		select {
		case <-p.done:
		case <-time.After(StopWithin):
			t.Errorf("%s did not stop within %v of its context ending", name, StopWithin)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Stderr)
		}
	})
	return p
}

// Stop ends run's context, as a first SIGTERM would, and returns what Wait returns.
func (p *Process) Stop(within time.Duration) error {
	p.t.Helper()
	p.cancel()
	return p.Wait(within)
}

// Wait returns run's error, failing the test if run does not return within d. It may
// be called again, and returns the same error.
func (p *Process) Wait(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("run still running after %v", d)
		return nil
	}
}

// Eventually calls check every 20ms until it returns nil, failing the test with its
// last error if d passes first.
func Eventually(t testing.TB, d time.Duration, what string, check func() error) {
	t.Helper()
	Poll(t, d, 20*time.Millisecond, what, check)
}

// Poll is Eventually with its own period, for checks that are slow or costly to ask
// (a real cluster, a Docker daemon).
func Poll(t testing.TB, d, every time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(every)
	}
}

// Scrape returns the value of one series of the Prometheus text exposition at url,
// written as exposed (name{label="value",...}), or -1 when the series is absent or
// url does not answer.
func Scrape(url, series string) float64 {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return -1
	}
	return v
}

// Exit calls run with args and env as main would and returns the exit status and what
// main prints on stderr for it (cli.ExitCode's line); run's own output is discarded.
func Exit(name string, run RunFunc, args []string, env map[string]string) (int, string) {
	err := run(context.Background(), args, env, io.Discard, io.Discard)
	var out strings.Builder
	code := cli.ExitCode(name, err, &out)
	return code, out.String()
}

// Help returns what -h prints, failing the test unless it exits 0, and checks that it
// has each of want (variables, defaults, words of the contract). It also checks that
// -version exits 0 printing "NAME VERSION".
func Help(t testing.TB, name string, run RunFunc, want ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-h"}, nil, &stdout, &stderr)
	if code := cli.ExitCode(name, err, &stderr); code != 0 {
		t.Fatalf("-h exit code %d: %v", code, err)
	}
	var printed bytes.Buffer
	if err := run(context.Background(), []string{"-version"}, nil, &printed, io.Discard); cli.ExitCode(name, err, io.Discard) != 0 || !strings.HasPrefix(printed.String(), name+" ") {
		t.Errorf("-version: %v, printed %q", err, printed.String())
	}
	for _, w := range want {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("-h output lacks %q", w)
		}
	}
	return stdout.String()
}

// InvalidEnv checks that run, with env setting variable to value, exits 2 with one
// line naming the variable, its value and what is allowed.
func InvalidEnv(t testing.TB, name string, run RunFunc, env map[string]string, variable, value string) {
	t.Helper()
	code, line := Exit(name, run, nil, env)
	if code != 2 {
		t.Fatalf("exit code %d, want 2 (%s)", code, line)
	}
	if strings.Count(line, "\n") != 1 || !strings.Contains(line, variable) || !strings.Contains(line, strconv.Quote(value)) || !strings.Contains(line, "want") {
		t.Fatalf("message %q should be one line naming %s, %q and what is allowed", line, variable, value)
	}
}

// UsageErrors checks that run exits 2 with each of the argument lists.
func UsageErrors(t testing.TB, name string, run RunFunc, argLists ...[]string) {
	t.Helper()
	for _, args := range argLists {
		if code, line := Exit(name, run, args, nil); code != 2 {
			t.Errorf("args %q: exit code %d (%s), want 2", args, code, line)
		}
	}
}
