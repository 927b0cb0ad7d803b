// Package chat is roomcast's domain: room names, the chat message, the wire protocol
// that clients speak, the error kinds the server counts, and the Broker interface that
// carries a message to every replica serving its room.
//
// It imports nothing of roomcast's and starts no goroutines; everything here is safe for
// concurrent use because it holds no state.
package chat
