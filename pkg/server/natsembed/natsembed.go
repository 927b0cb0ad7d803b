// Package natsembed runs a nats-server inside the roomcast process, so that a single
// `roomcast` with no NATS_URL is a complete system. It owns the server's lifecycle only;
// clients reach it through ClientOptions.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
)

// Config says where the embedded server listens.
type Config struct {
	// ListenAddr is host:port for other processes to connect to; empty means in-process
	// connections only, with no port opened. Port 0 picks a free one.
	ListenAddr string `env:"ROOMCAST_EMBEDDED_NATS_ADDR" help:"where the embedded NATS server also listens (e.g. 127.0.0.1:4222); empty: in-process only"`
	// ReadyTimeout bounds the wait for the server to accept connections.
	ReadyTimeout time.Duration
	// JetStream enables JetStream (for history), storing in a temporary directory that
	// Shutdown removes.
	JetStream bool
	// MaxStoreBytes bounds JetStream's memory and its file store each (0: the server's
	// default, a share of the machine's memory and disk), so that nothing stored can
	// outgrow what the history stream was given.
	MaxStoreBytes int64
}

// Validate checks the listen address; environ supplies the raw values for the error.
func (c Config) Validate(environ map[string]string) error {
	if c.ListenAddr != "" && !cli.ValidListenAddr(c.ListenAddr) {
		return envconfig.Invalid(environ, "ROOMCAST_EMBEDDED_NATS_ADDR", "want host:port, :port or empty")
	}
	return nil
}

// Server is a running embedded nats-server.
type Server struct {
	ns       *server.Server
	storeDir string
}

// Start starts the server and returns once it accepts connections.
func Start(cfg Config, log *slog.Logger) (*Server, error) {
	opts := &server.Options{
		ServerName: "roomcast-embedded",
		NoSigs:     true,
		// Big enough for any room message; the server's own default is 1 MiB.
		MaxPayload: 1 << 20,
	}
	if cfg.ListenAddr == "" {
		opts.DontListen = true
	} else {
		host, portText, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("parsing embedded NATS address %q: %w", cfg.ListenAddr, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, fmt.Errorf("parsing embedded NATS port %q: %w", portText, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	var storeDir string
	if cfg.JetStream {
		dir, err := os.MkdirTemp("", "roomcast-nats-")
		if err != nil {
			return nil, fmt.Errorf("creating the embedded JetStream directory: %w", err)
		}
		storeDir = dir
		opts.JetStream, opts.StoreDir = true, dir
		opts.JetStreamMaxMemory, opts.JetStreamMaxStore = cfg.MaxStoreBytes, cfg.MaxStoreBytes
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		os.RemoveAll(storeDir)
		return nil, fmt.Errorf("creating embedded NATS server: %w", err)
	}
	ns.SetLogger(logAdapter{log.With("component", "nats-server")}, false, false)
	ns.Start()
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if !ns.ReadyForConnections(timeout) {
		ns.Shutdown()
		os.RemoveAll(storeDir)
		return nil, errors.New("embedded NATS server not ready in " + timeout.String())
	}
	return &Server{ns: ns, storeDir: storeDir}, nil
}

// JetStreamLimits are the server's bounds of JetStream's memory and file store, in
// bytes; zero when JetStream is off.
func (s *Server) JetStreamLimits() (memory, store int64) {
	cfg := s.ns.JetStreamConfig()
	if cfg == nil {
		return 0, 0
	}
	return cfg.MaxMemory, cfg.MaxStore
}

// ClientURL is the URL other processes use, or "" when the server does not listen.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// ClientOptions are the nats.go options that connect to this server: in-process when it
// has no port, so nothing touches the network.
func (s *Server) ClientOptions() []nats.Option {
	return []nats.Option{nats.InProcessServer(s.ns)}
}

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	if s.storeDir != "" {
		_ = os.RemoveAll(s.storeDir)
	}
}

type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l logAdapter) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l logAdapter) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l logAdapter) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l logAdapter) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l logAdapter) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
