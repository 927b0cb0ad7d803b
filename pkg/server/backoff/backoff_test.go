package backoff_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"roomcast/pkg/server/backoff"
)

func TestTheWaitDoublesUpToTheLargestWithAtLeastHalfOfIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := backoff.Backoff{First: 100 * time.Millisecond, Max: time.Second}
		for _, full := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
			full *= time.Millisecond
			start := time.Now()
			if err := b.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < full/2 || d >= full {
				t.Fatalf("waited %v, want from %v to under %v", d, full/2, full)
			}
		}
	})
}

func TestAWaitEndsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b := backoff.Backoff{First: time.Hour, Max: time.Hour}
		if err := b.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want the context's deadline", err)
		}
	})
}
