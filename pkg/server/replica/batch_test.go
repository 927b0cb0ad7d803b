package replica_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/wsgateway"
	"roomcast/pkg/wsclient"
)

// messagesOf returns the chat messages of a frame: one per line for a batched client,
// exactly one otherwise.
func messagesOf(t *testing.T, f wsclient.Frame, batched bool) []string {
	t.Helper()
	lines := [][]byte{f.Raw}
	if batched {
		lines = bytes.Split(f.Raw, []byte{'\n'})
	}
	var got []string
	for _, line := range lines {
		var sf chat.ServerFrame
		if err := json.Unmarshal(line, &sf); err != nil || sf.Type != "message" {
			t.Fatalf("frame %q: line %q is not one message frame (%v)", f.Raw, line, err)
		}
		got = append(got, sf.Message)
	}
	return got
}

func TestTheBatchedSubprotocolIsNegotiatedAndOthersKeepOneMessagePerFrame(t *testing.T) {
	r := startReplica(t, "batch", "", nil)
	tests := []struct {
		name     string
		offered  string
		selected string
	}{
		{"nothing offered", "", ""},
		{"roomcast.v1", wsgateway.SubprotocolV1, wsgateway.SubprotocolV1},
		{"batched", wsgateway.SubprotocolBatch, wsgateway.SubprotocolBatch},
		{"batched after roomcast.v1", wsgateway.SubprotocolV1 + ", " + wsgateway.SubprotocolBatch, wsgateway.SubprotocolBatch},
		{"batched next to an unknown one", "x-other, " + wsgateway.SubprotocolBatch, wsgateway.SubprotocolBatch},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := fmt.Sprintf("batch-%d", i)
			var header http.Header
			if tt.offered != "" {
				header = http.Header{"Sec-WebSocket-Protocol": {tt.offered}}
			}
			c, resp, err := dialWith(t, r.wsURL(room), header)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.selected {
				t.Fatalf("selected subprotocol %q, want %q", got, tt.selected)
			}
			sender := r.dial(t, room)
			const n = 50
			var want []string
			for j := range n {
				want = append(want, fmt.Sprint(j))
				if err := sender.Send(fmt.Sprint(j)); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for len(got) < n {
				got = append(got, messagesOf(t, next(t, c), tt.selected == wsgateway.SubprotocolBatch)...)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("got %q, want %q in order", got, want)
			}
		})
	}
}

func TestTheChatPageTakesBatchedFrames(t *testing.T) {
	browser := startBrowser(t)
	r := startReplica(t, "pagebatch", "", nil)
	page := openChatPage(t, browser, "ann", r.url("/"))
	page.join("burst")
	page.waitState("connected")
	if got := eval[string](page, `document.getElementById("log").dataset.protocol`); got != wsgateway.SubprotocolBatch {
		t.Fatalf("the page's connection speaks %q, want %q", got, wsgateway.SubprotocolBatch)
	}
	// A burst queues up behind the first writes, so most of it arrives batched.
	sender := r.dial(t, "burst")
	var want []string
	for i := range 200 {
		want = append(want, fmt.Sprint("m", i))
		if err := sender.Send(want[i]); err != nil {
			t.Fatal(err)
		}
	}
	page.waitForMessages(want)
	if got := page.messages(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the page shows %q, want %q once each, in order", got, want)
	}
}
