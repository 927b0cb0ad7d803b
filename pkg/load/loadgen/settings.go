package loadgen

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting is one knob of a Config: the roomcast-loadgen flag that sets it and, when a
// k6 script takes the same parameter, the name of that script's environment variable
// (k6 run -e NAME=value). The k6 twins read exactly the Env names of the settings of
// their scenario (see Params), with the same defaults; k6/k6_test.go checks it.
type Setting struct {
	// Flag is the roomcast-loadgen flag, without the dash.
	Flag string
	// Env is the k6 scripts' environment variable; empty for settings only the load
	// generator has (server PIDs, connection set-up, the ramp).
	Env string
	// Arg names the value in the usage text (N, D, R, URLS, PIDS).
	Arg   string
	Usage string

	scenarios []Scenario // the scenarios that read it; nil: all
	field     func(*Config) any
}

// Settings lists every setting in the order of the usage text.
func Settings() []Setting {
	fanout := []Scenario{FanoutSmall, FanoutLarge}
	sending := []Scenario{FanoutSmall, FanoutLarge, Ramp, Smoke, Release, ReconnectStorm}
	return []Setting{
		{Flag: "url", Env: "URL", Arg: "URLS", Usage: "comma-separated base URLs (ws://host:port); connections are spread round-robin over them, so a room's members land on different replicas, and a reconnect after a failed attempt tries the next one",
			field: func(c *Config) any { return &c.URLs }},
		{Flag: "duration", Env: "DURATION", Arg: "D", Usage: "sending time (fanout, smoke, release), hold time (idle, soak), or the most the whole ramp, or the whole reconnect storm (connecting, settle and storm), may take",
			field: func(c *Config) any { return &c.Duration }},
		{Flag: "rooms", Env: "ROOMS", Arg: "N", Usage: "rooms", scenarios: sending,
			field: func(c *Config) any { return &c.Rooms }},
		{Flag: "members", Env: "MEMBERS", Arg: "N", Usage: "members per room",
			field: func(c *Config) any { return &c.Members }},
		{Flag: "rate", Env: "RATE", Arg: "R", Usage: "messages/s per member (ramp: the first step's)", scenarios: sending,
			field: func(c *Config) any { return &c.Rate }},
		{Flag: "conns", Env: "CONNS", Arg: "N", Usage: "connections (idle, soak) or storm clients (reconnect-storm), in rooms of -members", scenarios: []Scenario{Idle, Soak, ReconnectStorm},
			field: func(c *Config) any { return &c.Conns }},
		{Flag: "send-every", Env: "SEND_EVERY", Arg: "D", Usage: "how often each soak connection sends a message (0s: never)", scenarios: []Scenario{Soak},
			field: func(c *Config) any { return &c.SendEvery }},
		{Flag: "grace", Env: "GRACE", Arg: "D", Usage: "wait for deliveries after sending stops; what has not arrived by then is lost",
			scenarios: []Scenario{FanoutSmall, FanoutLarge, Ramp, Smoke, Soak, Release, ReconnectStorm},
			field:     func(c *Config) any { return &c.Grace }},
		{Flag: "reconnect-base", Env: "RECONNECT_BASE", Arg: "D", Usage: "reconnect backoff: attempt n waits a random time in [0, min(max, base × 2^n)) (reconnect-storm: after a failure without Retry-After)", scenarios: []Scenario{Soak, Release, ReconnectStorm},
			field: func(c *Config) any { return &c.ReconnectBase }},
		{Flag: "reconnect-max", Env: "RECONNECT_MAX", Arg: "D", Usage: "longest reconnect backoff", scenarios: []Scenario{Soak, Release, ReconnectStorm},
			field: func(c *Config) any { return &c.ReconnectMax }},
		{Flag: "max-p95", Env: "MAX_P95", Arg: "D", Usage: "threshold: delivery latency p95 under this", scenarios: fanout,
			field: func(c *Config) any { return &c.MaxP95 }},
		{Flag: "max-p99", Env: "MAX_P99", Arg: "D", Usage: "threshold: delivery latency p99 under this (reconnect-storm: at most this, during the storm)", scenarios: append(slices.Clone(fanout), Smoke, ReconnectStorm),
			field: func(c *Config) any { return &c.MaxP99 }},
		{Flag: "max-lost", Env: "MAX_LOST", Arg: "N", Usage: "threshold: at most this many lost deliveries", scenarios: []Scenario{FanoutSmall, FanoutLarge, Smoke, Soak, Release, ReconnectStorm},
			field: func(c *Config) any { return &c.MaxLost }},
		{Flag: "max-duplicated", Env: "MAX_DUPLICATED", Arg: "N", Usage: "threshold: at most this many duplicated deliveries", scenarios: []Scenario{Smoke, Release},
			field: func(c *Config) any { return &c.MaxDuplicated }},
		{Flag: "max-unexpected-closes", Env: "MAX_UNEXPECTED_CLOSES", Arg: "N", Usage: "threshold: at most this many closes by the server", scenarios: []Scenario{Soak},
			field: func(c *Config) any { return &c.MaxUnexpectedCloses }},
		{Flag: "settle", Arg: "D", Usage: "reconnect-storm: how long the members send before the storm clients drop their connections; the storm window is measured over at least as long", scenarios: []Scenario{ReconnectStorm},
			field: func(c *Config) any { return &c.Settle }},
		{Flag: "ramp-step", Arg: "D", Usage: "duration of a ramp step", scenarios: []Scenario{Ramp},
			field: func(c *Config) any { return &c.RampStep }},
		{Flag: "ramp-factor", Arg: "F", Usage: "rate multiplier between ramp steps", scenarios: []Scenario{Ramp},
			field: func(c *Config) any { return &c.RampFactor }},
		{Flag: "ramp-max-rate", Arg: "R", Usage: "highest rate per member the ramp tries", scenarios: []Scenario{Ramp},
			field: func(c *Config) any { return &c.RampMaxRate }},
		{Flag: "ramp-max-p99", Arg: "D", Usage: "a ramp step fails above this p99 latency", scenarios: []Scenario{Ramp},
			field: func(c *Config) any { return &c.RampMaxP99 }},
		{Flag: "server-pid", Arg: "PIDS", Usage: "comma-separated PIDs (replicas, nats-server) whose CPU time and RSS are read from /proc",
			field: func(c *Config) any { return &c.ServerPIDs }},
		{Flag: "token", Env: "TOKEN", Arg: "TOKEN", Usage: "JWT sent as Authorization: Bearer on every connect and reconnect, for a server with ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY (-token-file keeps it out of the process list); never printed",
			field: func(c *Config) any { return &c.Token }},
		{Flag: "batch", Arg: "BOOL", Usage: "true: offer the batched subprotocol (" + BatchSubprotocol + "), in which the server may put several messages in one frame, one per line; each message is still counted once",
			field: func(c *Config) any { return &c.Batch }},
		{Flag: "interleave", Arg: "BOOL", Usage: "true: spread each room's sends evenly over the period (member k of every room at k/members of it) instead of a room's members sending one after another, so that a room's messages do not arrive together",
			field: func(c *Config) any { return &c.Interleave }},
		{Flag: "protocol", Arg: "NAME", Usage: "the server's protocol: roomcast, or centrifugo (Centrifugo v6's JSON protocol at <url>/connection/websocket: each client connects, subscribes to its room's channel and publishes into it; the server needs client.insecure); fanout-small, fanout-large and ramp only", scenarios: []Scenario{FanoutSmall, FanoutLarge, Ramp},
			field: func(c *Config) any { return (*string)(&c.Protocol) }},
		{Flag: "connect-timeout", Arg: "D", Usage: "dial and upgrade timeout per connection attempt",
			field: func(c *Config) any { return &c.ConnectTimeout }},
		{Flag: "connect-parallel", Arg: "N", Usage: "connections being set up at once at the start",
			field: func(c *Config) any { return &c.ConnectParallel }},
	}
}

// UsedBy reports whether scenario s reads the setting.
func (st Setting) UsedBy(s Scenario) bool {
	return st.scenarios == nil || slices.Contains(st.scenarios, s)
}

// Set parses v into the setting's field of c. The error says what is wanted.
func (st Setting) Set(c *Config, v string) error {
	switch p := st.field(c).(type) {
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New("want a duration such as 30s, 250ms or 1m30s")
		}
		*p = d
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return errors.New("want an integer")
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return errors.New("want an integer")
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return errors.New("want a number")
		}
		*p = f
	case *string:
		*p = v
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*p = b
	case *[]string:
		*p = splitList(v)
	case *[]int:
		var ids []int
		for _, part := range splitList(v) {
			id, err := strconv.Atoi(part)
			if err != nil || id < 1 {
				return errors.New("want comma-separated process ids")
			}
			ids = append(ids, id)
		}
		*p = ids
	default:
		panic(fmt.Sprintf("setting %s: field of type %T", st.Flag, p))
	}
	return nil
}

// String is the setting's value in c, in the form Set takes.
func (st Setting) String(c Config) string {
	switch p := st.field(&c).(type) {
	case *time.Duration:
		return p.String()
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *float64:
		return strconv.FormatFloat(*p, 'g', -1, 64)
	case *string:
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *[]string:
		return strings.Join(*p, ",")
	case *[]int:
		parts := make([]string, len(*p))
		for i, id := range *p {
			parts[i] = strconv.Itoa(id)
		}
		return strings.Join(parts, ",")
	default:
		panic(fmt.Sprintf("setting %s: field of type %T", st.Flag, p))
	}
}

// K6Value is the setting's value in c as the k6 scripts hold it once parsed:
// durations in milliseconds, numbers as JavaScript's String() writes them, lists joined
// by commas. Twins agree when these strings are equal.
func (st Setting) K6Value(c Config) string {
	switch p := st.field(&c).(type) {
	case *time.Duration:
		return msString(*p)
	case *float64:
		return strconv.FormatFloat(*p, 'f', -1, 64)
	default:
		return st.String(c)
	}
}

// Params lists the settings scenario s shares with its k6 twin: those with an Env
// that s reads.
func Params(s Scenario) []Setting {
	var out []Setting
	for _, st := range Settings() {
		if st.Env != "" && st.UsedBy(s) {
			out = append(out, st)
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// K6Twin is the k6 script that mirrors a scenario: `k6 run` of Script in k6/ with Env
// set measures what the scenario measures, with the same parameters and metric names.
type K6Twin struct {
	Scenario Scenario
	Script   string
	// Env is what `k6 run -e` must add to the script's defaults to get the scenario's.
	Env map[string]string
}

// K6Twins lists the scenarios with a k6 script. Ramp, Idle and ReconnectStorm have none:
// they measure the server's limits, memory and admission, which k6 users measure their
// own way.
func K6Twins() []K6Twin {
	return []K6Twin{
		{Scenario: FanoutSmall, Script: "fanout.js"},
		{Scenario: FanoutLarge, Script: "fanout.js", Env: map[string]string{"ROOMS": "100", "MEMBERS": "20"}},
		{Scenario: Smoke, Script: "smoke.js"},
		{Scenario: Soak, Script: "soak.js"},
		{Scenario: Release, Script: "release.js"},
	}
}

// MetricKind is how a k6 custom metric aggregates.
type MetricKind string

// The kinds of k6 custom metrics used.
const (
	KindCounter MetricKind = "counter"
	// KindTrend is a k6 Trend of durations (isTime), in milliseconds.
	KindTrend MetricKind = "trend"
	// KindRate is the share of true samples (k6's built-in checks).
	KindRate MetricKind = "rate"
)

// MetricName is a k6 custom metric of a scenario, which the loadgen reports under the
// same name (Report.Metrics).
type MetricName struct {
	Name string
	Kind MetricKind
	// Builtin marks a metric k6 defines itself (checks), which scripts do not create.
	Builtin bool
}

// The metric names, shared with k6/lib/metrics.js. Deliveries are counted per
// (message, member): a message sent into a room of 10 members is expected 10 times.
const (
	MetricSent             = "roomcast_messages_sent"
	MetricExpected         = "roomcast_messages_expected"
	MetricDelivered        = "roomcast_messages_delivered"
	MetricLost             = "roomcast_messages_lost"
	MetricDuplicated       = "roomcast_messages_duplicated"
	MetricUnconfirmed      = "roomcast_messages_unconfirmed"
	MetricLatency          = "roomcast_delivery_latency"
	MetricErrorFrames      = "roomcast_error_frames"
	MetricUnexpectedCloses = "roomcast_unexpected_closes"
	MetricReconnects       = "roomcast_reconnects"
	MetricReconnectTime    = "roomcast_reconnect_time"
	MetricConnectFailures  = "roomcast_connect_failures"
	MetricHistoryTruncated = "roomcast_history_truncated"
	// MetricJoinFailures is the reconnecting scenarios' (soak, release): members whose
	// first connection failed. Their reconnects may fail while colors flip, so
	// MetricConnectFailures cannot be held at zero there.
	MetricJoinFailures = "roomcast_join_failures"
	// MetricUnanswered and MetricLostUntold are the reconnecting scenarios' too:
	// messages lost with their sender not told, and deliveries lost at members never
	// told of a gap (ReconnectResult.Unanswered, LostUntold).
	MetricUnanswered = "roomcast_messages_unanswered"
	MetricLostUntold = "roomcast_messages_lost_untold"
	MetricChecks     = "checks"
	// MetricStormNotBack is reconnect-storm's alone (it has no k6 twin): the storm
	// clients that had not reconnected when the storm window ended.
	MetricStormNotBack = "roomcast_storm_not_back"
)

// Metrics lists the metrics scenario s reports: what its k6 twin creates (plus k6's
// checks for smoke). Ramp and idle report none. Reconnect-storm, which has no twin,
// reports the members' deliveries during the storm window under the same names, and its
// storm clients' reconnects.
func Metrics(s Scenario) []MetricName {
	base := []MetricName{
		{Name: MetricSent, Kind: KindCounter},
		{Name: MetricExpected, Kind: KindCounter},
		{Name: MetricDelivered, Kind: KindCounter},
		{Name: MetricLost, Kind: KindCounter},
		{Name: MetricDuplicated, Kind: KindCounter},
		{Name: MetricLatency, Kind: KindTrend},
		{Name: MetricErrorFrames, Kind: KindCounter},
		{Name: MetricUnexpectedCloses, Kind: KindCounter},
		{Name: MetricConnectFailures, Kind: KindCounter},
	}
	switch s {
	case FanoutSmall, FanoutLarge:
		return base
	case Smoke:
		return append(base, MetricName{Name: MetricChecks, Kind: KindRate, Builtin: true})
	case Soak, Release:
		return append(base,
			MetricName{Name: MetricUnconfirmed, Kind: KindCounter},
			MetricName{Name: MetricUnanswered, Kind: KindCounter},
			MetricName{Name: MetricLostUntold, Kind: KindCounter},
			MetricName{Name: MetricReconnects, Kind: KindCounter},
			MetricName{Name: MetricReconnectTime, Kind: KindTrend},
			MetricName{Name: MetricHistoryTruncated, Kind: KindCounter},
			MetricName{Name: MetricJoinFailures, Kind: KindCounter},
		)
	case ReconnectStorm:
		return append(base,
			MetricName{Name: MetricReconnects, Kind: KindCounter},
			MetricName{Name: MetricReconnectTime, Kind: KindTrend},
			MetricName{Name: MetricStormNotBack, Kind: KindCounter},
		)
	}
	return nil
}

// Threshold is a k6 threshold: Expr (k6 syntax, milliseconds for trends) must hold for
// Metric.
type Threshold struct {
	Metric string `json:"metric"`
	Expr   string `json:"expr"`
}

// Thresholds are cfg's scenario's thresholds, as its k6 twin's options.thresholds
// with the same parameters.
//
// k6 passes a threshold on a metric without samples, so the twins hold runs that
// connected nobody or delivered nothing to thresholds on counters always recorded:
// no failed connection (soak and release: no failed first connection) and at least one
// delivery wherever members send. The load generator fails the run on a failed first
// connection before thresholds are evaluated, so those hold here whenever a report
// exists.
func Thresholds(cfg Config) []Threshold {
	p95 := Threshold{MetricLatency, "p(95)<" + msString(cfg.MaxP95)}
	p99 := Threshold{MetricLatency, "p(99)<" + msString(cfg.MaxP99)}
	lost := Threshold{MetricLost, "count<=" + strconv.FormatInt(cfg.MaxLost, 10)}
	dup := Threshold{MetricDuplicated, "count<=" + strconv.FormatInt(cfg.MaxDuplicated, 10)}
	connected := Threshold{MetricConnectFailures, "count==0"}
	joined := Threshold{MetricJoinFailures, "count==0"}
	delivered := Threshold{MetricDelivered, "count>0"}
	switch cfg.Scenario {
	case FanoutSmall, FanoutLarge:
		return []Threshold{p95, p99, lost, connected, delivered}
	case Smoke:
		return []Threshold{{MetricChecks, "rate==1"}, p99, lost, dup, connected, delivered}
	case Soak:
		t := []Threshold{{MetricUnexpectedCloses, "count<=" + strconv.FormatInt(cfg.MaxUnexpectedCloses, 10)}, lost, joined}
		if cfg.SendEvery > 0 {
			t = append(t, delivered)
		}
		return t
	case Release:
		return []Threshold{lost, dup, joined, delivered}
	case ReconnectStorm:
		// The target: the members' p99 stays within MaxP99 and nothing is lost while
		// every storm client comes back.
		return []Threshold{{MetricLatency, "p(99)<=" + msString(cfg.MaxP99)}, lost, {MetricStormNotBack, "count==0"}}
	}
	return nil
}

// msString is d in milliseconds as JavaScript's String() writes it (for d ≥ 1ns).
func msString(d time.Duration) string { return strconv.FormatFloat(ms(d), 'f', -1, 64) }
