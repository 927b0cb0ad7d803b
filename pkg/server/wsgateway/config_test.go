package wsgateway_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/wsgateway"
)

func TestPrefixesAcceptCIDRsAndAddresses(t *testing.T) {
	tests := []struct {
		in   string
		want []netip.Prefix
		bad  bool
	}{
		{"", nil, false},
		{"10.1.2.3/8", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, false},
		{" 192.168.0.7 , ,::1", []netip.Prefix{netip.MustParsePrefix("192.168.0.7/32"), netip.MustParsePrefix("::1/128")}, false},
		{"10.0.0.0/33", nil, true},
		{"nginx", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var p wsgateway.Prefixes
			err := p.UnmarshalText([]byte(tt.in))
			if (err != nil) != tt.bad {
				t.Fatalf("error %v, want one: %v", err, tt.bad)
			}
			if !tt.bad && !slices.Equal(p, tt.want) {
				t.Fatalf("got %v, want %v", p, tt.want)
			}
		})
	}
}

// ed25519PublicKey is any Ed25519 public key: Load only parses it.
const ed25519PublicKey = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAIYEFghjCEzocQVlf5dqsmMYGWcD/cLzQA49PAkjqbeA=
-----END PUBLIC KEY-----
`

func TestAuthConfigLoadsTheKeysOnce(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	secret := write("secret", "a key of more than thirty-two bytes\n")
	tests := []struct {
		name    string
		cfg     wsgateway.AuthConfig
		badVar  string
		enabled bool
	}{
		{"no key: no tokens", wsgateway.AuthConfig{}, "", false},
		{"secret", wsgateway.AuthConfig{Secret: "a key of more than thirty-two bytes"}, "", true},
		{"secret file", wsgateway.AuthConfig{SecretFile: secret}, "", true},
		{"public key file", wsgateway.AuthConfig{PublicKeyFile: write("pub.pem", ed25519PublicKey)}, "", true},
		{"short secret", wsgateway.AuthConfig{Secret: "short"}, "ROOMCAST_JWT_SECRET", false},
		{"secret of 31 bytes", wsgateway.AuthConfig{Secret: strings.Repeat("k", 31)}, "ROOMCAST_JWT_SECRET", false},
		{"secret of 32 bytes", wsgateway.AuthConfig{Secret: strings.Repeat("k", 32)}, "", true},
		{"short secret file", wsgateway.AuthConfig{SecretFile: write("short", strings.Repeat("k", 31)+"\n")}, "ROOMCAST_JWT_SECRET_FILE", false},
		{"audience and issuer", wsgateway.AuthConfig{Secret: strings.Repeat("k", 32), Audience: "roomcast", Issuer: "https://id.example"}, "", true},
		{"both secrets", wsgateway.AuthConfig{Secret: "a key of more than thirty-two bytes", SecretFile: secret}, "ROOMCAST_JWT_SECRET_FILE", false},
		{"empty secret file", wsgateway.AuthConfig{SecretFile: write("empty", "\n")}, "ROOMCAST_JWT_SECRET_FILE", false},
		{"not a PEM key", wsgateway.AuthConfig{PublicKey: "nope"}, "ROOMCAST_JWT_PUBLIC_KEY", false},
		{"not a PEM key file", wsgateway.AuthConfig{PublicKeyFile: secret}, "ROOMCAST_JWT_PUBLIC_KEY_FILE", false},
		{"missing key file", wsgateway.AuthConfig{PublicKeyFile: filepath.Join(dir, "none")}, "ROOMCAST_JWT_PUBLIC_KEY_FILE", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			err := cfg.Load(nil)
			var e *envconfig.Error
			switch {
			case tt.badVar == "" && err != nil:
				t.Fatalf("Load: %v", err)
			case tt.badVar != "" && (!errors.As(err, &e) || e.Var != tt.badVar):
				t.Fatalf("Load: %v, want an error naming %s", err, tt.badVar)
			case (cfg.Verifier != nil) != tt.enabled:
				t.Fatalf("verifier %v, want one: %v", cfg.Verifier, tt.enabled)
			}
		})
	}
	t.Run("a short key's error says how long and never shows the key", func(t *testing.T) {
		cfg := wsgateway.AuthConfig{Secret: "tooshort-but-secret"}
		err := cfg.Load(map[string]string{"ROOMCAST_JWT_SECRET": cfg.Secret})
		if err == nil || !strings.Contains(err.Error(), "at least 32 bytes (RFC 7518") || strings.Contains(err.Error(), "tooshort") {
			t.Fatalf("got %v", err)
		}
	})
}
