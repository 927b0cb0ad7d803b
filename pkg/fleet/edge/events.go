package edge

import (
	"context"
	"errors"
	"time"
)

// watch reads the service's events and kicks a reconcile for each, and after every
// (re)connection, since changes made while no stream was open were missed.
func (e *Edge) watch(ctx context.Context, kicks chan<- struct{}) {
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default: // one pending reconcile reads the latest label anyway
		}
	}
	delay := streamMinWait
	for ctx.Err() == nil {
		opened := time.Now()
		events, errs := e.deps.Services.WatchService(ctx, e.cfg.Service)
		kick()
		for ev := range events {
			e.log.Debug("service event", "action", ev.Action, "service", ev.Name)
			kick()
		}
		err := <-errs
		if ctx.Err() != nil {
			return
		}
		if time.Since(opened) >= streamMaxWait {
			delay = streamMinWait
		}
		if err == nil {
			err = errors.New("event stream ended")
		}
		e.count(KindEventStream, "event stream lost, polling until it is back", err, "retry_in", delay.String())
		kick()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, streamMaxWait)
	}
}
