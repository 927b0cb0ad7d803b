package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"roomcast/pkg/fleet/bluegreen"
)

// The methods below make a *Client the bluegreen.Docker of a release.
var _ bluegreen.Docker = (*Client)(nil)

// Service inspects the service name.
func (c *Client) Service(ctx context.Context, name string) (bluegreen.Service, error) {
	svc, err := c.inspect(ctx, name)
	if errors.Is(err, ErrServiceNotFound) {
		return bluegreen.Service{}, fmt.Errorf("%w: %w", bluegreen.ErrNotFound, err)
	}
	if err != nil {
		return bluegreen.Service{}, err
	}
	return toService(svc), nil
}

func toService(svc dswarm.Service) bluegreen.Service {
	out := bluegreen.Service{
		ID: svc.ID, Name: svc.Spec.Name, Version: svc.Version.Index,
		Labels: maps.Clone(svc.Spec.Labels),
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if cs := svc.Spec.TaskTemplate.ContainerSpec; cs != nil {
		out.Image = withoutDigest(cs.Image)
		for _, s := range cs.Secrets {
			out.Secrets = append(out.Secrets, s.SecretName)
		}
		for _, c := range cs.Configs {
			out.Configs = append(out.Configs, c.ConfigName)
		}
	}
	if r := svc.Spec.Mode.Replicated; r != nil && r.Replicas != nil {
		n := *r.Replicas
		out.Replicas = &n
	}
	return out
}

func withoutDigest(image string) string {
	image, _, _ = strings.Cut(image, "@")
	return image
}

// UpdateLabels changes the labels of svc in one update at svc.Version.
func (c *Client) UpdateLabels(ctx context.Context, svc bluegreen.Service, set map[string]string, remove []string) error {
	live, err := c.inspect(ctx, svc.ID)
	if err != nil {
		return fmt.Errorf("updating the labels of %s: %w", svc.Name, err)
	}
	if live.Version.Index != svc.Version {
		return fmt.Errorf("updating the labels of %s (version %d, now %d): %w", svc.Name, svc.Version, live.Version.Index, bluegreen.ErrConflict)
	}
	spec := live.Spec
	spec.Labels = maps.Clone(spec.Labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	maps.Copy(spec.Labels, set)
	for _, k := range remove {
		delete(spec.Labels, k)
	}
	// Version is the one read by the caller: the daemon refuses the update if anyone
	// changed the service since, which makes this a compare-and-set.
	_, err = c.api.ServiceUpdate(ctx, live.ID, client.ServiceUpdateOptions{Version: dswarm.Version{Index: svc.Version}, Spec: spec})
	if err != nil {
		if strings.Contains(err.Error(), "out of sequence") {
			return fmt.Errorf("updating the labels of %s: %w", svc.Name, bluegreen.ErrConflict)
		}
		return fmt.Errorf("updating the labels of %s: %w", svc.Name, err)
	}
	return nil
}

// Scale sets the replica count of the service name, trying again when another writer
// (the autoscaler) updated the service between the read and the write.
func (c *Client) Scale(ctx context.Context, name string, replicas uint64) error {
	var err error
	for range 3 {
		if err = c.ScaleService(ctx, name, replicas); err == nil || !strings.Contains(err.Error(), "out of sequence") {
			return err
		}
	}
	return err
}

// Tasks lists the tasks of the service name.
func (c *Client) Tasks(ctx context.Context, service string) ([]bluegreen.Task, error) {
	tasks, err := c.tasks(ctx, service)
	if err != nil {
		return nil, err
	}
	out := make([]bluegreen.Task, 0, len(tasks))
	for _, t := range tasks {
		bt := bluegreen.Task{ID: t.ID, Slot: t.Slot, DesiredState: string(t.DesiredState), State: string(t.Status.State), Err: t.Status.Err}
		if t.Spec.ContainerSpec != nil {
			bt.Image = withoutDigest(t.Spec.ContainerSpec.Image)
		}
		out = append(out, bt)
	}
	return out, nil
}

func (c *Client) tasks(ctx context.Context, service string) ([]dswarm.Task, error) {
	res, err := c.api.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("service", service)})
	if err != nil {
		return nil, fmt.Errorf("listing the tasks of %s: %w", service, err)
	}
	return res.Items, nil
}

// RemoveStack removes the services of stack namespace, as `docker stack rm` does for
// a stack that owns no networks, secrets or configs of its own (an app color).
func (c *Client) RemoveStack(ctx context.Context, namespace string) error {
	svcs, err := c.api.ServiceList(ctx, client.ServiceListOptions{Filters: make(client.Filters).
		Add("label", "com.docker.stack.namespace="+namespace)})
	if err != nil {
		return fmt.Errorf("listing the services of stack %s: %w", namespace, err)
	}
	for _, s := range svcs.Items {
		if _, err := c.api.ServiceRemove(ctx, s.ID, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("removing service %s: %w", s.Spec.Name, err)
		}
	}
	return nil
}

// ImageExists reports whether the daemon has image ref.
func (c *Client) ImageExists(ctx context.Context, ref string) (bool, error) {
	_, err := c.api.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
}

// SecretExists reports whether the Swarm secret name exists.
func (c *Client) SecretExists(ctx context.Context, name string) (bool, error) {
	id, err := c.secretID(ctx, name)
	if errors.Is(err, bluegreen.ErrNotFound) {
		return false, nil
	}
	return id != "", err
}

// CreateSecret creates the Swarm secret name.
func (c *Client) CreateSecret(ctx context.Context, name string, data []byte, labels map[string]string) error {
	_, err := c.api.SecretCreate(ctx, client.SecretCreateOptions{Spec: dswarm.SecretSpec{Annotations: dswarm.Annotations{Name: name, Labels: labels}, Data: data}})
	if err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("creating secret %s: %w", name, err)
	}
	return nil
}

// jobPoll is how often RunJob looks at its task.
const jobPoll = 200 * time.Millisecond

// RunJob runs job as a replicated job of one task that is never restarted, waits
// for it to end, reads its output and removes it (even when ctx is done).
func (c *Client) RunJob(ctx context.Context, job bluegreen.Job) (bluegreen.JobResult, error) {
	one := uint64(1)
	spec := dswarm.ServiceSpec{
		Annotations: dswarm.Annotations{Name: job.Name, Labels: map[string]string{"roomcast.job": "true"}},
		TaskTemplate: dswarm.TaskSpec{
			// No healthcheck: the app image's own would mark a job that serves nothing
			// unhealthy, and Swarm would kill it.
			ContainerSpec: &dswarm.ContainerSpec{Image: job.Image, Command: job.Command[:1], Args: job.Command[1:],
				Healthcheck: &container.HealthConfig{Test: []string{"NONE"}}},
			RestartPolicy: &dswarm.RestartPolicy{Condition: dswarm.RestartPolicyConditionNone},
			Networks:      []dswarm.NetworkAttachmentConfig{{Target: job.Network}},
		},
		Mode: dswarm.ServiceMode{ReplicatedJob: &dswarm.ReplicatedJob{MaxConcurrent: &one, TotalCompletions: &one}},
	}
	if job.Secret != "" {
		id, err := c.secretID(ctx, job.Secret)
		if err != nil {
			return bluegreen.JobResult{}, err
		}
		spec.TaskTemplate.ContainerSpec.Secrets = []*dswarm.SecretReference{{
			SecretID: id, SecretName: job.Secret,
			File: &dswarm.SecretReferenceFileTarget{Name: job.SecretTarget, UID: "10001", GID: "10001", Mode: 0o400},
		}}
	}
	// A job left behind by a killed release has the same name: it goes first.
	remove := func(ref string) {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = c.api.ServiceRemove(rmCtx, ref, client.ServiceRemoveOptions{})
	}
	if old, err := c.api.ServiceInspect(ctx, job.Name, client.ServiceInspectOptions{}); err == nil {
		remove(old.Service.ID)
	}
	created, err := c.api.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		if ctx.Err() != nil { // interrupted: the daemon may have made it all the same
			remove(job.Name)
		}
		return bluegreen.JobResult{}, fmt.Errorf("creating job %s: %w", job.Name, err)
	}
	defer remove(created.ID)
	var res bluegreen.JobResult
	for {
		tasks, err := c.tasks(ctx, created.ID)
		if err != nil {
			return res, fmt.Errorf("job %s: %w", job.Name, err)
		}
		if t, done := finished(tasks); done {
			res.ExitCode = t.Status.ContainerStatus.ExitCode
			if t.Status.State != dswarm.TaskStateComplete && res.ExitCode == 0 {
				res.ExitCode = -1 // rejected or shut down before it ran
				res.Output = []byte(t.Status.Err + "\n")
			}
			break
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("job %s: %w", job.Name, ctx.Err())
		case <-time.After(jobPoll):
		}
	}
	logs, err := c.api.ServiceLogs(ctx, created.ID, client.ServiceLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return res, fmt.Errorf("reading the output of job %s: %w", job.Name, err)
	}
	defer logs.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, logs); err != nil {
		return res, fmt.Errorf("reading the output of job %s: %w", job.Name, err)
	}
	res.Output = append(res.Output, out.Bytes()...)
	return res, nil
}

// finished returns the job's task once it has ended.
func finished(tasks []dswarm.Task) (dswarm.Task, bool) {
	for _, t := range tasks {
		switch t.Status.State {
		case dswarm.TaskStateComplete, dswarm.TaskStateFailed, dswarm.TaskStateRejected,
			dswarm.TaskStateShutdown, dswarm.TaskStateOrphaned, dswarm.TaskStateRemove:
			return t, true
		}
	}
	return dswarm.Task{}, false
}

func (c *Client) secretID(ctx context.Context, name string) (string, error) {
	secrets, err := c.api.SecretList(ctx, client.SecretListOptions{Filters: make(client.Filters).Add("name", name)})
	if err != nil {
		return "", fmt.Errorf("listing secrets: %w", err)
	}
	// The daemon's name filter matches prefixes too.
	for _, s := range secrets.Items {
		if s.Spec.Name == name {
			return s.ID, nil
		}
	}
	return "", fmt.Errorf("secret %s: %w", name, bluegreen.ErrNotFound)
}

// ExecInLocalTasks runs cmd in every running container of service on this node.
func (c *Client) ExecInLocalTasks(ctx context.Context, service string, cmd []string) (map[string]int, error) {
	ctrs, err := c.api.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).
		Add("label", "com.docker.swarm.service.name="+service)})
	if err != nil {
		return nil, fmt.Errorf("listing the containers of %s: %w", service, err)
	}
	out := map[string]int{}
	for _, ctr := range ctrs.Items {
		code, err := c.exec(ctx, ctr.ID, cmd)
		if err != nil {
			return out, err
		}
		out[ctr.ID] = code
	}
	return out, nil
}

// exec runs cmd detached in container and polls until it has exited: no hijacked
// connection, so it works through any proxy that passes plain HTTP.
func (c *Client) exec(ctx context.Context, ctr string, cmd []string) (int, error) {
	created, err := c.api.ExecCreate(ctx, ctr, client.ExecCreateOptions{Cmd: cmd})
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", ctr, err)
	}
	if _, err := c.api.ExecStart(ctx, created.ID, client.ExecStartOptions{Detach: true}); err != nil {
		return 0, fmt.Errorf("exec in %s: %w", ctr, err)
	}
	for {
		st, err := c.api.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
		if err != nil {
			return 0, fmt.Errorf("exec in %s: %w", ctr, err)
		}
		if !st.Running {
			return st.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("exec in %s: %w", ctr, ctx.Err())
		case <-time.After(jobPoll):
		}
	}
}

// StackCLI deploys stacks with the docker CLI: the Engine API has no call for
// `docker stack deploy` (the compose conversion lives in the CLI), so this is the one
// release step run as a command. DOCKER_HOST and the rest of the process environment
// pass through, so the CLI talks to the same daemon as the Client. Images are never
// resolved against a registry.
type StackCLI struct {
	// Docker is the docker program ("docker" when empty).
	Docker string
	// Dir is where the command runs (the compose files' paths are relative to it).
	Dir string
}

// Deploy runs `docker stack deploy --detach=true --resolve-image never -c FILE... name`.
func (s StackCLI) Deploy(ctx context.Context, name string, files []string, env map[string]string) error {
	docker := s.Docker
	if docker == "" {
		docker = "docker"
	}
	args := []string{"stack", "deploy", "--detach=true", "--resolve-image", "never"}
	for _, f := range files {
		args = append(args, "-c", f)
	}
	cmd := exec.CommandContext(ctx, docker, append(args, name)...)
	cmd.Dir = s.Dir
	cmd.Env = os.Environ()
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker stack deploy %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}
