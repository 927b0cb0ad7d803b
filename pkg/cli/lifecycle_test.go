package cli_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/cli"
	"roomcast/pkg/testenv"
)

func TestLifecycle(t *testing.T) {
	errMain := errors.New("main's result")
	for _, tt := range []struct {
		name string
		// end ends the lifecycle: cancel is the caller's ctx, done makes main return.
		end func(cancel context.CancelFunc, done chan struct{})
	}{
		{"the caller's ctx ends main", func(cancel context.CancelFunc, _ chan struct{}) { cancel() }},
		{"main returning on its own stops the rest", func(_ context.CancelFunc, done chan struct{}) { close(done) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := cli.ListenMetrics("127.0.0.1:0", prometheus.NewRegistry(), testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			started := make(chan struct{})
			result := make(chan error, 1)
			go func() {
				result <- cli.Lifecycle(ctx, testenv.Logger(t), func(ctx context.Context) error {
					close(started)
					select {
					case <-ctx.Done():
					case <-done:
					}
					return errMain
				}, nil, m)
			}()
			<-started
			tt.end(cancel, done)
			select {
			case err := <-result:
				if !errors.Is(err, errMain) {
					t.Fatalf("Lifecycle returned %v, want main's result", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Lifecycle did not return")
			}
			if resp, err := http.Get("http://" + m.Addr().String() + "/metrics"); err == nil {
				resp.Body.Close()
				t.Fatal("the metrics server still answers after Lifecycle returned")
			}
		})
	}
}
