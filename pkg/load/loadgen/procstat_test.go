package loadgen_test

import (
	"os"
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name string
		stat string
		want time.Duration
		bad  bool
	}{
		{
			name: "typical",
			stat: "1234 (roomcast) S 1 1234 1234 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 9 0 100 1000000 5000 18446744073709551615",
			want: 1750 * time.Millisecond,
		},
		{
			name: "command with spaces and parentheses",
			stat: "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0",
			want: 100 * time.Millisecond,
		},
		{name: "truncated", stat: "42 (x) R 1 2 3", bad: true},
		{name: "no command", stat: "42 x R", bad: true},
		{name: "not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a 3 0 0", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadgen.ParseProcStat([]byte(tt.stat))
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseProcStat = %v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseProcStat = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseProcStatusRSS(t *testing.T) {
	tests := []struct {
		name, status string
		want         int64
		bad          bool
	}{
		{name: "typical", status: "Name:\troomcast\nVmPeak:\t  900 kB\nVmRSS:\t   22100 kB\nThreads:\t9\n", want: 22100 * 1024},
		{name: "no VmRSS (kernel thread)", status: "Name:\tkthreadd\nThreads:\t1\n", bad: true},
		{name: "odd unit", status: "VmRSS:\t12 MB\n", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadgen.ParseProcStatusRSS([]byte(tt.status))
			if tt.bad {
				if err == nil {
					t.Fatalf("ParseProcStatusRSS = %v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseProcStatusRSS = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := loadgen.ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PID != os.Getpid() || s.RSSBytes <= 0 || s.CPU < 0 {
		t.Fatalf("ReadProc(self) = %+v", s)
	}
	if _, err := loadgen.ReadProc(1 << 30); err == nil {
		t.Fatal("ReadProc of a missing process: no error")
	}
}
