package apptest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
)

// Config returns a configuration for a test master: a fresh database, data_dir in
// t.TempDir(), a fixed JWT secret and encryption key, loopback listeners on free
// ports, and non-Secure cookies (tests talk plain HTTP).
func Config(t testing.TB) app.Config {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = NewDatabase(t)
	cfg.Database.MaxConns = 8
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.GRPC.Addr = "127.0.0.1:0"
	cfg.HTTP.SecureCookies = false
	cfg.Auth.JWTSecret = "test-jwt-secret-test-jwt-secret-0123456789"
	cfg.Auth.EncryptionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	return cfg
}

// Logger returns a logger that writes to the test log when NXMESH_TEST_LOG is
// set and discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("NXMESH_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// NewApp returns a master on a fresh, migrated database. Adjust configuration
// with mutate (may be nil). Mount modules with a.Mount and drive HTTP with Do or
// a.Fiber().Test.
func NewApp(t testing.TB, mutate func(*app.Config)) *app.App {
	t.Helper()
	cfg := Config(t)
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := app.New(context.Background(), cfg, Logger(t))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return a
}

// Do sends req to a's HTTP app (after Mount) and returns the response.
func Do(t testing.TB, a *app.App, req *http.Request) *http.Response {
	t.Helper()
	resp, err := a.Fiber().Test(req, -1)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return resp
}

// Serve serves a's HTTP app (after Mount) with a.Serve on a loopback port
// until the test ends, and returns its base URL (http://127.0.0.1:port).
func Serve(t testing.TB, a *app.App) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(l) }()
	t.Cleanup(func() {
		a.Events().Stop()
		if err := a.Fiber().ShutdownWithTimeout(10 * time.Second); err != nil {
			t.Logf("shut down test server: %v", err)
		}
		<-served
	})
	return "http://" + l.Addr().String()
}

// NewMigrator returns an app on a fresh, migrated database (NewApp) and a
// migrator over it, for tests that move the schema down and up again.
func NewMigrator(t testing.TB) (*app.App, *app.Migrator) {
	t.Helper()
	a := NewApp(t, nil)
	sqlDB, err := a.Deps.DB.DB()
	if err != nil {
		t.Fatal(err)
	}
	mig, err := app.NewMigrator(&app.Database{Pool: a.Deps.Pool, SQL: sqlDB, Gorm: a.Deps.DB}, Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return a, mig
}

// FreeAddr returns 127.0.0.1:<a port nobody listens on right now>, for
// programs a test starts that need an address before they run. It never
// returns the same address twice in one test binary: the kernel may hand
// out a port again once its listener is closed, and two programs of one
// test would then be given the same address.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
}

// handedOut holds the addresses FreeAddr returned in this test binary.
var handedOut sync.Map

// SyncBuffer is a buffer that several goroutines may write to while a test
// reads it: a process's output, a logger's records.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
