package hub

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the hub's own; the errors it counts go to the replica's shared
// servermetrics.Errors.
type metrics struct {
	connectionsActive prometheus.Gauge
	connectionsTotal  prometheus.Counter
	messagesDelivered prometheus.Counter
	roomsActive       prometheus.Gauge
	deliveryLatency   prometheus.Histogram
	catchUps          *prometheus.CounterVec
	catchUpRetries    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		connectionsActive: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_connections_active", Help: "Live WebSocket sessions on this replica.",
		}),
		connectionsTotal: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_connections_total", Help: "WebSocket upgrades accepted.",
		}),
		messagesDelivered: f.NewCounter(prometheus.CounterOpts{
			Name: "roomcast_messages_delivered_total", Help: "Message frames written to clients.",
		}),
		roomsActive: f.NewGauge(prometheus.GaugeOpts{
			Name: "roomcast_rooms_active", Help: "Rooms with at least one member on this replica.",
		}),
		deliveryLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "roomcast_delivery_latency_seconds",
			Help:    "Time from a message's acceptance on any replica to its frame being written to a member's socket on this one.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	m.catchUps = f.NewCounterVec(prometheus.CounterOpts{
		Name: "roomcast_room_catchups_total",
		Help: "Rooms filled from history, by trigger (reconnect: after a NATS outage; gap: a stored message that never came live; resume: a resumed member's, for a message stored after its replay's read that never came live).",
	}, []string{"trigger"})
	m.catchUpRetries = f.NewCounterVec(prometheus.CounterOpts{
		Name: "roomcast_room_catchup_retries_total",
		Help: "Catch-up attempts made again, after a backoff, because the previous one could not read the room's gap from history, by trigger.",
	}, []string{"trigger"})
	for _, trigger := range []string{"reconnect", "gap", triggerResume} {
		m.catchUps.WithLabelValues(trigger)
		m.catchUpRetries.WithLabelValues(trigger)
	}
	return m
}
