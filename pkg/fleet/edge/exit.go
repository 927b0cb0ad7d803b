package edge

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// ExitError is how nginx ended when Run returns because it exited.
type ExitError struct {
	// Code is the exit status to pass on: nginx's, 128+signal when it was killed, and
	// at least 1 when nginx exited without being asked to.
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }

func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is Code: the status a command passes on (it makes an ExitError a
// cli.ExitCoder).
func (e *ExitError) ExitCode() int { return e.Code }

// drain stops nginx in the order a load balancer in front needs: the health check
// fails at once while nginx serves on for DrainDelay (the balancer stops sending new
// clients here), then nginx stops accepting and is stopped as stop does.
func (e *Edge) drain() error {
	e.unready()
	if d := e.cfg.DrainDelay; d > 0 {
		e.log.Info("draining: health check failing, nginx still serving", "drain_delay", d.String())
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-e.abort:
			return e.stop(syscall.SIGTERM)
		case <-e.deps.Nginx.Done():
			return e.exited(true)
		}
	}
	return e.stop(syscall.SIGQUIT)
}

// stop signals nginx and waits for it to exit. After SIGQUIT (stop accepting, let the
// requests finish) the connections still open after StopTimeout, WebSockets above all,
// are closed by SIGTERM: their clients resume elsewhere at once, where waiting for
// worker_shutdown_timeout would hold the task (and, with a host-mode port on one node,
// its successor) for that long.
func (e *Edge) stop(sig syscall.Signal) error {
	e.log.Info("stopping nginx", "signal", sig.String(), "graceful", sig == syscall.SIGQUIT)
	if err := e.deps.Nginx.Signal(sig); err != nil {
		e.log.Warn("signalling nginx failed", "error", err.Error())
	}
	if sig == syscall.SIGQUIT {
		t := time.NewTimer(e.cfg.StopTimeout)
		defer t.Stop()
		select {
		case <-e.deps.Nginx.Done():
			return e.exited(false)
		case <-e.abort:
			e.log.Info("stopping nginx at once", "signal", syscall.SIGTERM.String())
		case <-t.C:
			e.log.Info("closing the connections still open", "signal", syscall.SIGTERM.String(), "stop_timeout", e.cfg.StopTimeout.String())
		}
		if err := e.deps.Nginx.Signal(syscall.SIGTERM); err != nil {
			e.log.Warn("signalling nginx failed", "error", err.Error())
		}
	}
	<-e.deps.Nginx.Done()
	return e.exited(false)
}

// exited turns nginx's exit into Run's result.
func (e *Edge) exited(unexpected bool) error {
	err := e.deps.Nginx.Err()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		code = 1
	}
	if unexpected {
		e.log.Error("nginx exited on its own", "status", code)
		return &ExitError{Code: max(code, 1), Err: fmt.Errorf("nginx exited on its own (status %d)", code)}
	}
	e.log.Info("nginx stopped", "status", code)
	if code != 0 {
		return &ExitError{Code: code, Err: fmt.Errorf("nginx exited with status %d", code)}
	}
	return nil
}
