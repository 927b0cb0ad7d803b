package httpapi

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"time"
)

// probeServer is the probe listener: /healthz, /readyz and /metrics only, for the
// container's healthcheck and Prometheus. It is never paced, so that a storm of upgrades
// on the public listener neither delays a probe past its timeout nor leaves a gap in
// the metrics that would show the storm.
type probeServer struct {
	srv *http.Server
	ln  net.Listener
}

func (s *Server) newProbeServer(metrics http.Handler, errorLog *log.Logger) *probeServer {
	mux := http.NewServeMux()
	s.probeRoutes(mux, metrics)
	mux.HandleFunc("/", notFound)
	return &probeServer{srv: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.setIdentity(w)
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog,
	}}
}

func (p *probeServer) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for probes on %s: %w", addr, err)
	}
	p.ln = ln
	return nil
}
