package cli

import (
	"context"
	"io"
	"log/slog"
	"os"

	"roomcast/pkg/envconfig"
)

// RunFunc is a command's run function: main calls it with the process's arguments,
// environment and standard streams, and tests call it in-process.
type RunFunc func(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error

// Main runs run as the process and exits with the status ExitCode gives its result.
func Main(ctx context.Context, name string, run RunFunc) {
	err := run(ctx, os.Args[1:], envconfig.Environ(), os.Stdout, os.Stderr)
	os.Exit(ExitCode(name, err, os.Stderr))
}

// Command is what a command's messages name: its name, its build version (main's
// version variable) and its usage text.
type Command struct {
	Name    string
	Version string
	Usage   func(io.Writer)
}

// Configured is a command's configuration: it has a Log section.
type Configured interface {
	Logging() Log
}

// Setup is how a long-running command starts: it parses args (-h, -version, no
// positional argument), loads the configuration from env with load, and returns it
// with the logger its Log section configures, having logged "starting NAME" with the
// version and the configuration.
func Setup[C Configured](cmd Command, args []string, env map[string]string, stdout, stderr io.Writer, load func(map[string]string) (C, error)) (C, *slog.Logger, error) {
	var cfg C
	fs := NewFlagSet(cmd.Name, stdout, stderr, cmd.Usage)
	if err := Parse(fs, args, cmd.Version, stdout, true); err != nil {
		return cfg, nil, err
	}
	cfg, err := load(env)
	if err != nil {
		return cfg, nil, err
	}
	log := cfg.Logging().New(stderr)
	log.Info("starting "+cmd.Name, "version", Version(cmd.Version), "config", envconfig.LogValue(cfg))
	return cfg, log, nil
}

// Bad says that a variable's value is not allowed: allowed says what is, e.g. "want a
// duration of at least 1s".
type Bad func(variable, allowed string) error

// Load fills C from environ (a set but empty variable means its default) and checks it
// with check, then checks its Log section. check reports a bad value through bad, which
// makes the *envconfig.Error naming the variable and its raw value.
func Load[C Configured](environ map[string]string, check func(cfg *C, bad Bad) error) (C, error) {
	cfg, err := envconfig.Parse[C](environ)
	if err != nil {
		return cfg, err
	}
	bad := func(variable, allowed string) error { return envconfig.Invalid(environ, variable, allowed) }
	if err := check(&cfg, bad); err != nil {
		return cfg, err
	}
	return cfg, cfg.Logging().Validate(environ)
}
