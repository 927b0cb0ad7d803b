package loadgen_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"roomcast/pkg/chat"
	"roomcast/pkg/load/loadgen"
)

func TestSettingsRoundTrip(t *testing.T) {
	flags, envs := map[string]bool{}, map[string]bool{}
	for _, st := range loadgen.Settings() {
		if flags[st.Flag] || (st.Env != "" && envs[st.Env]) {
			t.Errorf("setting -%s (%s) appears twice", st.Flag, st.Env)
		}
		flags[st.Flag], envs[st.Env] = true, true
		if st.Env != "" && st.Flag != strings.ToLower(strings.ReplaceAll(st.Env, "_", "-")) {
			t.Errorf("setting -%s has k6 name %s, want the flag's name in capitals", st.Flag, st.Env)
		}
		used := false
		for _, s := range loadgen.Scenarios() {
			if !st.UsedBy(s) {
				continue
			}
			used = true
			def := loadgen.DefaultConfig(s)
			var c loadgen.Config
			if err := st.Set(&c, st.String(def)); err != nil {
				t.Errorf("%s: -%s %q does not parse: %v", s, st.Flag, st.String(def), err)
			} else if st.String(c) != st.String(def) {
				t.Errorf("%s: -%s %q reads back as %q", s, st.Flag, st.String(def), st.String(c))
			}
		}
		if !used {
			t.Errorf("setting -%s is read by no scenario", st.Flag)
		}
	}
}

func TestSettingSetRefusesBadValues(t *testing.T) {
	for flag, value := range map[string]string{
		"duration": "10", "rooms": "ten", "rate": "fast", "max-lost": "1.5", "server-pid": "0", "url": "",
	} {
		i := slices.IndexFunc(loadgen.Settings(), func(st loadgen.Setting) bool { return st.Flag == flag })
		var c loadgen.Config
		err := loadgen.Settings()[i].Set(&c, value)
		if flag == "url" {
			if err != nil || len(c.URLs) != 0 {
				t.Errorf("-url %q: %v, %v; want an empty list (Validate refuses it)", value, c.URLs, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), "want ") {
			t.Errorf("-%s %q: error %v, want one saying what is wanted", flag, value, err)
		}
	}
}

func TestK6Values(t *testing.T) {
	cfg := loadgen.DefaultConfig(loadgen.Release)
	cfg.URLs = []string{"ws://a:1", "ws://b:2"}
	cfg.Rate = 0.5
	cfg.Grace = 1500 * time.Microsecond
	want := map[string]string{"URL": "ws://a:1,ws://b:2", "RATE": "0.5", "GRACE": "1.5", "DURATION": "300000", "ROOMS": "20", "MAX_LOST": "0"}
	for _, st := range loadgen.Params(loadgen.Release) {
		if w, ok := want[st.Env]; ok && st.K6Value(cfg) != w {
			t.Errorf("%s = %q, want %q", st.Env, st.K6Value(cfg), w)
		}
	}
}

func TestTwinsHaveMetricsAndThresholds(t *testing.T) {
	for _, tw := range loadgen.K6Twins() {
		names := loadgen.Metrics(tw.Scenario)
		ths := loadgen.Thresholds(loadgen.DefaultConfig(tw.Scenario))
		if len(names) == 0 || len(ths) == 0 || len(loadgen.Params(tw.Scenario)) == 0 {
			t.Errorf("%s: %d metrics, %d thresholds, %d params", tw.Scenario, len(names), len(ths), len(loadgen.Params(tw.Scenario)))
		}
		for _, th := range ths {
			if !slices.ContainsFunc(names, func(m loadgen.MetricName) bool { return m.Name == th.Metric }) {
				t.Errorf("%s: threshold on %s, which it does not report", tw.Scenario, th.Metric)
			}
		}
	}
	for _, s := range []loadgen.Scenario{loadgen.Ramp, loadgen.Idle} {
		if len(loadgen.Metrics(s)) != 0 || len(loadgen.Thresholds(loadgen.DefaultConfig(s))) != 0 {
			t.Errorf("%s has no k6 twin, yet metrics or thresholds", s)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, maxWait := 100*time.Millisecond, 5*time.Second
	top := func(n int64) int64 { return n - 1 }
	for n, want := range []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000} {
		if got := loadgen.Backoff(n, base, maxWait, top); got != want*time.Millisecond-1 {
			t.Errorf("attempt %d: longest wait %v, want just under %v", n, got, want*time.Millisecond)
		}
		if got := loadgen.Backoff(n, base, maxWait, func(int64) int64 { return 0 }); got != 0 {
			t.Errorf("attempt %d: shortest wait %v, want 0 (full jitter)", n, got)
		}
	}
	for _, n := range []int{62, 63, 64, 1000} {
		if got := loadgen.Backoff(n, base, maxWait, top); got != maxWait-1 {
			t.Errorf("attempt %d: %v, want the maximum", n, got)
		}
	}
	for range 1000 {
		if d := loadgen.Backoff(3, base, maxWait, rand.Int64N); d < 0 || d >= 800*time.Millisecond {
			t.Fatalf("attempt 3: %v, want in [0, 800ms)", d)
		}
	}
}

func TestResumePoint(t *testing.T) {
	msg := func(text string, seq uint64, epoch string) []byte {
		return chat.AppendMessageJSON(nil, chat.Message{Room: "r", Text: text, Seq: seq, Epoch: epoch, Accepted: time.Now()})
	}
	tests := []struct {
		name  string
		frame []byte
		seq   uint64
		epoch string
		ok    bool
	}{
		{"with history", msg("hi", 1042, "k3v9"), 1042, "k3v9", true},
		{"a text that looks like one", msg(`"seq":7,"epoch":"x"`, 8, "e"), 8, "e", true},
		{"history off", msg(`"seq":7`, 0, ""), 0, "", false},
		{"error frame", chat.ErrorJSON("history_truncated", `"seq":7`), 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, epoch, ok := loadgen.ResumePoint(tt.frame)
			if seq != tt.seq || string(epoch) != tt.epoch || ok != tt.ok {
				t.Fatalf("ResumePoint(%s) = %d, %q, %v; want %d, %q, %v", tt.frame, seq, epoch, ok, tt.seq, tt.epoch, tt.ok)
			}
		})
	}
}

func TestInboxHas(t *testing.T) {
	in := loadgen.NewInbox(2)
	for _, seq := range []uint64{0, 1, 2, 70, 200} {
		in.Receive(1, seq)
	}
	for seq, want := range map[uint64]bool{0: true, 2: true, 3: false, 69: false, 70: true, 200: true, 201: false, 1 << 40: false} {
		if got := in.Has(1, seq); got != want {
			t.Errorf("Has(1, %d) = %v, want %v", seq, got, want)
		}
	}
	if in.Has(0, 0) || in.Has(2, 0) || in.Has(-1, 0) {
		t.Error("Has of a sender that sent nothing, or out of range")
	}
}
