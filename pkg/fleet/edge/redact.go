package edge

import (
	"bytes"
	"io"
	"regexp"
	"sync"
)

// tokenParam matches a token query parameter's value. nginx's error log writes the whole
// request line of a failed upstream request, query string included, and offers no format
// to leave it out: a client that sent ?token= would leave its credential there.
var tokenParam = regexp.MustCompile(`(?i)([?&]token=)[^&\s"']+`)

// maxLine bounds what a line-buffered writer holds while waiting for a newline.
const maxLine = 64 << 10

// TokenRedactor writes nginx's output to w line by line, with the value of every token
// query parameter replaced by REDACTED.
type TokenRedactor struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewTokenRedactor returns a TokenRedactor writing to w.
func NewTokenRedactor(w io.Writer) *TokenRedactor { return &TokenRedactor{w: w} }

// Write buffers p until a line is complete (a token may span two writes), then writes
// the redacted line. It reports len(p) written unless w fails.
func (r *TokenRedactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, p...)
	for {
		i := bytes.IndexByte(r.buf, '\n')
		if i < 0 {
			if len(r.buf) < maxLine {
				return len(p), nil
			}
			i = len(r.buf) - 1 // a runaway line: out with what we have
		}
		line := tokenParam.ReplaceAll(r.buf[:i+1], []byte("${1}REDACTED"))
		r.buf = r.buf[i+1:]
		if _, err := r.w.Write(line); err != nil {
			return len(p), err
		}
		if len(r.buf) == 0 {
			r.buf = r.buf[:0:0]
			return len(p), nil
		}
	}
}
