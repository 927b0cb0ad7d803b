// Package swarm is roomcast's adapter to the Docker Engine API for Swarm services: it
// reads a service's labels and replica count, scales a replicated service, and streams
// a service's events (for roomcast-edge and the autoscaler), and it is the
// bluegreen.Docker of a release: labels changed by compare-and-set, tasks, secrets, a
// one-off job, exec in the local tasks (release.go), and the listing and removal of the
// secrets and configs no service mounts (prune.go). It owns nothing but a
// *client.Client of github.com/moby/moby/client, and it never pulls images or asks a
// registry. StackCLI is the one operation the Engine API lacks, `docker stack deploy`,
// run as a command.
//
// The client negotiates the API version with the daemon (DOCKER_API_VERSION, when set
// in the process environment, pins it), so it works with Engine API 1.41 (Docker 20.10)
// and newer. A Client is safe for concurrent use.
package swarm

import (
	"context"
	"errors"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// ErrServiceNotFound means the daemon knows no service of that name or ID.
var ErrServiceNotFound = errors.New("service not found")

// ErrNotReplicated means the service is not in replicated mode, so it has no replica
// count to read or set.
var ErrNotReplicated = errors.New("service is not replicated")

// ServiceEvent is one event of a watched service (an update, such as a label change,
// or its removal).
type ServiceEvent struct {
	// ID is the service ID.
	ID string
	// Name is the service name, when the daemon reports it.
	Name string
	// Action is what happened: "create", "update" or "remove".
	Action string
}

// Client reads and scales Swarm services through the Docker Engine API.
type Client struct {
	api *client.Client
}

// New returns a Client for the daemon at host (for example unix:///var/run/docker.sock
// or tcp://127.0.0.1:2375). TLS settings come from DOCKER_CERT_PATH and
// DOCKER_TLS_VERIFY in the process environment, as for the docker CLI. New does not
// contact the daemon.
func New(host string) (*Client, error) {
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", host, err)
	}
	return &Client{api: api}, nil
}

// Close releases the client's idle connections.
func (c *Client) Close() error { return c.api.Close() }

// APIVersion is the Engine API version in use: the negotiated one once a request has
// been made.
func (c *Client) APIVersion() string { return c.api.ClientVersion() }

func (c *Client) inspect(ctx context.Context, name string) (dswarm.Service, error) {
	res, err := c.api.ServiceInspect(ctx, name, client.ServiceInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return res.Service, fmt.Errorf("inspecting service %q: %w", name, ErrServiceNotFound)
		}
		return res.Service, fmt.Errorf("inspecting service %q: %w", name, err)
	}
	return res.Service, nil
}

// ServiceLabels returns the labels of the service name (the service's own labels, not
// its containers'). A missing service is ErrServiceNotFound.
func (c *Client) ServiceLabels(ctx context.Context, name string) (map[string]string, error) {
	svc, err := c.inspect(ctx, name)
	if err != nil {
		return nil, err
	}
	labels := svc.Spec.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return labels, nil
}

// ServiceReplicas returns the desired replica count of the replicated service name.
func (c *Client) ServiceReplicas(ctx context.Context, name string) (uint64, error) {
	svc, err := c.inspect(ctx, name)
	if err != nil {
		return 0, err
	}
	r := svc.Spec.Mode.Replicated
	if r == nil || r.Replicas == nil {
		return 0, fmt.Errorf("service %q: %w", name, ErrNotReplicated)
	}
	return *r.Replicas, nil
}

// ScaleService sets the desired replica count of the replicated service name, as
// `docker service scale` does: one update of the current spec at its current version,
// without asking a registry about the image. A concurrent update of the same service
// makes it fail (the daemon refuses an out-of-date version); the caller retries.
func (c *Client) ScaleService(ctx context.Context, name string, replicas uint64) error {
	svc, err := c.inspect(ctx, name)
	if err != nil {
		return err
	}
	if svc.Spec.Mode.Replicated == nil {
		return fmt.Errorf("scaling service %q: %w", name, ErrNotReplicated)
	}
	svc.Spec.Mode.Replicated.Replicas = &replicas
	// QueryRegistry stays false: never ask a registry about the image.
	if _, err := c.api.ServiceUpdate(ctx, svc.ID, client.ServiceUpdateOptions{Version: svc.Version, Spec: svc.Spec}); err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("scaling service %q to %d: %w", name, replicas, ErrServiceNotFound)
		}
		return fmt.Errorf("scaling service %q to %d: %w", name, replicas, err)
	}
	return nil
}

// WatchService streams the events of the service name (Docker events of type service,
// filtered by the daemon and again here by exact name, since the daemon's filter also
// matches prefixes). The events channel is closed when the stream ends; errs then
// yields why, exactly once: ctx.Err() after ctx is done, or the stream's error (io.EOF
// wrapped when the daemon closed it). Nothing is replayed: an event that happens while
// no stream is open is missed, so callers re-read the state after (re)connecting.
// The call returns once the daemon has answered the request (or failed to).
func (c *Client) WatchService(ctx context.Context, name string) (<-chan ServiceEvent, <-chan error) {
	out := make(chan ServiceEvent)
	errc := make(chan error, 1)
	opts := client.EventsListOptions{Filters: make(client.Filters).
		Add("type", string(events.ServiceEventType)).
		Add("service", name)}
	res := c.api.Events(ctx, opts)
	msgs, errs := res.Messages, res.Err
	go func() {
		defer close(out)
		for {
			select {
			case m := <-msgs:
				if m.Type != events.ServiceEventType {
					continue
				}
				if n, ok := m.Actor.Attributes["name"]; ok && n != name {
					continue
				}
				ev := ServiceEvent{ID: m.Actor.ID, Name: m.Actor.Attributes["name"], Action: string(m.Action)}
				select {
				case out <- ev:
				case <-ctx.Done():
					errc <- ctx.Err()
					return
				}
			case err := <-errs:
				if ctx.Err() != nil {
					errc <- ctx.Err()
				} else {
					errc <- fmt.Errorf("events of service %q: %w", name, err)
				}
				return
			}
		}
	}()
	return out, errc
}
