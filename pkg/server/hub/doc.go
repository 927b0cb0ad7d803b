// Package hub owns a replica's live state: the rooms it serves, their members, each
// member's bounded send queue, keepalive pings, and the spread-out close of every
// connection when the replica drains.
//
// A room is subscribed on the broker while it has at least one local member. A message
// from the broker is encoded once (Config.Encode) and the same bytes are queued for every
// member. Each member has at most one writer goroutine, started when frames are queued
// and gone when the queue is empty, which writes everything queued in one call to the
// Socket; a member whose queue is full is disconnected (close 1013), never waited for.
//
// With a History, a room whose live stream has a gap (after a broker reconnect, or a
// stored message that never came live) catches up in a goroutine of its own: its live
// messages wait in a bounded backlog while it reads the gap from history, retrying with
// capped, jittered backoff for up to Config.CatchUpTimeout; then it delivers the gap and
// the backlog, in order and once each, or gives up (TruncatedFrame, then the backlog).
// Close stops the catch-ups and waits for their goroutines.
//
// All methods are safe for concurrent use.
package hub
