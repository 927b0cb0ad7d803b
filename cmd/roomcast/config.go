package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/httpapi"
	"roomcast/pkg/replica"
)

// config is the server's environment. A set but empty variable means its default.
type config struct {
	Addr             string        `env:"ROOMCAST_ADDR" envDefault:":8080" help:"listen address"`
	NATSURL          string        `env:"NATS_URL" help:"NATS servers, comma-separated; empty starts an embedded NATS server in-process"`
	EmbeddedNATSAddr string        `env:"ROOMCAST_EMBEDDED_NATS_ADDR" help:"where the embedded NATS server also listens (e.g. 127.0.0.1:4222); empty: in-process only"`
	Color            string        `env:"ROOMCAST_COLOR" envDefault:"local" help:"deployment color reported in headers, /readyz and metrics"`
	Instance         string        `env:"ROOMCAST_INSTANCE" defaultHelp:"hostname" help:"replica name"`
	MaxMessageBytes  int           `env:"ROOMCAST_MAX_MESSAGE_BYTES" envDefault:"4096" help:"largest accepted message, in bytes (1 to 1048576)"`
	SendQueue        int           `env:"ROOMCAST_SEND_QUEUE" envDefault:"256" help:"frames queued per connection before it counts as slow"`
	SendQueueBytes   int           `env:"ROOMCAST_SEND_QUEUE_BYTES" envDefault:"1048576" help:"bytes queued per connection before it counts as slow"`
	RateLimit        float64       `env:"ROOMCAST_RATE_LIMIT" envDefault:"20" help:"messages per second per connection"`
	RateBurst        int           `env:"ROOMCAST_RATE_BURST" envDefault:"40" help:"burst of messages per connection"`
	AllowedOrigins   []string      `env:"ROOMCAST_ALLOWED_ORIGINS" help:"comma-separated allowed Origin values; empty allows any"`
	HistorySize      int           `env:"ROOMCAST_HISTORY_SIZE" envDefault:"100" help:"messages kept per room for clients that resume with ?since=; 0 turns history off"`
	HistoryTTL       time.Duration `env:"ROOMCAST_HISTORY_TTL" envDefault:"1h" help:"how long history keeps a message"`
	DrainDelay       time.Duration `env:"ROOMCAST_DRAIN_DELAY" envDefault:"5s" help:"after SIGTERM, time not ready before closing connections"`
	DrainTimeout     time.Duration `env:"ROOMCAST_DRAIN_TIMEOUT" envDefault:"20s" help:"window over which connections are closed with 1012"`
	PingInterval     time.Duration `env:"ROOMCAST_PING_INTERVAL" envDefault:"25s" help:"keepalive ping period; silent clients are closed after twice that"`
	LogFormat        string        `env:"ROOMCAST_LOG_FORMAT" envDefault:"json" help:"log output: json or text"`
	LogLevel         string        `env:"ROOMCAST_LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
}

const (
	maxMessageLimit = 1 << 20
	// maxHistorySize bounds one replay, which a resuming connection holds in memory.
	maxHistorySize = 10000
)

func loadConfig(environ map[string]string) (config, error) {
	cfg, err := envconfig.Parse[config](environ)
	if err != nil {
		return cfg, err
	}
	if cfg.Instance == "" {
		cfg.Instance, _ = os.Hostname()
	}
	cfg.AllowedOrigins = trimEmpty(cfg.AllowedOrigins)
	bad := func(name, allowed string) error { return envconfig.Invalid(environ, name, allowed) }
	switch {
	case !validListenAddr(cfg.Addr):
		return cfg, bad("ROOMCAST_ADDR", "want host:port or :port")
	case cfg.EmbeddedNATSAddr != "" && !validListenAddr(cfg.EmbeddedNATSAddr):
		return cfg, bad("ROOMCAST_EMBEDDED_NATS_ADDR", "want host:port, :port or empty")
	case cfg.MaxMessageBytes < 1 || cfg.MaxMessageBytes > maxMessageLimit:
		return cfg, bad("ROOMCAST_MAX_MESSAGE_BYTES", fmt.Sprintf("want an integer from 1 to %d", maxMessageLimit))
	case cfg.SendQueue < 1:
		return cfg, bad("ROOMCAST_SEND_QUEUE", "want an integer of at least 1")
	case cfg.SendQueueBytes < 4*cfg.MaxMessageBytes+1024+10:
		return cfg, bad("ROOMCAST_SEND_QUEUE_BYTES", fmt.Sprintf("want at least %d (one frame of the largest message)", 4*cfg.MaxMessageBytes+1024+10))
	case !(cfg.RateLimit > 0):
		return cfg, bad("ROOMCAST_RATE_LIMIT", "want a number above 0")
	case cfg.RateBurst < 1:
		return cfg, bad("ROOMCAST_RATE_BURST", "want an integer of at least 1")
	case cfg.HistorySize < 0 || cfg.HistorySize > maxHistorySize:
		return cfg, bad("ROOMCAST_HISTORY_SIZE", fmt.Sprintf("want an integer from 0 (off) to %d", maxHistorySize))
	case cfg.HistoryTTL < time.Second:
		return cfg, bad("ROOMCAST_HISTORY_TTL", "want a duration of at least 1s, such as 10m or 1h")
	case cfg.DrainDelay < 0:
		return cfg, bad("ROOMCAST_DRAIN_DELAY", "want a duration of 0s or more")
	case cfg.DrainTimeout < 0:
		return cfg, bad("ROOMCAST_DRAIN_TIMEOUT", "want a duration of 0s or more")
	case cfg.PingInterval < 100*time.Millisecond:
		return cfg, bad("ROOMCAST_PING_INTERVAL", "want a duration of at least 100ms")
	case cfg.LogFormat != "json" && cfg.LogFormat != "text":
		return cfg, bad("ROOMCAST_LOG_FORMAT", "want json or text")
	}
	if _, err := parseLevel(cfg.LogLevel); err != nil {
		return cfg, bad("ROOMCAST_LOG_LEVEL", "want debug, info, warn or error")
	}
	return cfg, nil
}

func validListenAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port != ""
}

func trimEmpty(list []string) []string {
	out := list[:0]
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func (c config) replica(version string) replica.Config {
	return replica.Config{
		Addr:             c.Addr,
		NATSURL:          c.NATSURL,
		EmbeddedNATSAddr: c.EmbeddedNATSAddr,
		Identity:         httpapi.Identity{Color: c.Color, Instance: c.Instance, Version: version},
		MaxMessageBytes:  c.MaxMessageBytes,
		SendQueueFrames:  c.SendQueue,
		SendQueueBytes:   c.SendQueueBytes,
		RateLimit:        c.RateLimit,
		RateBurst:        c.RateBurst,
		AllowedOrigins:   c.AllowedOrigins,
		HistorySize:      c.HistorySize,
		HistoryTTL:       c.HistoryTTL,
		DrainDelay:       c.DrainDelay,
		DrainTimeout:     c.DrainTimeout,
		PingInterval:     c.PingInterval,
	}
}
