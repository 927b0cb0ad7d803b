package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Error frame codes counted one by one; anything else counts as "other".
var knownCodes = [...]string{"bad_request", "message_too_large", "rate_limited", "unavailable", "forbidden", "history_truncated", "history_unavailable", "other"}

// otherFrame counts a frame that is not a message; it returns the code of an error
// frame ("" for any other frame).
func (r *runner) otherFrame(frame []byte) string {
	code, ok := ErrorCode(frame)
	if !ok {
		r.otherFrames.Add(1)
		return ""
	}
	r.countError(string(code))
	return string(code)
}

// countError counts an error frame with code, as "other" when it is not a known one.
func (r *runner) countError(code string) {
	for i, known := range knownCodes {
		if code == known || i == len(knownCodes)-1 {
			r.errorFrames[i].Add(1)
			return
		}
	}
}

// expectedClose reports whether the scenario expects the server to close a client with
// code: release expects 1012 (service restart, the drain of the old color).
func (r *runner) expectedClose(code uint16) bool {
	return r.cfg.Scenario == Release && code == 1012
}

// redial runs a member's reconnect in its own goroutine, unless the run is stopping.
func (r *runner) redial(reconnect func()) {
	r.redialMu.Lock()
	defer r.redialMu.Unlock()
	if r.redialsStopped {
		return
	}
	r.redials.Go(reconnect)
}

// stopRedialing stops the reconnects and waits for those in progress; no dial starts
// afterwards.
func (r *runner) stopRedialing() {
	r.redialMu.Lock()
	if !r.redialsStopped {
		r.redialsStopped = true
		close(r.stopRedials)
	}
	r.redialMu.Unlock()
	r.redials.Wait()
}

func (r *runner) countClose(code uint16) {
	r.closesMu.Lock()
	defer r.closesMu.Unlock()
	if r.closes == nil {
		r.closes = make(map[uint16]int64)
	}
	r.closes[code]++
}

// connect connects every client and records how long it took.
func (r *runner) connect(ctx context.Context, rep *Report) error {
	t := time.Now()
	connectAll := r.connectAll
	if r.storm != nil {
		connectAll = r.joinAll
	}
	if err := connectAll(ctx); err != nil {
		return errors.Join(err, r.closeAll())
	}
	rep.Connections = len(r.members)
	rep.ConnectSeconds = time.Since(t).Seconds()
	r.printf("connected %d clients in %.1fs (run %s)", len(r.members), rep.ConnectSeconds, r.run)
	return nil
}

// checkFileLimit fails early, with advice, when RLIMIT_NOFILE cannot hold n connections.
func checkFileLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // nothing to check against; connecting will tell
	}
	if need := uint64(n) + 64; lim.Cur < need {
		return fmt.Errorf("%d connections need about %d file descriptors, but RLIMIT_NOFILE is %d (hard limit %d); raise it with ulimit -n",
			n, need, lim.Cur, lim.Max)
	}
	return nil
}

// connectAll connects every member, ConnectParallel at a time, and returns the first
// error; the others still connecting finish, and no new ones start.
func (r *runner) connectAll(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     = make(chan *member)
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		done     atomic.Int64
	)
	stop := r.progress(func() string {
		return fmt.Sprintf("%s  connecting %d/%d", r.elapsed(), done.Load(), len(r.members))
	})
	defer stop()
	for range min(r.cfg.ConnectParallel, len(r.members)) {
		wg.Go(func() {
			for m := range next {
				if ctx.Err() != nil {
					continue
				}
				if _, err := m.dial(0); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					continue
				}
				done.Add(1)
			}
		})
	}
feed:
	for _, m := range r.members {
		select {
		case next <- m:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("connected %d of %d clients: %w", done.Load(), len(r.members), firstErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connected %d of %d clients: %w", done.Load(), len(r.members), err)
	}
	return nil
}

// closeAll stops the reconnects, closes every connection and waits for the read loops
// to end.
func (r *runner) closeAll() error {
	r.stopRedialing()
	r.closing.Store(true)
	for _, m := range r.members {
		if l := m.link.Load(); l != nil {
			// A server that does not read must not hold us up.
			_ = l.conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = l.conn.WriteClose(1000, nil)
		}
	}
	done := make(chan struct{})
	go func() { r.readers.Wait(); close(done) }()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("closing connections: read loops still running after %v", closeWait)
	}
}
