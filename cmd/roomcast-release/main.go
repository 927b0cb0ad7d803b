// Command roomcast-release runs roomcast's blue/green releases on Docker Swarm: the
// justfile's deploy, promote, rollback, status, scale and unlock recipes. The protocol
// is pkg/fleet/bluegreen; every Docker operation goes through the Engine API
// (pkg/fleet/swarm), except `docker stack deploy`, which has no API call and is run as
// the docker CLI. Run it from the repository root: the stack files are stack/*.yml.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roomcast/pkg/cli"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/swarm"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const name = "roomcast-release"

func main() {
	// The first INT or TERM stops the release, which then puts back what it left
	// unfinished. Later ones are ignored: ending the process half-way through that
	// would leave the very mess it is undoing (the clean-up is bounded; kill -9 stays).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "%s: %v: stopping (further signals are ignored while it cleans up)\n", name, s)
		cancel()
		for range sigs {
		}
	}()
	cli.Main(ctx, name, run)
}

// config is the environment the recipes (and stack/swarm before them) read.
type config struct {
	Tag               string        `env:"TAG" envDefault:"latest" help:"app image tag of a first deploy (later deploys keep the live one)"`
	EdgeTag           string        `env:"EDGE_TAG" help:"tag of the edge (nginx) and autoscaler images a deploy sets; empty keeps the live one (TAG on a first deploy)"`
	Registry          string        `env:"REGISTRY" help:"registry host:port the nodes pull from (just build pushes there); empty: images are local to the engine (one node)"`
	AppImage          string        `env:"ROOMCAST_IMAGE" defaultHelp:"roomcast/roomcast, REGISTRY/roomcast/roomcast with a registry" help:"app image name, without tag"`
	EdgeImage         string        `env:"EDGE_IMAGE" defaultHelp:"roomcast/edge, REGISTRY/roomcast/edge with a registry" help:"edge (nginx) image name, without tag"`
	HTTPPort          int           `env:"HTTP_PORT" envDefault:"80" help:"nginx's published port"`
	EdgeURL           string        `env:"EDGE_URL" defaultHelp:"http://127.0.0.1:HTTP_PORT" help:"where the release asks nginx for its color"`
	Replicas          uint64        `env:"REPLICAS" envDefault:"2" help:"replicas of a first deploy (later: the live count)"`
	HealthTimeout     int           `env:"HEALTH_TIMEOUT" envDefault:"120" help:"seconds to wait for healthy replicas"`
	FlipTimeout       int           `env:"FLIP_TIMEOUT" envDefault:"30" help:"seconds to wait for nginx to answer with the new color"`
	DrainTimeout      int           `env:"DRAIN_TIMEOUT" envDefault:"120" help:"seconds to wait for the old color to drain"`
	SmokeTimeout      time.Duration `env:"SMOKE_TIMEOUT" envDefault:"60s" help:"roomcast-smoke's -timeout"`
	JWTSecretFile     string        `env:"JWT_SECRET_FILE" envDefault:".secrets/jwt-secret" help:"the app's HS256 key (the default is made on first use); the Swarm secret is named after its content"`
	JWTAudience       string        `env:"JWT_AUDIENCE" envDefault:"roomcast" help:"the aud claim the app's replicas require (ROOMCAST_JWT_AUDIENCE); just token and the smoke test write it"`
	JWTIssuer         string        `env:"JWT_ISSUER" envDefault:"roomcast-swarm" help:"the iss claim the app's replicas require (ROOMCAST_JWT_ISSUER); just token and the smoke test write it"`
	GrafanaPassword   string        `env:"GRAFANA_ADMIN_PASSWORD_FILE" envDefault:".secrets/grafana-admin-password" help:"Grafana's admin password (the default is made on first use); the Swarm secret is named after its content"`
	GrafanaUser       string        `env:"GRAFANA_ADMIN_USER" envDefault:"admin" help:"login of Grafana's admin"`
	NATSAppPassword   string        `env:"NATS_APP_PASSWORD_FILE" envDefault:".secrets/nats-app-password" help:"the app's NATS password (the default is made on first use); Swarm secrets named after its content, for the app and for NATS"`
	NATSRoutePassword string        `env:"NATS_ROUTE_PASSWORD_FILE" envDefault:".secrets/nats-route-password" help:"the NATS cluster's route password (the default is made on first use); a Swarm secret named after its content"`
	AlertWebhookURL   string        `env:"ALERTMANAGER_WEBHOOK_URL_FILE" help:"a file holding the URL Alertmanager posts every alert to (its webhook receiver); unset: alerts reach no one. Alertmanager's rendered configuration is a Swarm secret named after its content"`
	TLSCertFile       string        `env:"TLS_CERT_FILE" help:"nginx's certificate chain (PEM): with TLS_KEY_FILE, the edge serves HTTPS on HTTPS_PORT (443) and redirects HTTP_PORT to it (stack/edge-tls.yml); unset: HTTP only. A Swarm secret named after its content"`
	TLSKeyFile        string        `env:"TLS_KEY_FILE" help:"the certificate's private key (PEM), set with TLS_CERT_FILE or not at all; a Swarm secret named after its content, never logged"`
	NATSCluster       string        `env:"NATS_CLUSTER" defaultHelp:"what is deployed" help:"true: NATS as a JetStream cluster of three members, one per node labelled by just label-nodes (stack/nats-cluster.yml); false: one node"`
	HistoryReplicas   string        `env:"HISTORY_REPLICAS" defaultHelp:"3 with a cluster, else 1" help:"replicas of the history stream"`
	DockerHost        string        `env:"DOCKER_HOST" envDefault:"unix:///var/run/docker.sock" help:"the Docker engine (a Swarm manager)"`
	LockStaleAfter    time.Duration `env:"RELEASE_LOCK_STALE_AFTER" envDefault:"30m" help:"age from which a release lock may be broken (just unlock)"`
	Log               cli.Log
}

// Logging is the log section, for cli.Load.
func (c config) Logging() cli.Log { return c.Log }

// checkConfig checks what the types alone do not, and fills in the defaults that
// depend on other variables (the image names on REGISTRY, EdgeURL on HTTP_PORT).
func checkConfig(c *config, bad cli.Bad) error {
	for _, v := range []struct {
		name string
		ok   bool
	}{
		{"HTTP_PORT", c.HTTPPort > 0 && c.HTTPPort < 65536},
		{"REPLICAS", c.Replicas >= 1},
		{"HEALTH_TIMEOUT", c.HealthTimeout > 0},
		{"FLIP_TIMEOUT", c.FlipTimeout > 0},
		{"DRAIN_TIMEOUT", c.DrainTimeout > 0},
		{"SMOKE_TIMEOUT", c.SmokeTimeout > 0},
		{"RELEASE_LOCK_STALE_AFTER", c.LockStaleAfter > 0},
	} {
		if !v.ok {
			return bad(v.name, "want a number above 0")
		}
	}
	// Empty is the default (as in stack/app.yml), never a check turned off; surrounding
	// white space is a value no one means, and tokens written without it would be refused.
	for _, v := range []struct{ name, value string }{{"JWT_AUDIENCE", c.JWTAudience}, {"JWT_ISSUER", c.JWTIssuer}} {
		if strings.TrimSpace(v.value) != v.value {
			return bad(v.name, "want a value without surrounding white space")
		}
	}
	if c.NATSCluster != "" && c.NATSCluster != "true" && c.NATSCluster != "false" {
		return bad("NATS_CLUSTER", "want true or false")
	}
	// Basic authentication ends the user name at the first colon.
	if strings.TrimSpace(c.GrafanaUser) != c.GrafanaUser || strings.Contains(c.GrafanaUser, ":") {
		return bad("GRAFANA_ADMIN_USER", "want a login without a colon or surrounding white space")
	}
	if c.TLSCertFile != "" && c.TLSKeyFile == "" {
		return bad("TLS_KEY_FILE", "want the key's file, set with TLS_CERT_FILE (both or neither)")
	}
	if c.TLSCertFile == "" && c.TLSKeyFile != "" {
		return bad("TLS_CERT_FILE", "want the certificate's file, set with TLS_KEY_FILE (both or neither)")
	}
	if strings.Contains(c.Registry, "/") || strings.TrimSpace(c.Registry) != c.Registry {
		return bad("REGISTRY", "want host:port of a registry, without a path")
	}
	prefix := ""
	if c.Registry != "" {
		prefix = c.Registry + "/"
	}
	if c.AppImage == "" {
		c.AppImage = prefix + "roomcast/roomcast"
	}
	if c.EdgeImage == "" {
		c.EdgeImage = prefix + "roomcast/edge"
	}
	if c.EdgeURL == "" {
		c.EdgeURL = "http://127.0.0.1:" + strconv.Itoa(c.HTTPPort)
	}
	return nil
}

func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	// Before any subcommand: each answers -version, none runs.
	if err := cli.AskedVersion(name, version, args, stdout); err != nil {
		return err
	}
	fs := cli.NewFlagSet(name, stdout, stderr, usage)
	breakStale := fs.Bool("break-stale-lock", false, "")
	force := fs.Bool("force", false, "")
	dryRun := fs.Bool("dry-run", false, "")
	if err := cli.Parse(fs, args, version, stdout, false); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("missing command: want deploy, promote TAG, rollback, status, scale N, unlock or prune")
	}
	op := fs.Arg(0)
	// Flags may follow the command too: `unlock -force`.
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return cli.UsageError{Err: err}
	}
	rest := fs.Args()
	want := map[string]int{"deploy": 0, "promote": 1, "rollback": 0, "status": 0, "scale": 1, "unlock": 0, "prune": 0}
	n, known := want[op]
	switch {
	case !known:
		return cli.Usagef("unknown command %q: want deploy, promote TAG, rollback, status, scale N, unlock or prune", op)
	case len(rest) != n && n == 1:
		return cli.Usagef("usage: %s %s %s", name, op, map[string]string{"promote": "TAG", "scale": "N"}[op])
	case len(rest) != n:
		return cli.Usagef("%s takes no argument, got %q", op, rest[0])
	case *force && op != "unlock":
		return cli.Usagef("-force is for unlock only")
	case *dryRun && op != "prune":
		return cli.Usagef("-dry-run is for prune only")
	}
	var replicas uint64
	if op == "scale" {
		v, err := strconv.ParseUint(rest[0], 10, 64)
		if err != nil || v < 1 {
			return cli.Usagef("scale: N must be a whole number of at least 1, got %q", rest[0])
		}
		replicas = v
	}

	cfg, err := cli.Load(environ, checkConfig)
	if err != nil {
		return err
	}
	log := cfg.Log.New(stderr)
	log.Debug("configuration", "config", envconfig.LogValue(cfg))

	docker, err := swarm.New(cfg.DockerHost)
	if err != nil {
		return err
	}
	defer docker.Close()
	rel := &bluegreen.Release{
		Config:         releaseConfig(cfg),
		Docker:         docker,
		Stacks:         swarm.StackCLI{},
		Out:            stderr,
		Holder:         holder(),
		BreakStaleLock: *breakStale,
	}
	switch op {
	case "deploy":
		if rel.Config.EdgeEnv, err = configIDs(); err != nil {
			return err
		}
		err = rel.Deploy(ctx)
	case "promote":
		err = rel.Promote(ctx, rest[0])
	case "rollback":
		err = rel.Rollback(ctx)
	case "status":
		err = rel.Status(ctx, stdout)
	case "scale":
		err = rel.Scale(ctx, replicas)
	case "unlock":
		err = rel.Unlock(ctx, *force)
	case "prune":
		err = rel.Prune(ctx, *dryRun)
	}
	return err
}

func releaseConfig(cfg config) bluegreen.Config {
	return bluegreen.Config{
		AppImage: cfg.AppImage, EdgeImage: cfg.EdgeImage, Tag: cfg.Tag, EdgeTag: cfg.EdgeTag, Replicas: cfg.Replicas,
		HealthTimeout: time.Duration(cfg.HealthTimeout) * time.Second,
		FlipTimeout:   time.Duration(cfg.FlipTimeout) * time.Second,
		DrainTimeout:  time.Duration(cfg.DrainTimeout) * time.Second,
		SmokeTimeout:  cfg.SmokeTimeout, EdgeURL: cfg.EdgeURL,
		JWTSecretFile: cfg.JWTSecretFile, DefaultJWTSecretFile: ".secrets/jwt-secret",
		JWTAudience: cfg.JWTAudience, JWTIssuer: cfg.JWTIssuer,
		GrafanaAdminUser: cfg.GrafanaUser, GrafanaAdminPasswordFile: cfg.GrafanaPassword, DefaultGrafanaAdminPasswordFile: ".secrets/grafana-admin-password",
		NATSAppPasswordFile: cfg.NATSAppPassword, DefaultNATSAppPasswordFile: ".secrets/nats-app-password",
		NATSRoutePasswordFile: cfg.NATSRoutePassword, DefaultNATSRoutePasswordFile: ".secrets/nats-route-password",
		NATSCluster: cfg.NATSCluster, HistoryReplicas: cfg.HistoryReplicas,
		TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
		AlertmanagerTemplate: "monitoring/alertmanager/alertmanager.yml.tmpl", AlertmanagerWebhookURLFile: cfg.AlertWebhookURL,
		AppStack: "stack/app.yml", EdgeStack: "stack/edge.yml", NATSClusterStack: "stack/nats-cluster.yml", EdgeTLSStack: "stack/edge-tls.yml",
		Network: "roomcast", LockStaleAfter: cfg.LockStaleAfter,
	}
}

// holder names this process in the release lock.
func holder() string {
	who := os.Getenv("USER")
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s pid %d", who, host, os.Getpid())
}

// configIDs names the versions of the files the edge stack turns into Swarm configs,
// which cannot change in place: a changed file deploys as a new config.
func configIDs() (map[string]string, error) {
	var monitoring []string
	for _, pattern := range []string{"monitoring/prometheus/prometheus.yml", "monitoring/prometheus/rules.yml",
		"monitoring/grafana/provisioning/*/*.yml", "monitoring/grafana/dashboards/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil || len(m) == 0 {
			return nil, fmt.Errorf("no %s: run roomcast-release from the repository root", pattern)
		}
		monitoring = append(monitoring, m...)
	}
	mon, err := hashFiles(monitoring...)
	if err != nil {
		return nil, err
	}
	nats, err := hashFiles("stack/nats.conf", "stack/nats-auth.conf", "stack/nats-cluster.conf")
	if err != nil {
		return nil, err
	}
	return map[string]string{"MONITORING_CONFIG_ID": mon, "NATS_CONFIG_ID": nats}, nil
}

// hashFiles is the start of the SHA-256 of the files' contents, one after the other.
func hashFiles(files ...string) (string, error) {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("hashing the stack's config files: %w", err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: %[1]s [-break-stale-lock] deploy | promote TAG | rollback | status | scale N
       %[1]s unlock [-force]
       %[1]s prune [-dry-run]

%[1]s runs roomcast's blue/green releases on Docker Swarm (the just recipes of
the same names). Run it from the repository root.

  deploy      the edge stack (nginx, NATS, monitoring, autoscaler) and the active color
              (blue at first); never undoes a promote
  promote TAG release TAG to the idle color: deploy, wait healthy, smoke test, flip
              nginx by one label update, drain the old color to 0 (kept for rollback)
  rollback    promote the previous color again
  status      the active color, the release lock, each color's tag and replicas
  scale N     set the replica count of the active color
  unlock      break a release lock older than RELEASE_LOCK_STALE_AFTER (-force: any
              lock) and clear roomcast.promoting, after a release was killed
  prune       remove the secrets (JWT keys, passwords, certificates, Alertmanager
              configurations) and edge configs that releases made and no service
              mounts any more (-dry-run: list them); the files make them again

deploy, promote, rollback, scale and prune take the release lock (label roomcast.lock on
edge_nginx: who and since when); a second one is refused with the holder's name and
age. -break-stale-lock lets them break a lock older than RELEASE_LOCK_STALE_AFTER.
An interrupt (INT or TERM) before the flip puts the idle color back as it was; after
the flip it stops without draining and says what is left. Further signals are ignored
while it cleans up.

Environment (stack/*.yml read every other variable, e.g. HTTP_PUBLISH_MODE,
NATS_IMAGE, DOCKER_SOCKET, AUTOSCALER_*, which pass through to docker stack deploy):
`, name)
	envconfig.Usage(w, &config{})
	fmt.Fprintln(w, `
Exit status: 0 done, 1 failed (the reason is the last line), 2 bad usage or environment.`)
}
