package testenv

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
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

// FreePort returns a TCP port that was free on every address a moment ago, for programs
// that must be told their port rather than report one they bound to port 0. It is
// chosen at random below the kernel's ephemeral range (ip_local_port_range), which the
// machine's outgoing connections draw from: there, under load (a load test's hundreds of
// clients), a connection can take the port before the program binds it. A port is
// handed out once per test process.
func FreePort(tb testing.TB) int {
	tb.Helper()
	low := ephemeralLow()
	for range 200 {
		port := minFreePort + rand.IntN(low-minFreePort)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	tb.Fatalf("finding a free port: none of 200 tried between %d and %d was free", minFreePort, low)
	return 0
}

// minFreePort is the lowest port FreePort hands out: above the well-known and most
// registered services' ports.
const minFreePort = 20000

var handedOut sync.Map // of int: ports FreePort returned

// ephemeralLow is the first port of the kernel's ephemeral range, or Linux's default
// (32768) where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > minFreePort+1000 {
				return low
			}
		}
	}
	return 32768
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
