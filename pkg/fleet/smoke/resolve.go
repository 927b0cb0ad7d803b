package smoke

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// resolve looks every target up and returns the replicas (address:port, sorted, each
// once) with one result per target.
func (r *runner) resolve(ctx context.Context) ([]string, []result) {
	var found []netip.AddrPort
	var results []result
	for _, target := range r.cfg.Targets {
		addrs, err := r.lookup(ctx, target)
		if err != nil {
			results = append(results, fail("resolve", target, "%s", describe(ctx, err)))
			continue
		}
		names := make([]string, len(addrs))
		for i, a := range addrs {
			names[i] = a.String()
		}
		results = append(results, pass("resolve", target, "%s: %s", plural(len(addrs), "replica"), strings.Join(names, " ")))
		found = append(found, addrs...)
	}
	slices.SortFunc(found, netip.AddrPort.Compare)
	found = slices.Compact(found)
	replicas := make([]string, len(found))
	for i, a := range found {
		replicas[i] = a.String()
	}
	return replicas, results
}

// lookup resolves one host:port. A Swarm tasks.<service> name has one A record per
// task; when the overlay also has IPv6 each task has an AAAA record too, so AAAA records
// are used only for a name without A records, never to count a task twice. A temporary
// DNS failure is retried within the request timeout.
func (r *runner) lookup(ctx context.Context, target string) ([]netip.AddrPort, error) {
	host, portText, _ := net.SplitHostPort(target) // validated by Run
	port, _ := strconv.ParseUint(portText, 10, 16)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	for {
		ips, err := r.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) && (dnsErr.IsTemporary || dnsErr.IsTimeout) && ctx.Err() == nil {
				if sleep(ctx, r.cfg.RetryInterval) == nil {
					continue
				}
			}
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
		var v4, v6 []netip.AddrPort
		for _, ip := range ips {
			ip = ip.Unmap()
			if ip.Is4() {
				v4 = append(v4, netip.AddrPortFrom(ip, uint16(port)))
			} else {
				v6 = append(v6, netip.AddrPortFrom(ip, uint16(port)))
			}
		}
		out := v4
		if len(out) == 0 {
			out = v6
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("resolving %s: no address", host)
		}
		slices.SortFunc(out, netip.AddrPort.Compare)
		return slices.Compact(out), nil
	}
}

// sleep waits d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
