package wsgateway

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRefusedPublishesAreLoggedAtMostOncePerSecondWithTheirCount(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var r refusalLog
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	for _, at := range []time.Duration{0, 100 * time.Millisecond, 900 * time.Millisecond, 1100 * time.Millisecond, 1500 * time.Millisecond, 2200 * time.Millisecond} {
		r.note(log, "lobby", errors.New("no acknowledgement from the history stream in time"), t0.Add(at))
	}
	var counts []string
	for line := range strings.Lines(out.String()) {
		if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "latest_room=lobby") || !strings.Contains(line, "no acknowledgement") {
			t.Errorf("log line %q", line)
		}
		_, after, _ := strings.Cut(line, "refused=")
		n, _, _ := strings.Cut(after, " ")
		counts = append(counts, n)
	}
	// The first at once; then, a second after it, the three since; then the two since.
	if got := strings.Join(counts, ","); got != "1,3,2" {
		t.Errorf("refused counts per line %s, want 1,3,2", got)
	}
}
