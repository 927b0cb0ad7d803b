package servermetrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"roomcast/pkg/chat"
	"roomcast/pkg/server/servermetrics"
	"roomcast/pkg/testenv"
)

func TestEveryKindStartsAtZeroAndCountsAlone(t *testing.T) {
	reg := prometheus.NewRegistry()
	errs := servermetrics.NewErrors(reg)
	for _, kind := range chat.ErrorKinds {
		if v := testenv.Metric(t, reg, "roomcast_errors_total", "kind", string(kind)); v != 0 {
			t.Errorf("errors{kind=%s} = %v at start", kind, v)
		}
	}
	errs.Count(chat.KindSlowConsumer)
	errs.Count(chat.KindSlowConsumer)
	errs.Count(chat.KindBadRequest)
	for _, kind := range chat.ErrorKinds {
		want := map[chat.ErrorKind]float64{chat.KindSlowConsumer: 2, chat.KindBadRequest: 1}[kind]
		if v := testenv.Metric(t, reg, "roomcast_errors_total", "kind", string(kind)); v != want {
			t.Errorf("errors{kind=%s} = %v, want %v", kind, v, want)
		}
	}
}

func TestErrorsMetricLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	servermetrics.NewErrors(reg)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}
