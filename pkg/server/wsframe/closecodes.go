package wsframe

// Close codes (RFC 6455 section 7.4.1, and the IANA registry for 1012 and 1013) the
// server sends, or reads in the close errors gws reports.
const (
	// CloseNormal ends a connection that has done its job.
	CloseNormal = 1000
	// CloseProtocolError: gws closed a client that broke the WebSocket protocol.
	CloseProtocolError = 1002
	// CloseUnsupportedData: a client sent a binary frame.
	CloseUnsupportedData = 1003
	// CloseInvalidPayload: gws closed a client whose text frame was not UTF-8.
	CloseInvalidPayload = 1007
	// ClosePolicyViolation: a client exceeded its rate for too long, or its token expired.
	ClosePolicyViolation = 1008
	// CloseMessageTooBig: gws closed a client whose frame was over the read limit.
	CloseMessageTooBig = 1009
	// CloseInternalError: writing to the client failed.
	CloseInternalError = 1011
	// CloseServiceRestart: the replica drains; the client reconnects (to another one).
	CloseServiceRestart = 1012
	// CloseTryAgainLater: a slow consumer, disconnected rather than waited for.
	CloseTryAgainLater = 1013
)
