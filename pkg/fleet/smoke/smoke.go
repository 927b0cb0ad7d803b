// Package smoke checks a deployed roomcast color end to end, replica by replica, the way
// `just promote` needs before it flips traffic: every replica behind the target names is
// ready with the expected color, exports roomcast_build_info for that color, accepts a
// WebSocket into one fresh room, and a message sent on each replica reaches every replica
// exactly once.
//
// Run owns everything it opens (HTTP connections, WebSocket clients) and closes all of it
// before it returns. It checks the replicas of one phase concurrently and writes the
// report lines from its own goroutine only, so out needs no locking. Config values are
// read, never modified.
package smoke

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout        = 60 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultMessageTimeout = 10 * time.Second
	DefaultGrace          = 500 * time.Millisecond
	DefaultRetryInterval  = 250 * time.Millisecond
)

// MaxReserve caps the part of the timeout kept from the readiness wait for the checks
// that follow it; the reserve is a quarter of the timeout up to this.
const MaxReserve = 15 * time.Second

// maxRetryInterval caps the growing pause between /readyz attempts.
const maxRetryInterval = 2 * time.Second

// ErrFailed is returned by Run when a check failed or could not run; the report says which.
var ErrFailed = errors.New("smoke test failed")

// Config says what to check.
type Config struct {
	// Targets are host:port entries (see ParseTargets); each host is resolved and every
	// address found is one replica. Addresses found under several targets count once.
	Targets []string
	// Color is what every replica must report: X-Roomcast-Color, /readyz and the color
	// label of roomcast_build_info.
	Color string
	// Timeout bounds the whole run (default 60s). /readyz is retried for all of it but
	// a reserve of a quarter, at most 15s, kept for the checks after it.
	Timeout time.Duration
	// RequestTimeout bounds each DNS lookup, HTTP request and WebSocket handshake
	// (default 5s).
	RequestTimeout time.Duration
	// MessageTimeout bounds the wait for the test messages to arrive (default 10s).
	MessageTimeout time.Duration
	// Grace is how long every client keeps reading after it has all the messages, to
	// catch duplicates (default 500ms).
	Grace time.Duration
	// RetryInterval is the first pause between /readyz attempts; it doubles up to 2s
	// (default 250ms).
	RetryInterval time.Duration
	// Resolver looks the target hosts up (default net.DefaultResolver).
	Resolver *net.Resolver
	// JWTSecret, when set, is the HS256 key of a deployment with auth on: the join
	// checks then carry a token signed with it that admits only this run's room and
	// expires a minute after the run's timeout.
	JWTSecret []byte
	// JWTAudience and JWTIssuer are that token's aud and iss claims, for replicas that
	// check them (ROOMCAST_JWT_AUDIENCE, ROOMCAST_JWT_ISSUER); empty: none.
	JWTAudience, JWTIssuer string
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Timeout, DefaultTimeout)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.MessageTimeout, DefaultMessageTimeout)
	def(&c.Grace, DefaultGrace)
	def(&c.RetryInterval, DefaultRetryInterval)
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	return c
}

// ParseTargets splits a comma-separated list of host:port entries, such as
// "tasks.green_app:8080" or "127.0.0.1:8081,127.0.0.1:8082", dropping repeated entries.
// The host is a DNS name or an IP address (IPv6 in brackets); the port is numeric.
func ParseTargets(s string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for part := range strings.SplitSeq(s, ",") {
		t := strings.TrimSpace(part)
		if t == "" {
			return nil, errors.New("want host:port entries separated by commas, none empty, such as tasks.green_app:8080")
		}
		host, port, err := net.SplitHostPort(t)
		if err != nil || host == "" {
			return nil, fmt.Errorf("entry %q: want host:port, such as tasks.green_app:8080", t)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("entry %q: want a numeric port from 1 to 65535", t)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// Run performs the checks and writes one line per check to out:
//
//	ok   <check> <subject> <details>
//	FAIL <check> <subject>: <reason>
//	skip <check>: <why it could not run>
//
// then a summary line starting with PASS or FAIL. The checks, in order: resolve (each
// target), ready and metrics (each replica), join (each replica; needs every replica
// ready), message (each replica; needs every replica joined). It returns nil only if all
// passed, an error wrapping ErrFailed if any failed or was skipped, and another error
// for an invalid Config.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	cfg = cfg.withDefaults()
	if len(cfg.Targets) == 0 {
		return errors.New("smoke: no targets")
	}
	if cfg.Color == "" {
		return errors.New("smoke: no color")
	}
	for _, t := range cfg.Targets {
		if _, err := ParseTargets(t); err != nil {
			return fmt.Errorf("smoke: target %w", err)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	transport := &http.Transport{
		// Replicas are reached directly: a proxy from the environment would answer for
		// whichever replica it picks.
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.RequestTimeout}).DialContext,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       cfg.Timeout,
		ResponseHeaderTimeout: cfg.RequestTimeout,
	}
	defer transport.CloseIdleConnections()
	r := &runner{
		cfg:   cfg,
		out:   out,
		start: start,
		http: &http.Client{
			Transport: transport,
			// A redirect means something other than a replica answered.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	r.check(ctx)
	total := r.passed + r.failed
	took := time.Since(start).Round(time.Millisecond)
	if r.failed == 0 && r.skipped == 0 {
		fmt.Fprintf(out, "PASS all %d checks on %s of %s (%s)\n", total, plural(len(r.replicas), "replica"), cfg.Color, took)
		return nil
	}
	fmt.Fprintf(out, "FAIL %d of %d checks failed, %d skipped, on %s of %s (%s)\n",
		r.failed, total, r.skipped, plural(len(r.replicas), "replica"), cfg.Color, took)
	return fmt.Errorf("%w: %d of %d checks failed, %d skipped", ErrFailed, r.failed, total, r.skipped)
}

// runner is one Run's state; only Run's goroutine touches its fields.
type runner struct {
	cfg   Config
	out   io.Writer
	start time.Time
	http  *http.Client

	replicas []string // host:port of every replica, sorted

	passed, failed, skipped int
}

// result is one check on one subject.
type result struct {
	check   string
	subject string
	ok      bool
	text    string // details when ok, the reason when not
}

func pass(check, subject, format string, args ...any) result {
	return result{check: check, subject: subject, ok: true, text: fmt.Sprintf(format, args...)}
}

func fail(check, subject, format string, args ...any) result {
	return result{check: check, subject: subject, text: fmt.Sprintf(format, args...)}
}

func (r *runner) report(res result) {
	if res.ok {
		r.passed++
		fmt.Fprintln(r.out, strings.TrimRight("ok   "+res.check+" "+res.subject+" "+res.text, " "))
		return
	}
	r.failed++
	fmt.Fprintf(r.out, "FAIL %s %s: %s\n", res.check, res.subject, res.text)
}

func (r *runner) skip(check, format string, args ...any) {
	r.skipped++
	fmt.Fprintf(r.out, "skip %s: %s\n", check, fmt.Sprintf(format, args...))
}

// reportAll reports results and says whether all of them passed.
func (r *runner) reportAll(results []result) bool {
	allOK := true
	for _, res := range results {
		r.report(res)
		allOK = allOK && res.ok
	}
	return allOK
}

// check runs the phases in order; a phase runs only if the ones it needs passed.
func (r *runner) check(ctx context.Context) {
	replicas, results := r.resolve(ctx)
	r.reportAll(results)
	r.replicas = replicas
	if len(replicas) == 0 {
		for _, c := range []string{"ready", "metrics", "join", "message"} {
			r.skip(c, "no replica found")
		}
		return
	}

	// Readiness may wait for a replica that is still starting, but leaves the reserve
	// for the rest.
	reserve := min(r.cfg.Timeout/4, MaxReserve)
	readyCtx, cancel := context.WithDeadline(ctx, r.start.Add(r.cfg.Timeout-reserve))
	ready := r.reportAll(forEach(replicas, func(addr string) result { return r.ready(readyCtx, addr) }))
	cancel()
	// /metrics does not depend on readiness: a replica without NATS still serves it.
	r.reportAll(forEach(replicas, func(addr string) result { return r.metrics(ctx, addr) }))
	if !ready {
		r.skip("join", "not every replica is ready")
		r.skip("message", "not every replica is ready")
		return
	}

	room, err := roomName()
	if err != nil {
		r.report(fail("join", "", "choosing a room name: %v", err))
		r.skip("message", "no room")
		return
	}
	token, err := r.token(room)
	if err != nil {
		r.report(fail("join", "", "minting a token for room %s: %v", room, err))
		r.skip("message", "no token")
		return
	}
	clients := make([]*member, len(replicas))
	joined := r.reportAll(forEach(replicas, func(addr string) result {
		m, res := r.join(ctx, addr, room, token)
		if m != nil {
			clients[indexOf(replicas, addr)] = m
		}
		return res
	}))
	defer closeAll(clients)
	if !joined {
		r.skip("message", "not every replica has a member in room %s", room)
		return
	}
	r.reportAll(r.message(ctx, room, clients))
}

// forEach runs f for every replica concurrently and returns the results in replica order.
func forEach(replicas []string, f func(addr string) result) []result {
	results := make([]result, len(replicas))
	var wg sync.WaitGroup
	for i, addr := range replicas {
		wg.Go(func() { results[i] = f(addr) })
	}
	wg.Wait()
	return results
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// since formats the time elapsed since t for a report line.
func since(t time.Time) time.Duration {
	d := time.Since(t)
	if d < 10*time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// describe turns an error into a reason, naming the overall timeout when that is what
// cut the check short.
func describe(ctx context.Context, err error) string {
	if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		return err.Error() + " (time is up)"
	}
	return err.Error()
}
