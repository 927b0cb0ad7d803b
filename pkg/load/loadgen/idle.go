package loadgen

import (
	"context"
	"fmt"
	"os"
	"time"
)

// hold keeps the idle connections open for Duration and measures server memory.
func (r *runner) hold(ctx context.Context, before []ProcSample) *IdleResult {
	stop := r.progress(func() string {
		line := fmt.Sprintf("%s  idle  conns %d", r.elapsed(), r.live.Load())
		if s, err := r.procs.sample(); err == nil && len(s) > 0 {
			line += "  server RSS " + fmtBytes(totalRSS(s))
		}
		return line
	})
	t0 := time.Now()
	t := time.NewTimer(r.cfg.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	stop()
	res := &IdleResult{Connections: len(r.members), HeldSeconds: time.Since(t0).Seconds(), Open: int(r.live.Load())}
	if self, err := ReadProc(os.Getpid()); err == nil {
		res.LoadgenRSSBytes = self.RSSBytes
	}
	if len(r.procs) == 0 {
		return res
	}
	after, err := r.procs.sample()
	if err != nil || before == nil {
		r.warn("server memory not measured", "err", err)
		return res
	}
	res.RSSBeforeBytes, res.RSSAfterBytes = totalRSS(before), totalRSS(after)
	res.Before, res.After = before, after
	res.BytesPerConnection = float64(res.RSSAfterBytes-res.RSSBeforeBytes) / float64(len(r.members))
	return res
}
