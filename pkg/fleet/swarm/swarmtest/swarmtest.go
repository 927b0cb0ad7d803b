// Package swarmtest is a fake Docker Engine API for tests: an httptest server that
// speaks the Swarm routes package swarm uses (GET and HEAD /_ping; services: inspect,
// list, create, update at a version, remove, logs; tasks; secrets and configs (list,
// secret create, remove unless a service mounts it); image inspect;
// containers of a service and exec in them; GET /v<version>/events as a stream of
// JSON lines), with services held in memory. Its "orchestrator" turns every change of a
// service into tasks at once (or as a test says, see Converge), and a replicated job
// runs to the result SetJob names. Tests change labels and replicas, remove services,
// make requests fail, and cut event streams, then look at which API versions and
// routes the client used.
//
// The JSON it writes is written by hand in the daemon's field names rather than with
// the client's own types, so a mismatch between the client and the wire would show.
// A Server is safe for concurrent use.
package swarmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// APIVersion is what the fake reports in its ping, so clients negotiate down to it:
// the oldest version roomcast supports (Docker 20.10).
const APIVersion = "1.41"

// Server is a fake Engine API.
type Server struct {
	srv *httptest.Server

	mu       sync.Mutex
	services map[string]*service // by name
	failures []failure
	streams  map[chan event]struct{}
	refuse   bool // event streams answer 500 while set
	requests []string
	nextID   int
	quit     chan struct{}

	converge map[string]func(image string, replicas uint64) []Task // by service name
	job      jobResult
	exec     func(container string, cmd []string) int
	execs    map[string]*execRun
	secrets  map[string]secret // by name
	configs  map[string]secret // by name
	images   map[string]bool
	created  []Spec
}

type service struct {
	id       string
	name     string
	version  uint64
	labels   map[string]string
	replicas *uint64
	image    string
	secrets  []string // secret names
	configs  []string // config names
	job      bool
	command  []string // job's command and args
	tasks    []*task
}

type failure struct {
	route  *regexp.Regexp
	status int
	left   int
}

type event struct {
	action string
	id     string
	name   string
}

// NewServer starts a fake Engine API, closed in t.Cleanup.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		services: map[string]*service{},
		streams:  map[chan event]struct{}{},
		quit:     make(chan struct{}),
		converge: map[string]func(string, uint64) []Task{},
		execs:    map[string]*execRun{},
		secrets:  map[string]secret{},
		configs:  map[string]secret{},
		images:   map[string]bool{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.Close)
	return s
}

// Close ends open event streams and stops the server. It is safe to call twice.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	s.mu.Unlock()
	s.srv.Close()
}

// Host is the server's address as DOCKER_HOST: tcp://127.0.0.1:port.
func (s *Server) Host() string { return "tcp://" + s.srv.Listener.Addr().String() }

// SetService creates or updates the service name with these labels and replica count
// (nil: a global service), bumps its version and emits an event on open streams.
func (s *Server) SetService(name string, labels map[string]string, replicas *uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, action := s.serviceLocked(name)
	if svc.image == "" {
		svc.image = "roomcast/edge:test"
	}
	svc.version++
	svc.labels = copyMap(labels)
	svc.replicas = replicas
	s.convergeLocked(svc)
	s.emitLocked(event{action: action, id: svc.id, name: name})
}

// serviceLocked returns the service name, made if missing, and the event action.
func (s *Server) serviceLocked(name string) (*service, string) {
	if svc, ok := s.services[name]; ok {
		return svc, "update"
	}
	svc := &service{id: s.newIDLocked("svc"), name: name}
	s.services[name] = svc
	return svc, "create"
}

func (s *Server) newIDLocked(kind string) string {
	s.nextID++
	return fmt.Sprintf("%s%0*d", kind, 26-len(kind), s.nextID)
}

// SetLabel sets one label of the existing service name, as `docker service update
// --label-add` does (version bump and an update event). It panics if there is no such
// service.
func (s *Server) SetLabel(name, key, value string) {
	s.SetLabelQuietly(name, key, value)
	s.mu.Lock()
	defer s.mu.Unlock()
	svc := s.services[name]
	s.emitLocked(event{action: "update", id: svc.id, name: name})
}

// SetLabelQuietly is SetLabel without the event, as if the stream had missed it.
func (s *Server) SetLabelQuietly(name, key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.services[name]
	if !ok {
		panic("swarmtest: no service " + name)
	}
	svc.version++
	labels := copyMap(svc.labels)
	labels[key] = value
	svc.labels = labels
}

// Labels returns a copy of the labels of service name (nil if there is none).
func (s *Server) Labels(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if svc, ok := s.services[name]; ok {
		return copyMap(svc.labels)
	}
	return nil
}

// Replicas returns the replica count of service name (false if it has none).
func (s *Server) Replicas(name string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if svc, ok := s.services[name]; ok && svc.replicas != nil {
		return *svc.replicas, true
	}
	return 0, false
}

// RemoveService removes the service name and emits a remove event.
func (s *Server) RemoveService(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if svc, ok := s.services[name]; ok {
		delete(s.services, name)
		s.emitLocked(event{action: "remove", id: svc.id, name: name})
	}
}

// Emit sends an update event for a service name that need not exist (for example one
// whose name only shares a prefix with a watched one).
func (s *Server) Emit(action, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "unknown"
	if svc, ok := s.services[name]; ok {
		id = svc.id
	}
	s.emitLocked(event{action: action, id: id, name: name})
}

// Fail makes the next n requests whose path (without the /v1.xx prefix) matches the
// regular expression route answer status with a JSON error body; n < 0 means until
// Fail is called again for that route with n = 0.
func (s *Server) Fail(route string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	re := regexp.MustCompile(route)
	kept := s.failures[:0]
	for _, f := range s.failures {
		if f.route.String() != route {
			kept = append(kept, f)
		}
	}
	s.failures = kept
	if n != 0 {
		s.failures = append(s.failures, failure{route: re, status: status, left: n})
	}
}

// CutStreams ends every open event stream (the client sees the response end).
func (s *Server) CutStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.streams {
		close(ch)
		delete(s.streams, ch)
	}
}

// RefuseStreams makes new event streams answer 500 (true) or work again (false);
// open streams are cut when refusing starts.
func (s *Server) RefuseStreams(refuse bool) {
	s.mu.Lock()
	s.refuse = refuse
	s.mu.Unlock()
	if refuse {
		s.CutStreams()
	}
}

// Streams is the number of open event streams.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Requests returns "METHOD path" of every request so far, the path with its version
// prefix (e.g. "GET /v1.41/services/edge_nginx").
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Count is the number of requests so far whose "METHOD path" contains substr.
func (s *Server) Count(substr string) int {
	n := 0
	for _, r := range s.Requests() {
		if strings.Contains(r, substr) {
			n++
		}
	}
	return n
}

func (s *Server) emitLocked(ev event) {
	for ch := range s.streams {
		select {
		case ch <- ev:
		default: // a stream that does not keep up loses events, like a real one may
		}
	}
}

var versioned = regexp.MustCompile(`^/v(1\.[0-9]+)(/.*)$`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	s.mu.Unlock()

	if r.URL.Path == "/_ping" {
		w.Header().Set("Api-Version", APIVersion)
		w.Header().Set("Ostype", "linux")
		w.Header().Set("Swarm", "active/manager")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte("OK"))
		}
		return
	}
	m := versioned.FindStringSubmatch(r.URL.Path)
	if m == nil {
		writeError(w, http.StatusBadRequest, "unversioned route "+r.URL.Path)
		return
	}
	route := m[2]
	if status, ok := s.failing(route); ok {
		writeError(w, status, "injected failure for "+route)
		return
	}
	switch {
	case route == "/events" && r.Method == http.MethodGet:
		s.serveEvents(w, r)
	case s.serveMore(w, r, route):
	case strings.HasPrefix(route, "/services/") && strings.HasSuffix(route, "/update") && r.Method == http.MethodPost:
		s.serveUpdate(w, r, strings.TrimSuffix(strings.TrimPrefix(route, "/services/"), "/update"))
	case strings.HasPrefix(route, "/services/") && r.Method == http.MethodGet:
		s.serveInspect(w, strings.TrimPrefix(route, "/services/"))
	default:
		writeError(w, http.StatusNotFound, "page not found")
	}
}

func (s *Server) failing(route string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.failures {
		f := &s.failures[i]
		if f.left != 0 && f.route.MatchString(route) {
			if f.left > 0 {
				f.left--
			}
			return f.status, true
		}
	}
	return 0, false
}

// lookupLocked finds a service by name, ID or unique ID prefix, as the daemon does.
func (s *Server) lookupLocked(ref string) (*service, bool) {
	if svc, ok := s.services[ref]; ok {
		return svc, true
	}
	for _, svc := range s.services {
		if svc.id == ref || strings.HasPrefix(svc.id, ref) {
			return svc, true
		}
	}
	return nil, false
}

func (s *Server) serveInspect(w http.ResponseWriter, ref string) {
	s.mu.Lock()
	svc, ok := s.lookupLocked(ref)
	var body map[string]any
	if ok {
		body = serviceJSON(svc)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", ref))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func serviceJSON(svc *service) map[string]any {
	mode := map[string]any{"Global": map[string]any{}}
	if svc.replicas != nil {
		mode = map[string]any{"Replicated": map[string]any{"Replicas": *svc.replicas}}
	}
	labels := svc.labels
	if labels == nil {
		labels = map[string]string{}
	}
	if svc.job {
		mode = map[string]any{"ReplicatedJob": map[string]any{"MaxConcurrent": 1, "TotalCompletions": 1}}
	}
	secrets := []any{}
	for _, name := range svc.secrets {
		secrets = append(secrets, map[string]any{"SecretName": name, "SecretID": "id-" + name, "File": map[string]any{"Name": name}})
	}
	configs := []any{}
	for _, name := range svc.configs {
		configs = append(configs, map[string]any{"ConfigName": name, "ConfigID": "id-" + name, "File": map[string]any{"Name": name}})
	}
	return map[string]any{
		"ID":        svc.id,
		"Version":   map[string]any{"Index": svc.version},
		"CreatedAt": "2026-11-26T20:15:35.123456789Z",
		"UpdatedAt": "2026-11-26T20:15:35.123456789Z",
		"Spec": map[string]any{
			"Name":   svc.name,
			"Labels": labels,
			"TaskTemplate": map[string]any{
				"ContainerSpec": map[string]any{"Image": svc.image, "Secrets": secrets, "Configs": configs, "Command": svc.command},
			},
			"Mode": mode,
		},
		"Endpoint": map[string]any{"Spec": map[string]any{}},
	}
}

func (s *Server) serveUpdate(w http.ResponseWriter, r *http.Request, ref string) {
	var spec specJSON
	if !decodeBody(w, r, "spec", &spec) {
		return
	}
	version, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid version")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.lookupLocked(ref)
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, fmt.Sprintf("service %s not found", ref))
		return
	case version != svc.version:
		writeError(w, http.StatusInternalServerError, "rpc error: code = Unknown desc = update out of sequence")
		return
	}
	svc.version++
	spec.applyTo(svc)
	s.convergeLocked(svc)
	s.emitLocked(event{action: "update", id: svc.id, name: svc.name})
	writeJSON(w, http.StatusOK, map[string]any{"Warnings": nil})
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	f, err := filtersOf(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid filters: "+err.Error())
		return
	}
	ch := make(chan event, 16)
	s.mu.Lock()
	if s.refuse {
		s.mu.Unlock()
		writeError(w, http.StatusInternalServerError, "event streams refused")
		return
	}
	s.streams[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if _, ok := s.streams[ch]; ok {
			delete(s.streams, ch)
		}
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if !matches(f, ev) {
				continue
			}
			now := time.Now()
			_ = enc.Encode(map[string]any{
				"Type":     "service",
				"Action":   ev.action,
				"Actor":    map[string]any{"ID": ev.id, "Attributes": map[string]string{"name": ev.name}},
				"scope":    "swarm",
				"time":     now.Unix(),
				"timeNano": now.UnixNano(),
			})
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// matches applies the daemon's filters for service events: type must include
// "service"; service matches the ID or a prefix of the name, as the daemon's fuzzy
// match does.
func matches(f filters, ev event) bool {
	if types, ok := f["type"]; ok && !types["service"] {
		return false
	}
	if names, ok := f["service"]; ok && len(names) > 0 {
		for n := range names {
			if n == ev.id || strings.HasPrefix(ev.name, n) {
				return true
			}
		}
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
