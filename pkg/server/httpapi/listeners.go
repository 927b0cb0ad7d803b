package httpapi

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// sideServer is a listener of its own beside the public one, never paced: the probe
// listener (/healthz, /readyz and /metrics only, for the container's healthcheck and
// Prometheus), so that a storm of upgrades on the public listener neither delays a probe
// past its timeout nor leaves a gap in the metrics that would show the storm; and the
// profile listener (Go's profiles only).
type sideServer struct {
	what string // "probes" or "profiles": in errors
	addr string
	srv  *http.Server
	ln   net.Listener
}

func (s *Server) newSideServer(what, addr string, mux *http.ServeMux, errorLog *log.Logger) *sideServer {
	mux.HandleFunc("/", notFound)
	return &sideServer{what: what, addr: addr, srv: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.setIdentity(w)
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}}
}

func (s *Server) newProbeServer(metrics http.Handler, errorLog *log.Logger) *sideServer {
	mux := http.NewServeMux()
	s.probeRoutes(mux, metrics)
	return s.newSideServer("probes", s.cfg.ProbeAddr, mux, errorLog)
}

// newProfileServer serves net/http/pprof's handlers on a mux of its own: the package
// also registers them on http.DefaultServeMux, which no listener of the replica serves,
// so that profiles are only where ROOMCAST_PPROF_ADDR puts them. A CPU profile or trace
// may run for as long as its ?seconds= asks, so the server has no write timeout.
func (s *Server) newProfileServer(errorLog *log.Logger) *sideServer {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return s.newSideServer("profiles", s.cfg.PprofAddr, mux, errorLog)
}

func (p *sideServer) listen() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("listening for %s on %s: %w", p.what, p.addr, err)
	}
	p.ln = ln
	return nil
}
