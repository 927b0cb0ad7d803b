package cli_test

import (
	"testing"

	"roomcast/pkg/cli"
)

func TestValidDockerHostAndServiceName(t *testing.T) {
	for host, want := range map[string]bool{
		"unix:///var/run/docker.sock": true, "tcp://10.0.0.1:2375": true, "https://docker:2376": true,
		"/var/run/docker.sock": false, "tcp://nohost": false, "unix://": false, "ftp://h:21": false,
	} {
		if got := cli.ValidDockerHost(host); got != want {
			t.Errorf("ValidDockerHost(%q) = %v, want %v", host, got, want)
		}
	}
	for name, want := range map[string]bool{"edge_nginx": true, "blue_app.v2": true, "edge nginx": false, "_edge": false, "": false} {
		if got := cli.ValidServiceName(name); got != want {
			t.Errorf("ValidServiceName(%q) = %v, want %v", name, got, want)
		}
	}
}
