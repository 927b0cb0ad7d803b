package loadgen_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/auth"
	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
)

var testSecret = []byte("loadgen test secret, 32 bytes at least")

// withAuth makes a replica require HS256 tokens signed with testSecret.
func withAuth(t *testing.T) replicatest.Option {
	t.Helper()
	v, err := auth.New(auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return replicatest.Auth(v)
}

// mintToken signs a token for the load generator's rooms (lg-*), valid for an hour.
func mintToken(t *testing.T, secret []byte) string {
	t.Helper()
	tok, err := auth.Mint(secret, auth.Claims{Subject: "loadgen", Expires: time.Now().Add(time.Hour), Rooms: []string{"lg-*"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// authFailures sums roomcast_auth_failures_total over its reasons.
func authFailures(t *testing.T, r *testReplica) float64 {
	t.Helper()
	var n float64
	for _, reason := range auth.Reasons {
		v, _ := testenv.LookupMetric(t, r.Registry(), "roomcast_auth_failures_total", "reason", string(reason))
		n += v
	}
	return n
}

func TestTokenOpensAServerThatRequiresOne(t *testing.T) {
	r := startReplica(t, "authd", "", withAuth(t))
	cfg := tinyConfig(t, loadgen.FanoutSmall, []string{"ws://" + r.Addr().String()})
	cfg.Token = mintToken(t, testSecret)
	rep := mustRun(t, cfg)

	checkClean(t, rep)
	if rep.Connections != 12 {
		t.Fatalf("%d connections, want 12", rep.Connections)
	}
	if n := authFailures(t, r); n != 0 {
		t.Fatalf("the server refused %v tokens", n)
	}
}

func TestWithoutAValidTokenEveryConnectionFails(t *testing.T) {
	r := startReplica(t, "authd", "", withAuth(t))
	url := "ws://" + r.Addr().String()
	tests := []struct {
		name  string
		token string
		want  []string // in the error
	}{
		{"no token", "", []string{"HTTP 401", "token refused (missing)", "the server requires a token: give -token or -token-file"}},
		{"signed with another key", mintToken(t, []byte("some other secret of 32 bytes or more")), []string{"HTTP 401", "token refused (signature)", "the server refused the token"}},
	}
	for _, tt := range tests {
		for _, s := range []loadgen.Scenario{loadgen.FanoutSmall, loadgen.Release, loadgen.ReconnectStorm} {
			t.Run(tt.name+"/"+string(s), func(t *testing.T) {
				cfg := tinyConfig(t, s, []string{url})
				cfg.Conns, cfg.Settle = 5, 500*time.Millisecond
				cfg.Token = tt.token
				// A refusal is an answer: it must fail at once, not wait out a timeout.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				start := time.Now()
				rep, err := loadgen.Run(ctx, cfg)
				if err == nil || rep != nil {
					t.Fatalf("Run = %v, %v; want an error", rep, err)
				}
				if ctx.Err() != nil {
					t.Fatalf("Run ran into the test's deadline after %v: %v", time.Since(start), err)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if tt.token != "" && strings.Contains(err.Error(), tt.token) {
					t.Errorf("the error shows the token: %q", err)
				}
			})
		}
	}
}

func TestTokenWithSpacesIsRefusedWithoutShowingIt(t *testing.T) {
	cfg := loadgen.DefaultConfig(loadgen.FanoutSmall)
	cfg.Token = "secret part\nX-Injected: 1"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "token") || strings.Contains(err.Error(), "secret part") {
		t.Fatalf("Validate = %v: want an error naming the token, not showing it", err)
	}
}
