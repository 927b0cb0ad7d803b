package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
)

// start waits for a usable color, renders its config, tests it and starts nginx.
func (e *Edge) start(ctx context.Context) error {
	if err := e.prepareDirs(); err != nil {
		return err
	}
	color, err := e.waitForColor(ctx)
	if err != nil {
		return err
	}
	p := e.params(color)
	if err := e.deps.Template.RenderFile(e.cfg.ConfigPath, p); err != nil {
		return fmt.Errorf("rendering the first config: %w", err)
	}
	if err := e.deps.Nginx.Test(ctx, e.cfg.ConfigPath); err != nil {
		return fmt.Errorf("testing the first config: %w", err)
	}
	if err := e.ready(); err != nil {
		return err
	}
	if err := e.deps.Nginx.Start(); err != nil {
		return err
	}
	e.log.Info("nginx started", "color", p.Color, "backend", p.Backend, "applied_at", timestamp(p.AppliedAt))
	if err := e.confirm(ctx, p); err != nil {
		select {
		case <-e.deps.Nginx.Done():
			return e.exited(true)
		default:
		}
		e.log.Warn("nginx not seen serving its first config", "color", p.Color, "error", err.Error())
	}
	e.setApplied(p)
	return nil
}

func (e *Edge) prepareDirs() error {
	for _, dir := range []string{filepath.Dir(e.cfg.ConfigPath), e.cfg.Params.TempDir, filepath.Dir(e.cfg.Params.PidPath)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	return nil
}

// waitForColor reads the label until it names a color that resolves, for at most
// StartTimeout.
func (e *Edge) waitForColor(ctx context.Context) (string, error) {
	began := time.Now()
	delay := startMinWait
	for {
		color, kind, err := e.desired(ctx, true)
		if err == nil {
			if err = e.resolves(ctx, bluegreen.ForColor(e.cfg.AppService, color)); err == nil {
				return color, nil
			}
			kind = KindUnresolved
		}
		waited := time.Since(began)
		e.count(kind, "waiting before starting nginx", err, "waited", waited.Round(time.Millisecond).String(), "timeout", e.cfg.StartTimeout.String())
		if waited+delay > e.cfg.StartTimeout {
			return "", fmt.Errorf("no usable color within %s, nginx not started: %w", e.cfg.StartTimeout, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, e.cfg.PollInterval)
	}
}

// desired reads the label. At start an absent label means the default color; later
// it is refused like a bad value.
func (e *Edge) desired(ctx context.Context, atStart bool) (color, kind string, err error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	labels, err := e.deps.Services.ServiceLabels(ctx, e.cfg.Service)
	switch {
	case errors.Is(err, swarm.ErrServiceNotFound):
		return "", KindServiceNotFound, err
	case errors.Is(err, ErrController):
		return "", KindController, err
	case err != nil:
		return "", KindDockerAPI, err
	}
	v, ok := labels[bluegreen.LabelActive]
	switch {
	case !ok && atStart:
		e.log.Info("label absent, using the default color", "service", e.cfg.Service, "label", bluegreen.LabelActive, "color", e.cfg.DefaultColor)
		return e.cfg.DefaultColor, "", nil
	case !ok:
		return "", KindLabelMissing, fmt.Errorf("service %s has no label %s", e.cfg.Service, bluegreen.LabelActive)
	case !bluegreen.ValidColor(v):
		return "", KindBadLabel, fmt.Errorf("label %s=%q is not one of %v", bluegreen.LabelActive, v, bluegreen.Colors)
	}
	return v, "", nil
}

func (e *Edge) resolves(ctx context.Context, host string) error {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := e.deps.Lookup(ctx, host)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("resolving %s: no address", host)
	}
	return nil
}

func (e *Edge) params(color string) Params {
	p := e.cfg.Params
	p.Color = color
	p.Backend = bluegreen.ForColor(e.cfg.AppService, color)
	p.AppliedAt = e.deps.Now()
	return p
}

// reconcile moves nginx to the labelled color, or leaves it as it is and says why.
func (e *Edge) reconcile(ctx context.Context) {
	color, kind, err := e.desired(ctx, false)
	if err != nil {
		e.count(kind, "label not applied, keeping the current color", err)
		return
	}
	old := e.Applied()
	if color == old.Color {
		return
	}
	began := time.Now()
	fail := func(kind string, err error) {
		e.count(kind, "color change refused, keeping the current color", err, "wanted", color)
	}
	p := e.params(color)
	if err := e.resolves(ctx, p.Backend); err != nil {
		fail(KindUnresolved, err)
		return
	}
	next := e.cfg.ConfigPath + ".next"
	if err := e.deps.Template.RenderFile(next, p); err != nil {
		fail(KindRender, err)
		return
	}
	if err := e.deps.Nginx.Test(ctx, next); err != nil {
		_ = os.Remove(next)
		fail(KindConfigTest, err)
		return
	}
	if err := os.Rename(next, e.cfg.ConfigPath); err != nil {
		fail(KindRender, fmt.Errorf("installing the tested config: %w", err))
		return
	}
	if err := e.deps.Nginx.Reload(); err != nil {
		fail(KindReload, err)
		return
	}
	// Until nginx is seen serving it, the change counts as not made: the next event
	// or poll renders and reloads again.
	if err := e.confirm(ctx, p); err != nil {
		fail(KindReload, err)
		return
	}
	e.setApplied(p)
	e.reloads.Inc()
	e.log.Info("nginx reloaded", "from", old.Color, "to", p.Color, "backend", p.Backend,
		"applied_at", timestamp(p.AppliedAt), "took", time.Since(began).Round(time.Millisecond).String())
}

// confirm waits until nginx reports p, or ReloadTimeout passes, or nginx exits.
func (e *Edge) confirm(ctx context.Context, p Params) error {
	want := Status{Color: p.Color, AppliedAt: timestamp(p.AppliedAt)}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.ReloadTimeout)
	defer cancel()
	var last Status
	var lastErr error
	for {
		last, lastErr = e.deps.Probe(ctx)
		if lastErr == nil && last == want {
			return nil
		}
		select {
		case <-e.deps.Nginx.Done():
			return errors.New("nginx exited")
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("nginx not seen serving %s applied at %s within %s: %w", want.Color, want.AppliedAt, e.cfg.ReloadTimeout, lastErr)
			}
			return fmt.Errorf("nginx not seen serving %s applied at %s within %s: it reports %s applied at %s",
				want.Color, want.AppliedAt, e.cfg.ReloadTimeout, last.Color, last.AppliedAt)
		case <-time.After(probeEvery):
		}
	}
}

func (e *Edge) setApplied(p Params) {
	e.mu.Lock()
	e.applied = p
	e.mu.Unlock()
	for _, c := range bluegreen.Colors {
		v := 0.0
		if c == p.Color {
			v = 1
		}
		e.active.WithLabelValues(c).Set(v)
	}
	e.appliedTime.Set(float64(p.AppliedAt.UnixNano()) / 1e9)
}

func (e *Edge) count(kind, msg string, err error, attrs ...any) {
	e.errorsTotal.WithLabelValues(kind).Inc()
	attrs = append([]any{"kind", kind, "error", err.Error(), "service", e.cfg.Service, "color", e.Applied().Color}, attrs...)
	e.log.Warn(msg, attrs...)
}
