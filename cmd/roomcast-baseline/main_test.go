package main

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"go.uber.org/goleak"

	"roomcast/pkg/cli/clitest"
	"roomcast/pkg/wsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHelpAndBadEnvironment(t *testing.T) {
	clitest.Help(t, name, run, "ROOMCAST_ADDR", ":8080", "/ws/chat/{room}/", "Not for production")
	clitest.InvalidEnv(t, name, run, map[string]string{"ROOMCAST_ADDR": "nowhere"}, "ROOMCAST_ADDR", "nowhere")
	clitest.UsageErrors(t, name, run, []string{"extra"}, []string{"-nope"})
}

func TestItServesARoomUntilItsContextEnds(t *testing.T) {
	p := clitest.Start(t, name, run, map[string]string{"ROOMCAST_ADDR": "127.0.0.1:0"})
	var addr string
	re := regexp.MustCompile(`"msg":"listening","addr":"([^"]+)"`)
	clitest.Eventually(t, 5*time.Second, "listening", func() error {
		if m := re.FindStringSubmatch(p.Stderr.String()); m != nil {
			addr = m[1]
			return nil
		}
		return errors.New("no listening line yet")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := wsclient.Dial(ctx, "ws://"+addr+"/ws/chat/lobby/", wsclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send("hello"); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Next(ctx); err != nil || f.Type != "message" || f.Message != "hello" {
		t.Fatalf("got %+v, %v; want the message back", f, err)
	}
	c.Close()
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}
}
