package main

import (
	"math"
	"net/url"
	"strings"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/fleet/autoscale"
	"roomcast/pkg/fleet/bluegreen"
)

// config is roomcast-autoscaler's environment. A set but empty variable means its
// default.
type config struct {
	PrometheusURL   string        `env:"PROMETHEUS_URL" envDefault:"http://prometheus:9090" help:"Prometheus HTTP API (http:// or https://, a path prefix allowed)"`
	DockerHost      string        `env:"DOCKER_HOST" envDefault:"unix:///var/run/docker.sock" help:"Docker Engine API (unix:// or tcp://); needs write access to scale"`
	EdgeService     string        `env:"AUTOSCALER_EDGE_SERVICE" envDefault:"edge_nginx" help:"service whose label roomcast.active names the active color (roomcast.promoting=true pauses)"`
	AppService      string        `env:"AUTOSCALER_APP_SERVICE" envDefault:"{color}_app" help:"app service of a color; {color} is replaced"`
	Query           string        `env:"AUTOSCALER_QUERY" envDefault:"sum(roomcast_connections_active{color=\"{color}\"})" help:"PromQL of the active color's load, one number; {color} is replaced"`
	AgeQuery        string        `env:"AUTOSCALER_AGE_QUERY" envDefault:"time() - max(timestamp(roomcast_connections_active{color=\"{color}\"}))" help:"PromQL of the age in seconds of the color's newest sample, or off; {color} is replaced"`
	MaxDataAge      time.Duration `env:"AUTOSCALER_MAX_DATA_AGE" envDefault:"2m" help:"older data is stale: the count is kept"`
	Target          float64       `env:"AUTOSCALER_TARGET" envDefault:"5000" help:"load per replica to aim for"`
	MinReplicas     int           `env:"AUTOSCALER_MIN_REPLICAS" envDefault:"2" help:"fewest replicas"`
	MaxReplicas     int           `env:"AUTOSCALER_MAX_REPLICAS" envDefault:"20" help:"most replicas"`
	Tolerance       float64       `env:"AUTOSCALER_TOLERANCE" envDefault:"0.1" help:"no change while the load per replica is within this fraction of the target"`
	Interval        time.Duration `env:"AUTOSCALER_INTERVAL" envDefault:"15s" help:"loop period"`
	ScaleDownWindow time.Duration `env:"AUTOSCALER_SCALE_DOWN_WINDOW" envDefault:"5m" help:"scale down no lower than the highest recommendation of this window (0s: none)"`
	Timeout         time.Duration `env:"AUTOSCALER_TIMEOUT" envDefault:"5s" help:"bound of each Docker call and Prometheus query"`
	DryRun          bool          `env:"AUTOSCALER_DRY_RUN" envDefault:"false" help:"decide and log, never scale"`
	Addr            string        `env:"AUTOSCALER_ADDR" envDefault:":8081" help:"listen address of its own /metrics and /healthz"`
	Log             cli.Log
}

// Logging is the log section, for cli.Setup.
func (c config) Logging() cli.Log { return c.Log }

func loadConfig(environ map[string]string) (config, error) {
	return cli.Load(environ, checkConfig)
}

// checkConfig checks what the types alone do not.
func checkConfig(cfg *config, bad cli.Bad) error {
	switch {
	case !validHTTPURL(cfg.PrometheusURL):
		return bad("PROMETHEUS_URL", "want http://host:port or https://host:port, e.g. http://prometheus:9090")
	case !cli.ValidDockerHost(cfg.DockerHost):
		return bad("DOCKER_HOST", "want unix:///path/to/docker.sock or tcp://host:port")
	case !cli.ValidServiceName(cfg.EdgeService):
		return bad("AUTOSCALER_EDGE_SERVICE", "want a service name of letters, digits, _ . -")
	case !strings.Contains(cfg.AppService, bluegreen.ColorPlaceholder) ||
		!cli.ValidServiceName(bluegreen.ForColor(cfg.AppService, bluegreen.Blue)):
		return bad("AUTOSCALER_APP_SERVICE", "want a service name containing {color}, e.g. {color}_app")
	case strings.TrimSpace(cfg.Query) == "":
		return bad("AUTOSCALER_QUERY", "want a PromQL expression")
	case cfg.MaxDataAge <= 0:
		return bad("AUTOSCALER_MAX_DATA_AGE", "want a duration above 0, e.g. 2m")
	case !(cfg.Target > 0) || math.IsInf(cfg.Target, 0):
		return bad("AUTOSCALER_TARGET", "want a number above 0")
	case cfg.MinReplicas < 1:
		return bad("AUTOSCALER_MIN_REPLICAS", "want an integer of at least 1")
	case cfg.MaxReplicas < cfg.MinReplicas:
		return bad("AUTOSCALER_MAX_REPLICAS", "want an integer of at least AUTOSCALER_MIN_REPLICAS")
	case !(cfg.Tolerance >= 0 && cfg.Tolerance < 1):
		return bad("AUTOSCALER_TOLERANCE", "want a fraction from 0 to below 1, e.g. 0.1")
	case cfg.Interval < 100*time.Millisecond:
		return bad("AUTOSCALER_INTERVAL", "want a duration of at least 100ms")
	case cfg.ScaleDownWindow < 0:
		return bad("AUTOSCALER_SCALE_DOWN_WINDOW", "want a duration of 0s or more")
	case cfg.Timeout < 10*time.Millisecond:
		return bad("AUTOSCALER_TIMEOUT", "want a duration of at least 10ms")
	case !cli.ValidListenAddr(cfg.Addr):
		return bad("AUTOSCALER_ADDR", "want host:port or :port")
	}
	return nil
}

func validHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
}

// autoscale is the loop's configuration.
func (c config) autoscale() autoscale.Config {
	age := c.AgeQuery
	if age == "off" {
		age = ""
	}
	return autoscale.Config{
		EdgeService: c.EdgeService,
		AppService:  c.AppService,
		Query:       c.Query,
		AgeQuery:    age,
		MaxDataAge:  c.MaxDataAge,
		Policy: autoscale.Policy{
			Target:          c.Target,
			Min:             c.MinReplicas,
			Max:             c.MaxReplicas,
			Tolerance:       c.Tolerance,
			ScaleDownWindow: c.ScaleDownWindow,
		},
		Interval: c.Interval,
		Timeout:  c.Timeout,
		DryRun:   c.DryRun,
	}
}

// staleAfter is how long /healthz accepts no finished tick: two periods and the
// longest a tick may take (six bounded calls).
func (c config) staleAfter() time.Duration { return 2*c.Interval + 6*c.Timeout }
