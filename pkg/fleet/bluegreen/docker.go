package bluegreen

import (
	"context"
	"errors"
)

// ErrNotFound means the daemon has no such service.
var ErrNotFound = errors.New("not found")

// ErrConflict means an update was refused because the service changed since it was
// read (its version moved on): someone else wrote first.
var ErrConflict = errors.New("the service changed since it was read")

// Service is what the release reads of a Swarm service.
type Service struct {
	ID   string
	Name string
	// Version is the spec's version; an update at an older one is refused (ErrConflict).
	Version uint64
	Labels  map[string]string
	// Image is the image reference of the spec, without a digest.
	Image string
	// Replicas is the desired replica count; nil for a service that is not replicated.
	Replicas *uint64
	// Secrets and Configs name the Swarm secrets and configs the service mounts.
	Secrets, Configs []string
}

// SwarmObject is a Swarm secret or config.
type SwarmObject struct {
	ID, Name string
}

// Task is one task of a service.
type Task struct {
	ID string
	// Slot is the replica number.
	Slot int
	// Image is the image the task runs (without a digest).
	Image string
	// DesiredState is what Swarm wants of the task ("running", "shutdown", ...).
	DesiredState string
	// State is where it is; a task with a healthcheck is "starting" until healthy,
	// then "running".
	State string
	// Err is why it failed, if it did.
	Err string
}

// Job is a one-off task run as a Swarm service in replicated-job mode.
type Job struct {
	Name    string
	Image   string
	Command []string
	// Network is the overlay network the job joins.
	Network string
	// Secret is a Swarm secret mounted at /run/secrets/<SecretTarget>, readable by the
	// image's user (uid 10001) only.
	Secret, SecretTarget string
}

// JobResult is how a Job ended.
type JobResult struct {
	ExitCode int
	// Output is what the job wrote, stdout and stderr interleaved.
	Output []byte
}

// Docker is every Engine API operation the release needs. pkg/fleet/swarm implements
// it on one Engine API client.
type Docker interface {
	// Service inspects the service name; ErrNotFound if there is none.
	Service(ctx context.Context, name string) (Service, error)
	// UpdateLabels sets and removes labels of svc in one update at svc.Version, so the
	// update is refused (ErrConflict) if anyone changed the service since it was
	// read. It restarts no task.
	UpdateLabels(ctx context.Context, svc Service, set map[string]string, remove []string) error
	// Scale sets the desired replica count of a replicated service.
	Scale(ctx context.Context, name string, replicas uint64) error
	// Tasks lists the tasks of the service name (any state).
	Tasks(ctx context.Context, service string) ([]Task, error)
	// RemoveStack removes every service of the stack namespace.
	RemoveStack(ctx context.Context, namespace string) error
	// ImageExists reports whether the daemon has the image ref locally.
	ImageExists(ctx context.Context, ref string) (bool, error)
	// SecretExists reports whether the Swarm secret name exists.
	SecretExists(ctx context.Context, name string) (bool, error)
	// CreateSecret creates the Swarm secret name; an existing one is not an error.
	CreateSecret(ctx context.Context, name string, data []byte, labels map[string]string) error
	// RunJob runs job to its end (or until ctx is done), removes it and returns its
	// exit status and output.
	RunJob(ctx context.Context, job Job) (JobResult, error)
	// Services lists every service of the Swarm, of any stack.
	Services(ctx context.Context) ([]Service, error)
	// Secrets and Configs list the Swarm secrets and configs whose names start with
	// prefix.
	Secrets(ctx context.Context, prefix string) ([]SwarmObject, error)
	Configs(ctx context.Context, prefix string) ([]SwarmObject, error)
	// RemoveSecret and RemoveConfig remove one by ID; one already gone is not an error,
	// one in use is.
	RemoveSecret(ctx context.Context, id string) error
	RemoveConfig(ctx context.Context, id string) error
	// ExecInLocalTasks runs cmd in every running container of service on the node
	// the client talks to and returns each container's exit status by container ID.
	ExecInLocalTasks(ctx context.Context, service string, cmd []string) (map[string]int, error)
}

// Stacks deploys compose files as Swarm stacks. The Engine API has no call for it (the
// compose conversion lives in the docker CLI), so it is the one operation run as a
// command: `docker stack deploy --resolve-image never` (pkg/fleet/swarm.StackCLI).
type Stacks interface {
	// Deploy deploys files as stack name with env added to the environment the files
	// are interpolated from. It returns once the daemon took the new specs, without
	// waiting for tasks.
	Deploy(ctx context.Context, name string, files []string, env map[string]string) error
}
