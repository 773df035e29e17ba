// Package apptest holds helpers for tests of the master and its modules.
//
// # Test databases
//
// Tests get a real PostgreSQL server. NewDatabase creates a fresh, empty database
// on it for one test and drops it when the test ends; ServerURL is the server
// itself. The server is, in order of preference:
//
//  1. NXMESH_TEST_DATABASE_URL, when set. `go tool task test` sets it: it runs the
//     whole suite under the testpg command (app/apptest/cmd/testpg), which starts
//     one throwaway embedded cluster for all test packages, runs `go test`, then
//     stops the server and deletes it, whatever the outcome. Any server the URL
//     names works, as long as its user may create databases.
//  2. A private embedded cluster of the test binary, started on first use in a
//     temporary directory and stopped and deleted when the tests end. This needs
//     the package's TestMain to hand over to Main (see below); plain
//     `go test ./somepkg/` then works without the Taskfile.
//
// A package whose tests use the database therefore has
//
//	func TestMain(m *testing.M) { apptest.Main(m) }
//
// Without either, ServerURL fails the test with a message saying so. Both kinds
// of embedded cluster run with durability off (embedpg.Options.Fast) and need
// the PostgreSQL server binaries (`go tool task deps` installs them).
//
// Should a test binary die without running Main's cleanup, its private server
// still shuts down, because it gets a signal when its parent process dies; only
// the temporary directory is left behind.
//
// apptest imports package app, so tests inside package app itself must be
// external (package app_test) to use it.
package apptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/app/embedpg"
)

// EnvDatabaseURL names the environment variable holding the URL of the test
// PostgreSQL server.
const EnvDatabaseURL = "NXMESH_TEST_DATABASE_URL"

// TestServerOptions are the options of the embedded clusters started for tests.
var TestServerOptions = embedpg.Options{Fast: true, MaxConnections: 300}

var (
	mainRunning atomic.Bool

	localOnce sync.Once
	localMu   sync.Mutex // guards the fields below once localOnce has run
	localPG   *embedpg.Server
	localDir  string
	localURL  string
	localErr  error
)

// Main runs the tests of a package with a private embedded PostgreSQL server for
// when NXMESH_TEST_DATABASE_URL is not set (the server starts only if a test asks
// for it), then stops that server and exits. Call it from TestMain.
func Main(m *testing.M) {
	mainRunning.Store(true)
	code := m.Run()
	mainRunning.Store(false)
	if err := stopLocal(); err != nil {
		fmt.Fprintf(os.Stderr, "apptest: stop test PostgreSQL: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// ServerURL returns the URL of a PostgreSQL server for tests:
// NXMESH_TEST_DATABASE_URL if set, else the test binary's private embedded server
// (see the package documentation), started on first use.
func ServerURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		return u
	}
	if !mainRunning.Load() {
		t.Fatalf("no PostgreSQL server for tests: run them with `go tool task test`, set %s to a server URL, "+
			"or add `func TestMain(m *testing.M) { apptest.Main(m) }` to this package to start a private one", EnvDatabaseURL)
	}
	localOnce.Do(startLocal)
	localMu.Lock()
	defer localMu.Unlock()
	if localErr != nil {
		t.Fatalf("start PostgreSQL for tests: %v", localErr)
	}
	return localURL
}

// TempDirPrefix starts the names of the temporary directories of test servers.
const TempDirPrefix = "nxmesh-test-pg-"

// RemoveStaleServers deletes the directories that test servers left in the
// temporary directory when their process was killed (the servers themselves stop
// with their parent): those older than ten minutes whose server is not running.
func RemoveStaleServers() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), TempDirPrefix+"*"))
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < 10*time.Minute {
			continue
		}
		if !serverMayRun(dir) {
			_ = os.RemoveAll(dir)
		}
	}
}

// serverMayRun reports whether the cluster under dir may have a live server.
func serverMayRun(dir string) bool {
	raw, err := os.ReadFile(filepath.Join(dir, "postgres", "postmaster.pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func startLocal() {
	localMu.Lock()
	defer localMu.Unlock()
	RemoveStaleServers()
	dir, err := os.MkdirTemp("", TempDirPrefix)
	if err != nil {
		localErr = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := embedpg.StartWith(ctx, dir, nil, TestServerOptions)
	if err != nil {
		_ = os.RemoveAll(dir)
		localErr = err
		return
	}
	localPG, localDir, localURL = pg, dir, pg.URL()
}

func stopLocal() error {
	localMu.Lock()
	defer localMu.Unlock()
	if localPG == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := localPG.Stop(ctx)
	localPG = nil
	localErr = fmt.Errorf("test PostgreSQL already stopped")
	if rmErr := os.RemoveAll(localDir); err == nil {
		err = rmErr
	}
	return err
}

// NewDatabase creates a fresh, empty database (test_<random>) on the test server,
// drops it when the test ends (closing any connection still open to it) and
// returns its URL. Migrations are up to the caller.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "test_" + hex.EncodeToString(b[:])
	ident := pgx.Identifier{name}.Sanitize()

	if err := adminExec(server, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := adminExec(server, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	u, err := WithDatabase(server, name)
	if err != nil {
		t.Fatalf("test database URL: %v", err)
	}
	return u
}

func adminExec(server, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// WithDatabase returns the connection string server (a postgres:// URL or a
// keyword=value string) with its database replaced by name.
func WithDatabase(server, name string) (string, error) {
	if strings.HasPrefix(server, "postgres://") || strings.HasPrefix(server, "postgresql://") {
		u, err := url.Parse(server)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		u.RawPath = ""
		q := u.Query()
		if q.Has("dbname") {
			q.Del("dbname")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	// In keyword=value strings a later keyword wins.
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name)
	return strings.TrimSpace(server) + " dbname='" + quoted + "'", nil
}
