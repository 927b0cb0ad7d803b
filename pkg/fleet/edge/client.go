package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"roomcast/pkg/fleet/swarm"
)

// ErrController wraps every failure to read the edge controller: it is down, it
// answers with an error, or it serves another service.
var ErrController = errors.New("edge controller")

// pollSlack is how much longer than its wait a long poll may take before the client
// gives up on it (and treats the stream as lost).
const pollSlack = 10 * time.Second

// ControllerClient reads the nginx service's release labels from a Controller over
// HTTP instead of from Docker: it implements Services, so an Edge run with it needs no
// Docker API. WatchService is a long poll on the labels' version, each change being
// one event; a failed poll ends the stream as a lost Docker event stream does.
// Safe for concurrent use.
type ControllerClient struct {
	base string
	wait time.Duration
	http *http.Client
}

// NewControllerClient returns a client of the controller at base (http://host:port);
// each long poll asks the controller to wait up to wait.
func NewControllerClient(base string, wait time.Duration) (*ControllerClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("edge controller URL %q: want http://host:port", base)
	}
	if wait <= 0 {
		return nil, errors.New("edge controller client: wait must be positive")
	}
	u.Path = ""
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}
	return &ControllerClient{base: u.String(), wait: wait, http: &http.Client{Transport: tr}}, nil
}

// Close closes idle connections; a request after it opens a new one.
func (c *ControllerClient) Close() { c.http.CloseIdleConnections() }

// ServiceLabels returns the release labels the controller serves for service name;
// swarm.ErrServiceNotFound when the service does not exist.
func (c *ControllerClient) ServiceLabels(ctx context.Context, name string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	d, err := c.get(ctx, name, "")
	if err != nil {
		return nil, err
	}
	if !d.Found {
		return nil, fmt.Errorf("reading service %q from the edge controller: %w", name, swarm.ErrServiceNotFound)
	}
	return maps.Clone(d.Labels), nil
}

// WatchService long-polls the controller and sends an update event whenever the
// version of the labels changes. The events channel is closed when a poll fails or
// ctx is done; errs then yields why, exactly once. The call returns once the
// controller has answered the first request (or failed to).
func (c *ControllerClient) WatchService(ctx context.Context, name string) (<-chan swarm.ServiceEvent, <-chan error) {
	out := make(chan swarm.ServiceEvent)
	errc := make(chan error, 1)
	first, err := c.poll(ctx, name, "")
	if err != nil {
		close(out)
		errc <- err
		return out, errc
	}
	go func() {
		defer close(out)
		version := first.Version
		for {
			d, err := c.poll(ctx, name, strconv.FormatUint(version, 10))
			if ctx.Err() != nil {
				errc <- ctx.Err()
				return
			}
			if err != nil {
				errc <- err
				return
			}
			if d.Version == version {
				continue // the wait ran out with nothing new
			}
			version = d.Version
			select {
			case out <- swarm.ServiceEvent{Name: name, Action: "update"}:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	return out, errc
}

// poll is one request, bounded by the wait it asks for plus pollSlack.
func (c *ControllerClient) poll(ctx context.Context, name, after string) (Desired, error) {
	ctx, cancel := context.WithTimeout(ctx, c.wait+pollSlack)
	defer cancel()
	return c.get(ctx, name, after)
}

func (c *ControllerClient) get(ctx context.Context, name, after string) (Desired, error) {
	target := c.base + LabelsPath
	if after != "" {
		target += "?" + url.Values{"after": {after}, "wait": {c.wait.String()}}.Encode()
	}
	fail := func(err error) (Desired, error) {
		return Desired{}, fmt.Errorf("%w: reading %s: %w", ErrController, target, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("status %d: %.200s", resp.StatusCode, body))
	}
	var d Desired
	if err := json.Unmarshal(body, &d); err != nil {
		return fail(fmt.Errorf("decoding the answer: %w", err))
	}
	if d.Service != name {
		return fail(fmt.Errorf("it serves service %q, not %q", d.Service, name))
	}
	return d, nil
}
