package natsembed_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"roomcast/pkg/server/natsembed"
	"roomcast/pkg/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func roundTrip(t *testing.T, url string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("got %v, %v", m, err)
	}
}

func TestInProcessOnlyOpensNoPort(t *testing.T) {
	s, err := natsembed.Start(natsembed.Config{}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if url := s.ClientURL(); url != "" {
		t.Fatalf("ClientURL %q without ListenAddr", url)
	}
	roundTrip(t, "", s.ClientOptions()...)
}

func TestListeningServerAndItsJetStreamDirectory(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	s, err := natsembed.Start(natsembed.Config{ListenAddr: "127.0.0.1:0", JetStream: true}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	url := s.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL %q", url)
	}
	roundTrip(t, url)
	if dirs, _ := os.ReadDir(tmp); len(dirs) != 1 {
		t.Fatalf("want one JetStream directory in TMPDIR, found %d", len(dirs))
	}
	s.Shutdown()
	if dirs, _ := os.ReadDir(tmp); len(dirs) != 0 {
		t.Errorf("the JetStream directory was not removed at Shutdown: %v", dirs)
	}
}

func TestABadAddressIsAnError(t *testing.T) {
	for _, addr := range []string{"nope", "127.0.0.1:port"} {
		if s, err := natsembed.Start(natsembed.Config{ListenAddr: addr}, testenv.Logger(t)); err == nil {
			s.Shutdown()
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
}

func TestJetStreamStoreIsBounded(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	const limit = 8 << 20
	s, err := natsembed.Start(natsembed.Config{JetStream: true, MaxStoreBytes: limit}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if mem, store := s.JetStreamLimits(); mem != limit || store != limit {
		t.Fatalf("JetStream limits memory %d, store %d; want %d each", mem, store, limit)
	}
}
