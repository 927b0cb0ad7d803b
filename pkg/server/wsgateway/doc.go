// Package wsgateway is the WebSocket side of a replica, on github.com/lxzan/gws: it
// answers GET /ws/chat/{room}/ upgrades, reads client frames, enforces the message
// limits and rate, publishes accepted messages on the broker, and writes what the hub
// queues.
//
// gws parses and validates incoming frames and performs the close handshake; outgoing
// frames come from wsframe (chat messages encoded once per message) and are written in
// batches with writev, which gws's own one-write-per-frame queue cannot do. Both write
// paths share one lock per connection, so frames never interleave.
//
// A client that reconnects with ?since= resumes: it joins its room held, is sent its
// replay (the stored messages after since), then the live messages held meanwhile.
package wsgateway
