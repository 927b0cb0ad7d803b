// Package servermetrics owns the metrics that more than one part of a replica updates:
// roomcast_errors_total{kind}, counted by the hub (slow consumers, catch-ups that fail)
// and by the gateway (what clients get wrong, publishes that fail). A replica creates one
// Errors with its registry and hands it to both.
//
// Errors is safe for concurrent use.
package servermetrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"roomcast/pkg/chat"
)

// Errors counts errors by kind in roomcast_errors_total.
type Errors struct {
	byKind *prometheus.CounterVec
}

// NewErrors registers roomcast_errors_total with reg, every kind of chat.ErrorKinds
// exported at zero from the start so that rates and alerts see the series at once.
func NewErrors(reg prometheus.Registerer) *Errors {
	e := &Errors{byKind: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "roomcast_errors_total", Help: "Errors by kind.",
	}, []string{"kind"})}
	for _, kind := range chat.ErrorKinds {
		e.byKind.WithLabelValues(string(kind))
	}
	return e
}

// Count counts one error of kind.
func (e *Errors) Count(kind chat.ErrorKind) { e.byKind.WithLabelValues(string(kind)).Inc() }
