// Package wsframe owns every WebSocket frame a replica writes and every close code it
// uses: chat messages (encoded once per message, the same bytes for every member of a
// room), the keepalive ping, pongs, close frames, and the error frames whose texts
// clients see.
//
// The hub and the gateway write frames as bytes they queue or write with writev; gws,
// which parses and validates what clients send, is not involved in writing them. Frames
// are unmasked, final and minimal-length, as RFC 6455 asks of a server.
//
// Everything here is a pure function or an immutable value, safe for concurrent use;
// callers must not modify the returned or exported byte slices, which are shared.
package wsframe
