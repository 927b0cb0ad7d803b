package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/swarm"
)

// config is roomcast-edge's environment. A set but empty variable means its default.
type config struct {
	Controller        string        `env:"ROOMCAST_EDGE_CONTROLLER" help:"edge controller (http://host:port) serving the labels; unset: DOCKER_HOST is read instead"`
	DockerHost        string        `env:"DOCKER_HOST" help:"Docker Engine API (unix:// or tcp://), read only when ROOMCAST_EDGE_CONTROLLER is unset; only the nginx service is read"`
	Service           string        `env:"ROOMCAST_EDGE_SERVICE" envDefault:"edge_nginx" help:"the nginx service whose label roomcast.active names the active color"`
	DefaultColor      string        `env:"ROOMCAST_EDGE_DEFAULT_COLOR" envDefault:"blue" help:"color used only when the label is absent at start (blue or green)"`
	AppService        string        `env:"ROOMCAST_EDGE_APP_SERVICE" envDefault:"{color}_app" help:"app service name of a color; {color} is replaced"`
	AppPort           int           `env:"ROOMCAST_EDGE_APP_PORT" envDefault:"8080" help:"app port on every replica"`
	ListenPort        int           `env:"ROOMCAST_EDGE_LISTEN_PORT" envDefault:"80" help:"nginx listen port (all IPv4 interfaces)"`
	ListenIPv6        bool          `env:"ROOMCAST_EDGE_LISTEN_IPV6" envDefault:"false" help:"also listen on [::]"`
	StatusPort        int           `env:"ROOMCAST_EDGE_STATUS_PORT" envDefault:"8081" help:"nginx's status listener (/.roomcast/edge, stub_status at /.roomcast/nginx_status); never publish it"`
	LimitConn         int           `env:"ROOMCAST_EDGE_LIMIT_CONN" envDefault:"0" help:"open connections per client address on the listen port, beyond which nginx answers 429 (0: no limit)"`
	Resolver          string        `env:"ROOMCAST_EDGE_RESOLVER" envDefault:"127.0.0.11" help:"DNS server (ip or ip:port) nginx and the resolve check ask for the app service"`
	ResolverValid     time.Duration `env:"ROOMCAST_EDGE_RESOLVER_VALID" envDefault:"5s" help:"how long nginx caches the app service's addresses"`
	ShutdownTimeout   time.Duration `env:"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT" envDefault:"40s" help:"nginx worker_shutdown_timeout, how long connections on an old config last after a reload; must outlast the app's drain delay + drain timeout"`
	DrainDelay        time.Duration `env:"ROOMCAST_EDGE_DRAIN_DELAY" envDefault:"0s" help:"when told to stop, how long /edgez (the load balancer's health check) answers 503 while nginx still serves, before nginx stops accepting: longer than the balancer's failover (0: no balancer)"`
	StopTimeout       time.Duration `env:"ROOMCAST_EDGE_STOP_TIMEOUT" envDefault:"1s" help:"once nginx stopped accepting, how long open connections (WebSockets) are kept before nginx closes them and exits"`
	ConnectTimeout    time.Duration `env:"ROOMCAST_EDGE_CONNECT_TIMEOUT" envDefault:"2s" help:"proxy_connect_timeout before the next replica is tried"`
	WSIdleTimeout     time.Duration `env:"ROOMCAST_EDGE_WS_IDLE_TIMEOUT" envDefault:"60s" help:"how long a WebSocket may carry nothing from its replica before nginx closes it, so that clients of a replica gone without a close (its node lost power) reconnect; longer than the app's ping interval (ROOMCAST_PING_INTERVAL, 25s)"`
	NextUpstreamTries int           `env:"ROOMCAST_EDGE_NEXT_UPSTREAM_TRIES" envDefault:"3" help:"replicas tried per request on error, timeout, 502 or 503 (0: no limit)"`
	PollInterval      time.Duration `env:"ROOMCAST_EDGE_POLL_INTERVAL" envDefault:"5s" help:"label read besides Docker events (fallback when the event stream fails)"`
	StartTimeout      time.Duration `env:"ROOMCAST_EDGE_START_TIMEOUT" envDefault:"2m" help:"at start, how long to wait for the labelled color to resolve before exiting non-zero"`
	Template          string        `env:"ROOMCAST_EDGE_TEMPLATE" envDefault:"/etc/roomcast-edge/nginx.conf.tmpl" help:"nginx config template"`
	Config            string        `env:"ROOMCAST_EDGE_CONFIG" envDefault:"/run/roomcast-edge/nginx.conf" help:"rendered nginx config; its directory also holds nginx.pid and tmp/"`
	Nginx             string        `env:"ROOMCAST_EDGE_NGINX" envDefault:"nginx" help:"nginx binary (name on PATH or path)"`
	NginxUser         string        `env:"ROOMCAST_EDGE_NGINX_USER" help:"nginx user directive for the workers; empty: nginx's built-in default"`
	AccessLog         string        `env:"ROOMCAST_EDGE_ACCESS_LOG" envDefault:"/dev/stdout" help:"nginx access log (JSON lines): a path or off"`
	ErrorLog          string        `env:"ROOMCAST_EDGE_ERROR_LOG" envDefault:"stderr" help:"nginx error log: stderr or a path"`
	CountResponses    bool          `env:"ROOMCAST_EDGE_COUNT_RESPONSES" envDefault:"true" help:"count nginx's responses by status class (roomcast_edge_http_responses_total; nginx sends each status to a UDP port of 127.0.0.1)"`
	TLSCertFile       string        `env:"ROOMCAST_EDGE_TLS_CERT_FILE" help:"certificate chain (PEM) for HTTPS; with ROOMCAST_EDGE_TLS_KEY_FILE, the listen port redirects to https; unset: HTTP only"`
	TLSKeyFile        string        `env:"ROOMCAST_EDGE_TLS_KEY_FILE" help:"the certificate's private key (PEM); set with ROOMCAST_EDGE_TLS_CERT_FILE or not at all"`
	TLSListenPort     int           `env:"ROOMCAST_EDGE_TLS_LISTEN_PORT" envDefault:"8443" help:"nginx's HTTPS port (all IPv4 interfaces), with the TLS files only"`
	TLSPublicPort     int           `env:"ROOMCAST_EDGE_TLS_PUBLIC_PORT" envDefault:"443" help:"the HTTPS port clients reach, named by the listen port's redirect"`
	MetricsAddr       string        `env:"ROOMCAST_EDGE_METRICS_ADDR" envDefault:":9180" help:"address of roomcast-edge's own /metrics, or off"`
	Log               cli.Log
}

// userRe is a user name for nginx's user directive.
var userRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// pathRe is a path nginx reads unquoted.
var pathRe = regexp.MustCompile(`^/[A-Za-z0-9._/+@-]*$`)

// Logging is the log section, for cli.Setup.
func (c config) Logging() cli.Log { return c.Log }

func loadConfig(environ map[string]string) (config, error) {
	return cli.Load(environ, checkConfig)
}

// checkConfig checks what the types alone do not.
func checkConfig(cfg *config, bad cli.Bad) error {
	switch {
	case !cli.ValidServiceName(cfg.Service):
		return bad("ROOMCAST_EDGE_SERVICE", "want a service name of letters, digits, _ . -")
	case !bluegreen.ValidColor(cfg.DefaultColor):
		return bad("ROOMCAST_EDGE_DEFAULT_COLOR", "want blue or green")
	case !strings.Contains(cfg.AppService, bluegreen.ColorPlaceholder) ||
		!cli.ValidServiceName(bluegreen.ForColor(cfg.AppService, bluegreen.Blue)):
		return bad("ROOMCAST_EDGE_APP_SERVICE", "want a service name containing {color}, e.g. {color}_app")
	case !validPort(cfg.AppPort):
		return bad("ROOMCAST_EDGE_APP_PORT", "want a port from 1 to 65535")
	case !validPort(cfg.ListenPort):
		return bad("ROOMCAST_EDGE_LISTEN_PORT", "want a port from 1 to 65535")
	case !validPort(cfg.StatusPort):
		return bad("ROOMCAST_EDGE_STATUS_PORT", "want a port from 1 to 65535")
	case cfg.StatusPort == cfg.ListenPort:
		return bad("ROOMCAST_EDGE_STATUS_PORT", "want a port other than ROOMCAST_EDGE_LISTEN_PORT (the status is not public)")
	case cfg.LimitConn < 0:
		return bad("ROOMCAST_EDGE_LIMIT_CONN", "want an integer of 0 or more")
	case !validResolver(cfg.Resolver):
		return bad("ROOMCAST_EDGE_RESOLVER", "want an IP address or ip:port, e.g. 127.0.0.11")
	case cfg.ResolverValid < time.Second || cfg.ResolverValid%time.Second != 0:
		return bad("ROOMCAST_EDGE_RESOLVER_VALID", "want whole seconds, at least 1s")
	case cfg.ShutdownTimeout < time.Second:
		return bad("ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT", "want a duration of at least 1s")
	case cfg.DrainDelay < 0:
		return bad("ROOMCAST_EDGE_DRAIN_DELAY", "want a duration of 0 or more")
	case cfg.StopTimeout < 10*time.Millisecond:
		return bad("ROOMCAST_EDGE_STOP_TIMEOUT", "want a duration of at least 10ms")
	case cfg.ConnectTimeout < 10*time.Millisecond:
		return bad("ROOMCAST_EDGE_CONNECT_TIMEOUT", "want a duration of at least 10ms")
	case cfg.WSIdleTimeout < time.Second:
		return bad("ROOMCAST_EDGE_WS_IDLE_TIMEOUT", "want a duration of at least 1s, longer than the app's ping interval")
	case cfg.NextUpstreamTries < 0:
		return bad("ROOMCAST_EDGE_NEXT_UPSTREAM_TRIES", "want an integer of 0 or more")
	case cfg.PollInterval < 100*time.Millisecond:
		return bad("ROOMCAST_EDGE_POLL_INTERVAL", "want a duration of at least 100ms")
	case cfg.StartTimeout < 100*time.Millisecond:
		return bad("ROOMCAST_EDGE_START_TIMEOUT", "want a duration of at least 100ms")
	case cfg.Template == "":
		return bad("ROOMCAST_EDGE_TEMPLATE", "want a file path")
	case !pathRe.MatchString(cfg.Config) || strings.HasSuffix(cfg.Config, "/"):
		return bad("ROOMCAST_EDGE_CONFIG", "want an absolute file path of letters, digits and . _ - / + @")
	case cfg.Nginx == "":
		return bad("ROOMCAST_EDGE_NGINX", "want the nginx binary's name or path")
	case cfg.NginxUser != "" && !userRe.MatchString(cfg.NginxUser):
		return bad("ROOMCAST_EDGE_NGINX_USER", "want a user name, or empty")
	case cfg.AccessLog != "off" && !pathRe.MatchString(cfg.AccessLog):
		return bad("ROOMCAST_EDGE_ACCESS_LOG", "want an absolute path or off")
	case cfg.ErrorLog != "stderr" && !pathRe.MatchString(cfg.ErrorLog):
		return bad("ROOMCAST_EDGE_ERROR_LOG", "want stderr or an absolute path")
	case cfg.MetricsAddr != "off" && !cli.ValidListenAddr(cfg.MetricsAddr):
		return bad("ROOMCAST_EDGE_METRICS_ADDR", "want host:port, :port or off")
	case cfg.TLSCertFile != "" && cfg.TLSKeyFile == "":
		return bad("ROOMCAST_EDGE_TLS_KEY_FILE", "want the key's file, set with ROOMCAST_EDGE_TLS_CERT_FILE (both or neither)")
	case cfg.TLSCertFile == "" && cfg.TLSKeyFile != "":
		return bad("ROOMCAST_EDGE_TLS_CERT_FILE", "want the certificate's file, set with ROOMCAST_EDGE_TLS_KEY_FILE (both or neither)")
	case !validPort(cfg.TLSListenPort) || cfg.TLSListenPort == cfg.ListenPort || cfg.TLSListenPort == cfg.StatusPort:
		return bad("ROOMCAST_EDGE_TLS_LISTEN_PORT", "want a port from 1 to 65535 other than the listen and status ports")
	case !validPort(cfg.TLSPublicPort):
		return bad("ROOMCAST_EDGE_TLS_PUBLIC_PORT", "want a port from 1 to 65535")
	case cfg.TLSCertFile != "":
		if variable, err := checkTLSFiles(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return bad(variable, err.Error())
		}
	// Where the labels come from, last: a bad value elsewhere is named first.
	case cfg.Controller != "" && cfg.DockerHost != "":
		return bad("ROOMCAST_EDGE_CONTROLLER", "want it or DOCKER_HOST set, not both")
	case cfg.Controller == "" && cfg.DockerHost == "":
		return bad("ROOMCAST_EDGE_CONTROLLER", "want the edge controller's http://host:port (or set DOCKER_HOST to read Docker directly)")
	case cfg.Controller != "" && !validController(cfg.Controller):
		return bad("ROOMCAST_EDGE_CONTROLLER", "want http://host:port")
	case cfg.DockerHost != "" && !cli.ValidDockerHost(cfg.DockerHost):
		return bad("DOCKER_HOST", "want unix:///path/to/docker.sock or tcp://host:port")
	}
	return nil
}

// controllerWait is how long each long poll of the controller asks it to wait.
const controllerWait = 25 * time.Second

func validController(s string) bool {
	_, err := edge.NewControllerClient(s, controllerWait)
	return err == nil
}

// services is where the labels are read: the controller, or Docker when none is set.
func (c config) services() (edge.Services, func(), error) {
	if c.Controller != "" {
		cc, err := edge.NewControllerClient(c.Controller, controllerWait)
		if err != nil {
			return nil, nil, err
		}
		return cc, cc.Close, nil
	}
	docker, err := swarm.New(c.DockerHost)
	if err != nil {
		return nil, nil, err
	}
	return docker, func() { _ = docker.Close() }, nil
}

// checkTLSFiles reads the certificate and key as nginx will, so that a file that is
// missing, unreadable or not a matching pair stops the edge at start with the variable
// named, not at nginx -t with nginx's words. It returns the variable at fault.
func checkTLSFiles(certFile, keyFile string) (string, error) {
	const certVar, keyVar = "ROOMCAST_EDGE_TLS_CERT_FILE", "ROOMCAST_EDGE_TLS_KEY_FILE"
	if !pathRe.MatchString(certFile) {
		return certVar, errors.New("want an absolute file path of letters, digits and . _ - / + @")
	}
	if !pathRe.MatchString(keyFile) {
		return keyVar, errors.New("want an absolute file path of letters, digits and . _ - / + @")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return certVar, fmt.Errorf("want a readable certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return keyVar, fmt.Errorf("want a readable key file: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return certVar, errors.New("want a PEM certificate (chain)")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return certVar, fmt.Errorf("want a PEM certificate (chain): %w", err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return keyVar, fmt.Errorf("want the PEM private key of the certificate: %w", err)
	}
	return "", nil
}

func validPort(p int) bool { return p >= 1 && p <= 65535 }

func validResolver(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || net.ParseIP(host) == nil {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && validPort(p)
}

// edge is the edge's configuration.
func (c config) edge() edge.Config {
	return edge.Config{
		Service:        c.Service,
		DefaultColor:   c.DefaultColor,
		AppService:     c.AppService,
		PollInterval:   c.PollInterval,
		StartTimeout:   c.StartTimeout,
		DrainDelay:     c.DrainDelay,
		StopTimeout:    c.StopTimeout,
		ConfigPath:     c.Config,
		Params:         c.params(),
		CountResponses: c.CountResponses,
	}
}

// params are the template values that do not change with the color.
func (c config) params() edge.Params {
	dir := filepath.Dir(c.Config)
	resolver := c.Resolver
	if ip := net.ParseIP(resolver); ip != nil && ip.To4() == nil {
		resolver = "[" + resolver + "]" // nginx needs brackets around a bare IPv6 address
	}
	return edge.Params{
		BackendPort:           c.AppPort,
		ListenPort:            c.ListenPort,
		ListenIPv6:            c.ListenIPv6,
		StatusPort:            c.StatusPort,
		LimitConn:             c.LimitConn,
		Resolver:              resolver,
		ResolverValid:         c.ResolverValid,
		WorkerShutdownTimeout: c.ShutdownTimeout,
		ConnectTimeout:        c.ConnectTimeout,
		WSIdleTimeout:         c.WSIdleTimeout,
		NextUpstreamTries:     c.NextUpstreamTries,
		PidPath:               filepath.Join(dir, "nginx.pid"),
		ErrorLog:              c.ErrorLog,
		AccessLog:             c.AccessLog,
		TempDir:               filepath.Join(dir, "tmp"),
		HealthDir:             filepath.Join(dir, "health"),
		User:                  c.NginxUser,
		TLSCertFile:           c.TLSCertFile,
		TLSKeyFile:            c.TLSKeyFile,
		TLSListenPort:         c.TLSListenPort,
		TLSPublicPort:         c.TLSPublicPort,
	}
}
