package nginx_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/fleet/edge"
	"roomcast/pkg/fleet/edge/edgetest"
	"roomcast/pkg/fleet/swarm/swarmtest"
	"roomcast/pkg/testenv"
)

// buildRootfs runs base/build-rootfs into out and returns its output.
func buildRootfs(t *testing.T, out string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, "bash", "base/build-rootfs", out).CombinedOutput()
	return string(b), err
}

func listFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files = append(files, fmt.Sprintf("%s %v %d", rel, info.Mode(), info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// TestStandInRootfs builds the nginx stand-in's root filesystem from Debian's packages
// and runs the rendered edge config with its nginx under chroot: the same check as
// the image, without docker.
func TestStandInRootfs(t *testing.T) {
	chroot := testenv.Program(t, "chroot")
	testenv.Program(t, "dpkg")
	testenv.Program(t, "ldd")
	testenv.Program(t, "nginx") // its libraries are what the rootfs copies
	if os.Getenv("NGINX_DEBS") == "" {
		testenv.Program(t, "apt-get")
	}
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "chroot needs root")
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	if out, err := buildRootfs(t, root); err != nil {
		t.Fatalf("build-rootfs: %v\n%s", err, out)
	}
	first := listFiles(t, root)
	if out, err := buildRootfs(t, root); err != nil {
		t.Fatalf("build-rootfs a second time: %v\n%s", err, out)
	}
	if second := listFiles(t, root); strings.Join(first, "\n") != strings.Join(second, "\n") {
		t.Fatalf("a second build differs:\n%s\n---\n%s", strings.Join(first, "\n"), strings.Join(second, "\n"))
	}
	for _, want := range []string{"usr/sbin/nginx", "etc/nginx/mime.types", "etc/passwd", "etc/group", "lib64/ld-linux-x86-64.so.2"} {
		if _, err := os.Stat(filepath.Join(root, want)); err != nil {
			t.Errorf("rootfs lacks %s", want)
		}
	}

	t.Run("refuses to replace a directory it did not build", func(t *testing.T) {
		other := t.TempDir()
		keep := filepath.Join(other, "precious")
		if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := buildRootfs(t, other); err == nil {
			t.Fatalf("build-rootfs replaced a foreign directory:\n%s", out)
		}
		if _, err := os.Stat(keep); err != nil {
			t.Fatal("build-rootfs deleted a foreign file")
		}
	})

	// Paths as nginx sees them inside the chroot.
	p := params("/")
	p.PidPath, p.TempDir, p.ErrorLog, p.AccessLog = "/run/roomcast-edge/nginx.pid", "/run/roomcast-edge/tmp", "stderr", "/tmp/access.log"
	if err := os.MkdirAll(filepath.Join(root, p.TempDir), 0o755); err != nil {
		t.Fatal(err)
	}
	tmpl := MustTemplate(t)
	render := func(t *testing.T, p edge.Params) string {
		t.Helper()
		if err := tmpl.RenderFile(filepath.Join(root, "run/roomcast-edge/nginx.conf"), p); err != nil {
			t.Fatal(err)
		}
		return "/run/roomcast-edge/nginx.conf"
	}

	for _, user := range []string{"", "nginx", "www-data"} {
		t.Run("nginx -t with user "+cmp.Or(user, "default"), func(t *testing.T) {
			q := p
			q.User = user
			conf := render(t, q)
			out, err := exec.Command(chroot, root, "/usr/sbin/nginx", "-t", "-q", "-e", "stderr", "-c", conf).CombinedOutput()
			if err != nil {
				t.Fatalf("chroot nginx -t: %v\n%s", err, out)
			}
		})
	}

	t.Run("serves the edge config", func(t *testing.T) {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Roomcast-Color", "green")
			fmt.Fprintln(w, "green")
		}))
		t.Cleanup(app.Close)
		q := p
		q.Backend, q.BackendPort, q.ListenPort = "127.0.0.1", app.Listener.Addr().(*net.TCPAddr).Port, testenv.FreePort(t)
		q.StatusPort, q.WorkerShutdownTimeout = testenv.FreePort(t), time.Second
		conf := render(t, q)
		var out testenv.SyncBuffer
		cmd := exec.Command(chroot, root, "/usr/sbin/nginx", "-e", "stderr", "-c", conf, "-g", "daemon off;")
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			// chroot execs nginx: this PID is the nginx master.
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
				t.Errorf("chrooted nginx (pid %d) did not stop on SIGTERM", cmd.Process.Pid)
			}
		})
		base := fmt.Sprintf("http://127.0.0.1:%d", q.ListenPort)
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/.roomcast/edge", q.StatusPort))
			if err == nil {
				var st edge.Status
				err = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				if err != nil || st.Color != "green" {
					t.Fatalf("/.roomcast/edge: %+v %v", st, err)
				}
				break
			}
			select {
			case err := <-exited:
				t.Fatalf("chrooted nginx exited: %v\n%s", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("chrooted nginx not answering: %v\n%s", err, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		resp, body := get(t, base+"/")
		if resp.StatusCode != 200 || strings.TrimSpace(body) != "green" || resp.Header.Get("X-Roomcast-Color") != "green" {
			t.Fatalf("GET /: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		// nginx logs a request after answering it: give the worker a moment.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			log, err := os.ReadFile(filepath.Join(root, "tmp/access.log"))
			if err == nil && strings.Contains(string(log), `"color":"green"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("access log: %q %v", log, err)
			}
		}
	})

	t.Run("the edge image, assembled by its Dockerfile, flips under chroot", func(t *testing.T) {
		testEdgeImage(t, chroot, root)
	})
}

// dockerfile is what the test reads of a Dockerfile: ENV, COPY and ENTRYPOINT.
type dockerfile struct {
	env        []string
	copies     [][2]string
	entrypoint []string
}

func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "ENV":
			d.env = append(d.env, f[1:]...)
		case "COPY":
			if len(f) != 3 {
				t.Fatalf("%s: COPY with options or several sources: %q", path, line)
			}
			d.copies = append(d.copies, [2]string{f[1], f[2]})
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, f[0]))), &d.entrypoint); err != nil {
				t.Fatalf("%s: ENTRYPOINT is not exec form: %v", path, err)
			}
		}
	}
	return d
}

// testEdgeImage lays the edge image over a copy of the stand-in rootfs the way
// nginx/Dockerfile does (its COPY lines, from a build context with the static
// binary), then runs its ENTRYPOINT under chroot with the image's defaults, against a
// fake Docker API and DNS, and flips it from blue to green.
func testEdgeImage(t *testing.T, chroot, base string) {
	goBin := testenv.Program(t, "go")
	image := filepath.Join(t.TempDir(), "image")
	if out, err := exec.Command("cp", "-a", base, image).CombinedOutput(); err != nil {
		t.Fatalf("copying the rootfs: %v\n%s", err, out)
	}
	// The build context: this directory, plus the binary as the Dockerfile says.
	ctxDir := t.TempDir()
	build := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(ctxDir, "roomcast-edge"), "roomcast/cmd/roomcast-edge")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := exec.Command("cp", "nginx.conf.tmpl", ctxDir).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	edgeFile := readDockerfile(t, "Dockerfile")
	for _, c := range edgeFile.copies {
		dst := filepath.Join(image, c[1])
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-p", filepath.Join(ctxDir, c[0]), dst).CombinedOutput(); err != nil {
			t.Fatalf("COPY %s %s: %v\n%s", c[0], c[1], err, out)
		}
	}
	if len(edgeFile.entrypoint) == 0 {
		t.Fatal("nginx/Dockerfile has no ENTRYPOINT")
	}

	fake := swarmtest.NewServer(t)
	one := uint64(1)
	fake.SetService("edge_nginx", map[string]string{bluegreen.LabelActive: "blue"}, &one)
	dns := edgetest.NewDNS(t)
	blue := backend(t, "127.0.0.2:0", "blue", http.StatusOK)
	port := blue.port()
	backend(t, fmt.Sprintf("127.0.0.3:%d", port), "green", http.StatusOK)
	dns.Set("blue_app", "127.0.0.2")
	dns.Set("green_app", "127.0.0.3")
	listen, statusPort := testenv.FreePort(t), testenv.FreePort(t)

	// The image's environment (base, then edge), then what a stack file would set.
	env := append(readDockerfile(t, "base/Dockerfile").env, edgeFile.env...)
	env = append(env,
		"DOCKER_HOST="+fake.Host(),
		"ROOMCAST_EDGE_RESOLVER="+dns.Addr(),
		fmt.Sprintf("ROOMCAST_EDGE_APP_PORT=%d", port),
		fmt.Sprintf("ROOMCAST_EDGE_LISTEN_PORT=%d", listen),
		fmt.Sprintf("ROOMCAST_EDGE_STATUS_PORT=%d", statusPort),
		"ROOMCAST_EDGE_METRICS_ADDR=127.0.0.1:0",
		"ROOMCAST_EDGE_WORKER_SHUTDOWN_TIMEOUT=1s",
		"ROOMCAST_EDGE_ACCESS_LOG=/tmp/access.log", // a chroot has no /dev; a container has
	)
	// The container runtime would provide /dev/null (os/exec opens it for nginx's stdin).
	if err := os.MkdirAll(filepath.Join(image, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(image, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		testenv.Unavailable(t, "cannot create /dev/null in the chroot: %v", err)
	}
	var out testenv.SyncBuffer
	cmd := exec.Command(chroot, append([]string{image}, edgeFile.entrypoint...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			t.Errorf("roomcast-edge (pid %d) did not stop", cmd.Process.Pid)
		}
		if b, err := os.ReadFile(filepath.Join(image, "run/roomcast-edge/nginx.pid")); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 && syscall.Kill(pid, 0) == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("nginx (pid %d) outlived roomcast-edge", pid)
			}
		}
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	})

	serving := func(color string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var st edge.Status
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/.roomcast/edge", statusPort))
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
			}
			if err == nil && st.Color == color {
				return
			}
			select {
			case <-exited:
				t.Fatalf("roomcast-edge exited: %v\n%s", waitErr, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("not serving %s: %+v %v\n%s", color, st, err, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	serving("blue")
	for _, want := range []string{"/run/roomcast-edge/nginx.conf", "/run/roomcast-edge/nginx.pid", "/run/roomcast-edge/tmp"} {
		if _, err := os.Stat(filepath.Join(image, want)); err != nil {
			t.Errorf("default path %s not used: %v", want, err)
		}
	}
	fake.SetLabel("edge_nginx", bluegreen.LabelActive, "green")
	serving("green")
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", listen)); strings.TrimSpace(body) != "green" || resp.Header.Get("X-Roomcast-Color") != "green" {
		t.Fatalf("GET / after the flip: %q %v", body, resp.Header)
	}

	// docker stop sends the image's STOPSIGNAL.
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("after SIGQUIT: %v, want exit 0\n%s", waitErr, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("roomcast-edge did not stop on SIGQUIT")
	}
}
