package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/cli"
)

const testKey = "an HS256 key of at least 32 bytes"

func TestTokenIsAcceptedByTheServersVerifier(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	args := []string{"token", "-sub", "alice", "-rooms", "lobby, team-*", "-ttl", "10m", "-read-only"}
	if err := run(context.Background(), args, map[string]string{"ROOMCAST_JWT_SECRET_FILE": keyFile}, &stdout, &stderr); err != nil {
		t.Fatalf("roomcast token: %v (%s)", err, stderr.String())
	}
	// The key is read like the server reads it: the file's trailing newline is not part of it.
	v, err := auth.New(auth.Config{Secret: []byte(testKey)})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(strings.TrimSpace(stdout.String()))
	if err != nil {
		t.Fatalf("the server refuses the token: %v", err)
	}
	if claims.Subject != "alice" || !claims.ReadOnly || !slices.Equal(claims.Rooms, []string{"lobby", "team-*"}) {
		t.Errorf("claims %+v", claims)
	}
	if left := time.Until(claims.Expires); left < 9*time.Minute || left > 11*time.Minute {
		t.Errorf("token expires in %s, want about 10m", left)
	}
	if !claims.Allows("team-red") || claims.Allows("lobby2") {
		t.Errorf("rooms claim admits the wrong rooms: %v", claims.Rooms)
	}
}

func TestTokenRefusesBadArguments(t *testing.T) {
	withKey := map[string]string{"ROOMCAST_JWT_SECRET": testKey}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no subject", []string{"-rooms", "lobby"}, withKey, "missing -sub"},
		{"no rooms", []string{"-sub", "a"}, withKey, "-rooms"},
		{"empty room entry", []string{"-sub", "a", "-rooms", "lobby,"}, withKey, "-rooms"},
		{"bad room", []string{"-sub", "a", "-rooms", "no spaces"}, withKey, `room "no spaces"`},
		{"bad prefix", []string{"-sub", "a", "-rooms", "a/b*"}, withKey, `prefix "a/b*"`},
		{"zero ttl", []string{"-sub", "a", "-rooms", "x", "-ttl", "0s"}, withKey, "-ttl"},
		{"ttl too long", []string{"-sub", "a", "-rooms", "x", "-ttl", "9000h"}, withKey, "-ttl"},
		{"stray argument", []string{"-sub", "a", "-rooms", "x", "extra"}, withKey, "unexpected argument"},
		{"no key", []string{"-sub", "a", "-rooms", "x"}, nil, "ROOMCAST_JWT_SECRET_FILE"},
		{"unreadable key file", []string{"-sub", "a", "-rooms", "x"}, map[string]string{"ROOMCAST_JWT_SECRET_FILE": "/nonexistent"}, "ROOMCAST_JWT_SECRET_FILE"},
		{"key shorter than 32 bytes", []string{"-sub", "a", "-rooms", "x"}, map[string]string{"ROOMCAST_JWT_SECRET": testKey[:31]}, `ROOMCAST_JWT_SECRET="********": want an HS256 key of at least 32 bytes (RFC 7518`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"token"}, tt.args...), tt.env, &stdout, &stderr)
			if err == nil {
				t.Fatalf("minted %q", stdout.String())
			}
			if code := cli.ExitCode("roomcast", err, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q on failure", stdout.String())
			}
		})
	}
}

func TestTokenHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"token", "-h"}, nil, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) || cli.ExitCode("roomcast", err, &stderr) != 0 {
		t.Fatalf("token -h: %v", err)
	}
	for _, want := range []string{"-sub", "-rooms", "-ttl", "-read-only", "ROOMCAST_JWT_SECRET_FILE"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("token -h does not document %s", want)
		}
	}
}

func TestTokenWritesTheAudienceAndIssuerTheServersCheck(t *testing.T) {
	env := map[string]string{"ROOMCAST_JWT_SECRET": testKey, "ROOMCAST_JWT_AUDIENCE": "roomcast", "ROOMCAST_JWT_ISSUER": "https://id.example"}
	tests := []struct {
		name     string
		args     []string
		aud, iss string
	}{
		{"from the environment", nil, "roomcast", "https://id.example"},
		{"flags win", []string{"-aud", "other", "-iss", "https://other.example"}, "other", "https://other.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"token", "-sub", "a", "-rooms", "*"}, tt.args...)
			if err := run(context.Background(), args, env, &stdout, &stderr); err != nil {
				t.Fatalf("roomcast token: %v (%s)", err, stderr.String())
			}
			v, err := auth.New(auth.Config{Secret: []byte(testKey), Audience: tt.aud, Issuer: tt.iss})
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(strings.TrimSpace(stdout.String()))
			if err != nil || c.Audience != tt.aud || c.Issuer != tt.iss {
				t.Fatalf("claims %+v, %v; want aud %q iss %q", c, err, tt.aud, tt.iss)
			}
		})
	}
}
