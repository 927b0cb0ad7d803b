package loadgen

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is the outcome of a run; it marshals to JSON as is.
type Report struct {
	Scenario Scenario `json:"scenario"`
	// Protocol is set when the server was not roomcast (Config.Protocol).
	Protocol Protocol `json:"protocol,omitempty"`
	// Run is the token in this run's room names (lg-<run>-<n>) and messages.
	Run     string   `json:"run"`
	URLs    []string `json:"urls"`
	Rooms   int      `json:"rooms"`
	Members int      `json:"members"`
	// Connections is how many clients connected (all of them, or Run fails);
	// ConnectionsAtEnd how many were still open when the run ended.
	Connections      int     `json:"connections"`
	ConnectionsAtEnd int     `json:"connections_at_end"`
	ConnectSeconds   float64 `json:"connect_seconds"`
	// ServerCloses counts connections the server ended, by close code (1013: too slow
	// to read; 1008: over the rate limit for too long; 1012: drained by a release;
	// 1006: no close frame). UnexpectedCloses counts those the scenario does not
	// expect: all of them but release's 1012.
	ServerCloses     map[string]int64 `json:"server_closes,omitempty"`
	UnexpectedCloses int64            `json:"unexpected_closes"`
	// ErrorFrames counts error frames received, by code.
	ErrorFrames map[string]int64 `json:"error_frames,omitempty"`
	// Foreign counts message frames that are not this run's; Misrouted counts this run's
	// messages that arrived in another room; OtherFrames counts frames that are neither
	// messages nor errors; SendErrors counts failed writes.
	Foreign     int64 `json:"foreign_frames"`
	Misrouted   int64 `json:"misrouted"`
	OtherFrames int64 `json:"other_frames"`
	SendErrors  int64 `json:"send_errors"`
	// Steps are the sending steps: one for fanout, one per rate for ramp, none for idle,
	// settle and storm for reconnect-storm.
	Steps []Step      `json:"steps,omitempty"`
	Ramp  *RampResult `json:"ramp,omitempty"`
	Idle  *IdleResult `json:"idle,omitempty"`
	// Reconnect is what the clients of soak and release went through.
	Reconnect *ReconnectResult `json:"reconnect,omitempty"`
	// Storm is what a reconnect storm's clients went through; its Steps are the
	// members' settle and storm windows.
	Storm *StormResult `json:"storm,omitempty"`
	// Checks are smoke's checks, by name (see CheckNames).
	Checks map[string]CheckResult `json:"checks,omitempty"`
	// Metrics are the scenario's k6 metrics under their k6 names (see Metrics), and
	// Thresholds its k6 thresholds' verdicts (see Thresholds).
	Metrics    map[string]Metric `json:"metrics,omitempty"`
	Thresholds []ThresholdResult `json:"thresholds,omitempty"`
	// LoadgenRSSBytes is this process's own resident memory at the end.
	LoadgenRSSBytes int64 `json:"loadgen_rss_bytes"`
	// Interrupted is set when the run was cut short.
	Interrupted bool `json:"interrupted,omitempty"`

	readersDone bool // every read loop ended: the inboxes may be read
}

// ReconnectResult is what the clients of the scenarios that reconnect went through.
type ReconnectResult struct {
	// Reconnects counts connections opened after the server closed one; Resumed those
	// that asked for ?since= (the client had seen a seq); ConnectFailures the attempts
	// that failed before one opened.
	Reconnects      int64 `json:"reconnects"`
	Resumed         int64 `json:"resumed"`
	ConnectFailures int64 `json:"connect_failures"`
	// ReconnectTime is from a close to the next 101 of the same client.
	ReconnectTime Latency `json:"reconnect_time"`
	// HistoryTruncated counts history_truncated error frames: a resume that may have
	// missed messages.
	HistoryTruncated int64 `json:"history_truncated"`
	// Unconfirmed counts messages, among the lost, that no member received, sent on a
	// connection the server closed, beyond the unavailable frames that came on it: sent
	// into a closing connection, or the server went before it answered. Their deliveries
	// are part of the lost ones.
	Unconfirmed int64 `json:"unconfirmed"`
	// LostUntold counts lost deliveries of messages that reached another member of their
	// room, at members that never had a history_truncated or history_unavailable frame:
	// losses no client was told of. Zero when every gap was either the sender's (refused,
	// unconfirmed) or announced by the server.
	LostUntold int64 `json:"lost_untold"`
	// Unanswered counts messages that reached no member and whose sender was told
	// nothing: sent on a connection that lasted to the end of the run, beyond the
	// unavailable frames that came on it. The server took them and lost them all. A
	// lower bound: a refused message that was stored and delivered after all cancels one.
	Unanswered int64 `json:"unanswered"`
	// StartColors and EndColors count clients by the X-Roomcast-Color of their first and
	// last connection ("(disconnected)": the server closed the last one and no
	// reconnect had opened by the end).
	StartColors map[string]int `json:"start_colors"`
	EndColors   map[string]int `json:"end_colors"`
	// Paths counts clients by their connections in one line: "blue =1012=> green" is a
	// client that started on blue, was closed with 1012 and reconnected to green.
	Paths map[string]int `json:"paths"`
	// Clients are every client's connections (release only; not in the JSON).
	Clients []Client `json:"-"`
}

// Step is one sending period and what came of it, once the grace period has passed.
type Step struct {
	Index int `json:"index"`
	// Phase names a reconnect storm's step: settle (before the drop) or storm (the
	// storm window).
	Phase string `json:"phase,omitempty"`
	// Rate is messages per second per member.
	Rate float64 `json:"rate_per_member"`
	// SendSeconds is how long members sent; Seconds adds the wait for deliveries, and is
	// the window CPU time is measured over.
	SendSeconds float64 `json:"send_seconds"`
	Seconds     float64 `json:"seconds"`
	Counts
	Lost int64 `json:"lost"`
	// Skipped counts sends dropped because the generator fell over a second behind.
	Skipped             int64   `json:"skipped"`
	Latency             Latency `json:"latency"`
	SentPerSecond       float64 `json:"sent_per_second"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// Server is measured when server PIDs are given.
	Server  *Usage `json:"server,omitempty"`
	Loadgen Usage  `json:"loadgen"`
	// Pass and Reason are a ramp step's verdict.
	Pass   bool   `json:"pass,omitempty"`
	Reason string `json:"reason,omitempty"`

	p99  time.Duration
	hist *Histogram
}

// Latency is a distribution of times in milliseconds: the send-to-delivery time of
// first deliveries, or the close-to-101 time of reconnects.
type Latency struct {
	Count uint64  `json:"count"`
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	P95MS float64 `json:"p95_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
}

func latencyOf(h *Histogram) Latency {
	return Latency{
		Count: h.Count(),
		P50MS: ms(h.Quantile(0.5)), P90MS: ms(h.Quantile(0.9)), P95MS: ms(h.Quantile(0.95)),
		P99MS: ms(h.Quantile(0.99)), MaxMS: ms(h.Max()),
	}
}

func (l Latency) String() string {
	return fmt.Sprintf("p50 %.2fms  p90 %.2fms  p95 %.2fms  p99 %.2fms  max %.2fms", l.P50MS, l.P90MS, l.P95MS, l.P99MS, l.MaxMS)
}

// Usage is the CPU and memory of a set of processes over a step.
type Usage struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPercent is of one core, over the step's window.
	CPUPercent           float64 `json:"cpu_percent"`
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	// RSSBytes is the resident memory at the end of the step, summed.
	RSSBytes  int64        `json:"rss_bytes"`
	Processes []ProcSample `json:"processes,omitempty"`
}

// RampResult is the ramp's verdict: the highest deliveries/s held by a passing step.
type RampResult struct {
	MaxP99MS float64 `json:"max_p99_ms"`
	Factor   float64 `json:"factor"`
	MaxRate  float64 `json:"max_rate_per_member"`
	// Held is the index of the best passing step (0: none passed).
	Held                    int     `json:"held_step"`
	HeldRate                float64 `json:"held_rate_per_member"`
	HeldDeliveriesPerSecond float64 `json:"held_deliveries_per_second"`
	StopReason              string  `json:"stop_reason"`
}

// IdleResult is the memory the server spends on idle connections.
type IdleResult struct {
	Connections int     `json:"connections"`
	Open        int     `json:"open_at_end"`
	HeldSeconds float64 `json:"held_seconds"`
	// RSS of the server processes before connecting and at the end of the hold, summed;
	// zero when no server PIDs are given.
	RSSBeforeBytes     int64        `json:"rss_before_bytes"`
	RSSAfterBytes      int64        `json:"rss_after_bytes"`
	BytesPerConnection float64      `json:"rss_bytes_per_connection"`
	Before             []ProcSample `json:"before,omitempty"`
	After              []ProcSample `json:"after,omitempty"`
	LoadgenRSSBytes    int64        `json:"loadgen_rss_bytes"`
}

// WriteText writes the human summary of rep.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	b.WriteString("\n")
	shape := fmt.Sprintf("%d rooms × %d members", rep.Rooms, rep.Members)
	if rep.Scenario.connsShaped() {
		shape = fmt.Sprintf("%d connections in rooms of %d", rep.Connections, rep.Members)
	}
	if st := rep.Storm; st != nil {
		shape += fmt.Sprintf(" measured + %d storm clients in %d rooms of %d", st.Clients, st.Rooms, rep.Members)
	}
	name := string(rep.Scenario)
	if rep.Protocol != "" {
		name += " (" + string(rep.Protocol) + ")"
	}
	p("== %s: %s, %s (run %s)", name, shape, strings.Join(rep.URLs, ","), rep.Run)
	if rep.Interrupted {
		p("INTERRUPTED: the numbers cover only the part that ran")
	}
	p("connections   %d (connected in %.1fs, %d open at the end)", rep.Connections, rep.ConnectSeconds, rep.ConnectionsAtEnd)
	switch {
	case rep.Storm != nil:
		writeStorm(p, rep)
	case rep.Idle != nil:
		writeIdle(p, rep.Idle)
	case rep.Ramp != nil:
		for _, s := range rep.Steps {
			p("%s", s.line())
		}
		r := rep.Ramp
		if r.Held == 0 {
			p("ramp held     no step passed (p99 ≤ %s, nothing lost); %s", fmtMS(time.Duration(r.MaxP99MS*1e6)), r.StopReason)
		} else {
			s := rep.Steps[r.Held-1]
			p("ramp held     %.0f deliveries/s (step %d, %s msg/s per member, %.0f msgs/s sent, p99 %.2fms); stopped: %s",
				r.HeldDeliveriesPerSecond, r.Held, fmtRate(r.HeldRate), s.SentPerSecond, s.Latency.P99MS, r.StopReason)
		}
	case len(rep.Steps) == 1:
		writeStep(p, rep.Steps[0])
	}
	if rc := rep.Reconnect; rc != nil {
		writeReconnect(p, rc)
	}
	if len(rep.ServerCloses) > 0 {
		p("server closes %s (unexpected: %d)", fmtCounts(rep.ServerCloses), rep.UnexpectedCloses)
	}
	if len(rep.ErrorFrames) > 0 {
		hint := ""
		if rep.ErrorFrames["rate_limited"] > 0 {
			hint = " (raise ROOMCAST_RATE_LIMIT/ROOMCAST_RATE_BURST on the server)"
		}
		p("error frames  %s%s", fmtCounts(rep.ErrorFrames), hint)
	}
	if rep.Foreign+rep.Misrouted+rep.OtherFrames+rep.SendErrors > 0 {
		p("oddities      foreign %d, misrouted %d, other frames %d, send errors %d", rep.Foreign, rep.Misrouted, rep.OtherFrames, rep.SendErrors)
	}
	for _, name := range CheckNames() {
		if c, ok := rep.Checks[name]; ok {
			mark := "✓"
			if c.Fails > 0 {
				mark = "✗"
			}
			p("check         %s %s: %d of %d passed", mark, name, c.Passes, c.Passes+c.Fails)
		}
	}
	for i, t := range rep.Thresholds {
		label := "thresholds   "
		if i > 0 {
			label = "             "
		}
		p("%s %s", label, t.line())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeStep(p func(string, ...any), s Step) {
	p("rate          %s msg/s per member for %.1fs", fmtRate(s.Rate), s.SendSeconds)
	p("sent          %d (%.1f/s)", s.Sent, s.SentPerSecond)
	p("expected      %d", s.Expected)
	p("delivered     %d (%.1f/s)", s.Delivered, s.DeliveriesPerSecond)
	p("lost          %d (%s)", s.Lost, pct(s.Lost, s.Expected))
	p("duplicated    %d", s.Duplicated)
	if s.Skipped > 0 {
		p("skipped       %d sends (the load generator fell over %v behind)", s.Skipped, maxLag)
	}
	p("latency       %s", s.Latency)
	if s.Server != nil {
		p("server        %.1f µs CPU per delivery (%.2f s CPU over %.1fs, %.0f%% of a core), RSS %s%s",
			s.Server.CPUMicrosPerDelivery, s.Server.CPUSeconds, s.Seconds, s.Server.CPUPercent, fmtBytes(s.Server.RSSBytes), perProcess(s.Server.Processes))
	}
	p("loadgen       %.1f µs CPU per delivery (%.0f%% of a core), RSS %s",
		s.Loadgen.CPUMicrosPerDelivery, s.Loadgen.CPUPercent, fmtBytes(s.Loadgen.RSSBytes))
}

func writeStorm(p func(string, ...any), rep *Report) {
	st := rep.Storm
	if len(st.ConnectRefused) > 0 {
		p("connecting    refused %s (each tried again after its Retry-After)", fmtCounts(st.ConnectRefused))
	}
	for _, s := range rep.Steps {
		what := "settle        members before the storm"
		if s.Phase == "storm" {
			what = "storm window  members during the storm"
		}
		p("%s (%.1fs at %s msg/s each): sent %d, expected %d, delivered %d, lost %d (%s), duplicated %d",
			what, s.SendSeconds, fmtRate(s.Rate), s.Sent, s.Expected, s.Delivered, s.Lost, pct(s.Lost, s.Expected), s.Duplicated)
		p("  latency     %s", s.Latency)
		if s.Skipped > 0 {
			p("  skipped     %d sends (the load generator fell over %v behind)", s.Skipped, maxLag)
		}
		if s.Server != nil {
			p("  server      %.2f s CPU over %.1fs (%.0f%% of a core), RSS %s%s",
				s.Server.CPUSeconds, s.Seconds, s.Server.CPUPercent, fmtBytes(s.Server.RSSBytes), perProcess(s.Server.Processes))
		}
		p("  loadgen     %.0f%% of a core, RSS %s", s.Loadgen.CPUPercent, fmtBytes(s.Loadgen.RSSBytes))
	}
	if st.Dropped == 0 && st.StopReason != "" && len(rep.Steps) < 2 {
		p("storm         did not happen: %s", st.StopReason)
		return
	}
	p("storm         %d of %d storm clients dropped at once (TCP reset, no close frame) in %.0fms; window %.1fs: %s",
		st.Dropped, st.Clients, 1000*st.DropSeconds, st.WindowSeconds, st.StopReason)
	all := "not all back"
	if st.NotBack == 0 {
		all = fmt.Sprintf("all back %.2fs after the drop", st.AllBackSeconds)
	}
	p("back          %d of %d (%s; not back %d, gave up %d)", st.Back, st.Clients, all, st.NotBack, st.GaveUp)
	if st.ReconnectTime.Count > 0 {
		p("reconnect     drop → 101: %s", st.ReconnectTime)
	}
	refused, failed := "none", "none"
	if len(st.Refused) > 0 {
		refused = fmtCounts(st.Refused)
	}
	if len(st.Failed) > 0 {
		failed = fmtCounts(st.Failed)
	}
	p("attempts      %d reconnect attempts: refused %s (%d waited for their Retry-After); no answer %s",
		st.Attempts, refused, st.RetryAfter, failed)
}

func writeReconnect(p func(string, ...any), rc *ReconnectResult) {
	p("unconfirmed   %d messages reached no member, sent on connections the server closed, beyond the unavailable frames that came on them", rc.Unconfirmed)
	p("untold        %d deliveries missing at members never told of a gap (history_truncated, history_unavailable), of messages another member received", rc.LostUntold)
	p("unanswered    %d messages reached no member, sent on connections that lasted, beyond the unavailable frames that came on them", rc.Unanswered)
	p("reconnects    %d (resumed with since: %d, failed attempts: %d, history_truncated: %d)", rc.Reconnects, rc.Resumed, rc.ConnectFailures, rc.HistoryTruncated)
	if rc.Reconnects > 0 {
		p("reconnect     close → 101: %s", rc.ReconnectTime)
	}
	p("colors        started %s; ended %s", fmtInts(rc.StartColors), fmtInts(rc.EndColors))
	paths := slices.SortedFunc(maps.Keys(rc.Paths), func(a, b string) int {
		return cmp.Or(cmp.Compare(rc.Paths[b], rc.Paths[a]), cmp.Compare(a, b))
	})
	for i, path := range paths {
		if i == 5 {
			p("              … %d more", len(paths)-i)
			break
		}
		p("path          %d× %s", rc.Paths[path], path)
	}
}

func fmtInts(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := k
		if name == "" {
			name = "?"
		}
		parts = append(parts, name+"="+strconv.Itoa(m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func writeIdle(p func(string, ...any), r *IdleResult) {
	p("held          %d connections for %.1fs, %d open at the end", r.Connections, r.HeldSeconds, r.Open)
	if r.After == nil {
		p("server RSS    not measured (give -server-pid)")
	} else {
		p("server RSS    before %s, after %s%s", fmtBytes(r.RSSBeforeBytes), fmtBytes(r.RSSAfterBytes), perProcess(r.After))
		p("per conn      %.1f KiB", r.BytesPerConnection/1024)
	}
	p("loadgen RSS   %s (%.1f KiB per connection)", fmtBytes(r.LoadgenRSSBytes), float64(r.LoadgenRSSBytes)/1024/float64(max(r.Connections, 1)))
}

// line is a ramp step in one line.
func (s Step) line() string {
	verdict := "PASS"
	if !s.Pass {
		verdict = "FAIL: " + s.Reason
	}
	srv := ""
	if s.Server != nil {
		srv = fmt.Sprintf("  server %.1fµs/delivery %.0f%%cpu", s.Server.CPUMicrosPerDelivery, s.Server.CPUPercent)
	}
	return fmt.Sprintf("step %2d  %7s msg/s/member  sent %d  delivered %d/%d  lost %d  dup %d  p50 %.2fms p99 %.2fms max %.2fms  %.0f deliveries/s%s  loadgen %.0f%%cpu  %s",
		s.Index, fmtRate(s.Rate), s.Sent, s.Delivered, s.Expected, s.Lost, s.Duplicated,
		s.Latency.P50MS, s.Latency.P99MS, s.Latency.MaxMS, s.DeliveriesPerSecond, srv, s.Loadgen.CPUPercent, verdict)
}

func perProcess(ps []ProcSample) string {
	if len(ps) < 2 {
		return ""
	}
	parts := make([]string, 0, len(ps))
	for _, s := range ps {
		parts = append(parts, fmt.Sprintf("pid %d %s", s.PID, fmtBytes(s.RSSBytes)))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func fmtCounts(m map[string]int64) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+strconv.FormatInt(m[k], 10))
	}
	return strings.Join(parts, " ")
}

func pct(part, whole int64) string {
	if whole == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.3f%%", 100*float64(part)/float64(whole))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtMS(d time.Duration) string { return fmt.Sprintf("%.2fms", ms(d)) }

// fmtRate shows a rate with 4 significant digits (2.25, 11.39, 194.6, 2000).
func fmtRate(r float64) string {
	if r >= 1000 {
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strconv.FormatFloat(r, 'g', 4, 64)
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
}
