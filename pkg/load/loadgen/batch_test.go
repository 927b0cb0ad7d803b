package loadgen_test

import (
	"testing"
	"time"

	"roomcast/pkg/load/loadgen"
	"roomcast/pkg/server/wsgateway"
)

func TestBatchedRunsCountEveryMessageOfAFrameOnce(t *testing.T) {
	if loadgen.BatchSubprotocol != wsgateway.SubprotocolBatch {
		t.Fatalf("loadgen offers %q, the server selects %q", loadgen.BatchSubprotocol, wsgateway.SubprotocolBatch)
	}
	urls := twoReplicas(t)
	cfg := tinyConfig(t, loadgen.FanoutSmall, urls)
	// Fast enough that frames queue up behind each other and go out batched.
	cfg.Rate, cfg.Duration, cfg.Batch = 100, time.Second, true
	rep := mustRun(t, cfg)
	checkClean(t, rep)
}
