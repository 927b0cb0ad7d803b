package replica_test

import (
	"net/url"
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

	carol := openChatPage(t, browser, "carol", r.url("/?token="+url.QueryEscape(token)+"#vault"))
	dave := openChatPage(t, browser, "dave", r.url("/?token="+url.QueryEscape(token)+"#vault"))
	carol.waitState("connected")
	dave.waitState("connected")
	carol.sendWithEnter("behind the door")
	dave.waitForMessages([]string{"behind the door"})

	// Without a token the page cannot get in, and keeps trying.
	eve := openChatPage(t, browser, "eve", r.url("/#vault"))
	eve.waitState("reconnecting")
	if v := eve.status(); v == "connected to vault" {
		t.Fatalf("a page without a token connected")
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
