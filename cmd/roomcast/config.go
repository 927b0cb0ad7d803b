package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/wsgateway"
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
	JWTSecret        string        `env:"ROOMCAST_JWT_SECRET" secret:"true" help:"HS256 key; when set (or a public key), every upgrade needs a token"`
	JWTSecretFile    string        `env:"ROOMCAST_JWT_SECRET_FILE" help:"file holding the HS256 key (a Swarm secret), instead of ROOMCAST_JWT_SECRET"`
	JWTPublicKey     string        `env:"ROOMCAST_JWT_PUBLIC_KEY" help:"PEM public key (RSA for RS256, Ed25519 for EdDSA) for tokens"`
	JWTPublicKeyFile string        `env:"ROOMCAST_JWT_PUBLIC_KEY_FILE" help:"file holding the PEM public key, instead of ROOMCAST_JWT_PUBLIC_KEY"`
	MaxConnections   int           `env:"ROOMCAST_MAX_CONNECTIONS" envDefault:"0" help:"live connections on this replica; over it upgrades get 503 (0: no limit)"`
	AcceptRate       float64       `env:"ROOMCAST_ACCEPT_RATE" envDefault:"0" help:"upgrades per second on this replica; over it 503 with Retry-After (0: no limit)"`
	MaxPerIP         int           `env:"ROOMCAST_MAX_CONNECTIONS_PER_IP" envDefault:"0" help:"live connections per client address; over it 429 (0: no limit)"`
	TrustedProxies   []string      `env:"ROOMCAST_TRUSTED_PROXIES" help:"comma-separated CIDRs whose X-Forwarded-For names the client (the proxy in front)"`
	MaxRoomMembers   int           `env:"ROOMCAST_MAX_ROOM_MEMBERS" envDefault:"0" help:"members of one room on this replica; over it 503 (0: no limit)"`
	HistorySize      int           `env:"ROOMCAST_HISTORY_SIZE" envDefault:"100" help:"messages kept per room for clients that resume with ?since=; 0 turns history off"`
	HistoryTTL       time.Duration `env:"ROOMCAST_HISTORY_TTL" envDefault:"1h" help:"how long history keeps a message"`
	HistoryReplicas  int           `env:"ROOMCAST_HISTORY_REPLICAS" envDefault:"1" help:"replication of the history stream in a NATS cluster (3 survives the loss of a node)"`
	CatchUpTimeout   time.Duration `env:"ROOMCAST_CATCHUP_TIMEOUT" envDefault:"15s" help:"how long a room retries reading what it missed from history (after a NATS reconnect or a gap) while its live messages wait, before it sends history_truncated and goes on"`
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
	case cfg.HistoryReplicas < 1 || cfg.HistoryReplicas > 5:
		return cfg, bad("ROOMCAST_HISTORY_REPLICAS", "want an integer from 1 to 5")
	case cfg.CatchUpTimeout < time.Second || cfg.CatchUpTimeout > 10*time.Minute:
		return cfg, bad("ROOMCAST_CATCHUP_TIMEOUT", "want a duration from 1s to 10m, such as 15s")
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
	switch {
	case cfg.MaxConnections < 0:
		return cfg, bad("ROOMCAST_MAX_CONNECTIONS", "want an integer of 0 (no limit) or more")
	case cfg.AcceptRate < 0:
		return cfg, bad("ROOMCAST_ACCEPT_RATE", "want a number of 0 (no limit) or more")
	case cfg.MaxPerIP < 0:
		return cfg, bad("ROOMCAST_MAX_CONNECTIONS_PER_IP", "want an integer of 0 (no limit) or more")
	case cfg.MaxRoomMembers < 0:
		return cfg, bad("ROOMCAST_MAX_ROOM_MEMBERS", "want an integer of 0 (no limit) or more")
	case cfg.JWTSecret != "" && cfg.JWTSecretFile != "":
		return cfg, bad("ROOMCAST_JWT_SECRET_FILE", "want it empty when ROOMCAST_JWT_SECRET is set: one of the two")
	case cfg.JWTPublicKey != "" && cfg.JWTPublicKeyFile != "":
		return cfg, bad("ROOMCAST_JWT_PUBLIC_KEY_FILE", "want it empty when ROOMCAST_JWT_PUBLIC_KEY is set: one of the two")
	}
	cfg.TrustedProxies = trimEmpty(cfg.TrustedProxies)
	for _, p := range cfg.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			return cfg, bad("ROOMCAST_TRUSTED_PROXIES", "want comma-separated CIDRs such as 10.0.0.0/8 or addresses")
		}
	}
	if cfg.JWTSecretFile != "" {
		b, err := auth.ReadFile(cfg.JWTSecretFile, nil)
		if err != nil || len(b) == 0 {
			return cfg, bad("ROOMCAST_JWT_SECRET_FILE", "want a readable, non-empty file")
		}
		cfg.JWTSecret = string(b)
	}
	if cfg.JWTPublicKeyFile != "" {
		b, err := os.ReadFile(cfg.JWTPublicKeyFile)
		if err != nil {
			return cfg, bad("ROOMCAST_JWT_PUBLIC_KEY_FILE", "want a readable PEM file")
		}
		cfg.JWTPublicKey = string(b)
	}
	if cfg.JWTSecret != "" && len(cfg.JWTSecret) < 16 {
		return cfg, &envconfig.Error{Var: "ROOMCAST_JWT_SECRET", Value: "********", Allowed: "want at least 16 bytes"}
	}
	if cfg.JWTPublicKey != "" {
		if _, err := auth.New(auth.Config{PublicKeyPEM: []byte(cfg.JWTPublicKey)}); err != nil {
			name := "ROOMCAST_JWT_PUBLIC_KEY"
			if cfg.JWTPublicKeyFile != "" {
				name = "ROOMCAST_JWT_PUBLIC_KEY_FILE"
			}
			return cfg, &envconfig.Error{Var: name, Value: "(PEM)", Allowed: "want an RSA or Ed25519 public key in PEM"}
		}
	}
	return cfg, nil
}

// parsePrefix accepts a CIDR or a bare address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
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

func (c config) replica(version string) (replica.Config, error) {
	var verifier *auth.Verifier
	if c.JWTSecret != "" || c.JWTPublicKey != "" {
		v, err := auth.New(auth.Config{Secret: []byte(c.JWTSecret), PublicKeyPEM: []byte(c.JWTPublicKey), Leeway: 5 * time.Second})
		if err != nil {
			return replica.Config{}, fmt.Errorf("setting up token verification: %w", err)
		}
		verifier = v
	}
	var proxies []netip.Prefix
	for _, p := range c.TrustedProxies {
		prefix, _ := parsePrefix(p) // validated by loadConfig
		proxies = append(proxies, prefix)
	}
	return replica.Config{
		Auth: verifier,
		Limits: wsgateway.Limits{
			MaxConnections:      c.MaxConnections,
			AcceptRate:          c.AcceptRate,
			MaxConnectionsPerIP: c.MaxPerIP,
			TrustedProxies:      proxies,
			MaxRoomMembers:      c.MaxRoomMembers,
		},
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
		HistoryReplicas:  c.HistoryReplicas,
		CatchUpTimeout:   c.CatchUpTimeout,
		DrainDelay:       c.DrainDelay,
		DrainTimeout:     c.DrainTimeout,
		PingInterval:     c.PingInterval,
	}, nil
}
