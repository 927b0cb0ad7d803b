package ratelimit_test

import (
	"testing"
	"time"

	"roomcast/pkg/server/ratelimit"
)

var policy = ratelimit.Config{PerSecond: 2, Burst: 2, WarnEvery: time.Second, CloseAfter: 10 * time.Second}

func TestBurstThenDropWithOneWarningPerSecond(t *testing.T) {
	l := ratelimit.New(policy)
	now := time.Unix(1000, 0)
	want := []ratelimit.Verdict{ratelimit.Allow, ratelimit.Allow, ratelimit.DropAndWarn, ratelimit.Drop, ratelimit.Drop}
	for i, w := range want {
		if got := l.Check(now.Add(time.Duration(i) * time.Millisecond)); got != w {
			t.Fatalf("message %d: got verdict %v, want %v", i, got, w)
		}
	}
	// A second later the bucket is full again, and the next drop warns again.
	now = now.Add(1100 * time.Millisecond)
	want = []ratelimit.Verdict{ratelimit.Allow, ratelimit.Allow, ratelimit.DropAndWarn, ratelimit.Drop}
	for i, w := range want {
		if got := l.Check(now); got != w {
			t.Fatalf("after refill, message %d: got verdict %v, want %v", i, got, w)
		}
	}
}

func TestStayingOverTheLimitForTenSecondsCloses(t *testing.T) {
	l := ratelimit.New(policy)
	start := time.Unix(1000, 0)
	var closedAt time.Duration = -1
	// 20 messages a second, ten times the limit, for 12 seconds.
	for ms := 0; ms < 12000; ms += 50 {
		if l.Check(start.Add(time.Duration(ms)*time.Millisecond)) == ratelimit.Close {
			closedAt = time.Duration(ms) * time.Millisecond
			break
		}
	}
	if closedAt < 10*time.Second || closedAt > 10200*time.Millisecond {
		t.Fatalf("closed at %v, want just after 10s over the limit", closedAt)
	}
}

func TestABreakResetsTheCloseClock(t *testing.T) {
	l := ratelimit.New(policy)
	now := time.Unix(1000, 0)
	flood := func(d time.Duration) ratelimit.Verdict {
		worst := ratelimit.Allow
		for end := now.Add(d); now.Before(end); now = now.Add(50 * time.Millisecond) {
			if v := l.Check(now); v > worst {
				worst = v
			}
		}
		return worst
	}
	if v := flood(8 * time.Second); v == ratelimit.Close {
		t.Fatal("closed before 10s")
	}
	now = now.Add(3 * time.Second) // a quiet break longer than WarnEvery
	if v := flood(8 * time.Second); v == ratelimit.Close {
		t.Fatal("closed although the client took a break: the clock was not reset")
	}
}

func TestWithinTheLimitAlwaysAllows(t *testing.T) {
	l := ratelimit.New(policy)
	now := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		if v := l.Check(now.Add(time.Duration(i) * 500 * time.Millisecond)); v != ratelimit.Allow {
			t.Fatalf("message %d at the allowed rate: got %v", i, v)
		}
	}
}
