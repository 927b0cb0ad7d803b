// Command roomcast-smoke is the smoke test of a deployed roomcast color: `just promote`
// runs it against the idle color before flipping traffic to it. It checks every replica
// behind the target names directly (readiness and color, metrics, a shared room, a
// message crossing every replica exactly once), prints one line per check and exits 0
// only if all pass.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/smoke"
)

// name is the command's name in its messages.
const name = "roomcast-smoke"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// main exits 0 when all checks passed (or -h, -version), 2 on bad arguments, 1 on
// anything else, a failed check first of all.
func main() {
	err := run(context.Background(), os.Args[1:], envconfig.Environ(), os.Stdin, os.Stdout, os.Stderr)
	os.Exit(cli.ExitCode(name, err, os.Stderr))
}

// run parses the flags and runs the checks. The environment is not read: everything
// is typed by the person (or recipe) running the test.
func run(ctx context.Context, args []string, environ map[string]string, stdin io.Reader, stdout, stderr io.Writer) error {
	// Before any subcommand: each answers -version, none runs.
	if err := cli.AskedVersion(name, version, args, stdout); err != nil {
		return err
	}
	cfg := smoke.Config{Timeout: smoke.DefaultTimeout}
	// Errors are reported once, by cli.ExitCode, and the usage only on -h (below).
	fs := cli.NewFlagSet(name, stdout, io.Discard, func(io.Writer) {})
	fs.Func("target", "", func(s string) error {
		targets, err := smoke.ParseTargets(s)
		cfg.Targets = append(cfg.Targets, targets...)
		return err
	})
	fs.StringVar(&cfg.Color, "color", "", "")
	fs.Func("timeout", "", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a duration above 0, such as 30s or 2m")
		}
		cfg.Timeout = d
		return nil
	})
	secretFile := fs.String("jwt-secret-file", "", "")
	// The replicas' own variables by default: `just promote` runs with the stack's.
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", environ["ROOMCAST_JWT_AUDIENCE"], "")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", environ["ROOMCAST_JWT_ISSUER"], "")
	if err := cli.Parse(fs, args, version, stdout, false); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
		}
		return err
	}
	switch {
	case fs.NArg() > 0:
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	case len(cfg.Targets) == 0:
		return cli.Usagef("missing -target: want host:port[,host:port...], such as tasks.green_app:8080")
	case strings.TrimSpace(cfg.Color) == "":
		return cli.Usagef("missing -color: want the color every replica must report, such as green")
	}

	if *secretFile != "" {
		key, err := readSecret(*secretFile, stdin)
		if err != nil {
			return cli.Usagef("-jwt-secret-file: %w", err)
		}
		cfg.JWTSecret = key
	}

	// Ctrl-C ends the checks early; Run still closes what it opened.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return smoke.Run(ctx, cfg, stdout)
}

// readSecret reads an HS256 key from path, or from stdin for "-" (so that `just promote`
// hands the key to a one-off container without a bind mount or an environment literal).
func readSecret(path string, stdin io.Reader) ([]byte, error) {
	key, err := auth.ReadFile(path, stdin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(key) < auth.MinSecretBytes {
		return nil, fmt.Errorf("want a key of at least %d bytes (RFC 7518 §3.2), as the servers require", auth.MinSecretBytes)
	}
	return key, nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: roomcast-smoke -target HOST:PORT[,HOST:PORT...] -color COLOR [-timeout 60s]
                      [-jwt-secret-file FILE|-] [-jwt-audience AUD] [-jwt-issuer ISS]
       roomcast-smoke -version

roomcast-smoke tests a deployed roomcast color before traffic is sent to it ("just
promote" runs it). It talks to every replica directly, never through nginx, and checks,
printing one line per check ("ok   ...", "FAIL ...: reason", or "skip ...: why"):

  resolve  each -target resolves; every address found is one replica
  ready    GET /readyz answers 200 {"status":"ready"} with color COLOR in its body and
           in X-Roomcast-Color; a replica that is still starting is retried (the line
           says how long it waited), one reporting another color fails at once
  metrics  GET /metrics has roomcast_build_info{color="COLOR"} 1
  join     a WebSocket on each replica joins one fresh room, smoke-<random>
  message  each replica sends one message; every replica must receive each of them
           exactly once (it keeps reading %s after the last one, to catch duplicates)

join runs only if every replica is ready, message only if every replica joined. The last
line is PASS or FAIL with the counts. Every connection is closed before it exits.

Flags:
  -target HOST:PORT[,HOST:PORT...]
        required; may be repeated. Each host is a DNS name, such as tasks.green_app
        (Swarm's name with one A record per task; AAAA records count only for a name
        without A records), or an IP address. Entries are resolved and the results
        merged, each address once; a comma-separated list of IP:PORT entries is how
        tests, which cannot make DNS names, name several replicas.
  -color COLOR
        required; the color every replica must report.
  -timeout DURATION
        bound of the whole run (default %s). /readyz is retried for all of it but a
        quarter (at most %s), kept for the checks that follow. Each DNS lookup, HTTP
        request and WebSocket handshake is bounded by %s, the wait for the messages by
        %s.

  -jwt-secret-file FILE
        the HS256 key of a deployment with auth on (ROOMCAST_JWT_SECRET_FILE of the
        replicas), or - to read it from standard input. The joins then carry a token
        minted with it for the smoke room only, expiring a minute after -timeout.
  -jwt-audience AUD, -jwt-issuer ISS
        the aud and iss claims of that token (default ROOMCAST_JWT_AUDIENCE and
        ROOMCAST_JWT_ISSUER of the environment, the variables the replicas check).

  -version
        print the version and exit.

No environment variable is read; HTTP_PROXY and friends are ignored.

Exit status: 0 every check passed, 1 a check failed or could not run, 2 bad arguments.
`, short(smoke.DefaultGrace), short(smoke.DefaultTimeout), short(smoke.MaxReserve), short(smoke.DefaultRequestTimeout), short(smoke.DefaultMessageTimeout))
}

// short writes whole seconds as "60s" rather than Duration's "1m0s".
func short(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
