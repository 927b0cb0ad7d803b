package cli

import (
	"net"
	"net/url"
	"regexp"
)

// ValidDockerHost reports whether s is a Docker Engine address the commands accept:
// unix:///path/to/docker.sock, or tcp://host:port (http:// and https:// too).
func ValidDockerHost(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "unix":
		return u.Path != ""
	case "tcp", "http", "https":
		_, port, err := net.SplitHostPort(u.Host)
		return err == nil && port != ""
	}
	return false
}

// serviceNameRe is a Swarm service name, which nginx may also resolve.
var serviceNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// ValidServiceName reports whether s is a Swarm service name: letters, digits, _ . -,
// starting with a letter or digit.
func ValidServiceName(s string) bool { return serviceNameRe.MatchString(s) }
