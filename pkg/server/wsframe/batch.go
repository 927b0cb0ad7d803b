package wsframe

// A client of the batched subprotocol receives, in one text frame, the text frames that
// were queued for it together, their payloads (each one JSON object) joined by '\n':
// fewer frames to parse and no wait added, since only what is already queued at write
// time is joined. Control frames (ping, pong, close) stay frames of their own, in order.

// MaxBatched is the most messages one batched frame joins; a longer run goes out as
// several frames, so that a frame stays of a size any client takes at once. A batched
// client's send queue is counted in these frames (see hub.Config.SendQueueFrames).
const MaxBatched = 64

// IsText reports whether frame, made by this package, is a text frame: one that a
// batched client receives joined with the text frames around it.
func IsText(frame []byte) bool {
	op, _ := payload(frame)
	return op == opText
}

// payload returns the opcode and payload of a frame this package made (unmasked, final).
func payload(frame []byte) (opcode byte, p []byte) {
	n, rest := int(frame[1]&0x7f), frame[2:]
	switch n {
	case 126:
		rest = rest[2:]
	case 127:
		rest = rest[8:]
	}
	return frame[0] & 0x0f, rest
}

// AppendBatched appends frames to dst as a client of the batched subprotocol receives
// them: each run of text frames as one text frame of their payloads joined by '\n'
// (MaxBatched at most: a longer run makes several), every other frame as it is. A run of
// one text frame is that frame unchanged.
func AppendBatched(dst []byte, frames [][]byte) []byte {
	for i := 0; i < len(frames); {
		op, _ := payload(frames[i])
		if op != opText {
			dst = append(dst, frames[i]...)
			i++
			continue
		}
		end, n := i, -1
		for ; end < len(frames) && end-i < MaxBatched; end++ {
			op, p := payload(frames[end])
			if op != opText {
				break
			}
			n += 1 + len(p)
		}
		dst = appendHeader(dst, opText, n)
		for j := i; j < end; j++ {
			if j > i {
				dst = append(dst, '\n')
			}
			_, p := payload(frames[j])
			dst = append(dst, p...)
		}
		i = end
	}
	return dst
}
