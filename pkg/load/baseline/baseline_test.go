package baseline_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/load/baseline"
	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/testenv"
	"roomcast/pkg/wsclient"
	"roomcast/pkg/wsclient/wsclienttest"
)

func start(t *testing.T) (*baseline.Server, string) {
	t.Helper()
	s := baseline.New()
	mux := http.NewServeMux()
	s.Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return s, strings.Replace(ts.URL, "http://", "ws://", 1)
}

func dial(t *testing.T, url, room string) *wsclient.Client {
	t.Helper()
	return wsclienttest.Dial(t, url+"/ws/chat/"+room+"/", wsclient.Options{})
}

var next = wsclienttest.Next

// waitMembers waits until room has n connections: a connection joins once its
// upgrade is answered, a moment after Dial returns on the client's side.
func waitMembers(t *testing.T, s *baseline.Server, room string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Len(room) != n {
		if time.Now().After(deadline) {
			t.Fatalf("room %s has %d connections, want %d", room, s.Len(room), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAMessageReachesEveryMemberOfItsRoomAndNoOtherRoom(t *testing.T) {
	s, url := start(t)
	a1, a2, b := dial(t, url, "a"), dial(t, url, "a"), dial(t, url, "b")
	waitMembers(t, s, "a", 2)
	waitMembers(t, s, "b", 1)
	if err := a1.Send("hi"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsclient.Client{a1, a2} {
		f := next(t, c)
		if f.Type != "message" || f.Room != "a" || f.Message != "hi" || time.Since(f.TS) > time.Minute || f.Seq != 0 {
			t.Fatalf("got %s, want room a's message hi with its time and no seq", f.Raw)
		}
	}
	// b's first frame is its own message: it never got a's.
	if err := b.Send("yo"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, b); f.Room != "b" || f.Message != "yo" {
		t.Fatalf("room b's member got %s first, want its own message", f.Raw)
	}
	a2.Close()
	waitMembers(t, s, "a", 1)
}

func TestBadInputIsAnswered(t *testing.T) {
	s, url := start(t)
	httpURL := strings.Replace(url, "ws://", "http://", 1)
	for _, room := range []string{"", "a.b", strings.Repeat("x", 65), "%20"} {
		resp, err := http.Get(httpURL + "/ws/chat/" + room + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
			t.Errorf("room %q: HTTP %d, want 400 or 404", room, resp.StatusCode)
		}
		if resp.StatusCode == http.StatusBadRequest && !strings.Contains(string(body), "invalid room name") {
			t.Errorf("room %q: body %q, want it to say invalid room name", room, body)
		}
	}
	c := dial(t, url, "a")
	waitMembers(t, s, "a", 1)
	for _, frame := range []string{`not json`, `{"message":""}`, `{"text":"hi"}`, `{"message":7}`} {
		if err := c.SendRaw([]byte(frame)); err != nil {
			t.Fatal(err)
		}
		if f := next(t, c); f.Type != "error" || f.Code != "bad_request" {
			t.Fatalf("frame %s: got %s, want a bad_request error frame", frame, f.Raw)
		}
	}
	if err := c.Send("still open"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c); f.Message != "still open" {
		t.Fatalf("after bad frames got %s, want the next message", f.Raw)
	}
}

// The load generator drives it as it drives roomcast, every message delivered once.
func TestTheLoadGeneratorDrivesIt(t *testing.T) {
	_, url := start(t)
	cfg := loadgen.DefaultConfig(loadgen.FanoutSmall)
	cfg.URLs = []string{url}
	cfg.Rooms, cfg.Members, cfg.Rate = 3, 4, 20
	cfg.Duration = 2 * time.Second
	cfg.Grace = 20 * time.Second
	cfg.ServerPIDs = []int{os.Getpid()}
	cfg.Log = testenv.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Steps) != 1 {
		t.Fatalf("%d steps, want 1", len(rep.Steps))
	}
	s := rep.Steps[0]
	if s.Sent == 0 || s.Expected != s.Sent*int64(rep.Members) || s.Delivered != s.Expected || s.Lost != 0 || s.Duplicated != 0 {
		t.Fatalf("sent %d, expected %d, delivered %d, lost %d, duplicated %d", s.Sent, s.Expected, s.Delivered, s.Lost, s.Duplicated)
	}
	if rep.Foreign+rep.Misrouted+rep.OtherFrames+rep.SendErrors != 0 || len(rep.ServerCloses) > 0 || len(rep.ErrorFrames) > 0 {
		t.Fatalf("foreign %d, misrouted %d, other %d, send errors %d, closes %v, error frames %v",
			rep.Foreign, rep.Misrouted, rep.OtherFrames, rep.SendErrors, rep.ServerCloses, rep.ErrorFrames)
	}
}
