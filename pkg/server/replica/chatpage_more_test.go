package replica_test

import (
	"net/url"
	"strings"
	"testing"

	"roomcast/pkg/auth"
	"roomcast/pkg/server/replica"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv/natstest"
)

func TestChatPageSendsItsTokenAsASubprotocol(t *testing.T) {
	browser := startBrowser(t)
	r := startReplica(t, "pageauth", "", withAuth(t))
	token := mint(t, auth.Claims{Subject: "carol", Rooms: []string{"vault"}})

	// The token travels in the fragment, which the browser sends to no server.
	carol := openChatPage(t, browser, "carol", r.url("/#vault&token="+url.QueryEscape(token)))
	dave := openChatPage(t, browser, "dave", r.url("/?lang=en#token="+url.QueryEscape(token)))
	carol.waitState("connected")
	dave.join("vault")
	carol.sendWithEnter("behind the door")
	dave.waitForMessages([]string{"behind the door"})
	// The page takes the token out of the address bar and the history at once; the room
	// (and the rest of the query) stay.
	for _, p := range []struct {
		page *chatPage
		want string
	}{{carol, r.url("/#vault")}, {dave, r.url("/?lang=en#vault")}} {
		if href := eval[string](p.page, "location.href"); href != p.want {
			t.Errorf("%s: location %q, want %q", p.page.name, href, p.want)
		}
	}

	// Without a token the page cannot get in, and keeps trying.
	eve := openChatPage(t, browser, "eve", r.url("/#vault"))
	eve.waitState("reconnecting")
	if v := eve.status(); v == "connected to vault" {
		t.Fatalf("a page without a token connected")
	}
	// A tab opened at #vault has as many history entries as carol's: her token's
	// address was replaced, not left behind.
	if n, want := eval[int](carol, "history.length"), eval[int](eve, "history.length"); n != want {
		t.Errorf("carol: %d history entries, want %d", n, want)
	}

	// A token in the query has been sent to the server and every proxy's log: the page
	// does not use it, says so, and takes it out of the address bar.
	mallory := openChatPage(t, browser, "mallory", r.url("/?token="+url.QueryEscape(token)+"#vault"))
	mallory.waitState("reconnecting")
	if href := eval[string](mallory, "location.href"); href != r.url("/#vault") {
		t.Errorf("mallory: location %q, want the token gone", href)
	}
	if errs := mallory.errorLines(); len(errs) == 0 || !strings.Contains(errs[0], "?token= is not used") {
		t.Errorf("mallory: error lines %q, want one about ?token=", errs)
	}
}

func TestChatPageShowsWhatTheRoomKeptAndResumesAfterADrain(t *testing.T) {
	browser := startBrowser(t)
	ns := natstest.Start(t, natstest.JetStream(t))
	r := startReplica(t, "pagehist", ns.ClientURL(), replicatest.History(100))
	historyReady(t, r)
	early := openChatPage(t, browser, "early", r.url("/#archive"))
	early.waitState("connected")
	early.sendWithEnter("first")
	early.sendWithEnter("second")
	early.waitForMessages([]string{"first", "second"})

	// A page that joins later sees what the room kept.
	late := openChatPage(t, browser, "late", r.url("/#archive"))
	late.waitForMessages([]string{"first", "second"})

	// The server goes away; while the pages reconnect, another replica takes messages;
	// once back, the pages resume without losing or repeating any.
	r2 := startReplica(t, "pagehist2", ns.ClientURL(), replicatest.History(100))
	historyReady(t, r2)
	addr := r.Addr().String()
	r.Close()
	early.waitState("reconnecting")
	writer := r2.dial(t, "archive")
	if err := writer.Send("while you were away"); err != nil {
		t.Fatal(err)
	}
	next(t, writer)
	startReplica(t, "pagehist3", ns.ClientURL(), func(c *replica.Config) {
		replicatest.History(100)(c)
		c.HTTP.Addr = addr
	})
	for _, p := range []*chatPage{early, late} {
		p.waitState("connected")
		p.waitForMessages([]string{"first", "second", "while you were away"})
		if got := p.messages(); len(got) != 3 {
			t.Errorf("%s: log %q, want each message once", p.name, got)
		}
	}
}
