// Package promquery is the autoscaler's adapter to the Prometheus HTTP API: it
// evaluates instant queries through client_golang's API client and turns their result
// into one number (autoscale.Sample), or autoscale.ErrNoData / autoscale.ErrBadResult.
// It owns one HTTP transport and nothing else; a Client is safe for concurrent use.
package promquery

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"roomcast/pkg/fleet/autoscale"
)

// Client queries one Prometheus server.
type Client struct {
	api       v1.API
	transport *http.Transport
}

// New returns a Client for the Prometheus server at address (e.g.
// http://prometheus:9090, a path prefix allowed). It does not contact the server.
func New(address string) (*Client, error) {
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        2,
		IdleConnTimeout:     90 * time.Second,
	}
	c, err := api.NewClient(api.Config{Address: address, RoundTripper: transport})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", address, err)
	}
	return &Client{api: v1.NewAPI(c), transport: transport}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Query evaluates expr at time at. The result must be a scalar or a vector of at most
// one series: an empty vector is autoscale.ErrNoData; several series, a matrix or a
// string are autoscale.ErrBadResult (the query must aggregate). When ctx has a
// deadline a second or more away, Prometheus is asked to give up by then too.
func (c *Client) Query(ctx context.Context, expr string, at time.Time) (autoscale.Sample, error) {
	var opts []v1.Option
	if dl, ok := ctx.Deadline(); ok {
		// Whole seconds: the client sends Duration.String(), and Prometheus refuses a
		// fractional "4.999s" (it takes "5s", "500ms" or a plain number). Under a second
		// the context's deadline alone bounds the query.
		if d := time.Until(dl).Truncate(time.Second); d >= time.Second {
			opts = append(opts, v1.WithTimeout(d))
		}
	}
	v, warnings, _, err := c.api.Query(ctx, expr, at, opts...)
	if err != nil {
		return autoscale.Sample{}, fmt.Errorf("querying Prometheus for %q: %w", expr, err)
	}
	s := autoscale.Sample{Warnings: warnings}
	switch v := v.(type) {
	case model.Vector:
		switch len(v) {
		case 0:
			return s, fmt.Errorf("query %q: %w", expr, autoscale.ErrNoData)
		case 1:
			s.Value, s.Time = float64(v[0].Value), v[0].Timestamp.Time()
		default:
			return s, fmt.Errorf("query %q returned %d series, want one (aggregate it, e.g. with sum): %w", expr, len(v), autoscale.ErrBadResult)
		}
	case *model.Scalar:
		s.Value, s.Time = float64(v.Value), v.Timestamp.Time()
	default:
		return s, fmt.Errorf("query %q returned a %s, want a scalar or one series: %w", expr, typeOf(v), autoscale.ErrBadResult)
	}
	return s, nil
}

func typeOf(v model.Value) string {
	if v == nil {
		return "nothing"
	}
	return v.Type().String()
}
