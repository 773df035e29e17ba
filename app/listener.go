package app

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// What a connection of Serve still reads from a client whose body was refused
// as too large, before closing: closing with unread data makes the kernel
// reset the connection, and the client may then lose the 413 it has not read
// yet (Go's client, for one, reports a broken pipe instead).
const (
	oversizeDrainBytes = 8 << 20
	oversizeDrainWait  = 5 * time.Second
)

// Serve answers HTTP on ln until the app shuts down (Mount first). Unlike
// Fiber().Listener, its connections tell a request line that is too long
// (414) from headers that are too large (431), and drain an oversized body
// the client keeps sending after its 413, so the client reads the answer.
// Running out of file descriptors does not end it: accepting waits and
// tries again, as net/http does.
func (a *App) Serve(ln net.Listener) error {
	return a.fiber.Listener(edgeListener{Listener: ln, logger: a.logger})
}

// acceptRetryMax caps the wait between accepts while the process is out of
// file descriptors.
const acceptRetryMax = time.Second

// edgeListener wraps each accepted connection in an edgeConn. An accept
// that fails for want of file descriptors (EMFILE, ENFILE) is tried again
// after a pause, from 5 ms doubling to acceptRetryMax: the server keeps
// serving once connections close, where the HTTP server would stop.
type edgeListener struct {
	net.Listener
	logger *slog.Logger
}

func (l edgeListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return &edgeConn{Conn: c}, nil
		}
		if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
			return nil, err
		}
		if delay == 0 {
			delay = 5 * time.Millisecond
			l.logger.Warn("http: out of file descriptors; accepting again once connections close", "error", err)
		} else {
			delay = min(2*delay, acceptRetryMax)
		}
		time.Sleep(delay)
	}
}

// edgeConn is a server connection that counts the bytes read since the last
// line feed, and may drain the client before closing.
type edgeConn struct {
	net.Conn
	sinceLF atomic.Int64
	drain   atomic.Bool
}

func (c *edgeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if i := bytes.LastIndexByte(p[:n], '\n'); i >= 0 {
			c.sinceLF.Store(int64(n - 1 - i))
		} else {
			c.sinceLF.Add(int64(n))
		}
	}
	return n, err
}

// lineLongerThan reports whether the last n bytes read hold no line feed.
// When the server's n-byte read buffer fills up with a request head, this
// says that the request line alone did not fit.
func (c *edgeConn) lineLongerThan(n int) bool { return c.sinceLF.Load() >= int64(n) }

// drainOnClose makes Close first end the sending side, then read and discard
// what the client still sends (at most oversizeDrainBytes, for at most
// oversizeDrainWait).
func (c *edgeConn) drainOnClose() { c.drain.Store(true) }

func (c *edgeConn) Close() error {
	if c.drain.Swap(false) {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		if c.Conn.SetReadDeadline(time.Now().Add(oversizeDrainWait)) == nil {
			_, _ = io.CopyN(io.Discard, c.Conn, oversizeDrainBytes)
		}
	}
	return c.Conn.Close()
}
