package chat

// ErrorKind names a class of error counted in roomcast_errors_total{kind}. The set is
// closed so the metric's cardinality is bounded.
type ErrorKind string

// The error kinds the server counts.
const (
	// KindBadRequest: a frame that is not JSON, lacks a string message, or is empty.
	KindBadRequest ErrorKind = "bad_request"
	// KindMessageTooLarge: a message longer than ROOMCAST_MAX_MESSAGE_BYTES.
	KindMessageTooLarge ErrorKind = "message_too_large"
	// KindFrameTooLarge: a frame over the read limit; the connection is closed with 1009.
	KindFrameTooLarge ErrorKind = "frame_too_large"
	// KindUnsupportedData: a binary frame; the connection is closed with 1003.
	KindUnsupportedData ErrorKind = "unsupported_data"
	// KindInvalidUTF8: a text frame that is not UTF-8; the connection is closed with 1007.
	KindInvalidUTF8 ErrorKind = "invalid_utf8"
	// KindProtocol: any other WebSocket protocol violation by the client.
	KindProtocol ErrorKind = "protocol"
	// KindRateLimited: a message dropped for exceeding the per-connection rate.
	KindRateLimited ErrorKind = "rate_limited"
	// KindSlowConsumer: a client whose send queue filled up; closed with 1013.
	KindSlowConsumer ErrorKind = "slow_consumer"
	// KindBroker: a message that could not be handed to the broker.
	KindBroker ErrorKind = "broker"
	// KindInvalidRoom: an upgrade to a room name outside the alphabet; HTTP 400.
	KindInvalidRoom ErrorKind = "invalid_room"
	// KindForbiddenOrigin: an upgrade from an Origin not allowed; HTTP 403.
	KindForbiddenOrigin ErrorKind = "forbidden_origin"
	// KindForbidden: a message from a read-only token, or a refused refresh.
	KindForbidden ErrorKind = "forbidden"
	// KindHistory: a resume that could not replay, or a message not stored in history.
	KindHistory ErrorKind = "history"
	// KindInternal: a bug or an unexpected failure on our side.
	KindInternal ErrorKind = "internal"
)

// ErrorKinds lists every kind, so metrics can export each one at zero from start-up.
var ErrorKinds = []ErrorKind{
	KindBadRequest, KindMessageTooLarge, KindFrameTooLarge, KindUnsupportedData,
	KindInvalidUTF8, KindProtocol, KindRateLimited, KindSlowConsumer, KindBroker,
	KindInvalidRoom, KindForbiddenOrigin, KindForbidden, KindHistory, KindInternal,
}
