// Command roomcast-loadgen generates WebSocket load against roomcast replicas and reports
// delivery counts, loss, duplicates, latency percentiles and the servers' CPU time and
// memory. Its scenarios are the k6 scripts' (k6 itself is for users who have it); the
// logic is in pkg/loadgen.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"roomcast/pkg/loadgen"
)

func main() {
	err := run(context.Background(), os.Args[1:], environ(), os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// errInterrupted means a signal cut the run short; the partial summary was printed.
var errInterrupted = errors.New("interrupted")

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "roomcast-loadgen:", err, "(see -h)")
		return 2
	default:
		fmt.Fprintln(stderr, "roomcast-loadgen:", err)
		return 1
	}
}

func environ() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func run(ctx context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	cfg, asJSON, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	raiseFileLimit(log)
	cfg.Progress = stderr
	cfg.Log = log

	sigCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		// After the first signal, a second one gets the default action: exit at once.
		select {
		case <-sigCtx.Done():
			stopSignals()
		case <-ended:
		}
	}()

	rep, err := loadgen.Run(sigCtx, cfg)
	if rep != nil {
		if werr := rep.WriteText(stdout); werr != nil {
			return fmt.Errorf("writing the summary: %w", werr)
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if werr := enc.Encode(rep); werr != nil {
				return fmt.Errorf("writing the JSON summary: %w", werr)
			}
		}
	}
	if err != nil {
		return err
	}
	if rep.Interrupted {
		return errInterrupted
	}
	return nil
}

// parseFlags returns the run's configuration: the scenario's defaults, overridden by the
// flags given. -h prints the usage to stdout and returns flag.ErrHelp.
func parseFlags(args []string, stdout io.Writer) (loadgen.Config, bool, error) {
	fs := flag.NewFlagSet("roomcast-loadgen", flag.ContinueOnError)
	// Errors are returned as one line; -h prints the usage itself.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	def := loadgen.DefaultConfig(loadgen.FanoutSmall)
	var (
		scenario = fs.String("scenario", string(loadgen.FanoutSmall), "")
		urls     = fs.String("url", strings.Join(def.URLs, ","), "")
		pids     = fs.String("server-pid", "", "")
		asJSON   = fs.Bool("json", false, "")
		v        = def
	)
	fs.DurationVar(&v.Duration, "duration", 0, "")
	fs.IntVar(&v.Rooms, "rooms", 0, "")
	fs.IntVar(&v.Members, "members", 0, "")
	fs.Float64Var(&v.Rate, "rate", 0, "")
	fs.IntVar(&v.Conns, "conns", 0, "")
	fs.DurationVar(&v.RampStep, "ramp-step", 0, "")
	fs.Float64Var(&v.RampFactor, "ramp-factor", 0, "")
	fs.Float64Var(&v.RampMaxRate, "ramp-max-rate", 0, "")
	fs.DurationVar(&v.RampMaxP99, "ramp-max-p99", 0, "")
	fs.DurationVar(&v.Grace, "grace", 0, "")
	fs.DurationVar(&v.ConnectTimeout, "connect-timeout", 0, "")
	fs.IntVar(&v.ConnectParallel, "connect-parallel", 0, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return loadgen.Config{}, false, err
		}
		return loadgen.Config{}, false, usageError{err}
	}
	if fs.NArg() > 0 {
		return loadgen.Config{}, false, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}

	cfg := loadgen.DefaultConfig(loadgen.Scenario(*scenario))
	cfg.URLs = splitList(*urls)
	var err error
	if cfg.ServerPIDs, err = parsePIDs(*pids); err != nil {
		return loadgen.Config{}, false, usageError{err}
	}
	// Only the flags given replace the scenario's defaults.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "duration":
			cfg.Duration = v.Duration
		case "rooms":
			cfg.Rooms = v.Rooms
		case "members":
			cfg.Members = v.Members
		case "rate":
			cfg.Rate = v.Rate
		case "conns":
			cfg.Conns = v.Conns
		case "ramp-step":
			cfg.RampStep = v.RampStep
		case "ramp-factor":
			cfg.RampFactor = v.RampFactor
		case "ramp-max-rate":
			cfg.RampMaxRate = v.RampMaxRate
		case "ramp-max-p99":
			cfg.RampMaxP99 = v.RampMaxP99
		case "grace":
			cfg.Grace = v.Grace
		case "connect-timeout":
			cfg.ConnectTimeout = v.ConnectTimeout
		case "connect-parallel":
			cfg.ConnectParallel = v.ConnectParallel
		}
	})
	if err := cfg.Validate(); err != nil {
		var ce *loadgen.ConfigError
		if errors.As(err, &ce) {
			return loadgen.Config{}, false, usageError{fmt.Errorf("invalid -%s %s: %s", ce.Setting, ce.Value, ce.Want)}
		}
		return loadgen.Config{}, false, usageError{err}
	}
	return cfg, *asJSON, nil
}

func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// parsePIDs parses -server-pid: comma-separated ids of running processes.
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for _, part := range splitList(s) {
		pid, err := strconv.Atoi(part)
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("invalid -server-pid %q: want comma-separated process ids", part)
		}
		if _, err := os.Stat("/proc/" + part + "/stat"); err != nil {
			return nil, fmt.Errorf("invalid -server-pid %d: no such process (or /proc is not readable)", pid)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard limit: every connection is a
// file descriptor.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("reading RLIMIT_NOFILE", "err", err)
		return
	}
	if lim.Cur >= lim.Max {
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("raising RLIMIT_NOFILE to the hard limit", "limit", lim.Max, "err", err)
	}
}

func usage(w io.Writer) {
	d := loadgen.DefaultConfig(loadgen.Ramp)
	fmt.Fprintf(w, `Usage: roomcast-loadgen [flags]

roomcast-loadgen connects WebSocket clients to roomcast rooms (/ws/chat/{room}/), has
them send stamped messages, and reports what arrived: sent, expected (each message times
its room's members), delivered (first arrival per message and member), lost (expected -
delivered, after a grace period), duplicated, latency percentiles and deliveries/s, plus
the CPU time per delivery and RSS of the server processes given with -server-pid.
Progress goes to stderr every second; the summary to stdout. Exit status: 0 when the run
completed (whatever it measured), 1 when it could not (e.g. a client failed to connect)
or was interrupted, 2 on a bad flag.

Scenarios (-scenario):
  fanout-small  10 rooms x 10 members, each member sends 1 msg/s
  fanout-large  100 rooms x 20 members x 1 msg/s: 2,000 msgs/s sent, 40,000 deliveries/s
  ramp          10 rooms x 10 members; the rate per member starts at -rate and is multiplied
                by -ramp-factor every -ramp-step until a step loses a message or its p99 is
                over -ramp-max-p99 (or -ramp-max-rate passes); reports the highest
                deliveries/s a passing step held
  idle          -conns connections (in rooms of -members) held open for -duration, nothing
                sent; reports server RSS per connection (needs -server-pid; use a freshly
                started server: memory kept from earlier load hides part of the cost)

Flags:
  -scenario NAME        fanout-small, fanout-large, ramp or idle (default fanout-small)
  -url URLS             comma-separated base URLs; connections are spread round-robin over
                        them, so a room's members land on different replicas
                        (default ws://127.0.0.1:8080)
  -duration D           sending time (fanout), hold time (idle), or the most the whole
                        ramp may take (default 30s; ramp %v)
  -rooms N              rooms (fanout, ramp)
  -members N            members per room
  -rate R               messages/s per member (ramp: the first step's; default 1)
  -conns N              idle connections (default %d)
  -server-pid PIDS      comma-separated PIDs (replicas, nats-server) whose CPU time and RSS
                        are read from /proc
  -ramp-step D          duration of a ramp step (default %v)
  -ramp-factor F        rate multiplier between ramp steps (default %v)
  -ramp-max-rate R      highest rate per member the ramp tries (default %v)
  -ramp-max-p99 D       a ramp step fails above this p99 latency (default %v)
  -grace D              wait for deliveries after sending stops (default %v)
  -connect-timeout D    dial and upgrade timeout per connection (default %v)
  -connect-parallel N   connections being set up at once (default %d)
  -json                 print the summary as JSON too, after the text
  -h                    this help

The server limits each connection to ROOMCAST_RATE_LIMIT msgs/s (default 20): raise
ROOMCAST_RATE_LIMIT and ROOMCAST_RATE_BURST for ramp and high -rate runs.

Example:
  ROOMCAST_ADDR=127.0.0.1:8080 ROOMCAST_RATE_LIMIT=100000 ROOMCAST_RATE_BURST=100000 roomcast &
  roomcast-loadgen -scenario fanout-large -duration 20s -server-pid $!
`, d.Duration, d.Conns, d.RampStep, d.RampFactor, d.RampMaxRate, d.RampMaxP99, d.Grace, d.ConnectTimeout, d.ConnectParallel)
}
