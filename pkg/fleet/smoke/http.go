package smoke

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names from the contract: every response of a replica carries them.
const (
	headerColor    = "X-Roomcast-Color"
	headerInstance = "X-Roomcast-Instance"
)

// Bounds on the bodies read, far above what a replica sends.
const (
	maxReadyBody   = 64 << 10
	maxMetricsBody = 16 << 20
)

// permanentError is an answer that waiting will not change (a replica of another color).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// readyBody is the JSON of /readyz.
type readyBody struct {
	Status   string `json:"status"`
	Reason   string `json:"reason"`
	Color    string `json:"color"`
	Instance string `json:"instance"`
	Version  string `json:"version"`
}

// ready polls GET /readyz until it answers 200 "ready" with the expected color, the
// color is wrong (at once), or ctx ends.
func (r *runner) ready(ctx context.Context, addr string) result {
	begin := time.Now()
	wait := r.cfg.RetryInterval
	var last error
	for attempt := 1; ; attempt++ {
		body, err := r.readyOnce(ctx, addr)
		if err == nil {
			extra := ""
			if attempt > 1 {
				extra = fmt.Sprintf(" after %d attempts", attempt)
			}
			return pass("ready", addr, "color=%s instance=%s version=%s waited=%s%s",
				body.Color, body.Instance, body.Version, since(begin), extra)
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return fail("ready", addr, "%v", err)
		}
		// An attempt cut short by the end of the wait says less than the one before.
		if last == nil || ctx.Err() == nil {
			last = err
		}
		if ctx.Err() != nil || sleep(ctx, wait) != nil {
			return fail("ready", addr, "not ready after waiting %s (%s); last answer: %v",
				since(begin), plural(attempt, "attempt"), last)
		}
		wait = min(2*wait, maxRetryInterval)
	}
}

func (r *runner) readyOnce(ctx context.Context, addr string) (readyBody, error) {
	var body readyBody
	resp, raw, err := r.get(ctx, addr, "/readyz", maxReadyBody)
	if err != nil {
		return body, err
	}
	if err := r.checkColorHeader(resp); err != nil {
		return body, err
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return body, fmt.Errorf("HTTP %d with a body that is not the JSON of /readyz: %q", resp.StatusCode, truncate(raw))
	}
	if body.Color != r.cfg.Color {
		return body, permanentError{fmt.Errorf("/readyz says color=%q, want %q", body.Color, r.cfg.Color)}
	}
	if resp.StatusCode != http.StatusOK || body.Status != "ready" {
		msg := fmt.Sprintf("HTTP %d status=%q", resp.StatusCode, body.Status)
		if body.Reason != "" {
			msg += fmt.Sprintf(" reason=%q", body.Reason)
		}
		return body, errors.New(msg)
	}
	return body, nil
}

// checkColorHeader fails, permanently, a response without the expected X-Roomcast-Color.
func (r *runner) checkColorHeader(resp *http.Response) error {
	got, ok := resp.Header[http.CanonicalHeaderKey(headerColor)]
	switch {
	case !ok:
		return permanentError{fmt.Errorf("HTTP %d without an %s header: not a roomcast replica", resp.StatusCode, headerColor)}
	case len(got) != 1 || got[0] != r.cfg.Color:
		return permanentError{fmt.Errorf("%s is %q, want %q", headerColor, strings.Join(got, ", "), r.cfg.Color)}
	}
	return nil
}

// metrics checks GET /metrics: 200, the color header, and a roomcast_build_info sample
// of value 1 whose color label is the expected one.
func (r *runner) metrics(ctx context.Context, addr string) result {
	resp, raw, err := r.get(ctx, addr, "/metrics", maxMetricsBody)
	if err != nil {
		return fail("metrics", addr, "%v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fail("metrics", addr, "HTTP %d: %q", resp.StatusCode, truncate(raw))
	}
	if err := r.checkColorHeader(resp); err != nil {
		return fail("metrics", addr, "%v", err)
	}
	samples, err := findSamples(raw, "roomcast_build_info")
	if err != nil {
		return fail("metrics", addr, "reading the exposition: %v", err)
	}
	if len(samples) == 0 {
		return fail("metrics", addr, "no roomcast_build_info in /metrics")
	}
	var colors []string
	for _, s := range samples {
		if s.labels["color"] == r.cfg.Color && s.value == 1 {
			return pass("metrics", addr, "roomcast_build_info color=%s instance=%s version=%s",
				s.labels["color"], s.labels["instance"], s.labels["version"])
		}
		colors = append(colors, fmt.Sprintf("color=%q value=%v", s.labels["color"], s.value))
	}
	return fail("metrics", addr, "roomcast_build_info has %s, want color=%q value=1", strings.Join(colors, "; "), r.cfg.Color)
}

// get does one GET bounded by the request timeout and returns the body read up to limit.
func (r *runner) get(ctx context.Context, addr, path string, limit int64) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	url := "http://" + addr + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("building GET %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "roomcast-smoke")
	// The classic text format: the one findSamples reads.
	req.Header.Set("Accept", "text/plain")
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, nil, err // a *url.Error, which names the method and the URL
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: reading the body: %w", url, err)
	}
	return resp, raw, nil
}

func truncate(b []byte) string {
	const max = 200
	b = bytes.TrimSpace(b)
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// sample is one series of a Prometheus text exposition.
type sample struct {
	labels map[string]string
	value  float64
}

// findSamples returns every sample of the metric name in a Prometheus text exposition
// (version 0.0.4): lines `name{label="value",...} value [timestamp]`.
func findSamples(text []byte, name string) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), len(text)+1)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ' && rest[0] != '\t') {
			continue // a comment, another metric, or one whose name merely starts alike
		}
		s := sample{labels: map[string]string{}}
		if rest[0] == '{' {
			var err error
			s.labels, rest, err = parseLabels(rest[1:])
			if err != nil {
				return nil, fmt.Errorf("line %q: %w", line, err)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: value: %w", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseLabels reads `a="x",b="y"}` and returns the labels and what follows the brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return nil, "", errors.New("malformed label set")
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var val strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default: // \\ and \"
					val.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				s = s[i+1:]
				closed = true
				break
			}
			val.WriteByte(c)
		}
		if !closed {
			return nil, "", errors.New("unterminated label value")
		}
		labels[key] = val.String()
	}
}
