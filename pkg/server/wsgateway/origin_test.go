package wsgateway_test

import (
	"testing"

	"roomcast/pkg/server/wsgateway"
)

func TestOriginsAllow(t *testing.T) {
	tests := []struct {
		name    string
		list    wsgateway.Origins
		origin  string
		host    string
		allowed bool
	}{
		{"unset: the page's own host", nil, "http://chat.example", "chat.example", true},
		{"unset: own host and port", nil, "http://127.0.0.1:8080", "127.0.0.1:8080", true},
		{"unset: host case does not matter", nil, "https://Chat.Example", "chat.example", true},
		{"unset: https default port in Host", nil, "https://chat.example", "chat.example:443", true},
		{"unset: Host without the port a TLS proxy ended", nil, "https://chat.example", "chat.example", true},
		{"unset: http default port in Origin", nil, "http://chat.example:80", "chat.example", true},
		{"unset: IPv6", nil, "http://[::1]:8080", "[::1]:8080", true},
		{"unset: another site", nil, "https://evil.example", "chat.example", false},
		{"unset: a suffix of the host", nil, "https://evilchat.example", "chat.example", false},
		{"unset: another port", nil, "http://chat.example:8081", "chat.example:8080", false},
		{"unset: a non-default port against none", nil, "http://chat.example:8080", "chat.example", false},
		{"unset: null origin (sandboxed page, file://)", nil, "null", "chat.example", false},
		{"unset: origin with a path", nil, "http://chat.example/x", "chat.example", false},
		{"unset: origin with user info", nil, "http://chat.example@evil.example", "evil.example", false},
		{"unset: no Host", nil, "http://chat.example", "", false},
		{"star allows any", wsgateway.Origins{"*"}, "https://evil.example", "chat.example", true},
		{"star allows null", wsgateway.Origins{"*"}, "null", "chat.example", true},
		{"listed", wsgateway.Origins{"https://a.example", "https://chat.example"}, "https://chat.example", "api.example", true},
		{"not listed", wsgateway.Origins{"https://chat.example"}, "https://evil.example", "chat.example", false},
		{"a list replaces the own-host rule", wsgateway.Origins{"https://a.example"}, "https://chat.example", "chat.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.list.Allows(tt.origin, tt.host); got != tt.allowed {
				t.Fatalf("Origins(%q).Allows(%q, %q) = %v, want %v", tt.list, tt.origin, tt.host, got, tt.allowed)
			}
		})
	}
}
