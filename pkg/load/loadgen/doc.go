// Package loadgen generates WebSocket load against roomcast and measures what comes back:
// it connects many clients to rooms (spread round-robin over one or more replicas), has
// them send stamped messages on a staggered schedule, and accounts for every delivery
// (latency, loss, duplicates), plus the CPU time and memory of the server processes.
//
// The scenarios (see Scenario) are fanout-small, fanout-large, smoke, soak and release,
// each the twin of a k6 script in k6/ (K6Twins): the same parameters (Settings, Params),
// the same metric names (Metrics) and thresholds (Thresholds); plus ramp, idle and
// reconnect-storm, which have no k6 script. Run executes any of them and returns a
// Report. In soak and release the clients reconnect when the server closes them, with
// exponential backoff and full jitter (Backoff), resuming with
// ?since=<seq>&epoch=<epoch> once they have seen a seq; Start runs those two as a Session
// that a test can stop around a deployment step. In reconnect-storm, silent storm clients
// drop their connections at once and reconnect, honouring the Retry-After of the
// server's refusals, while the members' deliveries are measured. With Config.Token set,
// every connection attempt carries Authorization: Bearer <token>. With Config.Protocol
// ProtocolCentrifugo, fanout-small, fanout-large and ramp drive a Centrifugo v6 server
// instead, with the same load and the same accounting (see centrifugo.go).
//
// Deliveries count per (message, member): a message is expected once by every member of
// its room (connected or reconnecting when it was sent), delivered the first time it
// arrives there, duplicated every later time, and lost if it has not arrived when the run
// ends, after Grace.
//
// Concurrency: Run and Session own every goroutine they start and end all of them before
// returning the report. Each connection has one gws ReadLoop goroutine, which alone
// touches its member's Inbox and resume point while it runs; a reconnect runs in a
// goroutine started by the previous connection's close and starts the next read loop, so
// a member's read loops never overlap (a storm client's drop only resets its TCP
// connection; its read loop's OnClose starts the reconnect). A few sender goroutines
// share the members between them; counters and histograms that several goroutines
// update are atomic. The exported
// building blocks (AppendText, ParseText, ResumePoint, Backoff, Histogram, Inbox,
// ReadProc) hold no shared state; a Histogram or Inbox is for one goroutine at a time.
package loadgen
