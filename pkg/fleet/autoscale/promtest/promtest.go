// Package promtest is a fake Prometheus HTTP API for tests: an httptest server
// answering /api/v1/query (GET and POST, as Prometheus does) from answers the test
// sets per expression, in the JSON Prometheus writes. Answers can be values, empty
// results, several series, NaN, API errors, bare HTTP errors (a proxy in front), or
// no answer at all until the client gives up. It records every query.
//
// The JSON is written by hand in Prometheus' field names rather than with the
// client's types, so a mismatch between the client and the wire would show.
// A Server is safe for concurrent use.
package promtest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Query is one query the server received.
type Query struct {
	Method  string
	Expr    string
	Time    time.Time // zero when the client sent none
	Timeout string    // the timeout parameter, as sent
}

// Response is how the server answers a query.
type Response struct {
	status      int
	contentType string
	body        string
	hang        bool
}

// Value is a vector of one series with value v at time at.
func Value(v float64, at time.Time) Response {
	return vector([]float64{v}, at)
}

// Values is a vector of one series per value, all at time at.
func Values(at time.Time, vs ...float64) Response { return vector(vs, at) }

// Empty is an empty vector (no series matched).
func Empty() Response { return vector(nil, time.Time{}) }

// Scalar is a scalar result.
func Scalar(v float64, at time.Time) Response {
	return success(map[string]any{"resultType": "scalar", "result": pair(v, at)})
}

// Matrix is a range result of one series with one point (what a query such as
// x[1m] returns).
func Matrix(v float64, at time.Time) Response {
	return success(map[string]any{"resultType": "matrix", "result": []any{
		map[string]any{"metric": map[string]string{"__name__": "x"}, "values": []any{pair(v, at)}},
	}})
}

// Error is an API error, as Prometheus writes it (e.g. 400 "bad_data", 422
// "execution", 503 "unavailable").
func Error(status int, errorType, msg string) Response {
	b, _ := json.Marshal(map[string]string{"status": "error", "errorType": errorType, "error": msg})
	return Response{status: status, contentType: "application/json", body: string(b)}
}

// Raw is a bare HTTP answer, such as a proxy's HTML 502.
func Raw(status int, contentType, body string) Response {
	return Response{status: status, contentType: contentType, body: body}
}

// Hang answers nothing until the client gives up (or the server closes).
func Hang() Response { return Response{hang: true} }

func vector(vs []float64, at time.Time) Response {
	result := []any{}
	for i, v := range vs {
		result = append(result, map[string]any{
			"metric": map[string]string{"instance": fmt.Sprintf("replica-%d", i)},
			"value":  pair(v, at),
		})
	}
	return success(map[string]any{"resultType": "vector", "result": result})
}

// pair is [ <unix seconds>, "<value>" ], with NaN and infinities spelled as Prometheus
// spells them.
func pair(v float64, at time.Time) []any {
	var s string
	switch {
	case math.IsNaN(v):
		s = "NaN"
	case math.IsInf(v, 1):
		s = "+Inf"
	case math.IsInf(v, -1):
		s = "-Inf"
	default:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return []any{json.Number(strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)), s}
}

func success(data any) Response {
	b, _ := json.Marshal(map[string]any{"status": "success", "data": data})
	return Response{status: http.StatusOK, contentType: "application/json", body: string(b)}
}

// Server is a fake Prometheus.
type Server struct {
	srv  *httptest.Server
	quit chan struct{}
	once sync.Once

	mu       sync.Mutex
	answers  map[string]Response
	fallback Response
	queries  []Query
}

// NewServer starts a fake Prometheus, closed in t.Cleanup. A query without an answer
// set gets an empty result.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{quit: make(chan struct{}), answers: map[string]Response{}, fallback: Empty()}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.Close)
	return s
}

// URL is the server's address, as PROMETHEUS_URL.
func (s *Server) URL() string { return s.srv.URL }

// Close ends hanging answers and stops the server. It is safe to call twice.
func (s *Server) Close() {
	s.once.Do(func() { close(s.quit) })
	s.srv.Close()
}

// Set makes the server answer the expression expr (exactly as sent) with r.
func (s *Server) Set(expr string, r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[expr] = r
}

// SetDefault is the answer to expressions without one of their own.
func (s *Server) SetDefault(r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallback = r
}

// Queries returns the queries received so far.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeResponse(w, Error(http.StatusBadRequest, "bad_data", err.Error()))
		return
	}
	q := Query{Method: r.Method, Expr: r.Form.Get("query"), Timeout: r.Form.Get("timeout")}
	if q.Timeout != "" && !validDuration(q.Timeout) {
		// As Prometheus answers it (2.42 here, and later ones alike).
		writeResponse(w, Error(http.StatusBadRequest, "bad_data",
			fmt.Sprintf("invalid parameter \"timeout\": cannot parse %q to a valid duration", q.Timeout)))
		return
	}
	if ts := r.Form.Get("time"); ts != "" {
		f, err := strconv.ParseFloat(ts, 64)
		if err != nil {
			writeResponse(w, Error(http.StatusBadRequest, "bad_data", "invalid time "+strconv.Quote(ts)))
			return
		}
		q.Time = time.UnixMilli(int64(math.Round(f * 1000)))
	}
	s.mu.Lock()
	s.queries = append(s.queries, q)
	resp, ok := s.answers[q.Expr]
	if !ok {
		resp = s.fallback
	}
	s.mu.Unlock()
	if q.Expr == "" {
		resp = Error(http.StatusBadRequest, "bad_data", "1:1: parse error: no expression found in input")
	}
	if resp.hang {
		select {
		case <-r.Context().Done():
		case <-s.quit:
		}
		return
	}
	writeResponse(w, resp)
}

// promDuration is the duration syntax of Prometheus' API parameters (besides a plain
// number of seconds): whole numbers with units, largest first, e.g. 1m30s or 500ms.
var promDuration = regexp.MustCompile(`^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$`)

func validDuration(s string) bool {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return true
	}
	return s != "" && promDuration.MatchString(s)
}

func writeResponse(w http.ResponseWriter, r Response) {
	w.Header().Set("Content-Type", r.contentType)
	w.WriteHeader(r.status)
	_, _ = w.Write([]byte(r.body))
}
