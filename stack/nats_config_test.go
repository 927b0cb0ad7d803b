package stack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"roomcast/pkg/chat"
	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/envconfig"
	"roomcast/pkg/fleet/bluegreen"
	"roomcast/pkg/server/natsbroker"
	"roomcast/pkg/testenv"
)

// The stack's NATS configuration (stack/nats.conf, nats-auth.conf, nats-cluster.conf)
// run by the real nats-server, outside Docker, with the secrets roomcast-release renders:
// the app's broker works within its permissions, and nothing else gets in.

// natsNodeProc is a nats-server process running the stack's configuration.
type natsNodeProc struct {
	client, monitor, cluster int
	log                      *testenv.SyncBuffer
}

// startStackNATS runs nats-server with the stack's files laid out as the containers
// have them (/etc/nats, /run/secrets under root), the addresses moved to 127.0.0.1 and
// free ports by flags. usersFile and routesFile are the secrets' content; routesFile
// nil runs stack/nats.conf (one node), else stack/nats-cluster.conf.
func startStackNATS(t *testing.T, usersFile, routesFile []byte, clusterPort int) natsNodeProc {
	t.Helper()
	bin := testenv.Program(t, "nats-server")
	root := t.TempDir()
	etc, secrets := filepath.Join(root, "etc", "nats"), filepath.Join(root, "run", "secrets")
	for _, d := range []string{etc, secrets} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"nats.conf", "nats-auth.conf", "nats-cluster.conf"} {
		writeFile(t, filepath.Join(etc, f), mustReadRepo(t, "stack/"+f))
	}
	// The store is the one setting no flag overrides (the volume at /data in Swarm).
	conf := mustReadRepo(t, "stack/nats.conf")
	if !bytes.Contains(conf, []byte("store_dir: /data\n")) {
		t.Fatal("stack/nats.conf keeps JetStream's store elsewhere than /data")
	}
	writeFile(t, filepath.Join(etc, "nats.conf"), bytes.Replace(conf, []byte("store_dir: /data\n"),
		fmt.Appendf(nil, "store_dir: %q\n", filepath.Join(root, "data")), 1))
	// The cluster's nodes run it as cluster.conf (stack/nats-cluster.yml). Its listen
	// address is rewritten, not overridden: nats-server's --cluster flag drops the
	// routes' authorization of the file.
	cluster := mustReadRepo(t, "stack/nats-cluster.conf")
	if !bytes.Contains(cluster, []byte("listen: 0.0.0.0:6222\n")) {
		t.Fatal("stack/nats-cluster.conf has routes elsewhere than 0.0.0.0:6222")
	}
	writeFile(t, filepath.Join(etc, "cluster.conf"), bytes.Replace(cluster, []byte("listen: 0.0.0.0:6222\n"),
		fmt.Appendf(nil, "listen: 127.0.0.1:%d\n", clusterPort), 1))
	writeFile(t, filepath.Join(secrets, "nats_users.conf"), usersFile)
	n := natsNodeProc{client: testenv.FreePort(t), monitor: testenv.FreePort(t), log: &testenv.SyncBuffer{}}
	main := "nats.conf"
	args := []string{"-a", "127.0.0.1", "-p", fmt.Sprint(n.client), "-m", fmt.Sprint(n.monitor)}
	if routesFile != nil {
		writeFile(t, filepath.Join(secrets, "nats_routes.conf"), routesFile)
		main, n.cluster = "cluster.conf", clusterPort
	}
	cmd := exec.Command(bin, append([]string{"-c", filepath.Join(etc, main)}, args...)...)
	cmd.Env = []string{"NATS_SERVER_NAME=" + fmt.Sprintf("test-%d", n.client)}
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server %d:\n%s", n.client, n.log)
		}
	})
	clitest.Poll(t, 20*time.Second, 50*time.Millisecond, "nats-server ready", func() error {
		if strings.Contains(n.log.String(), "[FTL]") || strings.Contains(n.log.String(), "nats-server: ") {
			t.Fatalf("nats-server refused the stack's configuration:\n%s", n.log)
		}
		if !strings.Contains(n.log.String(), "Server is ready") {
			return errors.New("not ready")
		}
		return nil
	})
	return n
}

func (n natsNodeProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.client) }

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustReadRepo(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// violations collects the NATS server's asynchronous errors of a connection.
type violations chan error

func (v violations) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case v <- err:
		default:
		}
	})
}

// expect waits for a permissions violation naming subject.
func (v violations) expect(t *testing.T, subject string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-v:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-timeout:
			t.Fatalf("no permissions violation for %s", subject)
		}
	}
}

func TestStackNATSConfigLetsTheAppUseItsStreamAndNothingElse(t *testing.T) {
	password := randomPassword(t)
	node := startStackNATS(t, bluegreen.NATSUsersFile(password), nil, 0)

	// No credentials, or a wrong password: refused.
	for name, opts := range map[string][]nats.Option{
		"no credentials":   nil,
		"a wrong password": {nats.UserInfo("roomcast", password+"x")},
		"another user":     {nats.UserInfo("admin", password)},
	} {
		nc, err := nats.Connect(node.url(), append(opts, nats.Timeout(2*time.Second))...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Errorf("%s: %v, want an authorization violation", name, err)
		}
	}

	// The app's broker, as the stacks run it: history in a file stream, here in the most
	// shards the permissions allow (the stacks run one, the first of them).
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "nats-password")
	writeFile(t, pwFile, []byte(password+"\n"))
	cfg := natsbroker.Config{URL: node.url(), User: "roomcast", PasswordFile: pwFile, Name: "test",
		History: natsbroker.HistoryConfig{Size: 10, TTL: time.Hour, Replicas: 1, MaxBytes: 64 << 20, Shards: 8}}
	if err := cfg.Load(map[string]string{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := natsbroker.Connect(cfg, testenv.Logger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	clitest.Poll(t, 10*time.Second, 50*time.Millisecond, "history stream found", func() error {
		if v := testenv.Metric(t, reg, "roomcast_history_available"); v != 1 {
			return errors.New("roomcast_history_available is not 1")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if v := testenv.Metric(t, reg, "roomcast_history_stream_shards"); v != 8 {
		t.Fatalf("roomcast_history_stream_shards = %v, want 8", v)
	}
	for i := range 8 { // lobby0 to lobby7: one in each of the 8 shards
		room := "lobby" + strconv.Itoa(i)
		got := make(chan chat.Message, 1)
		if _, err := b.Subscribe(ctx, room, func(m chat.Message) { got <- m }); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, chat.Message{ID: "m" + strconv.Itoa(i), Room: room, Text: "hi", Accepted: time.Now()}); err != nil {
			t.Fatalf("room %s: %v", room, err)
		}
		select {
		case m := <-got:
			if m.Seq == 0 || m.Text != "hi" {
				t.Errorf("room %s: delivered %+v, want it numbered by the stream", room, m)
			}
		case <-ctx.Done():
			t.Fatalf("room %s: the published message was not delivered", room)
		}
		stored, err := b.History().ReadSince(ctx, room, 0, "")
		if err != nil || len(stored.Messages) != 1 {
			t.Errorf("room %s: history: %+v, %v; want the message", room, stored, err)
		}
	}
	if v := testenv.Metric(t, reg, "roomcast_broker_async_errors_total", "kind", "other"); v != 0 {
		t.Errorf("the app's broker met %v asynchronous errors (permissions violations?)", v)
	}

	// The same credentials on a connection of their own: what a stolen password could do.
	v := make(violations, 16)
	nc, err := nats.Connect(node.url(), nats.UserInfo("roomcast", password), v.handler())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	short := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	for _, tt := range []struct {
		name, subject string
		do            func() error
	}{
		{"delete the stream", "$JS.API.STREAM.DELETE." + natsbroker.DefaultStream,
			func() error { return js.DeleteStream(short(), natsbroker.DefaultStream) }},
		{"purge the stream", "$JS.API.STREAM.PURGE." + natsbroker.DefaultStream,
			func() error { s, _ := js.Stream(short(), natsbroker.DefaultStream); return s.Purge(short()) }},
		{"change the stream", "$JS.API.STREAM.UPDATE." + natsbroker.DefaultStream,
			func() error {
				_, err := js.UpdateStream(short(), jetstream.StreamConfig{Name: natsbroker.DefaultStream, Subjects: []string{">"}})
				return err
			}},
		{"delete a shard's stream", "$JS.API.STREAM.DELETE." + natsbroker.DefaultStream + "_1",
			func() error { return js.DeleteStream(short(), natsbroker.DefaultStream+"_1") }},
		{"create a stream beyond the shards", "$JS.API.STREAM.CREATE." + natsbroker.DefaultStream + "_8",
			func() error {
				_, err := js.CreateStream(short(), jetstream.StreamConfig{Name: natsbroker.DefaultStream + "_8", Subjects: []string{natsbroker.SubjectPrefix + "8.*"}})
				return err
			}},
		{"create another stream", "$JS.API.STREAM.CREATE.OTHER",
			func() error {
				_, err := js.CreateStream(short(), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}})
				return err
			}},
		{"create a consumer", "$JS.API.CONSUMER.CREATE." + natsbroker.DefaultStream,
			func() error {
				_, err := js.CreateOrUpdateConsumer(short(), natsbroker.DefaultStream, jetstream.ConsumerConfig{Name: "c"})
				return err
			}},
		{"publish on a live subject", natsbroker.LivePrefix + "lobby",
			func() error { return nc.Publish(natsbroker.LivePrefix+"lobby", []byte(`{"v":1,"room":"lobby"}`)) }},
		{"read what other clients publish", natsbroker.SubjectPrefix + ">",
			func() error { _, err := nc.SubscribeSync(natsbroker.SubjectPrefix + ">"); return err }},
		{"read the server's events", "$SYS.>",
			func() error { _, err := nc.SubscribeSync("$SYS.>"); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_ = tt.do() // refused by the server: the error, if any, comes asynchronously
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			v.expect(t, tt.subject)
		})
	}
	s, err := js.Stream(short(), natsbroker.DefaultStream)
	if err != nil {
		t.Fatalf("the stream is gone: %v", err)
	}
	if info, err := s.Info(short()); err != nil || info.State.Msgs != 1 || len(info.Config.Subjects) != 1 {
		t.Errorf("the stream changed: %+v, %v", info, err)
	}
}

// JetStream's bounds in stack/nats.conf hold the history stream's default bound: a
// larger stream than max_file_store could not be created at all.
func TestStackNATSStoreHoldsTheHistoryStreamsDefaultBound(t *testing.T) {
	node := startStackNATS(t, bluegreen.NATSUsersFile(randomPassword(t)), nil, 0)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", node.monitor))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want, err := envconfig.Parse[natsbroker.HistoryConfig](map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"max_storage": 1073741824`, `"max_memory": 67108864`} {
		if !strings.Contains(string(body), s) {
			t.Errorf("/varz lacks %s", s)
		}
	}
	if want.MaxBytes <= 0 || want.MaxBytes > 1<<30 {
		t.Errorf("ROOMCAST_HISTORY_MAX_BYTES defaults to %d, over max_file_store (1 GiB)", want.MaxBytes)
	}
}

// Routes of the cluster authenticate: three nodes with the release's routes secret, each
// listing every member, itself too (as every member of stack/nats-cluster.yml does), form
// a full mesh; a node that dials without the secret is refused.
func TestStackNATSClusterRoutesNeedTheSecret(t *testing.T) {
	users := bluegreen.NATSUsersFile(randomPassword(t))
	ports := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	members := make([]string, len(ports))
	for i, p := range ports {
		members[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	routes := bluegreen.NATSRoutesFile(randomPassword(t), members...)
	var nodes []natsNodeProc
	for _, p := range ports {
		nodes = append(nodes, startStackNATS(t, users, routes, p))
	}
	a := nodes[0]
	routeCount := func(n natsNodeProc) int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/routez", n.monitor))
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var count int
		body, _ := io.ReadAll(resp.Body)
		_, _ = fmt.Sscanf(after(string(body), `"num_routes":`), "%d", &count)
		return count
	}
	clitest.Poll(t, 20*time.Second, 100*time.Millisecond, "a route between every two nodes", func() error {
		for i, n := range nodes {
			if c := routeCount(n); c != len(nodes)-1 {
				return fmt.Errorf("node %d has %d routes, want %d", i+1, c, len(nodes)-1)
			}
		}
		return nil
	})
	before := routeCount(a)

	intruder := &testenv.SyncBuffer{}
	cmd := exec.Command(testenv.Program(t, "nats-server"), "-a", "127.0.0.1", "-p", fmt.Sprint(testenv.FreePort(t)),
		"--cluster_name", "roomcast", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t)),
		"--routes", "nats://"+members[0])
	cmd.Stdout, cmd.Stderr = intruder, intruder
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	clitest.Poll(t, 20*time.Second, 100*time.Millisecond, "the route without the secret refused", func() error {
		if !strings.Contains(strings.ToLower(a.log.String()), "authentication error") &&
			!strings.Contains(strings.ToLower(intruder.String()), "authorization violation") {
			return errors.New("no authentication error yet")
		}
		return nil
	})
	if n := routeCount(a); n != before {
		t.Errorf("routes went from %d to %d with a node without the secret:\n%s", before, n, intruder)
	}
}

func after(s, prefix string) string {
	_, rest, _ := strings.Cut(s, prefix)
	return strings.TrimSpace(rest)
}
