package edge

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// follow reads the events of service name and kicks a reconcile for each, and after
// every (re)connection, since changes made while no stream was open were missed. A
// lost stream is passed to lost (with the wait before the next attempt) and reopened
// with backoff; follow returns when ctx is done.
func follow(ctx context.Context, svc Services, name string, log *slog.Logger, kicks chan<- struct{}, lost func(err error, retryIn time.Duration)) {
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default: // one pending reconcile reads the latest label anyway
		}
	}
	delay := streamMinWait
	for ctx.Err() == nil {
		opened := time.Now()
		events, errs := svc.WatchService(ctx, name)
		kick()
		for ev := range events {
			log.Debug("service event", "action", ev.Action, "service", ev.Name)
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
		lost(err, delay)
		kick()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, streamMaxWait)
	}
}

// watch follows the nginx service for Run.
func (e *Edge) watch(ctx context.Context, kicks chan<- struct{}) {
	follow(ctx, e.deps.Services, e.cfg.Service, e.log, kicks, func(err error, retryIn time.Duration) {
		e.count(KindEventStream, "event stream lost, polling until it is back", err, "retry_in", retryIn.String())
	})
}
