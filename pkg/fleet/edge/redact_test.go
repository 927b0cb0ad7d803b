package edge_test

import (
	"bytes"
	"strings"
	"testing"

	"roomcast/pkg/fleet/edge"
)

func TestTokenRedactorMasksTokenParameters(t *testing.T) {
	secret := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
	tests := []struct{ name, in, want string }{
		{"error log request line",
			`2026/12/06 [error] 7#7: *1 connect() failed, request: "GET /ws/chat/lobby/?token=` + secret + ` HTTP/1.1", host: "x"` + "\n",
			`2026/12/06 [error] 7#7: *1 connect() failed, request: "GET /ws/chat/lobby/?token=REDACTED HTTP/1.1", host: "x"` + "\n"},
		{"not the first parameter", "GET /ws/chat/a/?since=3&token=" + secret + "&epoch=e\n", "GET /ws/chat/a/?since=3&token=REDACTED&epoch=e\n"},
		{"upper case", "GET /?TOKEN=" + secret + "\n", "GET /?TOKEN=REDACTED\n"},
		{"two lines", "a?token=" + secret + "\nb?token=" + secret + "\n", "a?token=REDACTED\nb?token=REDACTED\n"},
		{"nothing to mask", "GET /healthz HTTP/1.1 tokens=fine\n", "GET /healthz HTTP/1.1 tokens=fine\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			r := edge.NewTokenRedactor(&out)
			if n, err := r.Write([]byte(tt.in)); err != nil || n != len(tt.in) {
				t.Fatalf("Write: %d, %v", n, err)
			}
			if out.String() != tt.want {
				t.Errorf("got %q, want %q", out.String(), tt.want)
			}
		})
	}
}

func TestTokenRedactorMasksATokenSplitAcrossWrites(t *testing.T) {
	var out bytes.Buffer
	r := edge.NewTokenRedactor(&out)
	line := `request: "GET /ws/chat/x/?token=abcdefSECRETghijk HTTP/1.1"` + "\n"
	for _, part := range []string{line[:30], line[30:40], line[40:]} {
		if _, err := r.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "SECRET") || strings.Contains(out.String(), "abcdef") {
			t.Fatalf("a piece of the token got out: %q", out.String())
		}
	}
	if want := `request: "GET /ws/chat/x/?token=REDACTED HTTP/1.1"` + "\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}
