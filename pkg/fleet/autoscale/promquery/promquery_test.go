package promquery_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/fleet/autoscale"
	"roomcast/pkg/fleet/autoscale/promquery"
	"roomcast/pkg/fleet/autoscale/promtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var at = time.Date(2026, 11, 26, 20, 15, 35, 123_000_000, time.UTC)

const expr = `sum(roomcast_connections_active{color="blue"})`

func mustClient(t *testing.T, url string) *promquery.Client {
	t.Helper()
	c, err := promquery.New(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestQueryResults(t *testing.T) {
	tests := []struct {
		name    string
		answer  promtest.Response
		want    float64
		wantAt  time.Time
		wantErr error // nil: success
		errText string
	}{
		{"one series", promtest.Value(100, at), 100, at, nil, ""},
		{"fractional", promtest.Value(12.5, at), 12.5, at, nil, ""},
		{"scalar", promtest.Scalar(7, at), 7, at, nil, ""},
		{"an old sample keeps its time", promtest.Value(3, at.Add(-time.Hour)), 3, at.Add(-time.Hour), nil, ""},
		{"NaN is a value (the caller refuses it)", promtest.Value(math.NaN(), at), math.NaN(), at, nil, ""},
		{"empty result", promtest.Empty(), 0, time.Time{}, autoscale.ErrNoData, ""},
		{"several series", promtest.Values(at, 1, 2, 3), 0, time.Time{}, autoscale.ErrBadResult, "3 series"},
		{"a range", promtest.Matrix(1, at), 0, time.Time{}, autoscale.ErrBadResult, "matrix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := promtest.NewServer(t)
			fake.Set(expr, tt.answer)
			s, err := mustClient(t, fake.URL()).Query(context.Background(), expr, at)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("error %v, want %v (%q)", err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !(s.Value == tt.want || math.IsNaN(tt.want) && math.IsNaN(s.Value)) || !s.Time.Equal(tt.wantAt) {
				t.Fatalf("sample %v at %v, want %v at %v", s.Value, s.Time, tt.want, tt.wantAt)
			}
		})
	}
}

func TestQuerySendsTheExpressionTheTimeAndATimeout(t *testing.T) {
	for _, tt := range []struct {
		name     string
		deadline time.Duration
		timeout  string
	}{
		// Whole seconds, as Prometheus parses them (the fake refuses "2.999s" as it does).
		{"the context's remaining time in whole seconds", 3 * time.Second, "2s"},
		{"no timeout parameter under a second", 900 * time.Millisecond, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := promtest.NewServer(t)
			fake.Set(expr, promtest.Value(1, at))
			ctx, cancel := context.WithTimeout(context.Background(), tt.deadline)
			defer cancel()
			if _, err := mustClient(t, fake.URL()).Query(ctx, expr, at); err != nil {
				t.Fatal(err)
			}
			qs := fake.Queries()
			if len(qs) != 1 {
				t.Fatalf("queries %+v", qs)
			}
			q := qs[0]
			if q.Expr != expr || !q.Time.Equal(at) || q.Method != http.MethodPost {
				t.Fatalf("query %+v, want POST of %q at %v", q, expr, at)
			}
			if q.Timeout != tt.timeout {
				t.Fatalf("timeout parameter %q, want %q", q.Timeout, tt.timeout)
			}
		})
	}
}

func TestQueryErrors(t *testing.T) {
	tests := []struct {
		name   string
		answer promtest.Response
		text   string
	}{
		{"bad PromQL", promtest.Error(http.StatusBadRequest, "bad_data", "1:5: parse error: unexpected"), "parse error"},
		{"evaluation failed", promtest.Error(http.StatusUnprocessableEntity, "execution", "query processing would load too many samples"), "too many samples"},
		{"unavailable", promtest.Error(http.StatusServiceUnavailable, "unavailable", "TSDB not ready"), "503"},
		{"500 from a proxy", promtest.Raw(http.StatusInternalServerError, "text/html", "<html>oops</html>"), "500"},
		{"502 from a proxy", promtest.Raw(http.StatusBadGateway, "text/html", "<html>bad gateway</html>"), "502"},
		{"not JSON", promtest.Raw(http.StatusOK, "application/json", "{"), "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := promtest.NewServer(t)
			fake.Set(expr, tt.answer)
			_, err := mustClient(t, fake.URL()).Query(context.Background(), expr, at)
			if err == nil || errors.Is(err, autoscale.ErrNoData) || errors.Is(err, autoscale.ErrBadResult) ||
				!strings.Contains(err.Error(), tt.text) || !strings.Contains(err.Error(), "roomcast_connections_active") {
				t.Fatalf("error %v, want a query failure naming the query and saying %q", err, tt.text)
			}
		})
	}
}

func TestQueryTimesOut(t *testing.T) {
	fake := promtest.NewServer(t)
	fake.Set(expr, promtest.Hang())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := mustClient(t, fake.URL()).Query(ctx, expr, at)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the deadline", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("took %v for a 200ms deadline", took)
	}
}

func TestUnreachable(t *testing.T) {
	fake := promtest.NewServer(t)
	url := fake.URL()
	fake.Close()
	if _, err := mustClient(t, url).Query(context.Background(), expr, at); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("error %v, want connection refused", err)
	}
}

func TestNewRefusesABadAddress(t *testing.T) {
	if _, err := promquery.New("http://bad host:9090"); err == nil {
		t.Fatal("accepted")
	}
}
