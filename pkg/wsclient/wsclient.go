// Package wsclient is a small roomcast client on gws, for roomcast-smoke and tests: it
// dials a room, sends messages, and hands every frame it receives to a channel in
// order. A Client that nobody reads from stops reading its socket, like a slow browser.
//
// A Client's methods are safe for concurrent use.
package wsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/lxzan/gws"

	"roomcast/pkg/chat"
)

// Frame is one text frame from the server.
type Frame struct {
	chat.ServerFrame
	Raw      []byte
	Received time.Time
}

// Options tune a Client.
type Options struct {
	// Header is added to the upgrade request (Origin, Authorization).
	Header http.Header
	// Buffer is how many frames may wait in Frames before reading stops (default 1024).
	Buffer int
	// ReceiveBuffer, when set, is the socket's SO_RCVBUF, to make a slow reader slow sooner.
	ReceiveBuffer int
	// HandshakeTimeout bounds the upgrade (default 5s).
	HandshakeTimeout time.Duration
}

// Client is one connection to a room.
type Client struct {
	conn   *gws.Conn
	frames chan Frame
	done   chan struct{}
	quit   chan struct{}
	once   sync.Once

	mu        sync.Mutex
	closeCode uint16
	closeErr  error
}

// Dial connects to url (ws://host:port/ws/chat/room/). On a refused upgrade the error
// says the HTTP status, and the response is returned with its body read into the error.
func Dial(ctx context.Context, url string, opts Options) (*Client, *http.Response, error) {
	if opts.Buffer <= 0 {
		opts.Buffer = 1024
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 5 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < opts.HandshakeTimeout {
			opts.HandshakeTimeout = d
		}
	}
	c := &Client{frames: make(chan Frame, opts.Buffer), done: make(chan struct{}), quit: make(chan struct{})}
	dialer := &net.Dialer{Timeout: opts.HandshakeTimeout}
	if opts.ReceiveBuffer > 0 {
		size := opts.ReceiveBuffer
		dialer.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
			})
			return errors.Join(err, serr)
		}
	}
	conn, resp, err := gws.NewClient(handler{c}, &gws.ClientOption{
		Addr:               url,
		RequestHeader:      opts.Header,
		HandshakeTimeout:   opts.HandshakeTimeout,
		ReadMaxPayloadSize: 8 << 20,
		NewDialer:          func() (gws.Dialer, error) { return dialer, nil },
	})
	if err != nil {
		if resp != nil {
			return nil, resp, fmt.Errorf("dialing %s: HTTP %d: %w", url, resp.StatusCode, err)
		}
		return nil, nil, fmt.Errorf("dialing %s: %w", url, err)
	}
	c.conn = conn
	go conn.ReadLoop()
	return c, resp, nil
}

// Frames delivers received text frames in order; it is closed when the connection ends.
func (c *Client) Frames() <-chan Frame { return c.frames }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseCode is the close code the server sent (1006 if the connection ended without
// one); valid after Done.
func (c *Client) CloseCode() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

// CloseError is why the connection ended; valid after Done.
func (c *Client) CloseError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Send sends {"message": text}.
func (c *Client) Send(text string) error {
	b, _ := json.Marshal(map[string]string{"message": text})
	return c.conn.WriteMessage(gws.OpcodeText, b)
}

// SendRaw sends payload as one text frame, as is.
func (c *Client) SendRaw(payload []byte) error { return c.conn.WriteMessage(gws.OpcodeText, payload) }

// SendBinary sends payload as one binary frame.
func (c *Client) SendBinary(payload []byte) error {
	return c.conn.WriteMessage(gws.OpcodeBinary, payload)
}

// Close sends a normal close, ends the connection and waits for the read loop to end;
// frames not yet read are dropped.
func (c *Client) Close() {
	c.once.Do(func() { close(c.quit) })
	_ = c.conn.WriteClose(1000, nil)
	<-c.done
}

// Next returns the next frame, or an error if none comes before ctx ends or the
// connection closes first.
func (c *Client) Next(ctx context.Context) (Frame, error) {
	select {
	case f, ok := <-c.frames:
		if !ok {
			return Frame{}, fmt.Errorf("connection closed with %d: %v", c.CloseCode(), c.CloseError())
		}
		return f, nil
	case <-ctx.Done():
		return Frame{}, fmt.Errorf("waiting for a frame: %w", ctx.Err())
	}
}

// WaitClosed waits for the connection to end and returns the close code.
func (c *Client) WaitClosed(ctx context.Context) (uint16, error) {
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return c.CloseCode(), nil
			}
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the connection to close: %w", ctx.Err())
		}
	}
}

type handler struct{ c *Client }

func (h handler) OnOpen(*gws.Conn) {}

func (h handler) OnClose(_ *gws.Conn, err error) {
	code := uint16(1006)
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	h.c.mu.Lock()
	h.c.closeCode, h.c.closeErr = code, err
	h.c.mu.Unlock()
	close(h.c.frames)
	close(h.c.done)
}

func (h handler) OnPing(socket *gws.Conn, payload []byte) { _ = socket.WritePong(payload) }

func (h handler) OnPong(*gws.Conn, []byte) {}

func (h handler) OnMessage(socket *gws.Conn, message *gws.Message) {
	defer message.Close()
	f := Frame{Raw: append([]byte(nil), message.Bytes()...), Received: time.Now()}
	if message.Opcode == gws.OpcodeText {
		_ = json.Unmarshal(f.Raw, &f.ServerFrame)
	}
	// Blocking here stops the read loop: an unread Client becomes a slow reader.
	select {
	case h.c.frames <- f:
	case <-h.c.quit:
	}
}
