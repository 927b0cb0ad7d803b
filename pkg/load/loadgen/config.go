package loadgen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenario names a load shape. Those with a k6 twin (see K6Twins) take the same
// parameters and report the same metric names as their script in k6/.
type Scenario string

// The scenarios.
const (
	// FanoutSmall is 10 rooms × 10 members, each member sending 1 msg/s.
	FanoutSmall Scenario = "fanout-small"
	// FanoutLarge is 100 rooms × 20 members × 1 msg/s: 2,000 msgs/s in, 40,000 deliveries/s out.
	FanoutLarge Scenario = "fanout-large"
	// Ramp is 10 rooms × 10 members whose send rate grows step by step until a step's
	// p99 latency is over RampMaxP99 or a message is lost (or RampMaxRate is reached).
	Ramp Scenario = "ramp"
	// Idle holds Conns connections open, sending nothing, to measure server memory per
	// connection.
	Idle Scenario = "idle"
	// Smoke is a minute of 2 rooms × 5 members × 1 msg/s, after checking /readyz: for CI
	// pipelines.
	Smoke Scenario = "smoke"
	// Soak holds Conns mostly idle connections (one message every SendEvery) for a long
	// time, counting unexpected closes; closed clients reconnect and resume.
	Soak Scenario = "soak"
	// Release is constant chat traffic (20 rooms × 10 members × 2 msg/s) while someone
	// runs `just promote`: clients closed with 1012 reconnect with since/epoch, and the
	// report counts lost and duplicated messages and the reconnect times. It runs until
	// Duration has passed or it is stopped (see Start).
	Release Scenario = "release"
	// ReconnectStorm is Rooms × Members members sending Rate msg/s each, whose
	// deliveries are measured, plus Conns silent storm clients in rooms of Members. After
	// Settle, every storm client drops its connection at once (an abrupt TCP close, no
	// close handshake: a dying proxy or replica) and reconnects at once; a refusal
	// (503, 429) is retried after its Retry-After, with jitter, else with Backoff. The
	// report has the reconnect times, the refused attempts by status, and the members'
	// latency and losses during the storm.
	ReconnectStorm Scenario = "reconnect-storm"
)

// Scenarios lists every scenario.
func Scenarios() []Scenario {
	return []Scenario{FanoutSmall, FanoutLarge, Ramp, Idle, Smoke, Soak, Release, ReconnectStorm}
}

// reconnects reports whether s's clients reconnect (and resume) when the server closes
// them.
func (s Scenario) reconnects() bool { return s == Soak || s == Release }

// connsShaped reports whether s sizes itself by Conns (in rooms of Members) rather than
// Rooms × Members.
func (s Scenario) connsShaped() bool { return s == Idle || s == Soak }

// sends reports whether s's clients send messages.
func (s Scenario) sends() bool { return s != Idle }

// Protocol is what the clients speak to the server.
type Protocol string

// The protocols.
const (
	// ProtocolRoomcast is roomcast's: one connection per room at /ws/chat/{room}/, a
	// {"message":...} frame per message. The zero Protocol means it too.
	ProtocolRoomcast Protocol = "roomcast"
	// ProtocolCentrifugo is Centrifugo v6's bidirectional JSON protocol at
	// /connection/websocket: each client connects, subscribes to its room's channel and
	// publishes into it, so that the two servers can be measured with the same load
	// (fanout-small, fanout-large and ramp only). See centrifugo.go.
	ProtocolCentrifugo Protocol = "centrifugo"
)

// ConfigError is an invalid setting of a Config. Setting is named like the
// roomcast-loadgen flag that sets it.
type ConfigError struct {
	Setting string
	Value   string
	Want    string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid %s %s: %s", e.Setting, e.Value, e.Want)
}

// Config is one load run.
type Config struct {
	Scenario Scenario
	// Protocol is the server's protocol: roomcast's (the default) or Centrifugo's.
	Protocol Protocol
	// URLs are base URLs (ws://host:port); connection i goes to URLs[i % len(URLs)], so
	// the members of a room are spread over the replicas.
	URLs []string

	// Rooms × Members clients send (fanout, ramp, smoke, release, reconnect-storm). For
	// Idle and Soak, Conns clients fill rooms of Members, and Rooms is ignored.
	Rooms   int
	Members int
	// Rate is messages per second per member; for Ramp, the first step's rate.
	Rate float64
	// Duration is how long members send (fanout, smoke, release), how long connections
	// are held (idle, soak), or the most a whole ramp or reconnect storm may take (from
	// the first connect to the end of the storm, the wait for deliveries excluded).
	Duration time.Duration
	// Conns is the number of connections of Idle and Soak, and of storm clients of
	// ReconnectStorm.
	Conns int
	// SendEvery is how often each Soak connection sends a message; 0 sends none.
	SendEvery time.Duration
	// Settle is how long ReconnectStorm's members send before the storm clients drop
	// their connections; the storm window (from the drop until every storm client is
	// back) is measured over at least as long.
	Settle time.Duration

	// Token, when set, is sent as Authorization: Bearer <token> on every connection
	// attempt, reconnects included (the server's ROOMCAST_JWT_SECRET or
	// ROOMCAST_JWT_PUBLIC_KEY). It is never printed.
	Token string

	// Batch offers BatchSubprotocol on every connection: the server may then send
	// several messages in one frame, one per line, each counted as a delivery.
	Batch bool

	// Interleave spreads each room's sends over the period: member k of every room sends
	// at k/Members of it, the rooms one after the other within that slot. Without it
	// the senders go in order, so a room's members send one after another and its
	// messages of a period arrive together, which suits a server that batches writes.
	Interleave bool

	// ReconnectBase and ReconnectMax shape the reconnects of Soak and Release, and
	// those of ReconnectStorm refused without a Retry-After: exponential backoff with
	// full jitter, attempt n (from 0) waiting a random time in
	// [0, min(ReconnectMax, ReconnectBase × 2^n)).
	ReconnectBase time.Duration
	ReconnectMax  time.Duration

	// Thresholds, as the k6 scripts' (see Thresholds): delivery latency p95 and p99
	// under MaxP95 and MaxP99 (reconnect-storm: p99 at most MaxP99, during the storm),
	// at most MaxLost lost and MaxDuplicated duplicated deliveries, at most
	// MaxUnexpectedCloses closes the scenario does not expect.
	MaxP95              time.Duration
	MaxP99              time.Duration
	MaxLost             int64
	MaxDuplicated       int64
	MaxUnexpectedCloses int64

	// RampStep is how long each ramp step sends; RampFactor multiplies the rate from one
	// step to the next, up to RampMaxRate; a step passes when nothing is lost and its p99
	// latency is at most RampMaxP99.
	RampStep    time.Duration
	RampFactor  float64
	RampMaxRate float64
	RampMaxP99  time.Duration

	// ServerPIDs are the processes whose CPU time and RSS are measured (replicas,
	// nats-server); empty measures none.
	ServerPIDs []int
	// Grace is how long, once sending stops, deliveries may still arrive before the
	// missing ones count as lost.
	Grace time.Duration
	// ConnectTimeout bounds each connection attempt, dial and upgrade together (and
	// Centrifugo's connect and subscribe);
	// ConnectParallel is how many are in progress at once while the clients connect at
	// the start (a reconnect storm's reconnects are not held back).
	ConnectTimeout  time.Duration
	ConnectParallel int

	// Progress, if not nil, gets a line every ProgressEvery (default 1s) and a line per
	// ramp step or storm event; one write at a time.
	Progress      io.Writer
	ProgressEvery time.Duration
	// Log gets warnings (connections closed by the server, unreadable processes); nil
	// discards them.
	Log *slog.Logger
}

// DefaultConfig is the configuration of scenario s against ws://127.0.0.1:8080.
func DefaultConfig(s Scenario) Config {
	c := Config{
		Scenario:        s,
		Protocol:        ProtocolRoomcast,
		URLs:            []string{"ws://127.0.0.1:8080"},
		Rooms:           10,
		Members:         10,
		Rate:            1,
		Duration:        30 * time.Second,
		Conns:           10000,
		RampStep:        5 * time.Second,
		RampFactor:      1.5,
		RampMaxRate:     1000,
		RampMaxP99:      100 * time.Millisecond,
		Grace:           2 * time.Second,
		ConnectTimeout:  10 * time.Second,
		ConnectParallel: 64,
		ProgressEvery:   time.Second,
		SendEvery:       time.Minute,
		Settle:          5 * time.Second,
		ReconnectBase:   100 * time.Millisecond,
		ReconnectMax:    5 * time.Second,
		MaxP95:          100 * time.Millisecond,
		MaxP99:          250 * time.Millisecond,
	}
	switch s {
	case FanoutLarge:
		c.Rooms, c.Members = 100, 20
	case Ramp:
		c.Duration = 10 * time.Minute
	case Smoke:
		c.Rooms, c.Members = 2, 5
		c.Duration = time.Minute
		c.MaxP99 = time.Second
	case Soak:
		c.Conns = 1000
		c.Duration = 30 * time.Minute
		c.Grace = 5 * time.Second
	case Release:
		c.Rooms, c.Members, c.Rate = 20, 10, 2
		c.Duration = 5 * time.Minute
		c.Grace = 10 * time.Second
	case ReconnectStorm:
		c.Conns = 5000
		c.Duration = 2 * time.Minute
		c.MaxP99 = 100 * time.Millisecond
	}
	return c
}

// Limits that keep every loop of a run bounded.
const (
	maxConns    = 1 << 20
	maxRate     = 10000 // per member
	maxDuration = 24 * time.Hour
	maxSteps    = 64
)

// Validate checks c; an error is a *ConfigError.
func (c Config) Validate() error {
	bad := func(setting string, value any, want string, args ...any) error {
		return &ConfigError{Setting: setting, Value: fmt.Sprint(value), Want: fmt.Sprintf(want, args...)}
	}
	if !slices.Contains(Scenarios(), c.Scenario) {
		return bad("scenario", strconv.Quote(string(c.Scenario)), "want one of %s", scenarioList())
	}
	if err := c.validateProtocol(); err != nil {
		return err
	}
	if len(c.URLs) == 0 {
		return bad("url", `""`, "want at least one ws://host:port")
	}
	for _, u := range c.URLs {
		if err := checkBaseURL(u); err != nil {
			return bad("url", strconv.Quote(u), "%v", err)
		}
	}
	if c.Members < 1 || c.Members > maxConns {
		return bad("members", c.Members, "want 1 to %d", maxConns)
	}
	if c.Duration <= 0 || c.Duration > maxDuration {
		return bad("duration", c.Duration, "want more than 0s and at most %v", maxDuration)
	}
	if c.Grace < 0 || c.Grace > time.Hour {
		return bad("grace", c.Grace, "want 0s to 1h")
	}
	if c.ConnectTimeout <= 0 || c.ConnectTimeout > time.Hour {
		return bad("connect-timeout", c.ConnectTimeout, "want more than 0s and at most 1h")
	}
	if c.ConnectParallel < 1 || c.ConnectParallel > 10000 {
		return bad("connect-parallel", c.ConnectParallel, "want 1 to 10000")
	}
	for _, pid := range c.ServerPIDs {
		if pid < 1 {
			return bad("server-pid", pid, "want a positive process id")
		}
	}
	if c.MaxP95 <= 0 {
		return bad("max-p95", c.MaxP95, "want more than 0s")
	}
	if c.MaxP99 <= 0 {
		return bad("max-p99", c.MaxP99, "want more than 0s")
	}
	for _, v := range []struct {
		setting string
		n       int64
	}{{"max-lost", c.MaxLost}, {"max-duplicated", c.MaxDuplicated}, {"max-unexpected-closes", c.MaxUnexpectedCloses}} {
		if v.n < 0 {
			return bad(v.setting, v.n, "want 0 or more")
		}
	}
	if strings.ContainsFunc(c.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		// The value is a secret: it is not shown.
		return bad("token", "(not shown)", "want a token without spaces or control characters")
	}
	if c.Scenario.reconnects() || c.Scenario == ReconnectStorm {
		switch {
		case c.ReconnectBase <= 0 || c.ReconnectBase > time.Minute:
			return bad("reconnect-base", c.ReconnectBase, "want more than 0s and at most 1m")
		case c.ReconnectMax < c.ReconnectBase || c.ReconnectMax > time.Hour:
			return bad("reconnect-max", c.ReconnectMax, "want at least -reconnect-base (%v) and at most 1h", c.ReconnectBase)
		}
	}
	if c.Scenario == ReconnectStorm {
		if c.Conns < 1 || c.Conns > maxConns {
			return bad("conns", c.Conns, "want 1 to %d", maxConns)
		}
		if c.Settle <= 0 || c.Settle >= c.Duration {
			return bad("settle", c.Settle, "want more than 0s and less than -duration (%v)", c.Duration)
		}
		if c.Rooms >= 1 && c.Rooms <= maxConns/c.Members && c.Rooms*c.Members > maxConns-c.Conns {
			return bad("rooms", c.Rooms, "want rooms × members + conns at most %d", maxConns)
		}
	}
	if c.Scenario.connsShaped() {
		if c.Conns < 1 || c.Conns > maxConns {
			return bad("conns", c.Conns, "want 1 to %d", maxConns)
		}
		if c.Scenario == Soak && (c.SendEvery < 0 || c.SendEvery > maxDuration) {
			return bad("send-every", c.SendEvery, "want 0s (never) to %v", maxDuration)
		}
		return nil
	}
	if c.Rooms < 1 || c.Rooms > maxConns/c.Members {
		return bad("rooms", c.Rooms, "want at least 1, and rooms × members at most %d", maxConns)
	}
	if !(c.Rate > 0) || c.Rate > maxRate {
		return bad("rate", c.Rate, "want more than 0 and at most %d messages/s per member", maxRate)
	}
	if c.Scenario == Ramp {
		switch {
		case c.RampStep <= 0 || c.RampStep > time.Hour:
			return bad("ramp-step", c.RampStep, "want more than 0s and at most 1h")
		case !(c.RampFactor > 1) || c.RampFactor > 100:
			return bad("ramp-factor", c.RampFactor, "want more than 1 and at most 100")
		case !(c.RampMaxRate >= c.Rate) || c.RampMaxRate > maxRate:
			return bad("ramp-max-rate", c.RampMaxRate, "want at least the start rate (-rate %v) and at most %d", c.Rate, maxRate)
		case c.RampMaxP99 <= 0:
			return bad("ramp-max-p99", c.RampMaxP99, "want more than 0s")
		}
	}
	return nil
}

// validateProtocol checks the protocol and what it allows: Centrifugo's runs the
// scenarios without reconnects, with its own batching and no token.
func (c Config) validateProtocol() error {
	switch c.Protocol {
	case "", ProtocolRoomcast:
		return nil
	case ProtocolCentrifugo:
	default:
		return &ConfigError{Setting: "protocol", Value: strconv.Quote(string(c.Protocol)), Want: "want roomcast or centrifugo"}
	}
	switch {
	case c.Scenario != FanoutSmall && c.Scenario != FanoutLarge && c.Scenario != Ramp:
		return &ConfigError{Setting: "protocol", Value: string(c.Protocol),
			Want: fmt.Sprintf("want -scenario fanout-small, fanout-large or ramp with it, not %s", c.Scenario)}
	case c.Batch:
		return &ConfigError{Setting: "batch", Value: "true", Want: "want false with -protocol centrifugo, which batches frames on its own"}
	case c.Token != "":
		return &ConfigError{Setting: "token", Value: "(not shown)", Want: "want none with -protocol centrifugo, whose clients are anonymous (client.insecure)"}
	}
	return nil
}

func scenarioList() string {
	names := make([]string, 0, 8)
	for _, s := range Scenarios() {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return err
	case u.Scheme != "ws" && u.Scheme != "wss":
		return errors.New("want a ws:// or wss:// URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("no host")
	case u.RawQuery != "" || u.Fragment != "":
		return errors.New("want a base URL without query or fragment")
	case strings.Contains(u.Path, "/ws/chat"):
		return errors.New("want the base URL only (ws://host:port); /ws/chat/{room}/ is added")
	case strings.Contains(u.Path, centrifugoPath):
		return errors.New("want the base URL only (ws://host:port); " + centrifugoPath + " is added")
	}
	return nil
}

// roomURL is the URL of room on base.
func roomURL(base, room string) string {
	return strings.TrimSuffix(base, "/") + "/ws/chat/" + room + "/"
}

// resumeURL is roomURL with the resume query of the contract: ?since=<seq>, plus
// &epoch=<epoch> when the client has one.
func resumeURL(roomURL string, seq uint64, epoch string) string {
	u := roomURL + "?since=" + strconv.FormatUint(seq, 10)
	if epoch != "" {
		u += "&epoch=" + url.QueryEscape(epoch)
	}
	return u
}

// httpURL is the http(s) URL of path on the replica (or proxy) at the ws(s) base URL.
func httpURL(base, path string) string {
	u := strings.TrimSuffix(base, "/") + path
	if rest, ok := strings.CutPrefix(u, "wss://"); ok {
		return "https://" + rest
	}
	return "http://" + strings.TrimPrefix(u, "ws://")
}
