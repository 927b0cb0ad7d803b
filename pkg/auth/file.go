package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxFileBytes bounds what ReadFile reads: keys and tokens are far smaller, and a path
// to a big file by mistake (or a stdin that never ends) must not be read whole.
const MaxFileBytes = 64 << 10

// ReadFile reads an HS256 key or a token from path, or from stdin for "-" when stdin is
// not nil (nil: "-" is a file name like any other), with its
// surrounding white space (a final newline) trimmed, as the server reads
// ROOMCAST_JWT_SECRET_FILE. The result may be empty; errors never hold the content.
func ReadFile(path string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if path != "-" || stdin == nil {
		f, err := os.Open(path)
		if err != nil {
			return nil, pathError(err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	switch {
	case err != nil:
		return nil, pathError(err)
	case len(b) > MaxFileBytes:
		return nil, fmt.Errorf("larger than %d KiB, which is no key or token", MaxFileBytes>>10)
	}
	return bytes.TrimSpace(b), nil
}

// pathError drops the operation and path from err: callers name the file themselves.
func pathError(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
