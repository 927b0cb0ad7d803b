package nginx_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/testenv"
)

// With the TLS files, nginx serves HTTPS and WSS to the color with HSTS, refuses TLS
// 1.1, and its plain port redirects everything but /healthz to https.
func TestNginxServesTLSAndRedirectsPlainHTTP(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
	dir := t.TempDir()
	ca := edgetest.NewCA(t, dir)
	p := serveParams(t, dir, "127.0.0.1", green.port())
	p.TLSCertFile, p.TLSKeyFile = ca.CertFile, ca.KeyFile
	p.TLSListenPort = testenv.FreePort(t)
	p.TLSPublicPort = p.TLSListenPort
	path, _ := MustRender(t, MustTemplate(t), dir, p)
	MustServe(t, bin, path, p.TLSListenPort)
	MustServe(t, bin, path, p.ListenPort)
	tlsConfig := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}

	t.Run("HTTPS reaches the app with HSTS", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
		resp, err := client.Get(fmt.Sprintf("https://localhost:%d/rooms/", p.TLSListenPort))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Roomcast-Color") != "green" {
			t.Fatalf("status %d, color %q: want 200 from green", resp.StatusCode, resp.Header.Get("X-Roomcast-Color"))
		}
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Fatalf("Strict-Transport-Security %q, want max-age=31536000", got)
		}
		if got := green.last.Load().(http.Header).Get("X-Forwarded-Proto"); got != "https" {
			t.Fatalf("X-Forwarded-Proto %q at the app, want https", got)
		}
	})

	t.Run("WSS upgrade reaches the app", func(t *testing.T) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", p.TLSListenPort), tlsConfig)
		if err != nil {
			t.Fatal(err)
		}
		r, resp := upgradeOn(t, conn)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade over TLS: status %d, want 101", resp.StatusCode)
		}
		fmt.Fprint(conn, "hello\n")
		if line, err := r.ReadString('\n'); err != nil || line != "echo green: hello\n" {
			t.Fatalf("echo over WSS: %q, %v", line, err)
		}
	})

	t.Run("plain HTTP is redirected to https", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		hits := green.hits.Load()
		resp, err := client.Post(fmt.Sprintf("http://localhost:%d/rooms/lobby?x=1", p.ListenPort), "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := fmt.Sprintf("https://localhost:%d/rooms/lobby?x=1", p.TLSPublicPort)
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("plain POST: %d to %q, want 308 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
		if green.hits.Load() != hits {
			t.Fatal("the redirected request reached the app")
		}
		resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", p.ListenPort))
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != "green" {
			t.Fatalf("plain /healthz: %d %q, want the app's 200", resp.StatusCode, body)
		}
	})

	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		old := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", p.TLSListenPort), old)
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
}

// Without the TLS files nothing changes: no redirect, no HSTS.
func TestNginxWithoutTLSServesPlainHTTP(t *testing.T) {
	bin := testenv.Program(t, "nginx")
	green := backend(t, "127.0.0.1:0", "green", http.StatusOK)
	dir := t.TempDir()
	p := serveParams(t, dir, "127.0.0.1", green.port())
	path, text := MustRender(t, MustTemplate(t), dir, p)
	if strings.Contains(text, "ssl") || strings.Contains(text, "Strict-Transport-Security") {
		t.Fatal("a config without TLS files mentions TLS")
	}
	MustServe(t, bin, path, p.ListenPort)
	resp, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/rooms/", p.ListenPort))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Strict-Transport-Security") != "" {
		t.Fatalf("plain GET: %d, HSTS %q: want 200 without HSTS", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}
}
