package swarm

import (
	"context"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"roomcast/pkg/fleet/bluegreen"
)

// Services lists every service of the Swarm.
func (c *Client) Services(ctx context.Context) ([]bluegreen.Service, error) {
	svcs, err := c.api.ServiceList(ctx, client.ServiceListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing services: %w", err)
	}
	out := make([]bluegreen.Service, 0, len(svcs.Items))
	for _, s := range svcs.Items {
		out = append(out, toService(s))
	}
	return out, nil
}

// Secrets lists the Swarm secrets whose names start with prefix.
func (c *Client) Secrets(ctx context.Context, prefix string) ([]bluegreen.SwarmObject, error) {
	res, err := c.api.SecretList(ctx, client.SecretListOptions{Filters: make(client.Filters).Add("name", prefix)})
	if err != nil {
		return nil, fmt.Errorf("listing secrets: %w", err)
	}
	return withPrefix(res.Items, prefix, func(s dswarm.Secret) (string, string) { return s.ID, s.Spec.Name }), nil
}

// Configs lists the Swarm configs whose names start with prefix.
func (c *Client) Configs(ctx context.Context, prefix string) ([]bluegreen.SwarmObject, error) {
	res, err := c.api.ConfigList(ctx, client.ConfigListOptions{Filters: make(client.Filters).Add("name", prefix)})
	if err != nil {
		return nil, fmt.Errorf("listing configs: %w", err)
	}
	return withPrefix(res.Items, prefix, func(c dswarm.Config) (string, string) { return c.ID, c.Spec.Name }), nil
}

// withPrefix keeps the items whose names start with prefix: the daemon's name filter
// matches anywhere in the name.
func withPrefix[T any](items []T, prefix string, idName func(T) (string, string)) []bluegreen.SwarmObject {
	var out []bluegreen.SwarmObject
	for _, it := range items {
		if id, name := idName(it); strings.HasPrefix(name, prefix) {
			out = append(out, bluegreen.SwarmObject{ID: id, Name: name})
		}
	}
	return out
}

// RemoveSecret removes the Swarm secret id; one already gone is not an error.
func (c *Client) RemoveSecret(ctx context.Context, id string) error {
	if _, err := c.api.SecretRemove(ctx, id, client.SecretRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing secret %s: %w", id, err)
	}
	return nil
}

// RemoveConfig removes the Swarm config id; one already gone is not an error.
func (c *Client) RemoveConfig(ctx context.Context, id string) error {
	if _, err := c.api.ConfigRemove(ctx, id, client.ConfigRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing config %s: %w", id, err)
	}
	return nil
}
