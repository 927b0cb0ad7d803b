package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (sysconf(_SC_CLK_TCK)): 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is one reading of a process's CPU time and resident memory.
type ProcSample struct {
	PID int `json:"pid"`
	// CPU is user plus system time since the process started, to 1/100 s.
	CPU time.Duration `json:"-"`
	// RSSBytes is VmRSS.
	RSSBytes int64 `json:"rss_bytes"`
}

// ReadProc reads pid's /proc/PID/stat and /proc/PID/status.
func ReadProc(pid int) (ProcSample, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcSample{}, fmt.Errorf("reading CPU time of process %d: %w", pid, err)
	}
	cpu, err := ParseProcStat(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("reading CPU time of process %d: %w", pid, err)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ProcSample{}, fmt.Errorf("reading memory of process %d: %w", pid, err)
	}
	rss, err := ParseProcStatusRSS(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("reading memory of process %d: %w", pid, err)
	}
	return ProcSample{PID: pid, CPU: cpu, RSSBytes: rss}, nil
}

// ParseProcStat returns utime + stime from the contents of /proc/PID/stat. The command
// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields
// are counted from the last ')'.
func ParseProcStat(data []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, errors.New("no command name in /proc stat")
	}
	// After ")": state (field 3), ..., utime (14), stime (15).
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc stat has %d fields after the command name, want at least 13", len(fields))
	}
	var ticks uint64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing CPU ticks %q: %w", f, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / clockTicks), nil
}

// ParseProcStatusRSS returns VmRSS in bytes from the contents of /proc/PID/status.
func ParseProcStatusRSS(data []byte) (int64, error) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing VmRSS %q: %w", f[0], err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS line in /proc status (a kernel thread or a zombie?)")
}

// selfCPU is this process's user plus system time, to the microsecond.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procSet samples a fixed set of processes.
type procSet []int

// sample reads every process; a process that cannot be read fails the whole sample.
func (ps procSet) sample() ([]ProcSample, error) {
	out := make([]ProcSample, 0, len(ps))
	for _, pid := range ps {
		s, err := ReadProc(pid)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func totalCPU(s []ProcSample) (d time.Duration) {
	for _, p := range s {
		d += p.CPU
	}
	return d
}

func totalRSS(s []ProcSample) (n int64) {
	for _, p := range s {
		n += p.RSSBytes
	}
	return n
}
