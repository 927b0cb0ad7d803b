package stack_test

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

// stackLimits is what TestEveryServiceRotatesItsLogs and the Go services' tests read of
// a stack file.
type stackLimits struct {
	Services map[string]stackService `yaml:"services"`
}

type stackService struct {
	Logging struct {
		Driver  string            `yaml:"driver"`
		Options map[string]string `yaml:"options"`
	} `yaml:"logging"`
	Environment map[string]string `yaml:"environment"`
	Deploy      struct {
		Resources struct {
			Limits struct {
				Memory string `yaml:"memory"`
				CPUs   string `yaml:"cpus"`
			} `yaml:"limits"`
		} `yaml:"resources"`
	} `yaml:"deploy"`
}

// eachGoService calls check with each Go program of the stacks (the replicas and NATS),
// named by its file and service.
func eachGoService(t *testing.T, check func(where string, svc stackService)) {
	t.Helper()
	for _, c := range []struct{ file, service string }{
		{"stack/app.yml", "app"},
		{"stack/edge.yml", "nats"},
	} {
		var s stackLimits
		readYAMLFile(t, c.file, &s)
		svc, ok := s.Services[c.service]
		if !ok {
			t.Fatalf("%s: no service %s", c.file, c.service)
		}
		check(c.file+" "+c.service, svc)
	}
}

func TestEveryServiceRotatesItsLogs(t *testing.T) {
	for _, file := range []string{"stack/app.yml", "stack/edge.yml"} {
		var s stackLimits
		readYAMLFile(t, file, &s)
		if len(s.Services) == 0 {
			t.Fatalf("%s: no services read", file)
		}
		for name, svc := range s.Services {
			l := svc.Logging
			if l.Driver != "json-file" || l.Options["max-size"] == "" || l.Options["max-file"] == "" {
				t.Errorf("%s: service %s logs with %+v, want json-file with max-size and max-file", file, name, l)
			}
		}
	}
}

func TestGoServicesHaveAMemoryLimitUnderTheirContainers(t *testing.T) {
	eachGoService(t, func(where string, svc stackService) {
		soft := bytesOf(t, svc.Environment["GOMEMLIMIT"])
		hard := bytesOf(t, svc.Deploy.Resources.Limits.Memory)
		// Headroom for what the Go runtime does not count (stacks of cgo, the binary).
		if soft <= 0 || hard <= 0 || soft > hard*9/10 {
			t.Errorf("%s: GOMEMLIMIT %q against a memory limit of %q, want both set and GOMEMLIMIT at most 90%% of it",
				where, svc.Environment["GOMEMLIMIT"], svc.Deploy.Resources.Limits.Memory)
		}
	})
}

// Go's default GOMAXPROCS under a CPU limit is the limit rounded up but at least 2, so a
// 1-CPU container runs two Ps on one CPU's quota and pays for their idle spinning:
// measured 7-14% more CPU per delivery for a replica in a 1-CPU cgroup, and 20% for two
// replicas and NATS (README, Performance).
func TestGoServicesRunAsManyThreadsAsTheirCPULimit(t *testing.T) {
	eachGoService(t, func(where string, svc stackService) {
		cpus, err := strconv.ParseFloat(svc.Deploy.Resources.Limits.CPUs, 64)
		if err != nil || cpus <= 0 {
			t.Fatalf("%s: CPU limit %q, want a number of CPUs", where, svc.Deploy.Resources.Limits.CPUs)
		}
		procs, err := strconv.Atoi(svc.Environment["GOMAXPROCS"])
		if want := int(math.Ceil(cpus)); err != nil || procs != want {
			t.Errorf("%s: GOMAXPROCS %q under a limit of %s CPUs, want %d",
				where, svc.Environment["GOMAXPROCS"], svc.Deploy.Resources.Limits.CPUs, want)
		}
	})
}

// bytesOf reads "450MiB" (GOMEMLIMIT) or "512M" (compose, binary units) as bytes; 0 if unset.
func bytesOf(t *testing.T, s string) int64 {
	t.Helper()
	if s == "" {
		return 0
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("size %q: %v", s, err)
			}
			return v * u.mult
		}
	}
	t.Fatalf("size %q has no unit this test knows", s)
	return 0
}
