package wsgateway_test

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/hub"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/server/wsgateway"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/localbroker"
	"roomcast/pkg/wsclient"
	"roomcast/pkg/wsclient/wsclienttest"
)

// stalledHistory leaves its first stalled reads unanswered for its own bound per read
// (not the caller's context), as the NATS store does with a read sent to a stream leader
// that has just died; later reads answer with the room's stored message 2, or fail at
// once with fail.
type stalledHistory struct {
	stalled int32
	fail    error
	reads   atomic.Int32
	// callerGone, when not nil, is closed once a read finds its caller's context done.
	callerGone chan struct{}
	goneOnce   sync.Once
}

// stalledReadBound stands for the store's bound per request.
const stalledReadBound = 100 * time.Millisecond

func (h *stalledHistory) ReadSince(ctx context.Context, room string, since uint64, epoch string) (chat.Stored, error) {
	if h.reads.Add(1) <= h.stalled {
		rctx, cancel := context.WithTimeout(ctx, stalledReadBound)
		defer cancel()
		<-rctx.Done()
		if ctx.Err() != nil && h.callerGone != nil {
			h.goneOnce.Do(func() { close(h.callerGone) })
		}
		return chat.Stored{}, fmt.Errorf("replaying room %q: %w: no answer (%w): %w", room, chat.ErrHistoryUnavailable, chat.ErrHistoryTemporary, rctx.Err())
	}
	if h.fail != nil {
		return chat.Stored{}, h.fail
	}
	stored := chat.Message{ID: "m2", Room: room, Text: "stored while away", Seq: 2, PrevSeq: 1, Epoch: "e1", Accepted: time.Now()}
	return chat.Stored{Epoch: "e1", Last: 2, Messages: []chat.Message{stored}}, nil
}

// startGateway serves a gateway with history over a local broker; a replay has a minute.
func startGateway(t *testing.T, history chat.History) (wsURL string, broker *localbroker.Broker) {
	t.Helper()
	hubCfg, err := envconfig.Parse[hub.Config](nil)
	if err != nil {
		t.Fatal(err)
	}
	gwCfg, err := envconfig.Parse[wsgateway.Config](nil)
	if err != nil {
		t.Fatal(err)
	}
	broker = localbroker.New()
	reg := prometheus.NewRegistry()
	errs := servermetrics.NewErrors(reg)
	hubCfg.History = history
	h := hub.New(hubCfg, broker, errs, testenv.Logger(t), reg)
	t.Cleanup(h.Close)
	gwCfg.History = history
	gwCfg.ReplayTimeout = time.Minute
	srv := httptest.NewServer(wsgateway.New(gwCfg, h, broker, errs, testenv.Logger(t), reg))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + wsgateway.PathPrefix, broker
}

func dialResume(t *testing.T, url string) *wsclient.Client {
	t.Helper()
	return wsclienttest.Dial(t, url, wsclient.Options{})
}

func nextFrame(t *testing.T, c *wsclient.Client) wsclient.Frame {
	t.Helper()
	// Well below the replay's minute: a replay that waited out its first unanswered
	// read would not be here in time.
	return wsclienttest.NextWithin(t, c, 20*time.Second)
}

func TestAReplayWhoseReadGoesUnansweredTriesAgain(t *testing.T) {
	history := &stalledHistory{stalled: 2}
	url, broker := startGateway(t, history)
	c := dialResume(t, url+"lobby/?since=1&epoch=e1")
	if f := nextFrame(t, c); f.Type != "message" || f.Seq != 2 || f.Message != "stored while away" {
		t.Fatalf("first frame %s, want the stored message 2 (the replay, after two unanswered reads)", f.Raw)
	}
	// The live message that came meanwhile follows the replay.
	live := chat.Message{ID: "m3", Room: "lobby", Text: "live", Seq: 3, PrevSeq: 2, Epoch: "e1", Accepted: time.Now()}
	if err := broker.Publish(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	if f := nextFrame(t, c); f.Type != "message" || f.Seq != 3 {
		t.Fatalf("second frame %s, want the live message 3", f.Raw)
	}
	if n := history.reads.Load(); n != 3 {
		t.Errorf("%d reads, want 3 (two unanswered, one answered)", n)
	}
}

func TestAReplayThatFailsOutrightIsNotTriedAgain(t *testing.T) {
	history := &stalledHistory{fail: fmt.Errorf("replaying: %w: no JetStream", chat.ErrHistoryUnavailable)}
	url, _ := startGateway(t, history)
	c := dialResume(t, url+"lobby/?since=1&epoch=e1")
	if f := nextFrame(t, c); f.Type != "error" || f.Code != chat.CodeHistoryUnavailable {
		t.Fatalf("first frame %s, want history_unavailable", f.Raw)
	}
	if n := history.reads.Load(); n != 1 {
		t.Errorf("%d reads, want 1", n)
	}
}

func TestAReplayEndsWhenItsClientLeaves(t *testing.T) {
	// The store never answers: without its client the replay would read again for its
	// whole minute.
	history := &stalledHistory{stalled: math.MaxInt32, callerGone: make(chan struct{})}
	url, _ := startGateway(t, history)
	c := dialResume(t, url+"lobby/?since=1&epoch=e1")
	for deadline := time.Now().Add(10 * time.Second); history.reads.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the replay never read")
		}
	}
	c.Close()
	select {
	case <-history.callerGone:
	case <-time.After(20 * time.Second):
		t.Fatalf("the replay still read 20s after its client left (%d reads)", history.reads.Load())
	}
}
