// Package clitest runs a command's run function inside the test's process, the way its
// main does, and watches it from outside: its log, its exit, its /metrics. A Process
// is used from the test's goroutine; its Stderr may be read at any time.
package clitest

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"roomcast/pkg/testenv"
)

// RunFunc is a command's run function.
type RunFunc func(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error

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
