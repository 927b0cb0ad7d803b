package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"roomcast/pkg/load/loadgen"
)

// fakeCentrifugo speaks the part of Centrifugo v6's client protocol the load generator
// uses, at /connection/websocket: connect, subscribe and publish replies, and a push of
// each publication to every subscriber of its channel. Pushes are queued and written
// every flushEvery, all of a client's in one frame, one per line, as Centrifugo writes
// what is queued; the first such frame of each client has a ping ({}) after its first
// push, whose pong ({}) is counted.
type fakeCentrifugo struct {
	url string
	// refuse, if set, makes the server answer a command with error 103 instead.
	refuse func(method string, id uint32) bool

	mu      sync.Mutex
	conns   map[*gws.Conn]*fakeClient
	subs    map[string][]*fakeClient
	refused int      // publishes refused
	batched int      // frames with two pushes or more
	errs    []string // what the clients did wrong
	pongs   int
	// allPonged is closed once pongs reaches wantPongs.
	wantPongs int
	allPonged chan struct{}
}

type fakeClient struct {
	conn      *gws.Conn
	connected bool
	queue     [][]byte // pushes not written yet
	pinged    bool
	ponged    bool
}

// fakeCommand is a client command, decoded.
type fakeCommand struct {
	ID        uint32           `json:"id"`
	Connect   *json.RawMessage `json:"connect"`
	Subscribe *struct {
		Channel string `json:"channel"`
	} `json:"subscribe"`
	Publish *struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	} `json:"publish"`
}

const flushEvery = 20 * time.Millisecond

// startFakeCentrifugo starts the server on 127.0.0.1; wantPongs is how many clients
// will connect (each is pinged once).
func startFakeCentrifugo(t *testing.T, wantPongs int, refuse func(string, uint32) bool) *fakeCentrifugo {
	t.Helper()
	f := &fakeCentrifugo{
		refuse: refuse, conns: map[*gws.Conn]*fakeClient{}, subs: map[string][]*fakeClient{},
		wantPongs: wantPongs, allPonged: make(chan struct{}),
	}
	upgrader := gws.NewUpgrader(f, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/connection/websocket" {
			http.NotFound(w, r)
			return
		}
		c, err := upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[c] = &fakeClient{conn: c}
		f.mu.Unlock()
		c.ReadLoop()
	}))
	f.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	quit, flusherDone := make(chan struct{}), make(chan struct{})
	go f.flushLoop(quit, flusherDone)
	t.Cleanup(func() {
		close(quit)
		<-flusherDone
		f.mu.Lock()
		for c := range f.conns {
			_ = c.NetConn().Close()
		}
		f.mu.Unlock()
		srv.Close()
	})
	return f
}

func (f *fakeCentrifugo) fail(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fakeCentrifugo) OnOpen(*gws.Conn)             {}
func (f *fakeCentrifugo) OnClose(*gws.Conn, error)     {}
func (f *fakeCentrifugo) OnPing(c *gws.Conn, p []byte) { _ = c.WritePong(p) }
func (f *fakeCentrifugo) OnPong(*gws.Conn, []byte)     {}

func (f *fakeCentrifugo) OnMessage(c *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	for line := range bytes.SplitSeq(msg.Bytes(), []byte("\n")) {
		if reply := f.handle(c, line); reply != "" {
			_ = c.WriteMessage(gws.OpcodeText, []byte(reply))
		}
	}
}

// handle executes one command and returns its reply ("" for none).
func (f *fakeCentrifugo) handle(c *gws.Conn, line []byte) string {
	var cmd fakeCommand
	if err := json.Unmarshal(line, &cmd); err != nil {
		f.mu.Lock()
		f.fail("undecodable command %q: %v", line, err)
		f.mu.Unlock()
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fc := f.conns[c]
	refused := fmt.Sprintf(`{"id":%d,"error":{"code":103,"message":"permission denied"}}`, cmd.ID)
	switch {
	case cmd.ID == 0 && cmd.Connect == nil && cmd.Subscribe == nil && cmd.Publish == nil:
		if !fc.pinged || fc.ponged {
			f.fail("a pong without a ping")
			return ""
		}
		fc.ponged = true
		if f.pongs++; f.pongs == f.wantPongs {
			close(f.allPonged)
		}
		return ""
	case cmd.Connect != nil:
		if f.refuse != nil && f.refuse("connect", cmd.ID) {
			return refused
		}
		fc.connected = true
		return fmt.Sprintf(`{"id":%d,"connect":{"client":"c%p","version":"0.0.0-fake","ping":25,"pong":true}}`, cmd.ID, fc)
	case !fc.connected:
		f.fail("command before connect: %s", line)
	case cmd.Subscribe != nil:
		if f.refuse != nil && f.refuse("subscribe", cmd.ID) {
			return refused
		}
		f.subs[cmd.Subscribe.Channel] = append(f.subs[cmd.Subscribe.Channel], fc)
		return fmt.Sprintf(`{"id":%d,"subscribe":{}}`, cmd.ID)
	case cmd.Publish != nil:
		if f.refuse != nil && f.refuse("publish", cmd.ID) {
			f.refused++
			return refused
		}
		push := fmt.Appendf(nil, `{"push":{"channel":%q,"pub":{"data":%s,"info":{"user":"","client":"c%p"}}}}`,
			cmd.Publish.Channel, cmd.Publish.Data, fc)
		for _, sub := range f.subs[cmd.Publish.Channel] {
			sub.queue = append(sub.queue, push)
		}
		return fmt.Sprintf(`{"id":%d,"publish":{}}`, cmd.ID)
	default:
		f.fail("unexpected command %s", line)
	}
	return ""
}

// flushLoop writes each client's queued pushes as one frame every flushEvery.
func (f *fakeCentrifugo) flushLoop(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		type frame struct {
			c    *gws.Conn
			data []byte
		}
		var frames []frame
		f.mu.Lock()
		for c, fc := range f.conns {
			if len(fc.queue) == 0 {
				continue
			}
			lines := fc.queue
			if !fc.pinged {
				// The ping anywhere in a frame, as Centrifugo queues it with the pushes.
				lines = append([][]byte{lines[0], []byte("{}")}, lines[1:]...)
				fc.pinged = true
			}
			if len(fc.queue) >= 2 {
				f.batched++
			}
			frames = append(frames, frame{c, bytes.Join(lines, []byte("\n"))})
			fc.queue = nil
		}
		f.mu.Unlock()
		for _, fr := range frames {
			_ = fr.c.WriteMessage(gws.OpcodeText, fr.data) // a closed client is done
		}
	}
}

func centrifugoConfig(t *testing.T, s loadgen.Scenario, url string) loadgen.Config {
	cfg := tinyConfig(t, s, []string{url})
	cfg.Protocol = loadgen.ProtocolCentrifugo
	return cfg
}

// checkFake asserts that the clients spoke the protocol and answered every ping.
func (f *fakeCentrifugo) check(t *testing.T) {
	t.Helper()
	select {
	case <-f.allPonged:
	case <-time.After(10 * time.Second):
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pongs != f.wantPongs || len(f.errs) > 0 {
		t.Errorf("pongs %d, want %d; protocol errors %q", f.pongs, f.wantPongs, f.errs)
	}
}

func TestCentrifugoFanoutCountsEveryPushOfABatchedFrame(t *testing.T) {
	f := startFakeCentrifugo(t, 12, nil)
	cfg := centrifugoConfig(t, loadgen.FanoutSmall, f.url)
	// A room's subscriber gets 200 pushes/s: several in each 20ms frame.
	cfg.Rate, cfg.Duration = 50, time.Second
	rep := mustRun(t, cfg)

	checkClean(t, rep)
	f.check(t)
	if rep.Connections != 12 || len(rep.Steps) != 1 || rep.Steps[0].Delivered == 0 || rep.Protocol != loadgen.ProtocolCentrifugo {
		t.Fatalf("connections %d, steps %+v, protocol %q: want 12 connections and one step with deliveries, centrifugo",
			rep.Connections, rep.Steps, rep.Protocol)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.batched == 0 {
		t.Fatal("no frame had two pushes or more: the test did not test batching")
	}
}

func TestCentrifugoRamp(t *testing.T) {
	f := startFakeCentrifugo(t, 6, nil)
	cfg := centrifugoConfig(t, loadgen.Ramp, f.url)
	cfg.Rooms, cfg.Members = 2, 3
	cfg.Rate, cfg.RampFactor, cfg.RampMaxRate = 10, 2, 40
	cfg.RampStep = 400 * time.Millisecond
	cfg.RampMaxP99 = time.Hour // the test asserts the steps, not the machine's speed
	rep := mustRun(t, cfg)

	checkClean(t, rep)
	f.check(t)
	if len(rep.Steps) != 3 || rep.Ramp == nil || rep.Ramp.Held != 3 {
		t.Fatalf("steps %+v, ramp %+v: want 3 passing steps (rates 10, 20, 40)", rep.Steps, rep.Ramp)
	}
}

// A publish the server refuses is counted as an error frame, as roomcast's refusals
// are, and its message as lost by every member.
func TestCentrifugoRefusedPublishIsAnErrorFrame(t *testing.T) {
	f := startFakeCentrifugo(t, 12, func(method string, id uint32) bool { return method == "publish" && id%7 == 0 })
	cfg := centrifugoConfig(t, loadgen.FanoutSmall, f.url)
	cfg.Grace = time.Second // the refused never arrive: the drain waits out the grace
	rep := mustRun(t, cfg)

	f.mu.Lock()
	refused := int64(f.refused)
	f.mu.Unlock()
	s := rep.Steps[0]
	if refused == 0 || rep.ErrorFrames["forbidden"] != refused || len(rep.ErrorFrames) != 1 {
		t.Fatalf("error frames %v, want forbidden: %d", rep.ErrorFrames, refused)
	}
	if s.Lost != refused*int64(cfg.Members) || s.Delivered != s.Expected-s.Lost || s.Duplicated != 0 || rep.OtherFrames != 0 {
		t.Fatalf("step %+v, other frames %d: want %d refused messages lost by each of the %d members",
			s, rep.OtherFrames, refused, cfg.Members)
	}
}

func TestCentrifugoRefusedSubscribeFailsTheRun(t *testing.T) {
	f := startFakeCentrifugo(t, 0, func(method string, _ uint32) bool { return method == "subscribe" })
	cfg := centrifugoConfig(t, loadgen.FanoutSmall, f.url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := loadgen.Run(ctx, cfg)
	if err == nil || rep != nil {
		t.Fatalf("Run = %v, %v; want an error", rep, err)
	}
	for _, want := range []string{"refused subscribe", `"code":103`, "client.insecure"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
