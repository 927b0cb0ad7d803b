package monitoring_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"roomcast/pkg/testenv"
)

// TestEdgeCountsNginxResponsesByClass: roomcast-edge counts what its nginx answers, by
// status class (roomcast_edge_http_responses_total, the nginx 5xx alert's numbers),
// including the 5xx an app replica sends and the 404 nginx answers itself.
func TestEdgeCountsNginxResponsesByClass(t *testing.T) {
	nginxBin := testenv.Program(t, "nginx")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(app.Close)
	nginxPort, _, metricsAddr := runningEdge(t, nginxBin, app.Listener.Addr().(*net.TCPAddr).Port)

	client := http.Client{Timeout: 5 * time.Second}
	for path, n := range map[string]int{"/": 3, "/fail": 2, "/metrics": 1} { // nginx answers /metrics 404 itself
		for range n {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", nginxPort, path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	want := map[string]float64{"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 2}
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got = responses(t, metricsAddr)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("roomcast_edge_http_responses_total %v, want %v", got, want)
		}
	}
}

// responses reads roomcast_edge_http_responses_total by code from /metrics at addr.
func responses(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	if f, ok := families["roomcast_edge_http_responses_total"]; ok {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
