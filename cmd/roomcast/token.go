package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/chat"
	"roomcast/pkg/cli"
)

// maxTokenTTL keeps a typo such as -ttl 10000h from minting a token that never expires
// in practice.
const maxTokenTTL = 30 * 24 * time.Hour

// token mints an HS256 token with the key the server itself reads (ROOMCAST_JWT_SECRET or
// ROOMCAST_JWT_SECRET_FILE), so an operator can hand out tokens for a deployment without
// another tool: `just token alice 'lobby,team-*'` on Swarm.
func token(args []string, env map[string]string, stdout io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("roomcast token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sub := fs.String("sub", "", "")
	rooms := fs.String("rooms", "", "")
	ttl := fs.Duration("ttl", time.Hour, "")
	readOnly := fs.Bool("read-only", false, "")
	aud := fs.String("aud", "", "")
	iss := fs.String("iss", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			tokenUsage(stdout)
			return err
		}
		return cli.Usagef("token: %w", err)
	}
	switch {
	case fs.NArg() > 0:
		return cli.Usagef("token: unexpected argument %q", fs.Arg(0))
	case strings.TrimSpace(*sub) == "":
		return cli.Usagef("token: missing -sub: want who the token is for, such as alice")
	case *ttl <= 0 || *ttl > maxTokenTTL:
		return cli.Usagef("token: -ttl %s: want a duration above 0 and at most %s", *ttl, maxTokenTTL)
	}
	list, err := parseRoomGrants(*rooms)
	if err != nil {
		return cli.Usagef("token: -rooms: %w", err)
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	if cfg.Server.Auth.Secret == "" {
		return cli.Usagef("token: no key: set ROOMCAST_JWT_SECRET_FILE (or ROOMCAST_JWT_SECRET) to the HS256 key the servers use")
	}
	// The servers' own settings by default, so that the token is one they accept.
	if *aud == "" {
		*aud = cfg.Server.Auth.Audience
	}
	if *iss == "" {
		*iss = cfg.Server.Auth.Issuer
	}
	s, err := auth.Mint([]byte(cfg.Server.Auth.Secret), auth.Claims{
		Subject: *sub, Expires: now.Add(*ttl), Rooms: list, ReadOnly: *readOnly,
		Audience: *aud, Issuer: *iss,
	})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, s)
	return err
}

// parseRoomGrants reads "lobby,team-*": room names, or prefixes ending in "*" ("*" alone
// is every room). An empty list is refused: a token for every room should say so.
func parseRoomGrants(s string) ([]string, error) {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		r := strings.TrimSpace(part)
		if r == "" {
			return nil, errors.New(`want room names or prefixes ending in *, separated by commas, such as lobby,team-* ("*" for every room)`)
		}
		if p, ok := strings.CutSuffix(r, "*"); ok {
			if p != "" {
				if err := chat.ValidateRoom(p); err != nil {
					return nil, fmt.Errorf("prefix %q: %w", r, err)
				}
			}
		} else if err := chat.ValidateRoom(r); err != nil {
			return nil, fmt.Errorf("room %q: %w", r, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func tokenUsage(w io.Writer) {
	fmt.Fprintf(w, `Usage: roomcast token -sub SUBJECT -rooms ROOM[,PREFIX*...] [-ttl 1h] [-read-only] [-aud AUD] [-iss ISS]

Prints an HS256 token for the WebSocket upgrade, signed with the key of
ROOMCAST_JWT_SECRET_FILE (or ROOMCAST_JWT_SECRET), the variables the server reads;
the key must be at least %d bytes (RFC 7518 §3.2), as the server requires.

  -sub SUBJECT   required: who the token is for (the sub claim)
  -rooms LIST    required: room names or prefixes ending in *, comma-separated;
                 "*" admits every room
  -ttl DURATION  lifetime, at most %s (default 1h)
  -read-only     the holder may join but not send
  -aud AUDIENCE  the aud claim (default ROOMCAST_JWT_AUDIENCE)
  -iss ISSUER    the iss claim (default ROOMCAST_JWT_ISSUER)
`, auth.MinSecretBytes, maxTokenTTL)
}
