// Command roomcast-loadgen generates WebSocket load against roomcast replicas and reports
// delivery counts, loss, duplicates, latency percentiles, reconnects and the servers' CPU
// time and memory. Its scenarios mirror the k6 scripts in k6/ (k6 itself is for users
// who have it): same parameters, metric names and thresholds. The logic is in
// pkg/load/loadgen.
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

	"roomcast/pkg/auth"
	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/load/loadgen"
)

// name is the command's name in its messages.
const name = "roomcast-loadgen"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	err := run(context.Background(), os.Args[1:], envconfig.Environ(), os.Stdout, os.Stderr)
	os.Exit(cli.ExitCode(name, err, os.Stderr))
}

// errInterrupted means a signal cut the run short; the partial summary was printed.
var errInterrupted = errors.New("interrupted")

// errThresholds means the run completed but crossed a threshold: exit status 99, k6's.
var errThresholds error = thresholdsError{}

// thresholdsError is errThresholds' type: a cli.ExitCoder with k6's status.
type thresholdsError struct{}

func (thresholdsError) Error() string { return "some thresholds were crossed (see the summary)" }
func (thresholdsError) ExitCode() int { return 99 }

func run(ctx context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	// Before any subcommand: each answers -version, none runs.
	if err := cli.AskedVersion(name, version, args, stdout); err != nil {
		return err
	}
	cfg, opts, err := parseFlags(args, stdout)
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
		if opts.json {
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
	if !rep.ThresholdsPassed() && !opts.noThresholds {
		return errThresholds
	}
	return nil
}

// parseFlags returns the run's configuration: the scenario's defaults, overridden by the
// flags given, and the flags of this binary alone. -h prints the usage to stdout and
// returns flag.ErrHelp.
func parseFlags(args []string, stdout io.Writer) (loadgen.Config, options, error) {
	// Errors are reported once, by cli.ExitCode, and the usage only on -h (below).
	fs := cli.NewFlagSet(name, stdout, io.Discard, func(io.Writer) {})
	var (
		opts     options
		scenario = fs.String("scenario", string(loadgen.FanoutSmall), "")
		given    = map[string]string{}
		scratch  = loadgen.DefaultConfig(loadgen.FanoutSmall)
	)
	fs.BoolVar(&opts.json, "json", false, "")
	fs.BoolVar(&opts.noThresholds, "no-thresholds", false, "")
	tokenFile := fs.String("token-file", "", "")
	settings := loadgen.Settings()
	for _, st := range settings {
		// The scenario's defaults are known only once every flag is read: check the
		// syntax now, apply the value afterwards.
		fs.Func(st.Flag, st.Usage, func(v string) error {
			if err := st.Set(&scratch, v); err != nil {
				return err
			}
			given[st.Flag] = v
			return nil
		})
	}
	if err := cli.Parse(fs, args, version, stdout, false); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
		}
		return loadgen.Config{}, options{}, err
	}
	if fs.NArg() > 0 {
		return loadgen.Config{}, options{}, cli.Usagef("unexpected argument %q", fs.Arg(0))
	}

	cfg := loadgen.DefaultConfig(loadgen.Scenario(*scenario))
	for _, st := range settings {
		if v, ok := given[st.Flag]; ok {
			_ = st.Set(&cfg, v) // checked above
		}
	}
	if *tokenFile != "" {
		if _, ok := given["token"]; ok {
			return loadgen.Config{}, options{}, cli.Usagef("-token and -token-file are both set: give one")
		}
		token, err := readToken(*tokenFile)
		if err != nil {
			return loadgen.Config{}, options{}, cli.UsageError{Err: err}
		}
		cfg.Token = token
	}
	for _, pid := range cfg.ServerPIDs {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/stat"); err != nil {
			return loadgen.Config{}, options{}, cli.Usagef("invalid -server-pid %d: no such process (or /proc is not readable)", pid)
		}
	}
	if err := cfg.Validate(); err != nil {
		var ce *loadgen.ConfigError
		if errors.As(err, &ce) {
			setting := ce.Setting
			if setting == "token" && *tokenFile != "" {
				setting = "token-file"
			}
			return loadgen.Config{}, options{}, cli.Usagef("invalid -%s %s: %s", setting, ce.Value, ce.Want)
		}
		return loadgen.Config{}, options{}, cli.UsageError{Err: err}
	}
	return cfg, opts, nil
}

// readToken reads -token-file once: the token is its content, surrounding whitespace
// (a final newline) trimmed. Errors name the file, never its content.
func readToken(path string) (string, error) {
	data, err := auth.ReadFile(path, nil)
	switch {
	case err != nil:
		return "", fmt.Errorf("invalid -token-file %q: %v", path, err)
	case len(data) == 0:
		return "", fmt.Errorf("invalid -token-file %q: the file is empty", path)
	}
	return string(data), nil
}

// options are the flags of the command itself, not of the run.
type options struct {
	json         bool // print the report as JSON too
	noThresholds bool // a crossed threshold does not change the exit status
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
	var b strings.Builder
	b.WriteString(`Usage: roomcast-loadgen [flags]

roomcast-loadgen connects WebSocket clients to roomcast rooms (/ws/chat/{room}/), has
them send stamped messages, and reports what arrived: sent, expected (each message times
its room's members), delivered (first arrival per message and member), lost (expected -
delivered, after a grace period), duplicated, latency percentiles and deliveries/s, plus
the CPU time per delivery and RSS of the server processes given with -server-pid.
Progress goes to stderr every second; the summary to stdout. With -protocol centrifugo,
fanout-small, fanout-large and ramp drive a Centrifugo v6 server the same way, to
compare the two.

The scenarios with a k6 script in k6/ take the same parameters (the flag -foo-bar is the
script's environment variable FOO_BAR: k6 run -e FOO_BAR=...), report the same metric
names and evaluate the same thresholds.

Exit status: 0 when the run completed and its thresholds held; 99 when a threshold was
crossed (as k6; -no-thresholds keeps 0); 1 when it could not run (e.g. a client failed
to connect) or was interrupted; 2 on a bad flag.

Scenarios (-scenario):
  fanout-small  10 rooms x 10 members, each member sends 1 msg/s (k6/fanout.js)
  fanout-large  100 rooms x 20 members x 1 msg/s: 2,000 msgs/s sent, 40,000 deliveries/s
                (k6/fanout.js with ROOMS=100 MEMBERS=20)
  smoke         /readyz, then a minute of 2 rooms x 5 members x 1 msg/s; for CI pipelines
                (k6/smoke.js)
  soak          -conns mostly idle connections (one message every -send-every) held for
                -duration, counting unexpected closes; closed clients reconnect and resume
                (k6/soak.js)
  release       20 rooms x 10 members x 2 msg/s while someone runs just promote: clients
                closed with 1012 reconnect with ?since=<seq>&epoch=<epoch> (once the
                server sends seq), backing off exponentially with full jitter; reports
                lost and duplicated deliveries and the close-to-101 reconnect times. Runs
                for -duration or until SIGINT/SIGTERM, which ends it normally
                (k6/release.js)
  ramp          10 rooms x 10 members; the rate per member starts at -rate and is multiplied
                by -ramp-factor every -ramp-step until a step loses a message or its p99 is
                over -ramp-max-p99 (or -ramp-max-rate passes); reports the highest
                deliveries/s a passing step held (no k6 twin)
  idle          -conns connections (in rooms of -members) held open for -duration, nothing
                sent; reports server RSS per connection (needs -server-pid; use a freshly
                started server: memory kept from earlier load hides part of the cost)
                (no k6 twin)
  reconnect-storm
                10 rooms x 10 members x 1 msg/s, measured, plus -conns (5,000) silent storm
                clients in rooms of -members. After -settle, every storm client drops its
                connection at once (TCP reset, no close frame: a dying proxy or replica)
                and reconnects at once; a 503/429 with Retry-After is retried after it
                (plus jitter), any other failure after the -reconnect-base/-reconnect-max
                backoff; each attempt takes at most -connect-timeout. Reports the storm
                clients' drop-to-101 times, the time until all are back, the refused
                attempts by status, and the members' latency and losses during the storm;
                thresholds: p99 <= -max-p99 (100ms), lost <= -max-lost, every storm client
                back. -duration (2m) bounds connecting, settle and storm together; the
                connecting at the start also honours Retry-After (no k6 twin)

Flags (defaults depend on the scenario; the k6 scripts' variable in brackets):
  -scenario NAME
        one of the above (default fanout-small)
`)
	for _, st := range loadgen.Settings() {
		head := "  -" + st.Flag + " " + st.Arg
		if st.Env != "" {
			head += "  [" + st.Env + "]"
		}
		text := st.Usage
		if defaults := settingDefaults(st); defaults != "" {
			text += " (default " + defaults + ")"
		}
		b.WriteString(head + "\n" + wrap(text, "        ", 88))
	}
	b.WriteString(`  -token-file FILE
        read the -token from FILE (once, surrounding whitespace trimmed); not with -token
  -json
        print the summary as JSON too, after the text
  -version
        print the version and exit
  -no-thresholds
        report crossed thresholds but exit 0 all the same
  -h    this help

The server limits each connection to ROOMCAST_RATE_LIMIT msgs/s (default 20): raise
ROOMCAST_RATE_LIMIT and ROOMCAST_RATE_BURST for ramp and high -rate runs.

Examples:
  ROOMCAST_ADDR=127.0.0.1:8080 ROOMCAST_RATE_LIMIT=100000 ROOMCAST_RATE_BURST=100000 roomcast &
  roomcast-loadgen -scenario fanout-large -duration 20s -server-pid $!
  roomcast-loadgen -scenario release -url ws://127.0.0.1:80   # meanwhile: just promote TAG
  ROOMCAST_ACCEPT_RATE=1000 roomcast &     # and ulimit -n 65536 for both
  roomcast-loadgen -scenario reconnect-storm -conns 5000 -server-pid $!
  roomcast-loadgen -scenario fanout-small -token-file ./token.jwt   # a server with ROOMCAST_JWT_SECRET
  centrifugo --config config.json &   # config.json: {"client": {"insecure": true}}; port 8000
  roomcast-loadgen -protocol centrifugo -scenario fanout-large -url ws://127.0.0.1:8000 -server-pid $!
`)
	_, _ = io.WriteString(w, b.String())
}

// settingDefaults is a setting's default in the scenarios that read it, the most common
// first: "30s; ramp 10m0s".
func settingDefaults(st loadgen.Setting) string {
	var (
		order []string
		byVal = map[string][]string{}
	)
	for _, s := range loadgen.Scenarios() {
		if !st.UsedBy(s) {
			continue
		}
		v := st.String(loadgen.DefaultConfig(s))
		if _, ok := byVal[v]; !ok {
			order = append(order, v)
		}
		byVal[v] = append(byVal[v], string(s))
	}
	if len(order) == 0 {
		return ""
	}
	common := order[0]
	for _, v := range order {
		if len(byVal[v]) > len(byVal[common]) {
			common = v
		}
	}
	parts := []string{orNone(common)}
	for _, v := range order {
		if v != common {
			parts = append(parts, strings.Join(byVal[v], ", ")+" "+orNone(v))
		}
	}
	return strings.Join(parts, "; ")
}

// wrap breaks text into lines of at most width characters, each starting with indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
	return b.String()
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}
