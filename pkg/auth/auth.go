// Package auth verifies the JWTs that admit a client to rooms: HS256 with a shared
// secret, RS256 or EdDSA with a PEM public key, parsed by github.com/golang-jwt/jwt/v5.
// A token needs sub and exp (and aud and iss when the Verifier is configured with them);
// rooms lists the rooms (or prefixes ending in *) it may join, ["*"] every room, and a
// token without one joins none; read_only tokens may join but not send.
//
// A Verifier holds only keys and is safe for concurrent use.
package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Reason classifies why a token was refused; it is the label of
// roomcast_auth_failures_total, so the set is closed.
type Reason string

// The reasons a token is refused.
const (
	ReasonMissing   Reason = "missing"   // no token at all
	ReasonMalformed Reason = "malformed" // not a JWT
	ReasonSignature Reason = "signature" // wrong key or algorithm
	ReasonExpired   Reason = "expired"   // exp in the past (or nbf in the future)
	ReasonClaims    Reason = "claims"    // sub or exp missing, a bad rooms claim, or the wrong aud or iss
	ReasonRoom      Reason = "room"      // valid, but not for this room
)

// Reasons lists every Reason, for metrics exported at zero.
var Reasons = []Reason{ReasonMissing, ReasonMalformed, ReasonSignature, ReasonExpired, ReasonClaims, ReasonRoom}

// Error is a refused token.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return "token refused (" + string(e.Reason) + "): " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Claims are what roomcast reads from a token.
type Claims struct {
	Subject string
	Expires time.Time
	// Rooms are the rooms the token admits: names, or prefixes ending in "*" ("*" is
	// every room); nil (no rooms claim) admits none.
	Rooms    []string
	ReadOnly bool
	// Audience is the aud claim (its first entry when it lists several; "" for none):
	// Mint writes it, Verify checks the configured one against every entry.
	Audience string
	// Issuer is the iss claim ("" for none).
	Issuer string
}

// Allows reports whether the token admits room: an exact entry, or a prefix entry
// ending in "*". A token without a rooms claim admits no room: a grant of every room is
// written ["*"], so a token minted for something else is never a key to all of them.
func (c Claims) Allows(room string) bool {
	for _, r := range c.Rooms {
		if p, ok := strings.CutSuffix(r, "*"); ok {
			if strings.HasPrefix(room, p) {
				return true
			}
		} else if r == room {
			return true
		}
	}
	return false
}

type tokenClaims struct {
	jwt.RegisteredClaims
	Rooms    *[]string `json:"rooms,omitempty"`
	ReadOnly bool      `json:"read_only,omitempty"`
}

// Verifier checks tokens against the configured keys.
type Verifier struct {
	secret []byte
	public crypto.PublicKey
	parser *jwt.Parser
	now    func() time.Time
}

// Config holds the keys; at least one must be set for a Verifier.
type Config struct {
	// Secret is the HS256 key, at least MinSecretBytes long.
	Secret []byte
	// PublicKeyPEM is an RSA (RS256) or Ed25519 (EdDSA) public key in PEM.
	PublicKeyPEM []byte
	// Leeway tolerates clock skew on exp and nbf.
	Leeway time.Duration
	// Audience, when set, must be in the token's aud claim.
	Audience string
	// Issuer, when set, must be the token's iss claim.
	Issuer string
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// MinSecretBytes is the shortest HS256 key New accepts: RFC 7518 §3.2 wants a key at
// least as long as the hash output, 256 bits.
const MinSecretBytes = 32

// ErrNoKey is returned by New when neither key is configured.
var ErrNoKey = errors.New("no JWT key configured")

// ErrShortSecret is returned by New for an HS256 key shorter than MinSecretBytes.
var ErrShortSecret = fmt.Errorf("HS256 key shorter than %d bytes (RFC 7518 §3.2)", MinSecretBytes)

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	v := &Verifier{secret: cfg.Secret, now: cfg.Now}
	if v.now == nil {
		v.now = time.Now
	}
	var methods []string
	if len(cfg.Secret) > 0 && len(cfg.Secret) < MinSecretBytes {
		return nil, ErrShortSecret
	}
	if len(cfg.Secret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.PublicKeyPEM) > 0 {
		if k, err := jwt.ParseRSAPublicKeyFromPEM(cfg.PublicKeyPEM); err == nil {
			v.public = k
			methods = append(methods, jwt.SigningMethodRS256.Alg())
		} else if k, err := jwt.ParseEdPublicKeyFromPEM(cfg.PublicKeyPEM); err == nil {
			v.public = k
			methods = append(methods, jwt.SigningMethodEdDSA.Alg())
		} else {
			return nil, errors.New("public key is neither an RSA nor an Ed25519 PEM public key")
		}
	}
	if len(methods) == 0 {
		return nil, ErrNoKey
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		return v.secret, nil
	case *jwt.SigningMethodRSA:
		if k, ok := v.public.(*rsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodEd25519:
		if k, ok := v.public.(ed25519.PublicKey); ok {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no key for algorithm %s", t.Method.Alg())
}

// Verify parses token and checks its signature, expiry and claims. The error is an
// *Error with the reason.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, &Error{Reason: ReasonMissing, Err: errors.New("no token")}
	}
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(token, &tc, v.key)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.As(err, &typeErr):
		return Claims{}, &Error{Reason: ReasonClaims, Err: err}
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Claims{}, &Error{Reason: ReasonMalformed, Err: err}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return Claims{}, &Error{Reason: ReasonSignature, Err: err}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return Claims{}, &Error{Reason: ReasonClaims, Err: err}
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenNotValidYet):
		return Claims{}, &Error{Reason: ReasonExpired, Err: err}
	default:
		return Claims{}, &Error{Reason: ReasonClaims, Err: err}
	}
	if tc.Subject == "" {
		return Claims{}, &Error{Reason: ReasonClaims, Err: errors.New("sub is required")}
	}
	c := Claims{Subject: tc.Subject, Expires: tc.ExpiresAt.Time, ReadOnly: tc.ReadOnly, Issuer: tc.Issuer}
	if len(tc.Audience) > 0 {
		c.Audience = tc.Audience[0]
	}
	if tc.Rooms != nil {
		c.Rooms = *tc.Rooms
		if c.Rooms == nil {
			c.Rooms = []string{} // "rooms": [] admits nothing
		}
	}
	return c, nil
}

// Mint signs an HS256 token, for roomcast token, roomcast-smoke and tests.
func Mint(secret []byte, c Claims) (string, error) {
	tc := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: c.Subject, ExpiresAt: jwt.NewNumericDate(c.Expires), Issuer: c.Issuer},
		ReadOnly:         c.ReadOnly,
	}
	if c.Audience != "" {
		tc.Audience = jwt.ClaimStrings{c.Audience}
	}
	if c.Rooms != nil {
		rooms := c.Rooms
		tc.Rooms = &rooms
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return s, nil
}
