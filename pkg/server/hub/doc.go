// Package hub owns a replica's live state: the rooms it serves, their members, each
// member's bounded send queue, keepalive pings, and the spread-out close of every
// connection when the replica drains. Its files follow those concerns: membership and
// fan-out (room.go), a member's queue and writer (member.go), resuming members
// (resume.go), catch-ups (catchup.go), keepalive (keepalive.go) and draining (drain.go).
//
// A room is subscribed on the broker while it has at least one local member. A message
// from the broker is encoded once (wsframe.EncodeMessage) and the same bytes are queued
// for every member. Each member has at most one writer goroutine, started when frames
// are queued and gone when the queue is empty, which writes everything queued in one
// call to the Socket; a member whose queue is full is disconnected
// (wsframe.CloseTryAgainLater), never waited for.
//
// A member that resumes (JoinHeld) has its room's live messages held while the gateway
// sends its replay, then released (Release) without those the replay already had.
//
// With a History, a room whose live stream has a gap (after a broker reconnect, or a
// stored message that never came live) catches up in a goroutine of its own: its live
// messages wait in a bounded backlog while it fetches the gap from history, retrying with
// capped, jittered backoff for up to Config.CatchUpTimeout; then it delivers the gap and
// the backlog, in order and once each, or gives up (wsframe.Truncated, then the backlog).
// Close stops the catch-ups and waits for their goroutines.
//
// All methods are safe for concurrent use.
package hub
