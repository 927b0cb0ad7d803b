package chat

import "time"

// Message is one chat message as it travels between replicas.
type Message struct {
	// ID is unique per message, chosen by the accepting replica.
	ID string
	// Room is the room the message was sent to.
	Room string
	// Text is the message body as the client sent it.
	Text string
	// Accepted is when the accepting replica took the message, in UTC.
	Accepted time.Time
	// Seq and Epoch are set when the message comes from the history store; zero otherwise.
	Seq   uint64
	Epoch string
	// PrevSeq is the seq of the room's message before this one in the store (0 when
	// unknown); a replica that did not deliver it has missed a message.
	PrevSeq uint64
}
