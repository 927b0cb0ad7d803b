package wsgateway

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/envconfig"
)

// maxMessageLimit bounds ROOMCAST_MAX_MESSAGE_BYTES; the embedded NATS server's payload
// limit is the same.
const maxMessageLimit = 1 << 20

// LargestFrame is the size of one frame carrying a message of the largest accepted size,
// JSON escaping and the WebSocket header included: the least a send queue must hold.
func (c Config) LargestFrame() int { return 4*c.MaxMessageBytes + 1024 + 10 }

// Validate checks the values Config takes from the environment; environ supplies the
// raw values for the error.
func (c Config) Validate(environ map[string]string) error {
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > maxMessageLimit {
		return envconfig.Invalid(environ, "ROOMCAST_MAX_MESSAGE_BYTES", fmt.Sprintf("want an integer from 1 to %d", maxMessageLimit))
	}
	if c.ReadyWait < 0 {
		return envconfig.Invalid(environ, "ROOMCAST_READY_WAIT", "want a duration of 0s or more")
	}
	if err := c.RateLimit.Validate(environ); err != nil {
		return err
	}
	return c.Limits.Validate(environ)
}

// Validate checks the limits; environ supplies the raw values for the error.
func (l Limits) Validate(environ map[string]string) error {
	bad := func(name, allowed string) error { return envconfig.Invalid(environ, name, allowed) }
	switch {
	case l.MaxConnections < 0:
		return bad("ROOMCAST_MAX_CONNECTIONS", "want an integer of 0 (no limit) or more")
	case l.AcceptRate < 0:
		return bad("ROOMCAST_ACCEPT_RATE", "want a number of 0 (no limit) or more")
	case l.MaxConnectionsPerIP < 0:
		return bad("ROOMCAST_MAX_CONNECTIONS_PER_IP", "want an integer of 0 (no limit) or more")
	case l.MaxRoomMembers < 0:
		return bad("ROOMCAST_MAX_ROOM_MEMBERS", "want an integer of 0 (no limit) or more")
	}
	return nil
}

// Origins is a comma-separated list of Origin values; blanks around and between the
// commas are dropped.
type Origins []string

// UnmarshalText parses the list.
func (o *Origins) UnmarshalText(text []byte) error {
	*o = nil
	for s := range strings.SplitSeq(string(text), ",") {
		if s = strings.TrimSpace(s); s != "" {
			*o = append(*o, s)
		}
	}
	return nil
}

// Prefixes is a comma-separated list of CIDRs or bare addresses (a /32 or /128).
type Prefixes []netip.Prefix

// UnmarshalText parses the list.
func (p *Prefixes) UnmarshalText(text []byte) error {
	*p = nil
	for s := range strings.SplitSeq(string(text), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		prefix, err := parsePrefix(s)
		if err != nil {
			return err
		}
		*p = append(*p, prefix)
	}
	return nil
}

// Allowed is what the parse error of ROOMCAST_TRUSTED_PROXIES says.
func (Prefixes) Allowed() string {
	return "want comma-separated CIDRs such as 10.0.0.0/8 or addresses"
}

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

// AuthConfig is the token section of the server's configuration: the keys, given in the
// environment or in files (Swarm secrets), and the Verifier built from them.
type AuthConfig struct {
	Secret        string `env:"ROOMCAST_JWT_SECRET" secret:"true" help:"HS256 key, at least 32 bytes; when set (or a public key), every upgrade needs a token"`
	SecretFile    string `env:"ROOMCAST_JWT_SECRET_FILE" help:"file holding the HS256 key (a Swarm secret), instead of ROOMCAST_JWT_SECRET"`
	PublicKey     string `env:"ROOMCAST_JWT_PUBLIC_KEY" help:"PEM public key (RSA for RS256, Ed25519 for EdDSA) for tokens"`
	PublicKeyFile string `env:"ROOMCAST_JWT_PUBLIC_KEY_FILE" help:"file holding the PEM public key, instead of ROOMCAST_JWT_PUBLIC_KEY"`
	Audience      string `env:"ROOMCAST_JWT_AUDIENCE" help:"when set, a token's aud claim must include it (roomcast token writes it)"`
	Issuer        string `env:"ROOMCAST_JWT_ISSUER" help:"when set, a token's iss claim must be it (roomcast token writes it)"`
	// Verifier checks the tokens; nil when no key is configured (no token needed). Load
	// builds it from the keys; tests may set it directly.
	Verifier *auth.Verifier
}

// tokenLeeway tolerates clock skew between the token's issuer and the replica.
const tokenLeeway = 5 * time.Second

// Load checks the keys, reads the key files into Secret and PublicKey, and builds the
// Verifier, once; environ supplies the raw values for the error.
func (a *AuthConfig) Load(environ map[string]string) error {
	bad := func(name, allowed string) error { return envconfig.Invalid(environ, name, allowed) }
	switch {
	case a.Secret != "" && a.SecretFile != "":
		return bad("ROOMCAST_JWT_SECRET_FILE", "want it empty when ROOMCAST_JWT_SECRET is set: one of the two")
	case a.PublicKey != "" && a.PublicKeyFile != "":
		return bad("ROOMCAST_JWT_PUBLIC_KEY_FILE", "want it empty when ROOMCAST_JWT_PUBLIC_KEY is set: one of the two")
	}
	if a.SecretFile != "" {
		b, err := auth.ReadFile(a.SecretFile, nil)
		if err != nil || len(b) == 0 {
			return bad("ROOMCAST_JWT_SECRET_FILE", "want a readable, non-empty file")
		}
		a.Secret = string(b)
	}
	if a.PublicKeyFile != "" {
		b, err := os.ReadFile(a.PublicKeyFile)
		if err != nil {
			return bad("ROOMCAST_JWT_PUBLIC_KEY_FILE", "want a readable PEM file")
		}
		a.PublicKey = string(b)
	}
	if a.Secret != "" && len(a.Secret) < auth.MinSecretBytes {
		name, value := "ROOMCAST_JWT_SECRET", "********"
		if a.SecretFile != "" {
			name, value = "ROOMCAST_JWT_SECRET_FILE", a.SecretFile
		}
		return &envconfig.Error{Var: name, Value: value, Allowed: fmt.Sprintf(
			"want an HS256 key of at least %d bytes (RFC 7518 §3.2), such as the output of openssl rand -base64 48", auth.MinSecretBytes)}
	}
	if a.Secret == "" && a.PublicKey == "" {
		return nil
	}
	v, err := auth.New(auth.Config{
		Secret: []byte(a.Secret), PublicKeyPEM: []byte(a.PublicKey), Leeway: tokenLeeway,
		Audience: a.Audience, Issuer: a.Issuer,
	})
	if err != nil {
		// The secret is checked above: only the public key can be refused here.
		name := "ROOMCAST_JWT_PUBLIC_KEY"
		if a.PublicKeyFile != "" {
			name = "ROOMCAST_JWT_PUBLIC_KEY_FILE"
		}
		return &envconfig.Error{Var: name, Value: "(PEM)", Allowed: "want an RSA or Ed25519 public key in PEM"}
	}
	a.Verifier = v
	return nil
}
