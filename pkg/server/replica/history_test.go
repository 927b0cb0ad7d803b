package replica_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
	"roomcast/pkg/testenv/natstest"
	"roomcast/pkg/wsclient"
)

// historyReady waits until the replica's history stream is known.
func historyReady(t *testing.T, r *testReplica) {
	t.Helper()
	eventually(t, r.name+" has its history stream", func() bool {
		v, ok := testenv.LookupMetric(t, r.Registry(), "roomcast_history_available")
		return ok && v == 1
	})
}

// dialResume connects with ?since=&epoch= (epoch only when not empty).
func dialResume(t *testing.T, r *testReplica, room string, since uint64, epoch string) *wsclient.Client {
	t.Helper()
	url := r.wsURL(room) + "?since=" + strconv.FormatUint(since, 10)
	if epoch != "" {
		url += "&epoch=" + epoch
	}
	return dialURL(t, url, wsclient.Options{Buffer: 8192})
}

// sendAndCollect sends texts from c and returns the frames as the sender receives them.
func sendAndCollect(t *testing.T, c *wsclient.Client, texts ...string) []wsclient.Frame {
	t.Helper()
	var got []wsclient.Frame
	for _, text := range texts {
		if err := c.Send(text); err != nil {
			t.Fatal(err)
		}
		got = append(got, next(t, c))
	}
	return got
}

func TestMessagesCarrySeqAndEpochAndAResumeReplaysWhatWasMissed(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	r1 := startReplica(t, "h1", ns.ClientURL(), replicatest.History(100))
	r2 := startReplica(t, "h2", ns.ClientURL(), replicatest.History(100))
	historyReady(t, r1)
	historyReady(t, r2)
	a := r1.dial(t, "story")
	b := r2.dial(t, "story")
	frames := sendAndCollect(t, a, "one", "two", "three")
	for i, f := range frames {
		if f.Seq == 0 || f.Epoch == "" {
			t.Fatalf("frame %s has no seq/epoch", f.Raw)
		}
		if i > 0 && f.Seq <= frames[i-1].Seq {
			t.Fatalf("seq not increasing: %d after %d", f.Seq, frames[i-1].Seq)
		}
		// One message has the same seq on every replica.
		if g := next(t, b); g.Seq != f.Seq || g.Epoch != f.Epoch || g.Message != f.Message {
			t.Fatalf("r2 got %s, r1 got %s", g.Raw, f.Raw)
		}
	}
	// b disconnects after "one"; it resumes on the other replica and gets two, three,
	// then live messages, with no duplicate.
	c := dialResume(t, r1, "story", frames[0].Seq, frames[0].Epoch)
	for _, want := range []string{"two", "three"} {
		if f := next(t, c); f.Message != want || f.Type != "message" {
			t.Fatalf("replay: got %s, want %q", f.Raw, want)
		}
	}
	if err := a.Send("four"); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, c, 1); !slices.Equal(got, []string{"four"}) {
		t.Fatalf("after the replay got %q", got)
	}
	if v := testenv.Metric(t, r1.Registry(), "roomcast_history_replayed_messages_total"); v != 2 {
		t.Errorf("replayed messages = %v, want 2", v)
	}
}

func TestResumeEdgeCases(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	r := startReplica(t, "edges", ns.ClientURL(), replicatest.History(5))
	historyReady(t, r)
	a := r.dial(t, "edges")
	var texts []string
	for i := range 8 {
		texts = append(texts, "m"+strconv.Itoa(i))
	}
	frames := sendAndCollect(t, a, texts...)
	epoch, newest := frames[0].Epoch, frames[len(frames)-1].Seq

	t.Run("since newer than the newest: nothing replayed, live goes on", func(t *testing.T) {
		c := dialResume(t, r, "edges", newest+1000, epoch)
		if err := a.Send("live"); err != nil {
			t.Fatal(err)
		}
		next(t, a)
		if f := next(t, c); f.Message != "live" {
			t.Fatalf("got %s, want the live message only", f.Raw)
		}
	})
	t.Run("since older than what is kept: history_truncated, then everything kept", func(t *testing.T) {
		c := dialResume(t, r, "edges", frames[0].Seq, epoch)
		expectError(t, c, "history_truncated")
		var got []string
		for range 5 {
			got = append(got, next(t, c).Message)
		}
		if !slices.Equal(got, []string{"m4", "m5", "m6", "m7", "live"}) {
			t.Fatalf("replayed %q, want the 5 kept", got)
		}
	})
	t.Run("an epoch that no longer matches: history_truncated, then everything kept", func(t *testing.T) {
		c := dialResume(t, r, "edges", newest, "oldepoch")
		expectError(t, c, "history_truncated")
		if f := next(t, c); f.Message != "m4" {
			t.Fatalf("first replayed %s, want m4", f.Raw)
		}
	})
	t.Run("since 0: everything kept, no warning", func(t *testing.T) {
		c := dialResume(t, r, "edges", 0, "")
		if f := next(t, c); f.Type != "message" || f.Message != "m4" {
			t.Fatalf("got %s, want m4", f.Raw)
		}
	})
	t.Run("a room with no history: nothing replayed", func(t *testing.T) {
		c := dialResume(t, r, "fresh", newest, epoch) // a seq of this stream, another room's
		if got := collect(t, c, 0); len(got) != 0 {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("bad resume parameters are refused before the upgrade", func(t *testing.T) {
		for _, q := range []string{"since=abc", "since=-1", "since=1.5", "since=", "since=1&since=2", "epoch=x", "since=1&epoch=bad%20epoch"} {
			resp := rawGet(t, r.url("/ws/chat/edges/?"+q), upgradeHeader(nil))
			if resp.status != 400 || resp.json["error"] != "invalid resume parameters" {
				t.Errorf("?%s: %d %s, want 400", q, resp.status, resp.body)
			}
		}
	})
}

func TestWithoutJetStreamTheLivePathWorksAndResumeSaysHistoryUnavailable(t *testing.T) {
	ns := natstest.Start(t) // core NATS only
	r1 := startReplica(t, "nojs1", ns.ClientURL(), replicatest.History(100))
	r2 := startReplica(t, "nojs2", ns.ClientURL(), replicatest.History(100))
	a := r1.dial(t, "plain")
	b := r2.dial(t, "plain")
	if err := a.Send("still live"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsclient.Client{a, b} {
		if f := next(t, c); f.Message != "still live" || f.Seq != 0 {
			t.Fatalf("got %s, want the message, unnumbered", f.Raw)
		}
	}
	c := dialResume(t, r2, "plain", 3, "")
	expectError(t, c, "history_unavailable")
	if err := a.Send("after"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c); f.Message != "after" {
		t.Fatalf("after history_unavailable got %s", f.Raw)
	}
	if v := testenv.Metric(t, r2.Registry(), "roomcast_errors_total", "kind", "history"); v != 1 {
		t.Errorf("errors_total{kind=history} = %v, want 1", v)
	}
}

func TestAStreamRecreatedByANewerReleaseKeepsBothColorsWorking(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	blue := startReplica(t, "blue", ns.ClientURL(), replicatest.History(100))
	historyReady(t, blue)
	a := blue.dial(t, "shared")
	before := sendAndCollect(t, a, "before")[0]

	// A newer release recreates the stream with other limits.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, natsbroker.DefaultStream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // a later creation time, a new epoch
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: natsbroker.DefaultStream, Subjects: []string{natsbroker.SubjectPrefix + "*"},
		MaxMsgsPerSubject: 500, MaxAge: 2 * time.Hour, Storage: jetstream.FileStorage, AllowDirect: true,
		RePublish: &jetstream.RePublish{Source: natsbroker.SubjectPrefix + "*", Destination: natsbroker.LivePrefix + "{{wildcard(1)}}"},
	}); err != nil {
		t.Fatal(err)
	}
	green := startReplica(t, "green", ns.ClientURL(), replicatest.History(50))
	historyReady(t, green)
	b := green.dial(t, "shared")

	for i, sender := range []*wsclient.Client{a, b, a} {
		text := "after" + strconv.Itoa(i)
		if err := sender.Send(text); err != nil {
			t.Fatal(err)
		}
		fa, fb := next(t, a), next(t, b)
		if fa.Message != text || fb.Message != text || fa.Seq != fb.Seq {
			t.Fatalf("blue got %s, green got %s", fa.Raw, fb.Raw)
		}
		if fa.Epoch == before.Epoch || fa.Epoch != fb.Epoch {
			t.Fatalf("epochs: before %q, blue %q, green %q: want one new epoch", before.Epoch, fa.Epoch, fb.Epoch)
		}
	}
	// A client of the old epoch is told history was reset, then gets what is kept.
	c := dialResume(t, blue, "shared", before.Seq, before.Epoch)
	expectError(t, c, "history_truncated")
	if f := next(t, c); f.Message != "after0" {
		t.Fatalf("got %s", f.Raw)
	}
}

func TestHistoryOffIgnoresSince(t *testing.T) {
	r := startReplica(t, "off", "", nil)
	c := dialResume(t, r, "nohist", 12, "whatever")
	if err := c.Send("x"); err != nil {
		t.Fatal(err)
	}
	if f := next(t, c); f.Message != "x" || f.Seq != 0 || f.Epoch != "" {
		t.Fatalf("got %s", f.Raw)
	}
}

// The embedded default keeps history in shards (natsbroker's shard.go): rooms spread
// over them are each numbered and replayed whole.
func TestTheEmbeddedDefaultKeepsHistory(t *testing.T) {
	r := startReplica(t, "embedded", "", replicatest.History(100))
	historyReady(t, r)
	if v := testenv.Metric(t, r.Registry(), "roomcast_history_stream_shards"); v != natsbroker.EmbeddedShards {
		t.Fatalf("roomcast_history_stream_shards = %v, want %d", v, natsbroker.EmbeddedShards)
	}
	for i := range natsbroker.EmbeddedShards { // mem0 to mem7: one in each of the 8 shards
		room := "mem" + strconv.Itoa(i)
		c := r.dial(t, room)
		sent := sendAndCollect(t, c, "kept", "also")
		if sent[0].Seq == 0 || sent[1].Seq <= sent[0].Seq {
			t.Fatalf("room %s: embedded default numbered %s then %s", room, sent[0].Raw, sent[1].Raw)
		}
		d := dialResume(t, r, room, 0, "")
		for _, f := range sent {
			if g := next(t, d); g.Message != f.Message || g.Seq != f.Seq || g.Epoch != f.Epoch {
				t.Fatalf("room %s: replayed %s, sent %s", room, g.Raw, f.Raw)
			}
		}
	}
}

// TestResumeSeamUnderConcurrentPublishers resumes over and over, on every replica, while
// several replicas publish into the room: each resumed stream must be exactly the room's
// messages after since, in strictly increasing seq, no gap, no duplicate.
func TestResumeSeamUnderConcurrentPublishers(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	var replicas []*testReplica
	for i := range 3 {
		r := startReplica(t, fmt.Sprintf("seam%d", i), ns.ClientURL(), replicatest.History(10000))
		historyReady(t, r)
		replicas = append(replicas, r)
	}
	observer := dialURL(t, replicas[0].wsURL("seam"), wsclient.Options{Buffer: 1 << 16})

	// The observer's view of the room, as it arrives.
	var mu sync.Mutex
	var seen []wsclient.Frame
	observed := make(chan struct{})
	go func() {
		defer close(observed)
		for f := range observer.Frames() {
			mu.Lock()
			seen = append(seen, f)
			mu.Unlock()
		}
	}()
	snapshot := func() []wsclient.Frame {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}

	const perPublisher = 300
	var pubs sync.WaitGroup
	for i, r := range replicas {
		pub := dialURL(t, r.wsURL("seam"), wsclient.Options{Buffer: 1 << 16})
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for n := range perPublisher {
				if err := pub.Send(fmt.Sprintf("p%d-%d", i, n)); err != nil {
					return
				}
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			}
		}()
	}

	type resumer struct {
		client *wsclient.Client
		since  uint64
	}
	var resumers []resumer
	for i := 0; i < 40; i++ {
		time.Sleep(time.Duration(5+rand.IntN(15)) * time.Millisecond)
		view := snapshot()
		var since uint64
		epoch := ""
		if len(view) > 0 {
			f := view[rand.IntN(len(view))]
			since, epoch = f.Seq, f.Epoch
		}
		r := replicas[i%len(replicas)]
		resumers = append(resumers, resumer{client: dialResume(t, r, "seam", since, epoch), since: since})
	}
	pubs.Wait()
	total := 3 * perPublisher
	eventually(t, "the observer has every message", func() bool { return len(snapshot()) >= total })
	all := snapshot()
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("observer: seq %d after %d", all[i].Seq, all[i-1].Seq)
		}
	}
	for i, res := range resumers {
		var want []uint64
		for _, f := range all {
			if f.Seq > res.since {
				want = append(want, f.Seq)
			}
		}
		var got []uint64
		deadline := time.After(20 * time.Second)
		for len(got) < len(want) {
			select {
			case f, ok := <-res.client.Frames():
				if !ok {
					t.Fatalf("resumer %d closed: %v", i, res.client.CloseError())
				}
				if f.Type != "message" {
					t.Fatalf("resumer %d got %s", i, f.Raw)
				}
				got = append(got, f.Seq)
			case <-deadline:
				t.Fatalf("resumer %d (since %d) got %d of %d messages", i, res.since, len(got), len(want))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("resumer %d (since %d): seqs differ from the room's\n got %v\nwant %v", i, res.since, got, want)
		}
		select {
		case f := <-res.client.Frames():
			t.Fatalf("resumer %d: extra frame %s", i, f.Raw)
		case <-time.After(20 * time.Millisecond):
		}
	}
	observer.Close()
	<-observed
}

func TestAfterABrokerOutageAReplicaCatchesUpWhatItMissed(t *testing.T) {
	store := t.TempDir()
	startJS := func(port int) *server.Server {
		return natstest.Start(t, natstest.Port(port), func(o *server.Options) { o.JetStream, o.StoreDir = true, store })
	}
	ns := startJS(0)
	port := natsPort(ns)
	quick := startReplica(t, "quick", ns.ClientURL(), replicatest.History(100))
	slow := startReplica(t, "slow", ns.ClientURL(), func(c *replica.Config) {
		replicatest.History(100)(c)
		c.NATS.ReconnectWait = 3 * time.Second // reconnects well after the other replica
	})
	historyReady(t, quick)
	historyReady(t, slow)
	sender := quick.dial(t, "gap")
	listener := slow.dial(t, "gap")
	first := sendAndCollect(t, sender, "before")[0]
	if f := next(t, listener); f.Seq != first.Seq {
		t.Fatalf("got %s", f.Raw)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	eventually(t, "both replicas see the outage", func() bool {
		c1, _ := readyStatus(t, quick)
		c2, _ := readyStatus(t, slow)
		return c1 == 503 && c2 == 503
	})
	// The slow replica's first attempt (within a tenth of its ReconnectWait) fails while
	// the server is down; its next is 3s later, the quick one's 50ms.
	eventually(t, "the slow replica's first reconnect attempt failed", func() bool {
		return testenv.Metric(t, slow.Registry(), "roomcast_broker_reconnect_failures_total") >= 1
	})
	startJS(port)
	eventually(t, "the quick replica is back", func() bool { c, _ := readyStatus(t, quick); return c == 200 })
	if c, _ := readyStatus(t, slow); c != 503 {
		t.Fatal("the slow replica reconnected as fast as the quick one; there is no gap to catch up")
	}
	// Published while the slow replica is still away: it must not lose them.
	missed := sendAndCollect(t, sender, "missed1", "missed2", "missed3")
	eventually(t, "the slow replica is back", func() bool { c, _ := readyStatus(t, slow); return c == 200 })
	if err := sender.Send("after"); err != nil {
		t.Fatal(err)
	}
	var got []string
	var last uint64
	for range 4 {
		f := next(t, listener)
		if f.Seq <= last {
			t.Fatalf("seq %d after %d", f.Seq, last)
		}
		last = f.Seq
		got = append(got, f.Message)
	}
	if want := []string{"missed1", "missed2", "missed3", "after"}; !slices.Equal(got, want) {
		t.Fatalf("the slow replica's member got %q, want %q", got, want)
	}
	if missed[2].Seq >= last {
		t.Fatalf("seqs out of order: %d then %d", missed[2].Seq, last)
	}
	if got := collect(t, listener, 0); len(got) != 0 {
		t.Fatalf("duplicates after the catch-up: %q", got)
	}
}

// TestHistoryAtItsByteBoundDropsTheOldestRoomsFirst is a client cycling through fresh
// room names against a small bound: publishing goes on, the stream stays within its
// bytes, the first rooms' history is gone (a resume there says history_truncated), the
// newest rooms keep theirs, and the metrics show the stream at its bound.
func TestHistoryAtItsByteBoundDropsTheOldestRoomsFirst(t *testing.T) {
	const maxBytes = 64 << 10
	r := startReplica(t, "bound", "", func(c *replica.Config) {
		replicatest.History(100)(c)
		c.NATS.History.MaxBytes = maxBytes
	})
	historyReady(t, r)
	text := strings.Repeat("x", 1000)
	const rooms = 150 // about 150 KiB stored in all: more than twice the bound
	var first, last wsclient.Frame
	for i := range rooms {
		c := r.dial(t, "cycle-"+strconv.Itoa(i))
		f := sendAndCollect(t, c, text)[0]
		if f.Type != "message" || f.Seq == 0 {
			t.Fatalf("room %d: got %s, want the message stored and numbered", i, f.Raw)
		}
		if i == 0 {
			first = f
		}
		last = f
		c.Close()
	}

	stored := testenv.Metric(t, r.Registry(), "roomcast_history_stream_bytes")
	if stored <= 0 || stored > maxBytes {
		t.Errorf("roomcast_history_stream_bytes = %v, want within (0, %d]", stored, maxBytes)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_history_stream_max_bytes"); v != maxBytes {
		t.Errorf("roomcast_history_stream_max_bytes = %v, want %d", v, maxBytes)
	}
	if n := testenv.Metric(t, r.Registry(), "roomcast_history_stream_messages"); n <= 0 || n >= rooms {
		t.Errorf("roomcast_history_stream_messages = %v, want fewer than the %d sent", n, rooms)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_history_stream_first_seq"); v <= float64(first.Seq) {
		t.Errorf("roomcast_history_stream_first_seq = %v, want past the first room's %d", v, first.Seq)
	}

	t.Run("the first room's history is gone: history_truncated, then live", func(t *testing.T) {
		c := dialResume(t, r, "cycle-0", first.Seq, first.Epoch)
		expectError(t, c, "history_truncated")
		other := r.dial(t, "cycle-0")
		if err := other.Send("after"); err != nil {
			t.Fatal(err)
		}
		if f := next(t, c); f.Message != "after" {
			t.Fatalf("got %s, want the live message", f.Raw)
		}
	})
	t.Run("the newest room keeps its history", func(t *testing.T) {
		c := dialResume(t, r, "cycle-"+strconv.Itoa(rooms-1), 0, "")
		if f := next(t, c); f.Seq != last.Seq || f.Message != text {
			t.Fatalf("got %s, want seq %d replayed", f.Raw, last.Seq)
		}
	})
	if status, _ := readyStatus(t, r); status != http.StatusOK {
		t.Fatalf("/readyz %d after the bound, want 200", status)
	}
	if v := testenv.Metric(t, r.Registry(), "roomcast_history_errors_total", "op", "publish"); v != 0 {
		t.Errorf("history_errors_total{op=publish} = %v, want 0: every message was stored", v)
	}
}

// A resume whose reads go unanswered for a while (the stream's leader died: reads sent to
// it get no answer until a new one is elected) gets its replay, then the live messages
// that came meanwhile, once the leader answers: nothing lost and no error frame. (It
// used to wait out the whole replay on one read, the live messages held meanwhile.)
func TestAResumeReadsAgainUntilTheStreamsLeaderAnswers(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t))
	r := startReplica(t, "h1", ns.ClientURL(), func(c *replica.Config) {
		replicatest.History(100)(c)
		c.NATS.History.ReadTimeout = 200 * time.Millisecond
	})
	historyReady(t, r)
	a := r.dial(t, "dark")
	frames := sendAndCollect(t, a, "one", "two", "three")

	// Reads of stored messages go to a stand-in for the dead leader, which never answers.
	const get = "$JS.API.STREAM.MSG.GET." + natsbroker.DefaultStream
	if err := ns.GlobalAccount().AddMapping(get, "standin.get"); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	unanswered, err := nc.SubscribeSync("standin.get")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := dialResume(t, r, "dark", frames[0].Seq, frames[0].Epoch)
	for i := range 2 { // the replay read, went unanswered, and read again
		if _, err := unanswered.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("read %d of the replay never came: %v", i+1, err)
		}
	}
	if got := sendAndCollect(t, a, "four"); got[0].Message != "four" {
		t.Fatalf("the sender got %s, want its echo", got[0].Raw)
	}
	ns.GlobalAccount().RemoveMapping(get)

	for _, want := range []string{"two", "three", "four"} {
		if f := next(t, c); f.Type != "message" || f.Message != want {
			t.Fatalf("got %s, want message %q: the replay, then the live message held meanwhile", f.Raw, want)
		}
	}
}
