package httpapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/server/httpapi"
	"roomcast/pkg/testenv"
)

func TestReadinessStates(t *testing.T) {
	tests := []struct {
		name     string
		draining bool
		broker   error
		code     int
		status   string
		ready    float64
	}{
		{"ready", false, nil, 200, "ready", 1},
		{"broker down", false, errors.New("nats: disconnected"), 503, "not_ready", 0},
		{"draining", true, nil, 503, "draining", 0},
		{"draining beats broker down", true, errors.New("down"), 503, "draining", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			id := httpapi.Identity{Color: "green", Instance: "g1", Version: "v9"}
			s := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Identity: id},
				http.NotFoundHandler(),
				httpapi.Readiness{Draining: func() bool { return tt.draining }, Broker: func() error { return tt.broker }},
				reg, testenv.Logger(t), reg)
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.code || body["status"] != tt.status || body["color"] != "green" ||
				body["instance"] != "g1" || body["version"] != "v9" {
				t.Fatalf("%d %v", rec.Code, body)
			}
			if tt.code != 200 && body["reason"] == "" {
				t.Errorf("no reason in %v", body)
			}
			if rec.Header().Get(httpapi.HeaderColor) != "green" || rec.Header().Get(httpapi.HeaderInstance) != "g1" {
				t.Errorf("identity headers: %v", rec.Header())
			}
			if v := testenv.Metric(t, reg, "roomcast_ready"); v != tt.ready {
				t.Errorf("roomcast_ready = %v", v)
			}
			wantDraining := 0.0
			if tt.draining {
				wantDraining = 1
			}
			if v := testenv.Metric(t, reg, "roomcast_draining"); v != wantDraining {
				t.Errorf("roomcast_draining = %v", v)
			}
		})
	}
}
