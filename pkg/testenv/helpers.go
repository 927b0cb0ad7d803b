package testenv

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
)

// LogVar is the variable that sends test logs to stderr at debug level instead of
// discarding them: ROOMCAST_TEST_LOG=1 go test -run TestX ./pkg/...
const LogVar = "ROOMCAST_TEST_LOG"

// Logger returns a logger for the code under test: silent, unless ROOMCAST_TEST_LOG=1
// asks for every record on stderr, tagged with the test's name.
func Logger(tb testing.TB) *slog.Logger {
	if os.Getenv(LogVar) == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", tb.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago, for programs
// that must be told their port rather than report one they bound to port 0.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// SyncBuffer collects output written from several goroutines (slog handlers, os/exec
// pipes) and can be read while they write.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

var _ io.Writer = (*SyncBuffer)(nil)

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
