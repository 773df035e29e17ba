package app

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
)

// scriptedListener is a listener whose accepts fail with the errors given,
// in turn, before handing out a connection of a real loopback pair: it
// stands in for the kernel running out of file descriptors, which a test
// cannot provoke without starving the rest of its process.
type scriptedListener struct {
	errs  []error
	calls int
	conn  net.Conn
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.conn, nil
}

func (l *scriptedListener) Close() error   { return nil }
func (l *scriptedListener) Addr() net.Addr { return l.conn.LocalAddr() }

func TestServe_AcceptOutOfFileDescriptors(t *testing.T) {
	t.Parallel()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	enfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)}
	closed := &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	for _, tc := range []struct {
		name      string
		errs      []error
		wantErr   error // nil: a connection
		wantCalls int
	}{
		{"out of descriptors, then a connection", []error{emfile, enfile, emfile}, nil, 4},
		{"closed listener ends at once", []error{closed}, net.ErrClosed, 1},
		{"out of descriptors, then closed", []error{emfile, closed}, net.ErrClosed, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			server, client := net.Pipe()
			defer server.Close()
			defer client.Close()
			sl := &scriptedListener{errs: tc.errs, conn: server}
			l := edgeListener{Listener: sl, logger: slog.New(slog.DiscardHandler)}
			c, err := l.Accept()
			if sl.calls != tc.wantCalls {
				t.Fatalf("%d accepts, want %d", sl.calls, tc.wantCalls)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || c != nil {
					t.Fatalf("accept = %v, %v; want %v", c, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			if ec, ok := c.(*edgeConn); !ok || ec.Conn != server {
				t.Fatalf("accepted %T, want the connection wrapped", c)
			}
		})
	}
}
