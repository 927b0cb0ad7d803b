package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"roomcast/pkg/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(time.Hour).Unix()
	ok := jwt.MapClaims{"sub": "alice", "exp": exp, "rooms": []string{"lobby", "team-*"}}

	hs, _ := auth.New(auth.Config{Secret: secret, Now: func() time.Time { return now }})
	rs, _ := auth.New(auth.Config{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey), Now: func() time.Time { return now }})
	ed, err := auth.New(auth.Config{PublicKeyPEM: pemOf(t, edPub), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		v      *auth.Verifier
		token  string
		reason auth.Reason // "" means accepted
	}{
		{"HS256", hs, sign(t, jwt.SigningMethodHS256, secret, ok), ""},
		{"RS256", rs, sign(t, jwt.SigningMethodRS256, rsaKey, ok), ""},
		{"EdDSA", ed, sign(t, jwt.SigningMethodEdDSA, edPriv, ok), ""},
		{"empty", hs, "", auth.ReasonMissing},
		{"garbage", hs, "not.a.jwt", auth.ReasonMalformed},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another key of 32 bytes!!!!!!!!"), ok), auth.ReasonSignature},
		{"wrong RSA key", rs, sign(t, jwt.SigningMethodRS256, otherRSA, ok), auth.ReasonSignature},
		{"HS256 token to an RSA verifier", rs, sign(t, jwt.SigningMethodHS256, secret, ok), auth.ReasonSignature},
		{"alg none", hs, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ok), auth.ReasonSignature},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "exp": now.Add(-time.Minute).Unix()}), auth.ReasonExpired},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "exp": exp, "nbf": now.Add(time.Hour).Unix()}), auth.ReasonExpired},
		{"no exp", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a"}), auth.ReasonClaims},
		{"no sub", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp}), auth.ReasonClaims},
		{"rooms not a list", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "exp": exp, "rooms": "lobby"}), auth.ReasonClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.v.Verify(tt.token)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Subject != "alice" || !c.Expires.Equal(time.Unix(exp, 0)) {
					t.Fatalf("claims %+v", c)
				}
				return
			}
			var ae *auth.Error
			if !errors.As(err, &ae) || ae.Reason != tt.reason {
				t.Fatalf("got %v, want reason %q", err, tt.reason)
			}
		})
	}
}

func TestRoomsClaim(t *testing.T) {
	tests := []struct {
		rooms []string
		room  string
		ok    bool
	}{
		{nil, "anything", false},
		{[]string{}, "lobby", false},
		{[]string{"lobby"}, "lobby", true},
		{[]string{"lobby"}, "Lobby", false},
		{[]string{"lobby"}, "lobby2", false},
		{[]string{"team-*"}, "team-a", true},
		{[]string{"team-*"}, "team-", true},
		{[]string{"team-*"}, "teams", false},
		{[]string{"*"}, "x", true},
	}
	for _, tt := range tests {
		if got := (auth.Claims{Rooms: tt.rooms}).Allows(tt.room); got != tt.ok {
			t.Errorf("rooms %q allows %q = %v, want %v", tt.rooms, tt.room, got, tt.ok)
		}
	}
}

func TestMintRoundTripAndReadOnly(t *testing.T) {
	v, _ := auth.New(auth.Config{Secret: secret})
	tok, err := auth.Mint(secret, auth.Claims{Subject: "bob", Expires: time.Now().Add(time.Minute), Rooms: []string{"r"}, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil || c.Subject != "bob" || !c.ReadOnly || !c.Allows("r") || c.Allows("s") {
		t.Fatalf("got %+v, %v", c, err)
	}
	empty, _ := auth.Mint(secret, auth.Claims{Subject: "bob", Expires: time.Now().Add(time.Minute), Rooms: []string{}})
	if c, err := v.Verify(empty); err != nil || c.Allows("r") {
		t.Fatalf("an empty rooms claim must admit nothing: %+v, %v", c, err)
	}
}

func TestNewNeedsAKey(t *testing.T) {
	if _, err := auth.New(auth.Config{}); !errors.Is(err, auth.ErrNoKey) {
		t.Fatalf("got %v", err)
	}
	if _, err := auth.New(auth.Config{PublicKeyPEM: []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")}); err == nil {
		t.Fatal("a bad PEM was accepted")
	}
	if _, err := auth.New(auth.Config{Secret: secret[:auth.MinSecretBytes-1]}); !errors.Is(err, auth.ErrShortSecret) {
		t.Fatalf("a key of %d bytes: got %v", auth.MinSecretBytes-1, err)
	}
}

func TestAudienceIssuerAndRoomsClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(time.Hour).Unix()
	plain, _ := auth.New(auth.Config{Secret: secret, Now: func() time.Time { return now }})
	strict, err := auth.New(auth.Config{Secret: secret, Audience: "roomcast", Issuer: "https://id.example", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	claims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "exp": exp, "rooms": []string{"lobby"}}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	tests := []struct {
		name   string
		v      *auth.Verifier
		claims jwt.MapClaims
		reason auth.Reason // "" means accepted
		lobby  bool        // accepted and admits lobby
	}{
		{"no aud or iss, none asked", plain, claims(nil), "", true},
		{"aud and iss that are not asked for", plain, claims(jwt.MapClaims{"aud": "other", "iss": "other"}), "", true},
		{"aud and iss as asked", strict, claims(jwt.MapClaims{"aud": "roomcast", "iss": "https://id.example"}), "", true},
		{"aud among several", strict, claims(jwt.MapClaims{"aud": []string{"x", "roomcast"}, "iss": "https://id.example"}), "", true},
		{"no aud", strict, claims(jwt.MapClaims{"iss": "https://id.example"}), auth.ReasonClaims, false},
		{"another aud", strict, claims(jwt.MapClaims{"aud": "grafana", "iss": "https://id.example"}), auth.ReasonClaims, false},
		{"no iss", strict, claims(jwt.MapClaims{"aud": "roomcast"}), auth.ReasonClaims, false},
		{"another iss", strict, claims(jwt.MapClaims{"aud": "roomcast", "iss": "https://evil.example"}), auth.ReasonClaims, false},
		{"no rooms claim admits no room", plain, jwt.MapClaims{"sub": "a", "exp": exp}, "", false},
		{"rooms null admits no room", plain, jwt.MapClaims{"sub": "a", "exp": exp, "rooms": nil}, "", false},
		{"rooms * admits every room", plain, jwt.MapClaims{"sub": "a", "exp": exp, "rooms": []string{"*"}}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.v.Verify(sign(t, jwt.SigningMethodHS256, secret, tt.claims))
			if tt.reason != "" {
				if ae, ok := errors.AsType[*auth.Error](err); !ok || ae.Reason != tt.reason {
					t.Fatalf("got %v, want reason %q", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if c.Allows("lobby") != tt.lobby {
				t.Fatalf("rooms %q: admits lobby = %v, want %v", c.Rooms, !tt.lobby, tt.lobby)
			}
		})
	}
	t.Run("Mint writes aud and iss", func(t *testing.T) {
		tok, err := auth.Mint(secret, auth.Claims{Subject: "a", Expires: now.Add(time.Minute), Rooms: []string{"*"}, Audience: "roomcast", Issuer: "https://id.example"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := strict.Verify(tok)
		if err != nil || c.Audience != "roomcast" || c.Issuer != "https://id.example" {
			t.Fatalf("got %+v, %v", c, err)
		}
	})
}

// FuzzVerify: no input panics, and only tokens signed with the key pass.
func FuzzVerify(f *testing.F) {
	good, _ := auth.Mint(secret, auth.Claims{Subject: "a", Expires: time.Now().Add(time.Hour), Rooms: []string{"*"}})
	for _, s := range []string{good, "", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", good + "x", "..", "a.b"} {
		f.Add(s)
	}
	v, _ := auth.New(auth.Config{Secret: secret})
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err == nil && token != good && c.Subject == "" {
			t.Fatalf("accepted %q without a subject", token)
		}
	})
}

func TestReadFileTrimsAndBounds(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path string
		stdin      io.Reader
		want       string
		wantErr    string
	}{
		{"final newline trimmed", write("key", "  the key \n"), nil, "the key", ""},
		{"stdin for -", "-", strings.NewReader("from stdin\n"), "from stdin", ""},
		{"- is a file without stdin", filepath.Join(dir, "-"), nil, "", "no such file or directory"},
		{"empty is not an error", write("empty", "\n\t \n"), nil, "", ""},
		{"missing file", filepath.Join(dir, "missing"), nil, "", "no such file or directory"},
		{"a directory", dir, nil, "", "is a directory"},
		{"too big", write("big", strings.Repeat("k", auth.MaxFileBytes+1)), nil, "", "larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.ReadFile(tt.path, tt.stdin)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), dir) {
					t.Fatalf("err %v, want one with %q and without the path", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case string(got) != tt.want:
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
