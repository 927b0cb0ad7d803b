package wsgateway

import (
	"net"
	"net/url"
	"slices"
	"strings"
)

// AnyOrigin, as ROOMCAST_ALLOWED_ORIGINS, lets a page of any site open connections.
const AnyOrigin = "*"

// Allows reports whether a browser upgrade carrying origin (not empty) may go on:
// with no list, only a page of the host it connects to (the request's Host), so another
// site cannot open connections with its visitors' browsers; "*" allows every origin;
// otherwise the list holds the allowed values.
func (o Origins) Allows(origin, host string) bool {
	if len(o) == 0 {
		return sameHost(origin, host)
	}
	return slices.Contains(o, AnyOrigin) || slices.Contains(o, origin)
}

// sameHost reports whether origin (scheme://host[:port]) names host (a Host header),
// case-insensitively and with the default ports dropped on both sides: a proxy or load
// balancer that ends TLS passes Host without the port the browser saw.
func sameHost(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return false
	}
	o, ok := dropDefaultPort(u.Host, u.Scheme)
	if !ok {
		return false
	}
	h, ok := dropDefaultPort(host, "")
	return ok && h != "" && strings.EqualFold(o, h)
}

// dropDefaultPort returns hostport without a port that is the default of scheme (any
// scheme's, 80 or 443, when scheme is empty); false when hostport is not host[:port].
func dropDefaultPort(hostport, scheme string) (string, bool) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		if strings.Contains(strings.Trim(hostport, "[]"), ":") && !strings.HasPrefix(hostport, "[") {
			return "", false // a bare IPv6 address or a stray colon
		}
		return hostport, true
	}
	def := port == "80" || port == "443"
	switch scheme {
	case "http", "ws":
		def = port == "80"
	case "https", "wss":
		def = port == "443"
	}
	if def {
		if strings.Contains(host, ":") {
			return "[" + host + "]", true
		}
		return host, true
	}
	return hostport, true
}
