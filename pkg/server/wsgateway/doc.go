// Package wsgateway is the WebSocket side of a replica, on github.com/lxzan/gws: it
// answers GET /ws/chat/{room}/ upgrades, reads client frames, enforces the message
// limits and rate, publishes accepted messages on the broker, and writes what the hub
// queues.
//
// gws parses and validates incoming frames and performs the close handshake; outgoing
// data frames are encoded here once per message and written in batches with writev,
// which gws's own one-write-per-frame queue cannot do. Both write paths share one lock
// per connection, so frames never interleave.
package wsgateway
