package bluegreen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Config is what a release needs to know besides the live state.
type Config struct {
	// AppImage and EdgeImage are the image names, without tags.
	AppImage, EdgeImage string
	// Tag is the app tag of a first deploy (later ones keep the live tag).
	Tag string
	// EdgeTag is the tag of the edge and autoscaler images a deploy sets; empty keeps
	// the live one (Tag on a first deploy).
	EdgeTag string
	// Replicas is the replica count of a first deploy.
	Replicas uint64
	// HealthTimeout bounds each wait for healthy replicas, FlipTimeout the wait for
	// nginx to answer with the new color, DrainTimeout the old color's drain.
	HealthTimeout, FlipTimeout, DrainTimeout time.Duration
	// SmokeTimeout is roomcast-smoke's -timeout.
	SmokeTimeout time.Duration
	// EdgeURL is where nginx answers (/healthz with X-Roomcast-Color).
	EdgeURL string
	// JWTSecretFile is the app's HS256 key; when it is DefaultJWTSecretFile and
	// missing, the first release makes it.
	JWTSecretFile, DefaultJWTSecretFile string
	// JWTAudience and JWTIssuer are the aud and iss the replicas check (the stack's
	// JWT_AUDIENCE and JWT_ISSUER); the smoke job's token carries them.
	JWTAudience, JWTIssuer string
	// GrafanaAdminPasswordFile is Grafana's admin password; when it is
	// DefaultGrafanaAdminPasswordFile and missing, the first deploy makes it.
	GrafanaAdminPasswordFile, DefaultGrafanaAdminPasswordFile string
	// GrafanaAdminUser is the login of Grafana's admin.
	GrafanaAdminUser string
	// NATSAppPasswordFile is the app's NATS password and NATSRoutePasswordFile the NATS
	// cluster's route password; when one is its default and missing, the first deploy
	// makes it.
	NATSAppPasswordFile, DefaultNATSAppPasswordFile     string
	NATSRoutePasswordFile, DefaultNATSRoutePasswordFile string
	// NATSCluster is "true", "false" or empty (what is deployed); HistoryReplicas the
	// history stream's replicas (empty: 3 for a cluster, 1 else).
	NATSCluster     string
	HistoryReplicas string
	// AlertmanagerTemplate is Alertmanager's configuration template
	// (RenderAlertmanagerConfig); AlertmanagerWebhookURLFile holds the URL its receiver
	// posts to (empty: no notification is sent). The rendered file is a Swarm secret.
	AlertmanagerTemplate, AlertmanagerWebhookURLFile string
	// TLSCertFile and TLSKeyFile are nginx's certificate chain and key (PEM), both or
	// neither: set, the edge is deployed with EdgeTLSStack too and serves HTTPS.
	TLSCertFile, TLSKeyFile string
	// AppStack, EdgeStack, NATSClusterStack and EdgeTLSStack are the compose files.
	AppStack, EdgeStack, NATSClusterStack, EdgeTLSStack string
	// EdgeEnv is added to the environment of the edge stack's deploy (config IDs).
	EdgeEnv map[string]string
	// Network is the overlay network of the smoke test.
	Network string
	// LockStaleAfter is the age from which a release lock may be broken.
	LockStaleAfter time.Duration
}

// Release runs the release protocol against one Swarm. Its methods each take the
// release lock first (Status excepted), release it on every exit path, and print what
// they do, one timestamped line each, to Out.
type Release struct {
	Config Config
	Docker Docker
	Stacks Stacks
	// Out receives the progress lines users read.
	Out io.Writer
	// Holder names this process in the lock: user@host pid N.
	Holder string
	// BreakStaleLock lets a release break a lock older than Config.LockStaleAfter.
	BreakStaleLock bool
	// Now and Sleep are the clock (time.Now and a context-aware sleep when nil).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// HTTP asks nginx for its color (a client with a 2s timeout when nil).
	HTTP *http.Client
}

// The waits' polling intervals, as the shell recipes had them.
const (
	taskPoll  = time.Second
	colorPoll = 200 * time.Millisecond
	// colorStreak is how many answers in a row must carry the new color.
	colorStreak = 5
)

func (r *Release) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Release) sleep(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (r *Release) logf(format string, args ...any) {
	fmt.Fprintf(r.Out, "[%s] %s\n", r.now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func secs(d time.Duration) string { return fmt.Sprintf("%gs", d.Seconds()) }

func appService(color string) string { return ForColor(AppService, color) }

// splitImage splits "repo:tag" (the repo may hold a registry's port).
func splitImage(ref string) (repo, tag string) {
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

func tagOf(ref string) string {
	_, tag := splitImage(ref)
	return tag
}

// activeColor reads LabelActive of the edge service: "" when unset.
func activeColor(edge Service) (string, error) {
	c := edge.Labels[LabelActive]
	if c != "" && !ValidColor(c) {
		return "", fmt.Errorf("nginx label %s is %q, not blue or green", LabelActive, c)
	}
	return c, nil
}

func (r *Release) requireImage(ctx context.Context, ref string) error {
	ok, err := r.Docker.ImageExists(ctx, ref)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("image %s not found (build it with: just build TAG)", ref)
	}
	return nil
}

// replicaCount is "running/desired" as `docker service ls` shows it: a task with a
// healthcheck counts once healthy.
type replicaCount struct {
	running, desired int
	// otherImage counts running tasks that do not run the image waited for.
	otherImage int
	tasks      []Task
}

func (c replicaCount) String() string { return fmt.Sprintf("%d/%d", c.running, c.desired) }

func (r *Release) count(ctx context.Context, service, image string) (replicaCount, error) {
	tasks, err := r.Docker.Tasks(ctx, service)
	if err != nil {
		return replicaCount{}, err
	}
	c := replicaCount{tasks: tasks}
	for _, t := range tasks {
		if t.State == "running" && image != "" && t.Image != image {
			c.otherImage++
			continue
		}
		if t.DesiredState != "running" {
			if alive(t.State) && image == "" {
				c.otherImage++ // still there though on its way out (a drain)
			}
			continue
		}
		c.desired++
		if t.State == "running" {
			c.running++
		}
	}
	return c, nil
}

// alive reports whether a task in state has or may soon have a container.
func alive(state string) bool {
	switch state {
	case "new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running":
		return true
	}
	return false
}

// waitReplicas waits until service has exactly want running tasks, every one healthy
// and (unless image is empty) running image, and no other task running: old tasks do
// not count, they must be gone. It logs the tasks when the bound is reached.
func (r *Release) waitReplicas(ctx context.Context, service string, want uint64, image string, timeout time.Duration) error {
	deadline := r.now().Add(timeout)
	for {
		c, err := r.count(ctx, service, image)
		if err != nil {
			return err
		}
		if c.running == int(want) && c.desired == int(want) && c.otherImage == 0 {
			if want > 0 {
				r.logf("%s: %s healthy", service, c)
			}
			return nil
		}
		if !r.now().Before(deadline) {
			why := fmt.Sprintf("%s: %s healthy after %s, want %d/%d", service, c, secs(timeout), want, want)
			if c.otherImage > 0 {
				why += fmt.Sprintf(" (and %d task(s) still running another image than %s)", c.otherImage, image)
			}
			r.logf("%s; tasks:", why)
			for i, t := range c.tasks {
				if i == 8 {
					break
				}
				fmt.Fprintf(r.Out, "%s.%d %s %s/%s %s\n", service, t.Slot, t.Image, t.DesiredState, t.State, t.Err)
			}
			return fmt.Errorf("%s", why)
		}
		if err := r.sleep(ctx, taskPoll); err != nil {
			return err
		}
	}
}

// edgeColor is the X-Roomcast-Color of nginx's answer to /healthz ("" on failure):
// a public path (nginx answers /readyz with 404) that every replica answers with it.
func (r *Release) edgeColor(ctx context.Context) string {
	c := r.HTTP
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Config.EdgeURL+"/healthz", nil)
	if err != nil {
		return ""
	}
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return ""
	}
	return resp.Header.Get("X-Roomcast-Color")
}

// waitEdgeColor waits until nginx answers with color colorStreak times in a row, then
// checks that every nginx task on this node reports it (those of other nodes are
// reached through the published port only).
func (r *Release) waitEdgeColor(ctx context.Context, color string) error {
	deadline := r.now().Add(r.Config.FlipTimeout)
	streak := 0
	for streak < colorStreak {
		got := r.edgeColor(ctx)
		if got == color {
			streak++
		} else {
			streak = 0
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.now().Before(deadline) {
			r.logf("nginx at %s answers color %q after %s, want %s", r.Config.EdgeURL, got, secs(r.Config.FlipTimeout), color)
			return fmt.Errorf("nginx at %s answers color %q, want %s", r.Config.EdgeURL, got, color)
		}
		if err := r.sleep(ctx, colorPoll); err != nil {
			return err
		}
	}
	r.logf("nginx at %s answers with %s", r.Config.EdgeURL, color)
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	codes, err := r.Docker.ExecInLocalTasks(ectx, EdgeService, []string{"/usr/local/bin/roomcast-edge", "status", "-color", color})
	if err != nil {
		return fmt.Errorf("asking the nginx tasks for their color: %w", err)
	}
	for ctr, code := range codes {
		if code != 0 {
			r.logf("nginx task %.12s does not report %s", ctr, color)
			return fmt.Errorf("nginx task %.12s does not report %s", ctr, color)
		}
	}
	return nil
}
