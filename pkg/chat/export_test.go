package chat

// The scan and the reference decoding, for the tests that hold them to each other.
var (
	ScanClientFrame       = scanClientFrame
	DecodeClientFrameJSON = decodeClientFrameJSON
)

// AppendTimestamp is the "ts" field's writer, held to time's own formatting.
var AppendTimestamp = appendTimestamp
