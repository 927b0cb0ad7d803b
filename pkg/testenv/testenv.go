// Package testenv lets tests that need an outside program (nginx, prometheus, dockerd,
// chromium) skip on a machine that lacks it, and fail instead when CI asks for every
// test to run by setting ROOMCAST_TEST_ALL=1.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireAllVar is the variable CI sets so that no test may skip for a missing program.
const RequireAllVar = "ROOMCAST_TEST_ALL"

// RequireAll reports whether skips for missing programs are failures.
func RequireAll() bool { return os.Getenv(RequireAllVar) == "1" }

// Program returns the path of the first of names found on PATH (or given as an absolute
// path that exists). Without one it skips the test, or fails it under ROOMCAST_TEST_ALL=1.
func Program(tb testing.TB, names ...string) string {
	tb.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	Unavailable(tb, "needs %v on PATH", names)
	return ""
}

// Unavailable skips the test with the reason, or fails it under ROOMCAST_TEST_ALL=1.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if RequireAll() {
		tb.Fatalf("%s=1 but: "+format, append([]any{RequireAllVar}, args...)...)
	}
	tb.Skipf("skipped: "+format+" (set up by .ci/run; "+RequireAllVar+"=1 makes this a failure)", args...)
}
