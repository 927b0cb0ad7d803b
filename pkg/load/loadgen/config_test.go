package loadgen_test

import (
	"errors"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
)

func TestDefaultConfigsAreValid(t *testing.T) {
	for _, s := range loadgen.Scenarios() {
		if err := loadgen.DefaultConfig(s).Validate(); err != nil {
			t.Errorf("DefaultConfig(%s): %v", s, err)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name     string
		scenario loadgen.Scenario
		mod      func(*loadgen.Config)
		setting  string
	}{
		{"unknown scenario", "burst", nil, "scenario"},
		{"no URL", loadgen.FanoutSmall, func(c *loadgen.Config) { c.URLs = nil }, "url"},
		{"http URL", loadgen.FanoutSmall, func(c *loadgen.Config) { c.URLs = []string{"http://127.0.0.1:8080"} }, "url"},
		{"URL with room path", loadgen.FanoutSmall, func(c *loadgen.Config) { c.URLs = []string{"ws://h:1/ws/chat/x/"} }, "url"},
		{"URL without host", loadgen.FanoutSmall, func(c *loadgen.Config) { c.URLs = []string{"ws:///x"} }, "url"},
		{"zero rooms", loadgen.FanoutSmall, func(c *loadgen.Config) { c.Rooms = 0 }, "rooms"},
		{"zero members", loadgen.FanoutLarge, func(c *loadgen.Config) { c.Members = 0 }, "members"},
		{"too many clients", loadgen.FanoutLarge, func(c *loadgen.Config) { c.Rooms, c.Members = 1<<20, 2 }, "rooms"},
		{"zero rate", loadgen.FanoutSmall, func(c *loadgen.Config) { c.Rate = 0 }, "rate"},
		{"negative duration", loadgen.FanoutSmall, func(c *loadgen.Config) { c.Duration = -time.Second }, "duration"},
		{"zero conns", loadgen.Idle, func(c *loadgen.Config) { c.Conns = 0 }, "conns"},
		{"bad pid", loadgen.Idle, func(c *loadgen.Config) { c.ServerPIDs = []int{0} }, "server-pid"},
		{"zero ramp step", loadgen.Ramp, func(c *loadgen.Config) { c.RampStep = 0 }, "ramp-step"},
		{"ramp factor 1", loadgen.Ramp, func(c *loadgen.Config) { c.RampFactor = 1 }, "ramp-factor"},
		{"max rate under start", loadgen.Ramp, func(c *loadgen.Config) { c.Rate, c.RampMaxRate = 10, 5 }, "ramp-max-rate"},
		{"negative grace", loadgen.FanoutSmall, func(c *loadgen.Config) { c.Grace = -1 }, "grace"},
		{"zero storm clients", loadgen.ReconnectStorm, func(c *loadgen.Config) { c.Conns = 0 }, "conns"},
		{"zero settle", loadgen.ReconnectStorm, func(c *loadgen.Config) { c.Settle = 0 }, "settle"},
		{"settle as long as the run", loadgen.ReconnectStorm, func(c *loadgen.Config) { c.Settle = c.Duration }, "settle"},
		{"storm of too many clients", loadgen.ReconnectStorm, func(c *loadgen.Config) { c.Conns = 1 << 20 }, "rooms"},
		{"storm without reconnect backoff", loadgen.ReconnectStorm, func(c *loadgen.Config) { c.ReconnectBase = 0 }, "reconnect-base"},
		{"token with a newline", loadgen.FanoutSmall, func(c *loadgen.Config) { c.Token = "a\nb" }, "token"},
		{"unknown protocol", loadgen.FanoutSmall, func(c *loadgen.Config) { c.Protocol = "mqtt" }, "protocol"},
		{"centrifugo idle", loadgen.Idle, func(c *loadgen.Config) { c.Protocol = loadgen.ProtocolCentrifugo }, "protocol"},
		{"centrifugo release", loadgen.Release, func(c *loadgen.Config) { c.Protocol = loadgen.ProtocolCentrifugo }, "protocol"},
		{"centrifugo batched", loadgen.FanoutLarge, func(c *loadgen.Config) { c.Protocol, c.Batch = loadgen.ProtocolCentrifugo, true }, "batch"},
		{"centrifugo with a token", loadgen.Ramp, func(c *loadgen.Config) { c.Protocol, c.Token = loadgen.ProtocolCentrifugo, "t" }, "token"},
		{"URL with Centrifugo's path", loadgen.FanoutSmall, func(c *loadgen.Config) { c.URLs = []string{"ws://h:1/connection/websocket"} }, "url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := loadgen.DefaultConfig(tt.scenario)
			if tt.mod != nil {
				tt.mod(&cfg)
			}
			err := cfg.Validate()
			var ce *loadgen.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate = %v, want a *ConfigError", err)
			}
			if ce.Setting != tt.setting {
				t.Fatalf("Validate = %v: setting %q, want %q", err, ce.Setting, tt.setting)
			}
		})
	}
}
