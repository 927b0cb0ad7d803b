// Package cli is what every roomcast command shares around its run function: flag
// parsing with -version, usage errors and exit statuses, loading and checking the
// configuration, the logger configured from ROOMCAST_LOG_FORMAT and ROOMCAST_LOG_LEVEL,
// a metrics listener, the two-signal shutdown and the lifecycle group of a
// long-running command, and the healthcheck subcommand. It holds no state of its own;
// everything it returns is the caller's.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"strings"

	"roomcast/pkg/envconfig"
)

// UsageError is a mistake on the command line or in the environment: exit status 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// ExitCoder is an error that chooses the process's exit status (a child's status that
// the command passes on).
type ExitCoder interface {
	error
	ExitCode() int
}

// ErrVersionPrinted is returned by Parse after -version printed the version: exit 0.
var ErrVersionPrinted = errors.New("version printed")

// ExitCode maps what run returned to the process's exit status, and says why on stderr
// (prefixed with the command's name) unless it is a success: 0 for nil, -h and
// -version; 2 for usage and configuration errors; an ExitCoder's own status; else 1.
func ExitCode(name string, err error, stderr io.Writer) int {
	var ue UsageError
	var ee *envconfig.Error
	var xc ExitCoder
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp), errors.Is(err, ErrVersionPrinted):
		return 0
	case errors.As(err, &ee), errors.As(err, &ue):
		fmt.Fprintln(stderr, name+":", err)
		return 2
	case errors.As(err, &xc):
		fmt.Fprintln(stderr, name+":", err)
		return xc.ExitCode()
	default:
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
}

// NewFlagSet returns a flag set that reports errors on stderr and prints usage (for -h)
// on stdout.
func NewFlagSet(name string, stdout, stderr io.Writer, usage func(io.Writer)) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stdout) }
	return fs
}

// Parse adds -version to fs and parses args. -h returns flag.ErrHelp, -version prints
// "NAME VERSION" on stdout and returns ErrVersionPrinted, a bad flag is a UsageError.
// With noArgs, a positional argument is a UsageError too.
func Parse(fs *flag.FlagSet, args []string, version string, stdout io.Writer, noArgs bool) error {
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return UsageError{err}
	}
	if *showVersion {
		fmt.Fprintln(stdout, VersionLine(fs.Name(), version))
		return ErrVersionPrinted
	}
	if noArgs && fs.NArg() > 0 {
		return Usagef("unexpected argument %q (configuration comes from the environment; see -h)", fs.Arg(0))
	}
	return nil
}

// AskedVersion prints the VersionLine of name and its subcommand (the words args start
// with: "roomcast token") and returns ErrVersionPrinted when args ask for the version
// anywhere before a "--" (-version or --version, after a subcommand too: `roomcast
// token -version`), else nil. Commands call it first, so that every subcommand answers
// it and none runs.
func AskedVersion(name, version string, args []string, stdout io.Writer) error {
	words, sub := []string{name}, true
	for _, a := range args {
		switch {
		case a == "--":
			return nil
		case a == "-version" || a == "--version" || a == "-version=true" || a == "--version=true":
			fmt.Fprintln(stdout, VersionLine(strings.Join(words, " "), version))
			return ErrVersionPrinted
		case strings.HasPrefix(a, "-"):
			sub = false
		case sub:
			words = append(words, a)
		}
	}
	return nil
}

// VersionLine is what -version prints: "NAME VERSION (GOVERSION OS/ARCH)", plus the
// commit time when the toolchain recorded one.
func VersionLine(name, version string) string {
	info, ok := debug.ReadBuildInfo()
	return versionLine(name, version, info, ok)
}

func versionLine(name, version string, info *debug.BuildInfo, ok bool) string {
	detail := runtime.GOOS + "/" + runtime.GOARCH
	if ok {
		detail = info.GoVersion + " " + detail
		for _, s := range info.Settings {
			if s.Key == "vcs.time" {
				detail += ", committed " + s.Value
			}
		}
	}
	return fmt.Sprintf("%s %s (%s)", name, versionOf(version, info, ok), detail)
}

// Version is v when the build set one (-ldflags "-X main.version=..."), else what the
// Go toolchain recorded: the module version, or the VCS revision (marked +dirty); "dev"
// when it recorded neither (go run, or -buildvcs=false).
func Version(v string) string {
	info, ok := debug.ReadBuildInfo()
	return versionOf(v, info, ok)
}

func versionOf(v string, info *debug.BuildInfo, ok bool) string {
	if v != "" && v != "dev" {
		return v
	}
	if !ok {
		return "dev"
	}
	if mv := info.Main.Version; mv != "" && mv != "(devel)" {
		return mv
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return rev + dirty
}

// Log is the logging section of every command's configuration.
type Log struct {
	Format string `env:"ROOMCAST_LOG_FORMAT" envDefault:"json" help:"log output: json or text"`
	Level  string `env:"ROOMCAST_LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
}

// Validate checks both variables; environ supplies the raw values for the error.
func (l Log) Validate(environ map[string]string) error {
	if l.Format != "json" && l.Format != "text" {
		return envconfig.Invalid(environ, "ROOMCAST_LOG_FORMAT", "want json or text")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return envconfig.Invalid(environ, "ROOMCAST_LOG_LEVEL", "want debug, info, warn or error")
	}
	return nil
}

// New returns a logger writing to w in the configured format, at the configured level
// (info if the level does not parse: Validate reports that).
func (l Log) New(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ValidListenAddr reports whether addr is host:port or :port, with a port.
func ValidListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port != ""
}
