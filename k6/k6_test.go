// Package k6_test checks the k6 scripts of this directory where k6 is not installed,
// with node: every script and library file parses as an ES module and imports only k6
// modules and lib/; every script has a roomcast-loadgen twin (pkg/load/loadgen.K6Twins) that
// takes the same parameters with the same defaults and reports the same metrics and
// thresholds; and, in testdata/k6emu.mjs (node with stubs of the k6 modules), the
// scripts' rooms run against real replicas and against a stand-in with history, and
// account for every message as the load generator does.
package k6_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/auth"
	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/load/loadgen/historytest"
	"roomcast/pkg/server/replica/replicatest"
	"roomcast/pkg/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// k6Modules are the modules k6 itself provides; a script may import only these and
// lib/. (https://grafana.com/docs/k6/latest/javascript-api/)
var k6Modules = []string{
	"k6", "k6/crypto", "k6/data", "k6/encoding", "k6/execution", "k6/html", "k6/http",
	"k6/metrics", "k6/net/grpc", "k6/secrets", "k6/timers", "k6/websockets", "k6/ws", "k6/browser",
}

// scripts are the k6 scripts: the .js files of this directory.
func scripts(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.js")
	if err != nil || len(files) == 0 {
		t.Fatalf("no k6 scripts here: %v", err)
	}
	return files
}

func libFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("lib/*.js")
	if err != nil || len(files) == 0 {
		t.Fatalf("no library files: %v", err)
	}
	return files
}

// nodeRunner runs node on a copy of this directory, where .js files are ES modules
// (package.json "type": "module"), as k6 reads them.
type nodeRunner struct {
	bin   string
	flags []string // --experimental-websocket where node needs it
	dir   string
}

func newNode(t *testing.T) *nodeRunner {
	t.Helper()
	n := &nodeRunner{bin: testenv.Program(t, "node"), dir: t.TempDir()}
	for _, pattern := range []string{"*.js", "lib/*.js", "testdata/*.mjs", "testdata/stubs/*.mjs"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			copyFile(t, f, filepath.Join(n.dir, f))
		}
	}
	writeFile(t, filepath.Join(n.dir, "package.json"), `{"type":"module"}`)
	if v := n.output(t, "-p", "process.versions.node"); !supported(v) {
		testenv.Unavailable(t, "needs node 20.6 or newer (module.register), got %s", v)
	}
	return n
}

// withWebSocket makes sure node has a global WebSocket (node 22, or 20 with a flag).
func (n *nodeRunner) withWebSocket(t *testing.T) {
	t.Helper()
	if n.output(t, "-p", "typeof WebSocket") == "function" {
		return
	}
	n.flags = []string{"--experimental-websocket"}
	if n.output(t, "-p", "typeof WebSocket") != "function" {
		testenv.Unavailable(t, "needs a node with WebSocket (22, or 20.10 with --experimental-websocket)")
	}
}

func supported(version string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 20 || major == 20 && minor >= 6
}

func (n *nodeRunner) command(ctx context.Context, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, n.bin, append(slices.Clone(n.flags), args...)...)
	cmd.Dir = n.dir
	js, _ := json.Marshal(env)
	cmd.Env = append(os.Environ(), "K6EMU_ENV="+string(js))
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (n *nodeRunner) output(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := n.command(ctx, nil, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("node %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// emu runs testdata/k6emu.mjs MODE SCRIPT with env as the script's __ENV and decodes
// its JSON result into v.
func (n *nodeRunner) emu(t *testing.T, mode, script string, env map[string]string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := n.start(t, ctx, mode, script, env)
	run.wait(t, v)
}

type emuRun struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

func (n *nodeRunner) start(t *testing.T, ctx context.Context, mode, script string, env map[string]string) *emuRun {
	t.Helper()
	r := &emuRun{cmd: n.command(ctx, env, "testdata/k6emu.mjs", mode, script)}
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	return r
}

func (r *emuRun) wait(t *testing.T, v any) {
	t.Helper()
	err := r.cmd.Wait()
	if r.stderr.Len() > 0 {
		t.Logf("node stderr:\n%s", r.stderr.String())
	}
	if err != nil {
		t.Fatalf("%v: %v\n%s", r.cmd.Args, err, r.stdout.String())
	}
	if err := json.Unmarshal(r.stdout.Bytes(), v); err != nil {
		t.Fatalf("%v: output is not JSON: %v\n%s", r.cmd.Args, err, r.stdout.String())
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data))
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEveryFileParsesAsAnESModule(t *testing.T) {
	n := newNode(t)
	dir := t.TempDir()
	for _, f := range append(scripts(t), libFiles(t)...) {
		t.Run(f, func(t *testing.T) {
			// A .mjs copy is an ES module whatever surrounds it.
			mjs := filepath.Join(dir, strings.ReplaceAll(strings.TrimSuffix(f, ".js"), "/", "_")+".mjs")
			copyFile(t, f, mjs)
			n.output(t, "--check", mjs)
		})
	}
}

// inspection is what k6emu.mjs inspect says of a script.
type inspection struct {
	Params  map[string]string `json:"params"`
	EnvRead []string          `json:"envRead"`
	Options struct {
		Scenarios  map[string]json.RawMessage `json:"scenarios"`
		Thresholds map[string][]string        `json:"thresholds"`
	} `json:"options"`
	Metrics []struct {
		Name   string `json:"name"`
		Type   string `json:"type"`
		IsTime bool   `json:"isTime"`
	} `json:"metrics"`
	Imports []struct {
		Parent    string `json:"parent"`
		Specifier string `json:"specifier"`
		URL       string `json:"url"`
	} `json:"imports"`
	Exports    []string `json:"exports"`
	HasSetup   bool     `json:"hasSetup"`
	HasDefault bool     `json:"hasDefault"`
}

func inspect(t *testing.T, n *nodeRunner, script string, env map[string]string) inspection {
	t.Helper()
	var in inspection
	n.emu(t, "inspect", script, env, &in)
	return in
}

func TestScriptsImportOnlyK6ModulesAndLib(t *testing.T) {
	n := newNode(t)
	imported := map[string]bool{}
	for _, script := range scripts(t) {
		t.Run(script, func(t *testing.T) {
			in := inspect(t, n, script, nil)
			if len(in.Imports) == 0 {
				t.Fatal("no imports recorded")
			}
			for _, imp := range in.Imports {
				imported[imp.URL] = true
			}
			for _, p := range importProblems(in) {
				t.Error(p)
			}
			for _, want := range []string{"PARAMS", "default", "options", "setup"} {
				if !slices.Contains(in.Exports, want) {
					t.Errorf("exports %v, want %s", in.Exports, want)
				}
			}
			if len(in.Options.Scenarios) != 1 {
				t.Errorf("scenarios %v, want one", in.Options.Scenarios)
			}
		})
	}
	for _, f := range libFiles(t) {
		if !imported[f] {
			t.Errorf("%s is imported by no script, so its imports went unchecked", f)
		}
	}
	// What the loader cannot see: dynamic imports and require, and __ENV read around
	// readParams (which would be a parameter the twin does not know).
	for _, f := range append(scripts(t), libFiles(t)...) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		code := stripComments(string(src))
		if regexp.MustCompile(`\bimport\s*\(|\brequire\s*\(`).MatchString(code) {
			t.Errorf("%s has a dynamic import or require: k6 has neither", f)
		}
		if strings.Contains(code, "__ENV") && f != "lib/env.js" {
			t.Errorf("%s reads __ENV: parameters go through readParams in lib/env.js", f)
		}
	}
}

// importProblems lists the imports k6 could not satisfy: anything but a k6 module or a
// file of lib/.
func importProblems(in inspection) []string {
	var out []string
	for _, imp := range in.Imports {
		switch {
		case strings.HasPrefix(imp.Specifier, "k6"):
			if !slices.Contains(k6Modules, imp.Specifier) {
				out = append(out, fmt.Sprintf("%s imports %q, which is not a k6 module", imp.Parent, imp.Specifier))
			}
		case strings.HasPrefix(imp.Specifier, "./") || strings.HasPrefix(imp.Specifier, "../"):
			if !regexp.MustCompile(`^lib/[a-z0-9_]+\.js$`).MatchString(imp.URL) {
				out = append(out, fmt.Sprintf("%s imports %q, which resolves to %s, not a file of lib/", imp.Parent, imp.Specifier, imp.URL))
			}
		default:
			out = append(out, fmt.Sprintf("%s imports %q: only k6 modules and lib/ are available in k6", imp.Parent, imp.Specifier))
		}
	}
	return out
}

func TestImportCheckCatchesWhatK6Lacks(t *testing.T) {
	n := newNode(t)
	writeFile(t, filepath.Join(n.dir, "bad.js"), `import { readFileSync } from 'node:fs';
import { check } from 'k6';
import * as stub from './testdata/stubs/timers.mjs';
import { Ledger } from './lib/ledger.js';
import * as hooks from './lib/../testdata/hooks.mjs';
export const options = { scenarios: {} };
export default function () {}
`)
	problems := importProblems(inspect(t, n, "bad.js", nil))
	if len(problems) != 3 || !strings.Contains(problems[0], `"node:fs"`) || !strings.Contains(problems[1], "testdata/stubs/timers.mjs") ||
		!strings.Contains(problems[2], "testdata/hooks.mjs") {
		t.Fatalf("problems %q: want node:fs and the two files outside lib/", problems)
	}
}

// stripComments drops // and /* */ comments (the scripts have no such text in strings).
func stripComments(src string) string {
	src = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(src, "")
	return regexp.MustCompile(`(?m)^\s*//.*$|\s//\s.*$`).ReplaceAllString(src, "")
}

func TestEveryScriptHasALoadgenTwin(t *testing.T) {
	twins := map[string]bool{}
	for _, tw := range loadgen.K6Twins() {
		twins[tw.Script] = true
		if _, err := os.Stat(tw.Script); err != nil {
			t.Errorf("scenario %s: its twin %s: %v", tw.Scenario, tw.Script, err)
		}
	}
	for _, script := range scripts(t) {
		if !twins[script] {
			t.Errorf("%s has no roomcast-loadgen twin in loadgen.K6Twins", script)
		}
	}
}

func TestTwinsTakeTheSameParametersAndReportTheSameMetrics(t *testing.T) {
	n := newNode(t)
	for _, tw := range loadgen.K6Twins() {
		t.Run(string(tw.Scenario), func(t *testing.T) {
			in := inspect(t, n, tw.Script, tw.Env)
			cfg := loadgen.DefaultConfig(tw.Scenario)

			// Parameters: the same names, read and nothing else, with the same values.
			want := map[string]string{}
			for _, st := range loadgen.Params(tw.Scenario) {
				want[st.Env] = st.K6Value(cfg)
				if st.Flag != strings.ToLower(strings.ReplaceAll(st.Env, "_", "-")) {
					t.Errorf("setting -%s has k6 name %s: want -%s", st.Flag, st.Env, strings.ToLower(strings.ReplaceAll(st.Env, "_", "-")))
				}
			}
			if !maps.Equal(in.Params, want) {
				t.Errorf("%s PARAMS (as k6 holds them) %v\nroomcast-loadgen -scenario %s %v", tw.Script, in.Params, tw.Scenario, want)
			}
			if read := slices.Sorted(maps.Keys(in.Params)); !slices.Equal(in.EnvRead, read) {
				t.Errorf("%s reads __ENV %v, declares PARAMS %v", tw.Script, in.EnvRead, read)
			}

			// Metrics: the same names and kinds.
			got := map[string]string{}
			for _, m := range in.Metrics {
				kind := m.Type
				if m.Type == "trend" && !m.IsTime {
					kind = "trend without isTime"
				}
				got[m.Name] = kind
			}
			wantMetrics := map[string]string{}
			for _, m := range loadgen.Metrics(tw.Scenario) {
				if !m.Builtin {
					wantMetrics[m.Name] = string(m.Kind)
				}
			}
			if !maps.Equal(got, wantMetrics) {
				t.Errorf("%s creates metrics %v\nroomcast-loadgen -scenario %s reports %v", tw.Script, got, tw.Scenario, wantMetrics)
			}

			// Thresholds: the same expressions on the same metrics.
			wantThresholds := map[string][]string{}
			for _, th := range loadgen.Thresholds(cfg) {
				wantThresholds[th.Metric] = append(wantThresholds[th.Metric], th.Expr)
			}
			if !maps.EqualFunc(in.Options.Thresholds, wantThresholds, slices.Equal) {
				t.Errorf("%s thresholds %v\nroomcast-loadgen -scenario %s %v", tw.Script, in.Options.Thresholds, tw.Scenario, wantThresholds)
			}
			for metric := range in.Options.Thresholds {
				if _, ok := got[metric]; !ok && metric != loadgen.MetricChecks {
					t.Errorf("threshold on %s, which the script does not create", metric)
				}
			}
		})
	}
}

func TestBadParameterStopsTheScript(t *testing.T) {
	n := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := n.command(ctx, map[string]string{"ROOMS": "many"}, "testdata/k6emu.mjs", "inspect", "fanout.js").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `invalid ROOMS=\"many\": want a whole number of at least 1`) {
		t.Fatalf("fanout.js with ROOMS=many: %v\n%s", err, out)
	}
}

func TestLibrary(t *testing.T) {
	n := newNode(t)
	goText := string(loadgen.AppendText(nil, "gorun1", 17, 5, 1764188135123456789))
	var res struct {
		JSText string `json:"jsText"`
	}
	if err := json.Unmarshal([]byte(n.output(t, "testdata/lib_test.mjs", goText)), &res); err != nil {
		t.Fatal(err)
	}
	st, ok := loadgen.ParseText([]byte(res.JSText))
	if !ok || string(st.Run) != "jsrun1" || st.Conn != 3 || st.Seq != 9 || st.Sent != 1764188135999000000 {
		t.Fatalf("the text lib/envelope.js makes, %q, reads in Go as %+v, %v", res.JSText, st, ok)
	}
}

// runResult is what k6emu.mjs run reports.
type runResult struct {
	VUs            int                  `json:"vus"`
	Seconds        float64              `json:"seconds"`
	Errors         []string             `json:"errors"`
	LeftoverTimers int                  `json:"leftoverTimers"`
	Metrics        map[string]emuMetric `json:"metrics"`
	Checks         map[string]emuCheck  `json:"checks"`
	// ThresholdResults are the verdicts of the script's thresholds, as k6 gives them.
	ThresholdResults []struct {
		Metric string `json:"metric"`
		Expr   string `json:"expr"`
		Pass   bool   `json:"pass"`
	} `json:"thresholdResults"`
}

// failed lists the thresholds the run crossed, as "metric expr".
func (r runResult) failed() []string {
	var out []string
	for _, th := range r.ThresholdResults {
		if !th.Pass {
			out = append(out, th.Metric+" "+th.Expr)
		}
	}
	slices.Sort(out)
	return out
}

type emuMetric struct {
	Type    string             `json:"type"`
	Samples int                `json:"samples"`
	Sum     float64            `json:"sum"`
	ByTag   map[string]float64 `json:"byTag"`
	P99     float64            `json:"p99"`
}

type emuCheck struct {
	Passes int `json:"passes"`
	Fails  int `json:"fails"`
}

func (r runResult) sum(name string) float64 { return r.Metrics[name].Sum }

// checkRun asserts what every emulated run must show: no error, no timer left behind
// (a real VU would wait for it), every metric of the script recorded.
func checkRun(t *testing.T, r runResult, scenario loadgen.Scenario) {
	t.Helper()
	if len(r.Errors) > 0 || r.LeftoverTimers != 0 {
		t.Fatalf("errors %v, timers left behind %d", r.Errors, r.LeftoverTimers)
	}
	for _, m := range loadgen.Metrics(scenario) {
		if _, ok := r.Metrics[m.Name]; !ok {
			t.Errorf("no sample of %s", m.Name)
		}
	}
	t.Logf("%d VUs in %.1fs: sent %v, expected %v, delivered %v, lost %v, duplicated %v, p99 %.1fms",
		r.VUs, r.Seconds, r.sum(loadgen.MetricSent), r.sum(loadgen.MetricExpected), r.sum(loadgen.MetricDelivered),
		r.sum(loadgen.MetricLost), r.sum(loadgen.MetricDuplicated), r.Metrics[loadgen.MetricLatency].P99)
}

// checkAllDelivered asserts that every message arrived once at every member.
func checkAllDelivered(t *testing.T, r runResult) {
	t.Helper()
	sent, expected := r.sum(loadgen.MetricSent), r.sum(loadgen.MetricExpected)
	if sent == 0 || r.sum(loadgen.MetricDelivered) != expected || r.sum(loadgen.MetricLost) != 0 ||
		r.sum(loadgen.MetricDuplicated) != 0 || r.sum(loadgen.MetricUnexpectedCloses) != 0 || r.sum(loadgen.MetricErrorFrames) != 0 {
		t.Errorf("metrics %+v: want every message delivered once", r.Metrics)
	}
}

type testReplica struct{ *replicatest.Replica }

func (r *testReplica) url() string { return r.WSURL() }

func (r *testReplica) drain(t *testing.T) { r.Shutdown(t) }

// startReplica starts an in-process roomcast replica of color with history; with
// natsURL empty it embeds the NATS server (with a port, for further replicas).
func startReplica(t *testing.T, color, natsURL string, opts ...replicatest.Option) *testReplica {
	t.Helper()
	opts = append([]replicatest.Option{
		replicatest.Color(color), replicatest.Instance(color), replicatest.NATS(natsURL),
		replicatest.RateLimit(1000, 1000), replicatest.History(1000),
	}, opts...)
	if natsURL == "" {
		opts = append(opts, replicatest.EmbeddedNATS())
	}
	r := &testReplica{Replica: replicatest.Start(t, opts...)}
	t.Cleanup(func() { r.drain(t) })
	eventually(t, color+" is ready with history", func() bool {
		v, ok := testenv.LookupMetric(t, r.Registry(), "roomcast_history_available")
		if !ok || v != 1 {
			return false
		}
		resp, err := http.Get(r.URL() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return r
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestScriptsRunAgainstAReplica(t *testing.T) {
	n := newNode(t)
	n.withWebSocket(t)
	rep := startReplica(t, "blue", "")
	base := map[string]string{"URL": rep.url(), "DURATION": "1s", "GRACE": "10s"}
	with := func(kv ...string) map[string]string {
		env := maps.Clone(base)
		for i := 0; i+1 < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}

	t.Run("fanout", func(t *testing.T) {
		var r runResult
		n.emu(t, "run", "fanout.js", with("ROOMS", "3", "MEMBERS", "4", "RATE", "5"), &r)
		checkRun(t, r, loadgen.FanoutSmall)
		checkAllDelivered(t, r)
		if r.VUs != 3 || r.sum(loadgen.MetricExpected) != 4*r.sum(loadgen.MetricSent) {
			t.Errorf("%d VUs, sent %v, expected %v: want 3 rooms of 4", r.VUs, r.sum(loadgen.MetricSent), r.sum(loadgen.MetricExpected))
		}
	})
	t.Run("smoke", func(t *testing.T) {
		var r runResult
		n.emu(t, "run", "smoke.js", base, &r)
		checkRun(t, r, loadgen.Smoke)
		checkAllDelivered(t, r)
		want := map[string]emuCheck{
			"readyz is 200": {Passes: 1}, "readyz says ready": {Passes: 1}, "readyz names its color": {Passes: 1},
			"websocket opens": {Passes: 10},
		}
		if !maps.Equal(r.Checks, want) {
			t.Errorf("checks %v, want %v", r.Checks, want)
		}
		if names := slices.Sorted(maps.Keys(r.Checks)); !slices.Equal(names, slices.Sorted(slices.Values(loadgen.CheckNames()))) {
			t.Errorf("checks %v; roomcast-loadgen's smoke has %v", names, loadgen.CheckNames())
		}
	})
	t.Run("soak", func(t *testing.T) {
		var r runResult
		n.emu(t, "run", "soak.js", with("CONNS", "7", "MEMBERS", "3", "SEND_EVERY", "200ms"), &r)
		checkRun(t, r, loadgen.Soak)
		checkAllDelivered(t, r)
		if r.VUs != 3 || r.sum(loadgen.MetricReconnects) != 0 {
			t.Errorf("%d VUs, %v reconnects: want rooms of 3, 3 and 1, none closed", r.VUs, r.sum(loadgen.MetricReconnects))
		}
	})
}

// startAuthReplica starts a replica that requires a token signed with secret.
func startAuthReplica(t *testing.T, secret []byte) *testReplica {
	t.Helper()
	v, err := auth.New(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return startReplica(t, "blue", "", replicatest.Auth(v))
}

func TestScriptsSendTheToken(t *testing.T) {
	n := newNode(t)
	n.withWebSocket(t)
	secret := []byte("k6 test secret of at least 32 bytes")
	rep := startAuthReplica(t, secret)
	token, err := auth.Mint(secret, auth.Claims{Subject: "k6", Expires: time.Now().Add(time.Hour), Rooms: []string{"k6-*"}})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"URL": rep.url(), "DURATION": "1s", "GRACE": "10s", "ROOMS": "2", "MEMBERS": "3", "RATE": "5"}

	t.Run("with TOKEN", func(t *testing.T) {
		env := maps.Clone(env)
		env["TOKEN"] = token
		var r runResult
		n.emu(t, "run", "fanout.js", env, &r)
		checkRun(t, r, loadgen.FanoutSmall)
		checkAllDelivered(t, r)
		if r.sum(loadgen.MetricConnectFailures) != 0 || r.sum(loadgen.MetricExpected) != 3*r.sum(loadgen.MetricSent) {
			t.Errorf("metrics %+v: want every member connected", r.Metrics)
		}
	})
	t.Run("without", func(t *testing.T) {
		var r runResult
		n.emu(t, "run", "fanout.js", env, &r)
		if got := r.sum(loadgen.MetricConnectFailures); got != 6 || r.sum(loadgen.MetricSent) != 0 {
			t.Errorf("connect failures %v, sent %v: want all 6 refused and nothing sent", got, r.sum(loadgen.MetricSent))
		}
	})
	// The run without TOKEN was refused 6 times for a missing token; the one with it never.
	want := map[auth.Reason]float64{auth.ReasonMissing: 6}
	for _, reason := range auth.Reasons {
		if got, _ := testenv.LookupMetric(t, rep.Registry(), "roomcast_auth_failures_total", "reason", string(reason)); got != want[reason] {
			t.Errorf("auth failures{reason=%s} = %v, want %v", reason, got, want[reason])
		}
	}
}

func TestReleaseScriptResumesAcrossADrain(t *testing.T) {
	n := newNode(t)
	n.withWebSocket(t)
	blue := startReplica(t, "blue", "")
	green := startReplica(t, "green", blue.EmbeddedNATSURL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := n.start(t, ctx, "run", "release.js", map[string]string{
		"URL": blue.url() + "," + green.url(), "ROOMS": "2", "MEMBERS": "4", "RATE": "10",
		"DURATION": "3s", "GRACE": "10s", "RECONNECT_BASE": "20ms", "RECONNECT_MAX": "200ms",
	})
	eventually(t, "the release script's clients are on green", func() bool {
		v, _ := testenv.LookupMetric(t, green.Registry(), "roomcast_connections_active")
		return v == 4
	})
	time.Sleep(500 * time.Millisecond)
	green.drain(t) // its 4 clients are closed with 1012 and resume on blue
	var r runResult
	run.wait(t, &r)
	checkRun(t, r, loadgen.Release)
	unconfirmed := r.sum(loadgen.MetricUnconfirmed)
	if got := r.Metrics[loadgen.MetricReconnectTime].Samples; r.sum(loadgen.MetricReconnects) != 4 || got != 4 {
		t.Errorf("reconnects %v, reconnect times %d; want 4", r.sum(loadgen.MetricReconnects), got)
	}
	if r.sum(loadgen.MetricUnexpectedCloses) != 0 || r.sum(loadgen.MetricDuplicated) != 0 || r.sum(loadgen.MetricHistoryTruncated) != 0 {
		t.Errorf("metrics %+v: want 1012 expected, nothing duplicated or truncated", r.Metrics)
	}
	if lost := r.sum(loadgen.MetricLost); lost != 4*unconfirmed {
		t.Errorf("lost %v deliveries, want only the %v of the %v unconfirmed messages", lost, 4*unconfirmed, unconfirmed)
	}
}

func TestReleaseScriptResumesWithSinceAndEpoch(t *testing.T) {
	n := newNode(t)
	n.withWebSocket(t)
	srv := historytest.New(1000, "e1", "blue")
	var urls []string
	for range 2 {
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		urls = append(urls, "ws"+strings.TrimPrefix(hs.URL, "http"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := n.start(t, ctx, "run", "release.js", map[string]string{
		"URL": strings.Join(urls, ","), "ROOMS": "2", "MEMBERS": "3", "RATE": "10",
		"DURATION": "4s", "GRACE": "2s", "RECONNECT_BASE": "20ms", "RECONNECT_MAX": "100ms",
	})
	upgrades := func(n int) func() bool { return func() bool { return len(srv.Upgrades()) >= n } }
	eventually(t, "6 clients connected", upgrades(6))
	time.Sleep(500 * time.Millisecond)
	srv.CloseAll(1012, false) // a drain: every client resumes in epoch e1
	eventually(t, "6 clients resumed", upgrades(12))
	time.Sleep(500 * time.Millisecond)
	srv.CloseAll(1012, true) // refused for a while, and the history store recreated
	time.Sleep(300 * time.Millisecond)
	srv.SetEpoch("e2")
	srv.Reopen()
	eventually(t, "6 clients resumed again", upgrades(18))
	var r runResult
	run.wait(t, &r)
	checkRun(t, r, loadgen.Release)

	for i, up := range srv.Upgrades() {
		resumed := i >= 6
		if (up.Since != "") != resumed || (resumed && up.Epoch != "e1") || up.Truncated != (i >= 12) {
			t.Errorf("upgrade %d: %+v; want since %v, epoch e1, truncated %v", i, up, resumed, i >= 12)
		}
	}
	if r.sum(loadgen.MetricReconnects) != 12 || r.sum(loadgen.MetricHistoryTruncated) != 6 || r.sum(loadgen.MetricConnectFailures) == 0 {
		t.Errorf("reconnects %v, history_truncated %v, connect failures %v; want 12, 6, some",
			r.sum(loadgen.MetricReconnects), r.sum(loadgen.MetricHistoryTruncated), r.sum(loadgen.MetricConnectFailures))
	}
	if got := r.Metrics[loadgen.MetricErrorFrames].ByTag["code:history_truncated"]; got != 6 {
		t.Errorf("error frames by code %v, want 6 history_truncated", r.Metrics[loadgen.MetricErrorFrames].ByTag)
	}
	if lost, unconfirmed := r.sum(loadgen.MetricLost), r.sum(loadgen.MetricUnconfirmed); lost != 3*unconfirmed || r.sum(loadgen.MetricDuplicated) != 0 {
		t.Errorf("lost %v (unconfirmed messages %v), duplicated %v: want only the unconfirmed lost, nothing duplicated",
			lost, unconfirmed, r.sum(loadgen.MetricDuplicated))
	}
}

func TestReleaseScriptCountsLossesNobodyWasToldOf(t *testing.T) {
	// As roomcast-loadgen counts them: a message that reaches no member and is not
	// refused (unanswered), and a delivery missing at a member never told of a gap.
	n := newNode(t)
	n.withWebSocket(t)
	srv := historytest.New(1000, "e1", "blue")
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := n.start(t, ctx, "run", "release.js", map[string]string{
		"URL": "ws" + strings.TrimPrefix(hs.URL, "http"), "ROOMS": "2", "MEMBERS": "3", "RATE": "10",
		"DURATION": "3s", "GRACE": "1s", "RECONNECT_BASE": "20ms", "RECONNECT_MAX": "100ms",
	})
	eventually(t, "6 clients connected", func() bool { return len(srv.Upgrades()) >= 6 })
	srv.Drop(false) // the next message of each room reaches nobody, silently
	eventually(t, "a message of each room dropped", func() bool { return srv.Pending() == 0 })
	srv.Gap(false) // the next message of each room misses one member, silently
	eventually(t, "a message of each room gapped", func() bool { return srv.Pending() == 0 })
	var r runResult
	run.wait(t, &r)
	checkRun(t, r, loadgen.Release)
	if got, untold := r.sum(loadgen.MetricUnanswered), r.sum(loadgen.MetricLostUntold); got != 2 || untold != 2 {
		t.Errorf("unanswered %v, lost untold %v; want 2 and 2 (one of each in each room)", got, untold)
	}
	if lost := r.sum(loadgen.MetricLost); lost != 2*3+2 {
		t.Errorf("lost %v deliveries, want 8", lost)
	}
}

// twinEnv is the k6 environment that gives tw's script cfg's parameters.
func twinEnv(tw loadgen.K6Twin, cfg loadgen.Config) map[string]string {
	env := map[string]string{}
	for _, st := range loadgen.Params(tw.Scenario) {
		env[st.Env] = st.String(cfg)
	}
	return env
}

// shortTwinConfig is a run of a few seconds of tw's scenario against urls.
func shortTwinConfig(t *testing.T, tw loadgen.K6Twin, urls []string) loadgen.Config {
	cfg := loadgen.DefaultConfig(tw.Scenario)
	cfg.URLs = urls
	cfg.Rooms, cfg.Members, cfg.Rate, cfg.Conns = 2, 3, 5, 4
	cfg.Duration, cfg.Grace, cfg.SendEvery = time.Second, 500*time.Millisecond, 100*time.Millisecond
	cfg.ReconnectBase, cfg.ReconnectMax = 20*time.Millisecond, 100*time.Millisecond
	cfg.Log = testenv.Logger(t)
	return cfg
}

func TestScriptsFailWhereTheirTwinsFail(t *testing.T) {
	// k6 passes a threshold whose metric has no sample: a run that connected nobody, or
	// that delivered nothing where loss is allowed, must still fail on the counters the
	// scripts always record, and roomcast-loadgen must fail in the same cases.
	n := newNode(t)
	n.withWebSocket(t)
	authd := startAuthReplica(t, []byte("k6 test secret of at least 32 bytes"))
	for _, tw := range loadgen.K6Twins() {
		if len(tw.Env) > 0 {
			continue // another scenario's script with other parameters
		}
		t.Run(string(tw.Scenario)+"/nothing delivered", func(t *testing.T) {
			srv := historytest.New(10, "e1", "blue")
			srv.Mute()
			hs := httptest.NewServer(srv)
			t.Cleanup(hs.Close)
			cfg := shortTwinConfig(t, tw, []string{"ws" + strings.TrimPrefix(hs.URL, "http")})
			cfg.MaxLost = 1 << 40
			var r runResult
			n.emu(t, "run", tw.Script, twinEnv(tw, cfg), &r)
			want := []string{loadgen.MetricDelivered + " count>0"}
			if !slices.Equal(r.failed(), want) {
				t.Errorf("%s crossed %q, want %q", tw.Script, r.failed(), want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := loadgen.Run(ctx, cfg)
			if err != nil {
				t.Fatalf("roomcast-loadgen -scenario %s: %v", tw.Scenario, err)
			}
			var failed []string
			for _, th := range rep.Thresholds {
				if !th.Pass {
					failed = append(failed, th.Metric+" "+th.Expr)
				}
			}
			if !slices.Equal(failed, want) {
				t.Errorf("roomcast-loadgen -scenario %s crossed %q, want %q", tw.Scenario, failed, want)
			}
		})
		t.Run(string(tw.Scenario)+"/refused without a token", func(t *testing.T) {
			cfg := shortTwinConfig(t, tw, []string{authd.url()})
			var r runResult
			n.emu(t, "run", tw.Script, twinEnv(tw, cfg), &r)
			refused := loadgen.MetricConnectFailures
			if tw.Scenario == loadgen.Soak || tw.Scenario == loadgen.Release {
				refused = loadgen.MetricJoinFailures
			}
			for _, want := range []string{refused + " count==0", loadgen.MetricDelivered + " count>0"} {
				if !slices.Contains(r.failed(), want) {
					t.Errorf("%s crossed %q, want %q among them", tw.Script, r.failed(), want)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if rep, err := loadgen.Run(ctx, cfg); err == nil {
				t.Errorf("roomcast-loadgen -scenario %s succeeded (thresholds %+v), want an error", tw.Scenario, rep.Thresholds)
			}
		})
	}
}

func TestJustK6CopiesTheScriptsIntoAPinnedImage(t *testing.T) {
	just := testenv.Program(t, "just")
	// A docker that records its arguments (one per line, NUL-free) and its TOKEN.
	bin := t.TempDir()
	log := filepath.Join(bin, "log")
	writeFile(t, filepath.Join(bin, "docker"), `#!/bin/sh
{ echo "call"; for a in "$@"; do echo "arg $a"; done; echo "token $TOKEN"; } >> "`+log+`"
[ "$1" = create ] && echo c0ffee
exit 0
`)
	if err := os.Chmod(filepath.Join(bin, "docker"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(just, "--justfile", "../justfile", "k6", "release.js", "-e", "ROOMS=5", "-e", "NOTE=two words $(id)")
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "K6_TOKEN=the-token", "K6_IMAGE=", "K6_URL=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("just k6: %v\n%s", err, out)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		switch {
		case line == "call":
			calls = append(calls, nil)
		case strings.HasPrefix(line, "arg "):
			calls[len(calls)-1] = append(calls[len(calls)-1], strings.TrimPrefix(line, "arg "))
		case line != "token the-token":
			t.Errorf("docker ran with %q, want TOKEN=the-token in its environment", line)
		}
	}
	if len(calls) != 4 || calls[0][0] != "create" || calls[1][0] != "cp" || calls[2][0] != "start" || calls[3][0] != "rm" {
		t.Fatalf("docker calls %q: want create, cp, start, rm", calls)
	}
	create := calls[0]
	image := slices.IndexFunc(create, func(a string) bool { return strings.HasPrefix(a, "grafana/k6:") })
	if image < 0 || !regexp.MustCompile(`^grafana/k6:\d+\.\d+\.\d+$`).MatchString(create[image]) {
		t.Errorf("docker %q: want a pinned grafana/k6:<version> image", create)
	}
	if slices.Contains(create, "-v") || slices.Contains(create, "--volume") || slices.Contains(create, "--mount") {
		t.Errorf("docker %q: want the scripts copied in, not mounted", create)
	}
	wantRun := []string{"run", "-e", "ROOMS=5", "-e", "NOTE=two words $(id)", "/scripts/release.js"}
	if image < 0 || !slices.Equal(create[image+1:], wantRun) {
		t.Errorf("docker %q: want the image followed by %q", create, wantRun)
	}
	for _, a := range create {
		if strings.Contains(a, "the-token") {
			t.Errorf("docker %q: the token is on the command line", create)
		}
	}
	if !slices.Equal(calls[1], []string{"cp", mustAbs(t, ".") + "/.", "c0ffee:/scripts"}) {
		t.Errorf("docker %q: want the k6 directory copied to /scripts", calls[1])
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
