// Package autoscale sets the replica count of roomcast's active color from its load,
// with the Kubernetes HPA rule. It owns two things:
//
//   - Decide, a pure function: from the current replica count, the load, the policy and
//     the recommendations of the scale-down stabilisation window, it returns the
//     desired count, why, and the window to pass to the next call. Time is an
//     argument, so it is table-tested without clocks.
//   - Autoscaler, the loop around it: every interval it reads the nginx service's
//     labels (roomcast.active names the color, roomcast.promoting=true pauses it),
//     reads the color's replica count, asks Prometheus for the load (through Querier)
//     and scales the color's service (through Services, which package swarm
//     implements).
//
// It never scales on missing data: a Docker or Prometheus error, a timeout, an empty
// result, NaN, a negative value or stale samples keep the current count; the error is
// logged, counted in roomcast_autoscaler_errors_total{kind} and the next tick tries
// again.
//
// Concurrency: Run drives everything from the calling goroutine, and Tick must not be
// called concurrently with Run or itself; LastTick may be called from any goroutine.
// Decide has no state.
package autoscale
