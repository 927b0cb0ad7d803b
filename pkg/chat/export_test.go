package chat

// The scan and the reference decoding, for the tests that hold them to each other.
var (
	ScanClientFrame       = scanClientFrame
	DecodeClientFrameJSON = decodeClientFrameJSON
)
