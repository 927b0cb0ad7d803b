package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// LookupFunc returns the IPv4 addresses of host.
type LookupFunc func(ctx context.Context, host string) ([]string, error)

// ProbeFunc asks the running nginx which config it serves.
type ProbeFunc func(ctx context.Context) (Status, error)

// Status is the body of GET /.roomcast/edge.
type Status struct {
	Color     string `json:"color"`
	AppliedAt string `json:"applied_at"`
}

// DNSLookup returns a LookupFunc asking the DNS server at server (address or
// address:port, port 53 by default) for A records, the way nginx's resolver will:
// the name is looked up as is, without the search domains of /etc/resolv.conf.
func DNSLookup(server string) LookupFunc {
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
	return func(ctx context.Context, host string) ([]string, error) {
		if ip := net.ParseIP(host); ip != nil {
			return []string{ip.String()}, nil
		}
		ips, err := r.LookupIP(ctx, "ip4", strings.TrimSuffix(host, ".")+".")
		if err != nil {
			return nil, err
		}
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.String()
		}
		return out, nil
	}
}

// HTTPProbe returns a ProbeFunc asking nginx on 127.0.0.1:port for /.roomcast/edge.
func HTTPProbe(port int) ProbeFunc {
	url := fmt.Sprintf("http://127.0.0.1:%d/.roomcast/edge", port)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context) (Status, error) {
		var st Status
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return st, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return st, fmt.Errorf("probing %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("probing %s: status %d", url, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return st, fmt.Errorf("probing %s: %w", url, err)
		}
		return st, nil
	}
}
