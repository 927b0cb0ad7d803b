package main

import (
	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/server/replica"
)

// config is the server's environment: the replica's sections, then the log's. A set but
// empty variable means its default.
type config struct {
	Server replica.Config
	Log    cli.Log
}

// loadConfig parses environ and checks it once; the result is ready for replica.New.
func loadConfig(environ map[string]string) (config, error) {
	cfg, err := envconfig.Parse[config](environ)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Server.Load(environ); err != nil {
		return cfg, err
	}
	return cfg, cfg.Log.Validate(environ)
}
