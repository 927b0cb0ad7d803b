// Package loadgen generates WebSocket load against roomcast and measures what comes back:
// it connects many clients to rooms (spread round-robin over one or more replicas), has
// them send stamped messages on a staggered schedule, and accounts for every delivery
// (latency, loss, duplicates), plus the CPU time and memory of the server processes.
//
// The scenarios are the same as the k6 scripts': fanout-small, fanout-large, ramp and idle
// (see Scenario). Run executes one and returns a Report.
//
// Concurrency: Run owns every goroutine it starts and returns only after all of them have
// ended. Each connection has one gws ReadLoop goroutine, which alone touches that
// connection's Inbox; a few sender goroutines share the connections between them; counters
// and histograms that several goroutines update are atomic. The exported building blocks
// (AppendText, ParseText, Histogram, Inbox, ReadProc) hold no shared state; a Histogram or
// Inbox is for one goroutine at a time.
package loadgen
