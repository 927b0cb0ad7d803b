package edge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// HealthFile is the file in Params.HealthDir whose presence makes nginx answer the load
// balancer's health check (/edgez) with 200; without it nginx answers 503.
const HealthFile = "ready"

// ready makes the health check pass. It runs before nginx starts: until nginx listens
// nothing answers the check anyway, and a file that cannot be written stops the start.
func (e *Edge) ready() error {
	dir := e.cfg.Params.HealthDir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the health check's directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, HealthFile), []byte("ok\n"), 0o644); err != nil {
		return fmt.Errorf("writing the health check's file: %w", err)
	}
	return nil
}

// unready makes the health check fail from the next request on; nginx serves
// everything else as before.
func (e *Edge) unready() {
	dir := e.cfg.Params.HealthDir
	if dir == "" {
		return
	}
	path := filepath.Join(dir, HealthFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// nginx would keep answering 200: the balancer notices only when nginx stops
		// accepting.
		e.log.Error("failing the health check failed", "path", path, "error", err.Error())
		return
	}
	e.log.Info("health check failing", "path", path)
}
