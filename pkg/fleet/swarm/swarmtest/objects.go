package swarmtest

import (
	"net/http"
	"slices"
)

// AddSecret adds the Swarm secret name, empty, as someone before the test made it.
func (s *Server) AddSecret(name string, labels map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[name] = secret{id: s.newIDLocked("sec"), labels: copyMap(labels)}
}

// AddConfig adds the Swarm config name, as a stack deploy would make it.
func (s *Server) AddConfig(name string, labels map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configs[name] = secret{id: s.newIDLocked("cfg"), labels: copyMap(labels)}
}

// Secrets returns the names of the Swarm secrets, sorted.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedNames(s.secrets)
}

// Configs returns the names of the Swarm configs, sorted.
func (s *Server) Configs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedNames(s.configs)
}

func sortedNames(objects map[string]secret) []string {
	var out []string
	for name := range objects {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// serveObjectRemove removes the secret or config of ID (or name) id from objects; one
// a service mounts is refused, as the daemon refuses it.
func (s *Server) serveObjectRemove(w http.ResponseWriter, kind string, objects map[string]secret, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, obj := range objects {
		if obj.id != id && name != id {
			continue
		}
		for _, svc := range s.services {
			if slices.Contains(svc.secrets, name) && kind == "secret" || slices.Contains(svc.configs, name) && kind == "config" {
				writeError(w, http.StatusBadRequest, "rpc error: code = InvalidArgument desc = "+kind+" '"+name+"' is in use by the following service: "+svc.name)
				return
			}
		}
		delete(objects, name)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, http.StatusNotFound, kind+" "+id+" not found")
}
