package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Nginx runs one nginx master process in the foreground as a child and tests configs
// with the same binary. Its methods are safe for concurrent use.
type Nginx struct {
	bin            string
	config         string
	stdout, stderr io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// NewNginx returns a controller for the nginx binary bin (a name on PATH or a path)
// that runs the config at config. nginx's own output goes to stdout and stderr.
func NewNginx(bin, config string, stdout, stderr io.Writer) *Nginx {
	return &Nginx{bin: bin, config: config, stdout: stdout, stderr: stderr, done: make(chan struct{})}
}

// Test runs `nginx -t` on the config at path and returns nginx's complaint when it
// fails.
func (n *Nginx) Test(ctx context.Context, path string) error {
	// -e stderr: nginx opens its built-in error log before reading the config; in a
	// minimal image that path may not exist.
	cmd := exec.CommandContext(ctx, n.bin, "-t", "-q", "-e", "stderr", "-c", path)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			return fmt.Errorf("nginx -t -c %s: %w", path, err)
		}
		return fmt.Errorf("nginx -t -c %s: %w: %s", path, err, strings.ReplaceAll(msg, "\n", "; "))
	}
	return nil
}

// Start starts nginx on its config in the foreground (daemon off). It returns once the
// process has started; Done is closed when it exits.
func (n *Nginx) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return errors.New("nginx already started")
	}
	cmd := exec.Command(n.bin, "-e", "stderr", "-c", n.config, "-g", "daemon off;")
	cmd.Stdout = n.stdout
	cmd.Stderr = n.stderr
	// Workers of an old generation may hold the output pipes after the master exits;
	// do not wait for them forever.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting nginx: %w", err)
	}
	n.cmd = cmd
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(n.done)
	}()
	return nil
}

// Pid is the master's process ID, 0 before Start.
func (n *Nginx) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Reload asks the master to re-read its config (SIGHUP): it starts workers with the
// new config and lets the old ones finish gracefully. A config the master rejects is
// logged by nginx and the old one keeps running.
func (n *Nginx) Reload() error { return n.Signal(syscall.SIGHUP) }

// Signal sends sig to the master: SIGQUIT stops gracefully, SIGTERM at once.
func (n *Nginx) Signal(sig os.Signal) error {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil {
		return errors.New("nginx not started")
	}
	select {
	case <-n.done:
		return errors.New("nginx has exited")
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling nginx (pid %d) with %v: %w", cmd.Process.Pid, sig, err)
	}
	return nil
}

// Done is closed when the master has exited.
func (n *Nginx) Done() <-chan struct{} { return n.done }

// Err is how the master exited, once Done is closed: nil for status 0, else an
// *exec.ExitError.
func (n *Nginx) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}
