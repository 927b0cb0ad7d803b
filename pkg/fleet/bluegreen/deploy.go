package bluegreen

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"roomcast/pkg/auth"
	"strings"
)

// Deploy deploys the edge stack and the active color (blue at first). It never undoes
// a release: it runs under the lock, and the active color keeps its live image and
// replica count, the edge its labels (and its image unless EdgeTag says otherwise).
func (r *Release) Deploy(ctx context.Context) error {
	var mine string
	edge, err := r.Docker.Service(ctx, EdgeService)
	exists := err == nil
	switch {
	case exists:
		if mine, edge, err = r.lock(ctx, "deploy", nil); err != nil {
			return err
		}
		defer r.unlockEdge(ctx, mine)
	case errors.Is(err, ErrNotFound):
		// The first deploy creates the edge service with the lock label on it.
		mine = Lock{Holder: r.Holder + " (deploy)", Since: r.now().UTC().Truncate(1e9)}.String()
	default:
		return err
	}

	active, previous, edgeTag := Blue, "", r.Config.Tag
	if exists {
		if active, err = activeColor(edge); err != nil {
			return err
		}
		if active == "" {
			active = Blue
		}
		previous, edgeTag = edge.Labels[LabelPrevious], tagOf(edge.Image)
	}
	if r.Config.EdgeTag != "" {
		edgeTag = r.Config.EdgeTag
	}
	image, replicas := r.Config.AppImage+":"+r.Config.Tag, r.Config.Replicas
	if svc, err := r.Docker.Service(ctx, appService(active)); err == nil {
		// Never undo a promote: the active color keeps its live image and count.
		image = svc.Image
		if svc.Replicas != nil {
			replicas = *svc.Replicas
		}
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	edgeImage := r.Config.EdgeImage + ":" + edgeTag
	for _, ref := range []string{edgeImage, r.Config.AppImage + ":" + edgeTag, image} {
		if err := r.requireImage(ctx, ref); err != nil {
			return err
		}
	}
	env, err := r.stackEnv(ctx)
	if err != nil {
		return err
	}
	// Only the edge stack mounts Grafana's password: promote needs none.
	if env["GRAFANA_ADMIN_SECRET_ID"], err = r.ensureGrafanaSecret(ctx); err != nil {
		return err
	}
	if env["ALERTMANAGER_SECRET_ID"], err = r.ensureAlertmanagerSecret(ctx); err != nil {
		return err
	}
	if err := r.ensureTLSSecrets(ctx, env); err != nil {
		return err
	}
	if err := r.deployEdge(ctx, env, mine, active, previous, edgeTag); err != nil {
		return err
	}
	if !exists {
		defer r.unlockEdge(ctx, mine)
		edge, err := r.Docker.Service(ctx, EdgeService)
		if err != nil {
			return err
		}
		if got := edge.Labels[LabelLock]; got != mine {
			return fmt.Errorf("%w: another deploy created the edge stack at the same time (%s)", ErrLockLost, got)
		}
	}
	if err := r.deployColor(ctx, env, active, image, replicas); err != nil {
		return err
	}
	if err := r.waitReplicas(ctx, appService(active), replicas, image, r.Config.HealthTimeout); err != nil {
		return fmt.Errorf("%s did not become healthy: %w", active, err)
	}
	edge, err = r.Docker.Service(ctx, EdgeService)
	if err != nil {
		return err
	}
	edgeReplicas := uint64(1)
	if edge.Replicas != nil {
		edgeReplicas = *edge.Replicas
	}
	if err := r.waitReplicas(ctx, EdgeService, edgeReplicas, edgeImage, r.Config.HealthTimeout); err != nil {
		return fmt.Errorf("nginx did not start: %w", err)
	}
	if err := r.waitEdgeColor(ctx, active); err != nil {
		return fmt.Errorf("nginx does not answer with %s: %w", active, err)
	}
	r.logf("deployed: %s is active (%s × %d)", active, image, replicas)
	return nil
}

// deployEdge deploys the edge stack with the live release state in its labels: a
// stack deploy sets the service's labels to the file's, so the file gets them all,
// this release's lock included.
func (r *Release) deployEdge(ctx context.Context, env map[string]string, mine, active, previous, edgeTag string) error {
	detail := ""
	if previous != "" {
		detail = ", previous " + previous
	}
	r.logf("deploying edge (active %s%s, %s:%s)", active, detail, r.Config.EdgeImage, edgeTag)
	files := []string{r.Config.EdgeStack}
	if env["NATS_CLUSTER"] == "true" {
		r.logf("NATS as a cluster of %d nodes (%s)", len(natsRoutes), r.Config.NATSClusterStack)
		files = append(files, r.Config.NATSClusterStack)
	}
	if env["TLS_CERT_SECRET_ID"] != "" {
		r.logf("nginx serves HTTPS with %s (%s)", r.Config.TLSCertFile, r.Config.EdgeTLSStack)
		files = append(files, r.Config.EdgeTLSStack)
	}
	e := map[string]string{
		"ACTIVE_COLOR": active, "PREVIOUS_COLOR": previous, "RELEASE_LOCK": mine,
		"EDGE_IMAGE": r.Config.EdgeImage, "EDGE_TAG": edgeTag, "ROOMCAST_IMAGE": r.Config.AppImage,
		"GRAFANA_ADMIN_USER": r.Config.GrafanaAdminUser,
	}
	for k, v := range r.Config.EdgeEnv {
		e[k] = v
	}
	for k, v := range env {
		e[k] = v
	}
	return r.Stacks.Deploy(ctx, "edge", files, e)
}

// stackEnv makes sure the JWT and NATS secrets exist and settles the NATS settings and the
// tokens' audience and issuer: the variables every stack deploy of this release gets.
func (r *Release) stackEnv(ctx context.Context) (map[string]string, error) {
	id, err := r.ensureJWTSecret(ctx)
	if err != nil {
		return nil, err
	}
	cluster, history, err := r.natsCluster(ctx)
	if err != nil {
		return nil, err
	}
	env := map[string]string{"JWT_SECRET_ID": id, "JWT_AUDIENCE": r.Config.JWTAudience, "JWT_ISSUER": r.Config.JWTIssuer,
		"NATS_CLUSTER": cluster, "HISTORY_REPLICAS": history}
	if err := r.ensureNATSSecrets(ctx, env); err != nil {
		return nil, err
	}
	return env, nil
}

// The Swarm secrets a release makes from files of the operator's: each named after the
// start of its file's SHA-256, so a new file is a new secret (a secret cannot change)
// and the next deploy mounts it.
const (
	// jwtSecretPrefix starts the name of the secret holding the app's key.
	jwtSecretPrefix = "roomcast_jwt_"
	// grafanaSecretPrefix starts the name of the secret holding Grafana's admin password.
	grafanaSecretPrefix = "roomcast_grafana_admin_"
	// tlsCertSecretPrefix and tlsKeySecretPrefix start the names of nginx's certificate
	// chain and key.
	tlsCertSecretPrefix = "roomcast_tls_cert_"
	tlsKeySecretPrefix  = "roomcast_tls_key_"
)

// secretFile is a file that becomes a Swarm secret.
type secretFile struct {
	// variable names the file's variable in messages.
	variable, file, defaultFile string
	// prefix starts the secret's name; label is set to "true" on it.
	prefix, label string
	// what the file holds and why to keep it, for the line saying the default is made.
	what, keep string
	// minBytes is the least the file must hold, white space aside; refusal says who
	// refuses less.
	minBytes int
	refusal  string
}

// ensureJWTSecret returns the ID of the Swarm secret holding JWTSecretFile, creating
// the secret if missing, and warns when a color mounts another key.
func (r *Release) ensureJWTSecret(ctx context.Context) (string, error) {
	file := r.Config.JWTSecretFile
	id, err := r.ensureSecret(ctx, secretFile{
		variable: "JWT_SECRET_FILE", file: file, defaultFile: r.Config.DefaultJWTSecretFile,
		prefix: jwtSecretPrefix, label: "roomcast.jwt",
		what: "the app's JWT key", keep: "keep it: tokens are signed with it",
		minBytes: auth.MinSecretBytes, refusal: "the servers refuse such a key (RFC 7518 §3.2)",
	})
	if err != nil {
		return "", err
	}
	name := jwtSecretPrefix + id
	for _, c := range Colors {
		svc, err := r.Docker.Service(ctx, appService(c))
		if err != nil {
			continue
		}
		for _, s := range svc.Secrets {
			if strings.HasPrefix(s, jwtSecretPrefix) && s != name {
				r.logf("warning: %s uses %s, not the key of %s (%s): what this deploys refuses tokens signed with the old key",
					appService(c), s, file, name)
			}
		}
	}
	return id, nil
}

// ensureGrafanaSecret returns the ID of the Swarm secret holding
// GrafanaAdminPasswordFile, creating the secret if missing.
func (r *Release) ensureGrafanaSecret(ctx context.Context) (string, error) {
	return r.ensureSecret(ctx, secretFile{
		variable: "GRAFANA_ADMIN_PASSWORD_FILE", file: r.Config.GrafanaAdminPasswordFile,
		defaultFile: r.Config.DefaultGrafanaAdminPasswordFile,
		prefix:      grafanaSecretPrefix, label: "roomcast.grafana",
		what: "Grafana's admin password", keep: "Grafana's admin logs in with it",
		minBytes: 16, refusal: "too weak a password",
	})
}

// ensureTLSSecrets makes the Swarm secrets of TLSCertFile and TLSKeyFile, when set, and
// puts their IDs in env as TLS_CERT_SECRET_ID and TLS_KEY_SECRET_ID (which also select
// EdgeTLSStack). The pair is checked first, as nginx will load it: a file that is not
// a certificate, or a key that is not the certificate's, fails the deploy before any
// secret is made or the edge is touched. Unset, env is left alone: HTTP only.
func (r *Release) ensureTLSSecrets(ctx context.Context, env map[string]string) error {
	cert, key := r.Config.TLSCertFile, r.Config.TLSKeyFile
	switch {
	case cert == "" && key == "":
		return nil
	case cert == "" || key == "":
		return errors.New("TLS_CERT_FILE and TLS_KEY_FILE: want both set or neither")
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		// The error names the files or what is wrong with them, never their content.
		return fmt.Errorf("TLS_CERT_FILE=%s and TLS_KEY_FILE=%s are not a certificate and its key: %w", cert, key, err)
	}
	for _, s := range []struct {
		variable, file, prefix, env string
	}{
		{"TLS_CERT_FILE", cert, tlsCertSecretPrefix, "TLS_CERT_SECRET_ID"},
		{"TLS_KEY_FILE", key, tlsKeySecretPrefix, "TLS_KEY_SECRET_ID"},
	} {
		id, err := r.ensureSecret(ctx, secretFile{variable: s.variable, file: s.file, prefix: s.prefix, label: "roomcast.tls", minBytes: 1})
		if err != nil {
			return err
		}
		env[s.env] = id
	}
	return nil
}

// ensureSecret returns the ID of the Swarm secret made of s.file, creating the secret
// if missing. The default file is made on first use, 32 random bytes in base64; a file
// that was named but is missing is an error, not a new secret. The content is never
// logged.
func (r *Release) ensureSecret(ctx context.Context, s secretFile) (string, error) {
	data, err := r.readSecretFile(s)
	if err != nil {
		return "", err
	}
	return r.ensureSecretData(ctx, s.prefix, s.label, s.file, data)
}

// readSecretFile reads s.file, making the default file on first use, and checks its
// size.
func (r *Release) readSecretFile(s secretFile) ([]byte, error) {
	data, err := os.ReadFile(s.file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", s.variable, err)
	}
	if len(data) == 0 {
		if s.file != s.defaultFile {
			return nil, fmt.Errorf("%s=%s is missing or empty", s.variable, s.file)
		}
		r.logf("creating %s in %s (%s)", s.what, s.file, s.keep)
		if data, err = newKeyFile(s.file); err != nil {
			return nil, fmt.Errorf("making %s: %w", s.file, err)
		}
	}
	// White space does not count: the servers and the smoke test trim it from a key.
	if len(strings.Join(strings.Fields(string(data)), "")) < s.minBytes {
		return nil, fmt.Errorf("%s=%s holds less than %d bytes; %s", s.variable, s.file, s.minBytes, s.refusal)
	}
	return data, nil
}

// ensureSecretData returns the ID of the Swarm secret prefix<ID> holding data (from,
// for the log line), creating it if missing: the ID is the start of data's SHA-256.
func (r *Release) ensureSecretData(ctx context.Context, prefix, label, from string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	id := hex.EncodeToString(sum[:])[:12]
	name := prefix + id
	ok, err := r.Docker.SecretExists(ctx, name)
	if err != nil {
		return "", err
	}
	if !ok {
		r.logf("creating Swarm secret %s from %s", name, from)
		if err := r.Docker.CreateSecret(ctx, name, data, map[string]string{label: "true"}); err != nil {
			return "", fmt.Errorf("creating the Swarm secret %s failed: %w", name, err)
		}
	}
	return id, nil
}

// newKeyFile writes 32 random bytes in base64 to file, readable by its owner only.
func newKeyFile(file string) ([]byte, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	data := []byte(base64.StdEncoding.EncodeToString(raw[:]) + "\n")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return nil, err
	}
	return data, nil
}

// natsCluster says whether the edge's NATS is a cluster: NATSCluster if set, else
// what is deployed, so that a later deploy never shrinks a cluster to one node; and
// the history stream's replicas.
func (r *Release) natsCluster(ctx context.Context) (cluster, history string, err error) {
	cluster = r.Config.NATSCluster
	if cluster == "" {
		cluster = "false"
		svc, err := r.Docker.Service(ctx, NATSService)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return "", "", err
		}
		if err == nil && svc.Labels[LabelNATSCluster] == "true" {
			cluster = "true"
		}
	}
	history = r.Config.HistoryReplicas
	switch {
	case cluster != "true" && cluster != "false":
		return "", "", fmt.Errorf("NATS_CLUSTER is %q, want true or false", cluster)
	case history != "":
	case cluster == "true":
		history = "3"
	default:
		history = "1"
	}
	return cluster, history, nil
}

// Scale sets the replica count of the active color and waits until they are healthy.
func (r *Release) Scale(ctx context.Context, n uint64) error {
	if _, err := r.Docker.Service(ctx, EdgeService); errors.Is(err, ErrNotFound) {
		return errors.New("nginx has no roomcast.active label: run just deploy first")
	}
	mine, edge, err := r.lock(ctx, fmt.Sprintf("scale %d", n), nil)
	if err != nil {
		return err
	}
	defer r.unlockEdge(ctx, mine)
	active, err := activeColor(edge)
	if err != nil {
		return err
	}
	if active == "" {
		return errors.New("nginx has no roomcast.active label: run just deploy first")
	}
	svc, err := r.Docker.Service(ctx, appService(active))
	if err != nil {
		return err
	}
	r.logf("scaling %s to %d", appService(active), n)
	if err := r.Docker.Scale(ctx, appService(active), n); err != nil {
		return err
	}
	if err := r.waitReplicas(ctx, appService(active), n, svc.Image, r.Config.HealthTimeout); err != nil {
		return fmt.Errorf("%s did not reach %d healthy replicas: %w", appService(active), n, err)
	}
	return nil
}

// Status writes the active color, the release lock if held, and each color's tag and
// running/desired replicas.
func (r *Release) Status(ctx context.Context, w io.Writer) error {
	var labels map[string]string
	switch edge, err := r.Docker.Service(ctx, EdgeService); {
	case err == nil:
		labels = edge.Labels
	case !errors.Is(err, ErrNotFound):
		return err
	}
	active := labels[LabelActive]
	line := "active: none"
	if active != "" {
		line = "active: " + active
	}
	if p := labels[LabelPrevious]; p != "" {
		line += " (previous: " + p + ")"
	}
	fmt.Fprintln(w, line)
	if l, ok := ParseLock(labels[LabelLock]); ok {
		fmt.Fprintf(w, "release lock: held by %s for %s\n", l.Holder, r.now().Sub(l.Since).Round(1e9))
	}
	if labels[LabelPromoting] == "true" {
		fmt.Fprintf(w, "%s=true: a release is under way (the autoscaler waits)\n", LabelPromoting)
	}
	for _, c := range Colors {
		role := "idle"
		if c == active {
			role = "active"
		}
		svc, err := r.Docker.Service(ctx, appService(c))
		if errors.Is(err, ErrNotFound) {
			fmt.Fprintf(w, "%-6s %-7s not deployed\n", c, role)
			continue
		} else if err != nil {
			return err
		}
		n, err := r.count(ctx, appService(c), "")
		if err != nil {
			return err
		}
		desired := 0
		if svc.Replicas != nil {
			desired = int(*svc.Replicas)
		}
		fmt.Fprintf(w, "%-6s %-7s tag=%-12s replicas=%d/%d\n", c, role, tagOf(svc.Image), n.running, desired)
	}
	return nil
}
