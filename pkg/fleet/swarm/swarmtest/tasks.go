package swarmtest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Task is one task of a service as a test wants the fake to report it.
type Task struct {
	// Image is the image the task runs.
	Image string
	// DesiredState is what Swarm wants of it: "running" (default) or "shutdown".
	DesiredState string
	// State is where it is: "running" (healthy, for a service with a healthcheck),
	// "starting", "failed", "complete", "shutdown".
	State string
	// Err is the task's error message.
	Err string
	// ExitCode is its container's exit status, for a job.
	ExitCode int
	// Logs is what its container wrote (a job's output).
	Logs string
}

type task struct {
	Task
	id, container string
	slot          int
}

// Spec is what a stack deploy sets on a service (see DeployService).
type Spec struct {
	Image    string
	Labels   map[string]string
	Replicas *uint64 // nil: a global service
	Secrets  []string
	// Configs names the Swarm configs it mounts (of a deployed service).
	Configs []string
	// Command is the container's command and arguments (of a created service).
	Command []string
	// Job is true for a replicated job.
	Job bool
}

type jobResult struct {
	exit int
	logs string
	set  bool
}

type secret struct {
	id     string
	labels map[string]string
	data   []byte
}

type execRun struct {
	container string
	cmd       []string
	exit      int
}

// DeployService creates or replaces the service name with spec, as `docker stack
// deploy` does: the labels become exactly spec's (what `service update` added is gone).
func (s *Server) DeployService(name string, spec Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, action := s.serviceLocked(name)
	svc.version++
	svc.image = spec.Image
	svc.labels = copyMap(spec.Labels)
	svc.replicas = spec.Replicas
	svc.secrets = slices.Clone(spec.Secrets)
	svc.configs = slices.Clone(spec.Configs)
	s.convergeLocked(svc)
	s.emitLocked(event{action: action, id: svc.id, name: name})
}

// Service returns what the fake holds of service name: its spec and whether it exists.
func (s *Server) Service(name string) (Spec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.services[name]
	if !ok {
		return Spec{}, false
	}
	return Spec{Image: svc.image, Labels: copyMap(svc.labels), Replicas: svc.replicas, Secrets: slices.Clone(svc.secrets),
		Configs: slices.Clone(svc.configs)}, true
}

// Created returns the specs of the services created through the API so far.
func (s *Server) Created() []Spec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.created)
}

// Converge sets how the fake's orchestrator answers each change of service name: fn
// gets the image and replica count of the new spec and returns the tasks the service
// then has. nil restores the default: every replica running the new image at once.
func (s *Server) Converge(name string, fn func(image string, replicas uint64) []Task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fn == nil {
		delete(s.converge, name)
		return
	}
	s.converge[name] = fn
}

// SetTasks replaces the tasks of the existing service name now.
func (s *Server) SetTasks(name string, tasks []Task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setTasksLocked(s.services[name], tasks)
}

// Tasks returns the tasks the fake reports for service name.
func (s *Server) Tasks(name string) []Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.services[name]
	if !ok {
		return nil
	}
	out := make([]Task, len(svc.tasks))
	for i, t := range svc.tasks {
		out[i] = t.Task
	}
	return out
}

// SetJob sets how every replicated job created from now on ends: its exit status and
// its output. The default is exit 0 with the output "PASS".
func (s *Server) SetJob(exit int, logs string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.job = jobResult{exit: exit, logs: logs, set: true}
}

// SetExec sets the exit status of commands exec'd in containers (default 0).
func (s *Server) SetExec(fn func(container string, cmd []string) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exec = fn
}

// Execs returns the commands exec'd so far, each as "container: arg arg ...".
func (s *Server) Execs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.execs {
		out = append(out, e.container+": "+strings.Join(e.cmd, " "))
	}
	slices.Sort(out)
	return out
}

// AddImage makes image references (such as "roomcast/roomcast:v2") known locally.
func (s *Server) AddImage(refs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range refs {
		s.images[r] = true
	}
}

// Secret returns the content and labels of the Swarm secret name.
func (s *Server) Secret(name string) ([]byte, map[string]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[name]
	return sec.data, copyMap(sec.labels), ok
}

func (s *Server) convergeLocked(svc *service) {
	switch {
	case svc.job && s.converge[svc.name] == nil:
		res := s.job
		if !res.set {
			res = jobResult{logs: "PASS\n"}
		}
		state := "complete"
		if res.exit != 0 {
			state = "failed"
		}
		s.setTasksLocked(svc, []Task{{Image: svc.image, DesiredState: "complete", State: state, ExitCode: res.exit, Logs: res.logs,
			Err: map[bool]string{true: fmt.Sprintf("task: non-zero exit (%d)", res.exit)}[res.exit != 0]}})
	case s.converge[svc.name] != nil:
		s.setTasksLocked(svc, s.converge[svc.name](svc.image, svc.replicaCount()))
	default:
		tasks := make([]Task, svc.replicaCount())
		for i := range tasks {
			tasks[i] = Task{Image: svc.image}
		}
		s.setTasksLocked(svc, tasks)
	}
}

// replicaCount is how many tasks the service runs: its replicas, or one for a
// service without a count (global, on the fake's single node).
func (svc *service) replicaCount() uint64 {
	if svc.replicas == nil {
		return 1
	}
	return *svc.replicas
}

func (s *Server) setTasksLocked(svc *service, tasks []Task) {
	svc.tasks = nil
	for i, t := range tasks {
		if t.DesiredState == "" {
			t.DesiredState = "running"
		}
		if t.State == "" {
			t.State = "running"
		}
		svc.tasks = append(svc.tasks, &task{Task: t, id: s.newIDLocked("task"), container: s.newIDLocked("ctr"), slot: i + 1})
	}
}

// specJSON is the part of a service spec the fake keeps.
type specJSON struct {
	Name         string
	Labels       map[string]string
	TaskTemplate struct {
		ContainerSpec struct {
			Image   string
			Command []string
			Args    []string
			Secrets []struct{ SecretName string }
		}
	}
	Mode struct {
		Replicated    *struct{ Replicas *uint64 }
		ReplicatedJob *struct{}
	}
}

func (spec specJSON) applyTo(svc *service) {
	svc.labels = copyMap(spec.Labels)
	svc.replicas = nil
	if spec.Mode.Replicated != nil {
		svc.replicas = spec.Mode.Replicated.Replicas
	}
	svc.job = spec.Mode.ReplicatedJob != nil
	cs := spec.TaskTemplate.ContainerSpec
	if cs.Image != "" {
		svc.image = cs.Image
	}
	svc.command = append(slices.Clone(cs.Command), cs.Args...)
	svc.secrets = nil
	for _, sec := range cs.Secrets {
		svc.secrets = append(svc.secrets, sec.SecretName)
	}
}

// serveMore answers the routes beyond labels and events; false if route is not one.
func (s *Server) serveMore(w http.ResponseWriter, r *http.Request, route string) bool {
	switch {
	case route == "/services" && r.Method == http.MethodGet:
		s.serveServiceList(w, r)
	case route == "/services/create" && r.Method == http.MethodPost:
		s.serveCreate(w, r)
	case strings.HasPrefix(route, "/services/") && r.Method == http.MethodDelete:
		s.serveRemove(w, strings.TrimPrefix(route, "/services/"))
	case strings.HasPrefix(route, "/services/") && strings.HasSuffix(route, "/logs") && r.Method == http.MethodGet:
		s.serveLogs(w, strings.TrimSuffix(strings.TrimPrefix(route, "/services/"), "/logs"))
	case route == "/tasks" && r.Method == http.MethodGet:
		s.serveTasks(w, r)
	case route == "/secrets" && r.Method == http.MethodGet:
		s.serveSecrets(w, r)
	case route == "/secrets/create" && r.Method == http.MethodPost:
		s.serveSecretCreate(w, r)
	case strings.HasPrefix(route, "/secrets/") && r.Method == http.MethodDelete:
		s.serveObjectRemove(w, "secret", s.secrets, strings.TrimPrefix(route, "/secrets/"))
	case route == "/configs" && r.Method == http.MethodGet:
		s.serveConfigs(w, r)
	case strings.HasPrefix(route, "/configs/") && r.Method == http.MethodDelete:
		s.serveObjectRemove(w, "config", s.configs, strings.TrimPrefix(route, "/configs/"))
	case strings.HasPrefix(route, "/images/") && strings.HasSuffix(route, "/json") && r.Method == http.MethodGet:
		s.serveImage(w, strings.TrimSuffix(strings.TrimPrefix(route, "/images/"), "/json"))
	case route == "/containers/json" && r.Method == http.MethodGet:
		s.serveContainers(w, r)
	case strings.HasPrefix(route, "/containers/") && strings.HasSuffix(route, "/exec") && r.Method == http.MethodPost:
		s.serveExecCreate(w, r, strings.TrimSuffix(strings.TrimPrefix(route, "/containers/"), "/exec"))
	case strings.HasPrefix(route, "/exec/") && strings.HasSuffix(route, "/start") && r.Method == http.MethodPost:
		w.WriteHeader(http.StatusOK)
	case strings.HasPrefix(route, "/exec/") && strings.HasSuffix(route, "/json") && r.Method == http.MethodGet:
		s.serveExecInspect(w, strings.TrimSuffix(strings.TrimPrefix(route, "/exec/"), "/json"))
	default:
		return false
	}
	return true
}

// filters is the decoded filters query parameter: key, then the values wanted.
type filters map[string]map[string]bool

func filtersOf(r *http.Request) (filters, error) {
	var f filters
	if raw := r.URL.Query().Get("filters"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &f); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// serveList answers a GET of a filtered list: list runs under the lock and returns
// what matches (a non-nil slice, so that nothing found is [] rather than null).
func (s *Server) serveList(w http.ResponseWriter, r *http.Request, list func(f filters) []any) {
	f, err := filtersOf(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	out := list(f)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// decodeBody decodes the request's JSON body into v; on failure it answers 400 saying
// what was being decoded and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, what string, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "decoding "+what+": "+err.Error())
		return false
	}
	return true
}

// hasLabels reports whether labels has every "key=value" (or "key") of want.
func hasLabels(labels map[string]string, want map[string]bool) bool {
	for kv := range want {
		k, v, withValue := strings.Cut(kv, "=")
		got, ok := labels[k]
		if !ok || withValue && got != v {
			return false
		}
	}
	return true
}

func (s *Server) serveServiceList(w http.ResponseWriter, r *http.Request) {
	s.serveList(w, r, func(f filters) []any {
		out := []any{}
		for _, svc := range s.services {
			if hasLabels(svc.labels, f["label"]) && (len(f["name"]) == 0 || f["name"][svc.name]) {
				out = append(out, serviceJSON(svc))
			}
		}
		return out
	})
}

func (s *Server) serveCreate(w http.ResponseWriter, r *http.Request) {
	var spec specJSON
	if !decodeBody(w, r, "spec", &spec) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.services[spec.Name]; ok {
		writeError(w, http.StatusConflict, fmt.Sprintf("service %s already exists", spec.Name))
		return
	}
	svc, _ := s.serviceLocked(spec.Name)
	svc.version++
	spec.applyTo(svc)
	s.created = append(s.created, Spec{Image: svc.image, Labels: copyMap(svc.labels), Replicas: svc.replicas,
		Secrets: slices.Clone(svc.secrets), Command: slices.Clone(svc.command), Job: svc.job})
	s.convergeLocked(svc)
	s.emitLocked(event{action: "create", id: svc.id, name: svc.name})
	writeJSON(w, http.StatusCreated, map[string]any{"ID": svc.id})
}

func (s *Server) serveRemove(w http.ResponseWriter, ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.lookupLocked(ref)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", ref))
		return
	}
	delete(s.services, svc.name)
	s.emitLocked(event{action: "remove", id: svc.id, name: svc.name})
	w.WriteHeader(http.StatusOK)
}

// serveLogs writes the tasks' output in the multiplexed format of a container without
// a TTY: an 8-byte header (stream 1, big-endian length), then the bytes.
func (s *Server) serveLogs(w http.ResponseWriter, ref string) {
	s.mu.Lock()
	svc, ok := s.lookupLocked(ref)
	var logs []string
	if ok {
		for _, t := range svc.tasks {
			logs = append(logs, t.Logs)
		}
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", ref))
		return
	}
	w.Header().Set("Content-Type", "application/vnd.docker.multiplexed-stream")
	w.WriteHeader(http.StatusOK)
	for _, l := range logs {
		if l == "" {
			continue
		}
		hdr := make([]byte, 8)
		hdr[0] = 1
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(l)))
		_, _ = w.Write(append(hdr, l...))
	}
}

func (s *Server) serveTasks(w http.ResponseWriter, r *http.Request) {
	s.serveList(w, r, func(f filters) []any {
		out := []any{}
		for _, svc := range s.services {
			if len(f["service"]) > 0 && !f["service"][svc.name] && !f["service"][svc.id] {
				continue
			}
			for _, t := range svc.tasks {
				if len(f["desired-state"]) > 0 && !f["desired-state"][t.DesiredState] {
					continue
				}
				out = append(out, map[string]any{
					"ID": t.id, "ServiceID": svc.id, "Slot": t.slot, "NodeID": "node1",
					"Version":      map[string]any{"Index": 1},
					"Spec":         map[string]any{"ContainerSpec": map[string]any{"Image": t.Image}},
					"DesiredState": t.DesiredState,
					"Status": map[string]any{
						"Timestamp": "2026-11-26T20:15:35.123456789Z", "State": t.State, "Err": t.Err,
						"ContainerStatus": map[string]any{"ContainerID": t.container, "ExitCode": t.ExitCode},
					},
				})
			}
		}
		return out
	})
}

func (s *Server) serveSecrets(w http.ResponseWriter, r *http.Request) {
	s.serveObjects(w, r, s.secrets)
}

func (s *Server) serveConfigs(w http.ResponseWriter, r *http.Request) {
	s.serveObjects(w, r, s.configs)
}

// serveObjects lists the secrets or configs in objects that match the name filter.
func (s *Server) serveObjects(w http.ResponseWriter, r *http.Request, objects map[string]secret) {
	s.serveList(w, r, func(f filters) []any {
		out := []any{}
		for name, sec := range objects {
			match := len(f["name"]) == 0
			for n := range f["name"] { // the daemon's name filter matches prefixes
				match = match || strings.HasPrefix(name, n)
			}
			if match {
				out = append(out, map[string]any{"ID": sec.id, "Version": map[string]any{"Index": 1},
					"Spec": map[string]any{"Name": name, "Labels": sec.labels}})
			}
		}
		return out
	})
}

func (s *Server) serveSecretCreate(w http.ResponseWriter, r *http.Request) {
	var spec struct {
		Name   string
		Labels map[string]string
		Data   []byte
	}
	if !decodeBody(w, r, "secret", &spec) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.secrets[spec.Name]; ok {
		writeError(w, http.StatusConflict, "rpc error: code = AlreadyExists desc = secret "+spec.Name+" already exists")
		return
	}
	id := s.newIDLocked("sec")
	s.secrets[spec.Name] = secret{id: id, labels: copyMap(spec.Labels), data: spec.Data}
	writeJSON(w, http.StatusCreated, map[string]any{"ID": id})
}

func (s *Server) serveImage(w http.ResponseWriter, ref string) {
	s.mu.Lock()
	ok := s.images[ref]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "No such image: "+ref)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"Id": "sha256:" + strings.Repeat("0", 64), "RepoTags": []string{ref}})
}

// serveContainers lists the containers of running tasks, filtered by label
// com.docker.swarm.service.name, the one filter the fake knows.
func (s *Server) serveContainers(w http.ResponseWriter, r *http.Request) {
	s.serveList(w, r, func(f filters) []any {
		out := []any{}
		for _, svc := range s.services {
			labels := map[string]string{"com.docker.swarm.service.name": svc.name, "com.docker.swarm.service.id": svc.id}
			if !hasLabels(labels, f["label"]) {
				continue
			}
			for _, t := range svc.tasks {
				if t.State == "running" {
					out = append(out, map[string]any{"Id": t.container, "Image": t.Image, "Labels": labels, "State": "running"})
				}
			}
		}
		return out
	})
}

func (s *Server) serveExecCreate(w http.ResponseWriter, r *http.Request, container string) {
	var body struct{ Cmd []string }
	if !decodeBody(w, r, "exec", &body) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exit := 0
	if s.exec != nil {
		exit = s.exec(container, body.Cmd)
	}
	id := s.newIDLocked("exec")
	s.execs[id] = &execRun{container: container, cmd: body.Cmd, exit: exit}
	writeJSON(w, http.StatusCreated, map[string]any{"Id": id})
}

func (s *Server) serveExecInspect(w http.ResponseWriter, id string) {
	s.mu.Lock()
	e, ok := s.execs[id]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "No such exec instance: "+id)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ID": id, "Running": false, "ExitCode": e.exit, "ContainerID": e.container})
}
