package rawsock

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawIO is the Socket of a TCP connection.
type rawIO struct {
	rc syscall.RawConn

	// The read in progress: one at a time.
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	// The write in progress: one at a time.
	wframes [][]byte
	woff    int // bytes of wframes[0] already written
	written int
	one     [1][]byte // Write's frame
	iov     *[]syscall.Iovec
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

// New returns the Socket of c, or nil when c is not a TCP connection.
func New(c net.Conn) Socket {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.readFn, r.writeFn = r.readSome, r.writeAll
	return r
}

// Read reads as net.Conn's Read does: at least one byte, or an error; io.EOF once the
// peer has closed its side.
func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case r.rerrno != 0:
		return 0, os.NewSyscallError("read", r.rerrno)
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *rawIO) readSome(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch errno {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits until the socket is readable and calls again
		default:
			r.rerrno = errno
			return true
		}
	}
}

// maxIovecs is the most buffers one writev takes (Linux's IOV_MAX).
const maxIovecs = 1024

var iovecPool = sync.Pool{New: func() any { return new([]syscall.Iovec) }}

// Write writes all of p, as net.Conn's Write does.
func (r *rawIO) Write(p []byte) (int, error) {
	r.one[0] = p
	err := r.WriteFrames(r.one[:])
	r.one[0] = nil
	return r.written, err
}

// WriteFrames writes every byte of frames, in order, as one write or writev where the
// socket takes them all.
func (r *rawIO) WriteFrames(frames [][]byte) error {
	r.wframes, r.woff, r.written, r.werrno = frames, 0, 0, 0
	if len(frames) > 1 {
		r.iov = iovecPool.Get().(*[]syscall.Iovec)
	}
	err := r.rc.Write(r.writeFn)
	r.wframes = nil
	if r.iov != nil {
		clear(*r.iov) // the frames are the caller's: do not keep them reachable
		*r.iov = (*r.iov)[:0]
		iovecPool.Put(r.iov)
		r.iov = nil
	}
	switch {
	case err != nil:
		return err
	case r.werrno != 0:
		return os.NewSyscallError("writev", r.werrno)
	}
	return nil
}

func (r *rawIO) writeAll(fd uintptr) bool {
	for {
		for len(r.wframes) > 0 && r.woff == len(r.wframes[0]) {
			r.wframes, r.woff = r.wframes[1:], 0
		}
		if len(r.wframes) == 0 {
			return true
		}
		var n uintptr
		var errno syscall.Errno
		if first := r.wframes[0][r.woff:]; len(r.wframes) == 1 {
			n, _, errno = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&first[0])), uintptr(len(first)))
		} else {
			iov := (*r.iov)[:0]
			iov = append(iov, syscall.Iovec{Base: &first[0]})
			iov[0].SetLen(len(first))
			for _, b := range r.wframes[1:] {
				if len(iov) == maxIovecs {
					break
				}
				if len(b) > 0 {
					v := syscall.Iovec{Base: &b[0]}
					v.SetLen(len(b))
					iov = append(iov, v)
				}
			}
			*r.iov = iov
			n, _, errno = syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		}
		switch errno {
		case 0:
			r.consume(int(n))
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits until the socket is writable and calls again
		default:
			r.werrno = errno
			return true
		}
	}
}

// consume moves past n written bytes.
func (r *rawIO) consume(n int) {
	r.written += n
	for n > 0 {
		left := len(r.wframes[0]) - r.woff
		if n < left {
			r.woff += n
			return
		}
		n -= left
		r.wframes, r.woff = r.wframes[1:], 0
		for len(r.wframes) > 0 && len(r.wframes[0]) == 0 {
			r.wframes = r.wframes[1:]
		}
	}
}
