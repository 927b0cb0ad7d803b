package natsbroker

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// rttCollector exports the round trip to the NATS server, measured at each scrape: a
// PING answered by its PONG, which is also how long a publish waits before the server
// has it. Nothing while disconnected.
type rttCollector struct{ nc *nats.Conn }

var rttDesc = prometheus.NewDesc("roomcast_broker_rtt_seconds",
	"Round trip to the NATS server (a PING answered), measured at each scrape; absent while disconnected.", nil, nil)

// rttTimeout bounds the round trip of one scrape: a server that slow is as good as gone.
const rttTimeout = time.Second

func (c rttCollector) Describe(ch chan<- *prometheus.Desc) { ch <- rttDesc }

func (c rttCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.nc.IsConnected() {
		return // a scrape does not wait out a reconnect
	}
	start := time.Now()
	if err := c.nc.FlushTimeout(rttTimeout); err != nil {
		return // roomcast_broker_connected and the disconnect counters say why
	}
	ch <- prometheus.MustNewConstMetric(rttDesc, prometheus.GaugeValue, time.Since(start).Seconds())
}
