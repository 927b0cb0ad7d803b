package edge_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/swarm"
)

// answer writes a controller's answer.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

func newClient(t *testing.T, h http.Handler) (*edge.ControllerClient, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := edge.NewControllerClient(srv.URL, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, srv
}

func TestControllerClientServiceLabels(t *testing.T) {
	tests := []struct {
		name    string
		h       http.HandlerFunc
		want    string // the active label
		wantErr error
	}{
		{"labels", answer(200, `{"version":1,"service":"edge_nginx","found":true,"labels":{"roomcast.active":"green"}}`), "green", nil},
		{"no label", answer(200, `{"version":1,"service":"edge_nginx","found":true,"labels":{}}`), "", nil},
		{"service missing", answer(200, `{"version":1,"service":"edge_nginx","found":false,"labels":{}}`), "", swarm.ErrServiceNotFound},
		{"not read yet", answer(503, "labels not read yet"), "", edge.ErrController},
		{"server error", answer(500, "boom"), "", edge.ErrController},
		{"not JSON", answer(200, "<html>"), "", edge.ErrController},
		{"another service", answer(200, `{"version":1,"service":"other","found":true,"labels":{"roomcast.active":"green"}}`), "", edge.ErrController},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newClient(t, tc.h)
			labels, err := c.ServiceLabels(context.Background(), "edge_nginx")
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := labels[bluegreen.LabelActive]; got != tc.want {
				t.Fatalf("active = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("controller down", func(t *testing.T) {
		c, srv := newClient(t, answer(200, "{}"))
		srv.Close()
		if _, err := c.ServiceLabels(context.Background(), "edge_nginx"); !errors.Is(err, edge.ErrController) {
			t.Fatalf("err = %v, want ErrController", err)
		}
	})
}

func TestNewControllerClientRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "edge_controller:9190", "unix:///x.sock", "http://", "http://h:1/v1/labels", "http://h:1/?x=1", "ftp://h:1"} {
		if _, err := edge.NewControllerClient(u, time.Second); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	for _, u := range []string{"http://edge_controller:9190", "http://127.0.0.1:9190/", "https://h"} {
		if _, err := edge.NewControllerClient(u, time.Second); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
	if _, err := edge.NewControllerClient("http://h:1", 0); err == nil {
		t.Error("a zero wait accepted")
	}
}

// versions is a controller whose long polls answer with the next of its versions
// (then fail), recording what each request asked for.
type versions struct {
	seq   []string // answers in order; "fail" answers 503
	n     atomic.Int32
	asked chan string
}

func (v *versions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(v.n.Add(1)) - 1
	v.asked <- r.URL.RawQuery
	if i >= len(v.seq) || v.seq[i] == "fail" {
		http.Error(w, "gone", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, `{"version":%s,"service":"edge_nginx","found":true,"labels":{}}`, v.seq[i])
}

func TestControllerClientWatchService(t *testing.T) {
	tests := []struct {
		name       string
		seq        []string
		wantEvents int
		wantAsked  []string
	}{
		// The first answer gives the version; a same version is a wait that ran out.
		{"one event per new version", []string{"5", "5", "7", "9", "fail"}, 2,
			[]string{"", "after=5&wait=1s", "after=5&wait=1s", "after=7&wait=1s", "after=9&wait=1s"}},
		{"first request fails", []string{"fail"}, 0, []string{""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := &versions{seq: tc.seq, asked: make(chan string, len(tc.seq))}
			c, _ := newClient(t, v)
			events, errs := c.WatchService(context.Background(), "edge_nginx")
			n := 0
			for ev := range events {
				if ev.Name != "edge_nginx" || ev.Action != "update" {
					t.Errorf("event %+v", ev)
				}
				n++
			}
			if err := <-errs; !errors.Is(err, edge.ErrController) {
				t.Fatalf("stream ended with %v, want ErrController", err)
			}
			if n != tc.wantEvents {
				t.Fatalf("%d events, want %d", n, tc.wantEvents)
			}
			close(v.asked)
			var asked []string
			for q := range v.asked {
				asked = append(asked, q)
			}
			if fmt.Sprint(asked) != fmt.Sprint(tc.wantAsked) {
				t.Fatalf("asked %q, want %q", asked, tc.wantAsked)
			}
		})
	}
	t.Run("ctx ends the stream", func(t *testing.T) {
		block := make(chan struct{})
		c, _ := newClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("after") {
				select {
				case <-block:
				case <-r.Context().Done():
				}
			}
			fmt.Fprint(w, `{"version":1,"service":"edge_nginx","found":true,"labels":{}}`)
		}))
		defer close(block)
		ctx, cancel := context.WithCancel(context.Background())
		events, errs := c.WatchService(ctx, "edge_nginx")
		cancel()
		for range events {
			t.Error("event after cancel")
		}
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("stream ended with %v, want context.Canceled", err)
		}
	})
}
