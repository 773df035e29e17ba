package embedpg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// embeddedTestDir is a fresh data directory directly under the temporary directory:
// t.TempDir() sits below a 0700 directory that the unprivileged user the server runs
// as (when tests run as root) could not reach.
func embeddedTestDir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func startEmbeddedForTest(t *testing.T, dir string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg, err := StartWith(ctx, dir, nil, Options{Fast: true})
	if err != nil {
		t.Fatalf("start embedded postgres: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	return pg
}

func stopEmbeddedForTest(t *testing.T, pg *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func connectEmbedded(t *testing.T, pg *Server) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("connect %s: %v", pg.URL(), err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestEmbeddedPostgresPersistsAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := embeddedTestDir(t, "nxmesh-embedpg-")
	ctx := context.Background()

	pg := startEmbeddedForTest(t, dir)
	conn := connectEmbedded(t, pg)
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	var db, listen string
	if err := conn.QueryRow(ctx, "select current_database(), current_setting('listen_addresses')").Scan(&db, &listen); err != nil {
		t.Fatal(err)
	}
	if db != "nxmesh" || listen != "" {
		t.Fatalf("database %q listen_addresses %q, want nxmesh and empty", db, listen)
	}
	if _, err := conn.Exec(ctx, "create table kept (v text); insert into kept values ('still here')"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	stopEmbeddedForTest(t, pg)
	if err := pg.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	if _, err := os.Stat(filepath.Join(dir, "postgres", "PG_VERSION")); err != nil {
		t.Fatalf("cluster not under data dir: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "postgres.log")); err != nil || fi.Size() == 0 {
		t.Fatalf("postgres.log missing or empty: %v", err)
	}

	pg2 := startEmbeddedForTest(t, dir)
	conn2 := connectEmbedded(t, pg2)
	var v string
	if err := conn2.QueryRow(ctx, "select v from kept").Scan(&v); err != nil || v != "still here" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
	_ = conn2.Close(ctx)
	stopEmbeddedForTest(t, pg2)
}

// A crash leaves postmaster.pid behind; its PID may then belong to an unrelated
// live process (here: the test itself).
func TestEmbeddedPostgresStaleLocks(t *testing.T) {
	t.Parallel()
	dir := embeddedTestDir(t, "nxmesh-embedpg-")
	pg := startEmbeddedForTest(t, dir)

	// Kill the server the hard way, like a crash would.
	if err := syscall.Kill(pg.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-pg.done
	if err := pg.Stop(context.Background()); err == nil {
		t.Error("Stop of a killed server reported no error")
	}
	pidFile := filepath.Join(dir, "postgres", "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("expected a stale postmaster.pid: %v", err)
	}
	pg2 := startEmbeddedForTest(t, dir)
	stopEmbeddedForTest(t, pg2)

	stale := strconv.Itoa(os.Getpid()) + "\n" + filepath.Join(dir, "postgres") + "\n"
	if err := os.WriteFile(pidFile, []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	pg3 := startEmbeddedForTest(t, dir)
	connectEmbedded(t, pg3)
}

func TestEmbeddedPostgresRefusesSecondServer(t *testing.T) {
	t.Parallel()
	dir := embeddedTestDir(t, "nxmesh-embedpg-")
	startEmbeddedForTest(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := StartWith(ctx, dir, nil, Options{Fast: true})
	if err == nil {
		_ = pg.Stop(ctx)
		t.Fatal("second server on the same data directory started")
	}
	if !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("unexpected error: %v", err)
	}
}

func TestEmbeddedPostgresLongDataDir(t *testing.T) {
	t.Parallel()
	parent := embeddedTestDir(t, "nxmesh-embedpg-")
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pg := startEmbeddedForTest(t, dir)
	if strings.HasPrefix(pg.socketDir, dir) {
		t.Fatalf("socket dir %s should have moved out of the long data dir", pg.socketDir)
	}
	if n := len(filepath.Join(pg.socketDir, socketFileName)); n > maxSocketPathLen {
		t.Fatalf("socket path is %d bytes", n)
	}
	conn := connectEmbedded(t, pg)
	if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(context.Background())
	stopEmbeddedForTest(t, pg)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// As root, a data directory below a 0700 parent (a clone under /root) gets its
// cluster under /var/lib/nxmesh/<hash>, where the server's user can reach it, and
// finds it there again on every start.
func TestEmbeddedPostgresUnreachableDataDirAsRootKeepsClusterOutside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root runs the server as another user")
	}
	t.Parallel()
	parent := embeddedTestDir(t, "nxmesh-embedpg-")
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "sub", "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(parent, "sub")
	if err := os.Chmod(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(dir))
	home := filepath.Join("/var/lib/nxmesh", hex.EncodeToString(sum[:8]))
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	runAs, err := unprivilegedUser()
	if err != nil {
		t.Fatal(err)
	}

	start := func(t *testing.T) (*Server, string) {
		t.Helper()
		var logs syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pg, err := StartWith(ctx, dir, slog.New(slog.NewTextHandler(&logs, nil)), Options{Fast: true})
		if err != nil {
			t.Fatalf("start embedded postgres: %v", err)
		}
		t.Cleanup(func() { _ = pg.Stop(context.Background()) })
		return pg, logs.String()
	}

	pg, logs := start(t)
	want := filepath.Join(home, "postgres")
	if pg.clusterDir != want || pg.socketDir != filepath.Join(home, "pgsocket") {
		t.Fatalf("cluster %s, socket dir %s; want both under %s", pg.clusterDir, pg.socketDir, home)
	}
	if n := strings.Count(logs, "kept outside data_dir"); n != 1 || !strings.Contains(logs, want) {
		t.Errorf("want one note naming %s, got %d in:\n%s", want, n, logs)
	}
	for _, d := range []string{home, pg.clusterDir, pg.socketDir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != runAs.uid || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: uid %d mode %v, want uid %d (%s) and 0700", d, st.Uid, fi.Mode().Perm(), runAs.uid, runAs.name)
		}
	}
	if loc, err := os.ReadFile(filepath.Join(dir, "postgres.location")); err != nil || strings.TrimSpace(string(loc)) != want {
		t.Errorf("postgres.location = %q, %v; want %s", loc, err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres")); !os.IsNotExist(err) {
		t.Errorf("data_dir/postgres exists: %v", err)
	}
	ctx := context.Background()
	conn := connectEmbedded(t, pg)
	if _, err := conn.Exec(ctx, "create table kept (v text); insert into kept values ('still here')"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	stopEmbeddedForTest(t, pg)

	kept := func(t *testing.T, pg *Server) {
		t.Helper()
		conn := connectEmbedded(t, pg)
		var v string
		if err := conn.QueryRow(ctx, "select v from kept").Scan(&v); err != nil || v != "still here" {
			t.Fatalf("after restart: %q, %v", v, err)
		}
		_ = conn.Close(ctx)
		stopEmbeddedForTest(t, pg)
	}
	pg2, _ := start(t)
	kept(t, pg2)

	for _, d := range []string{parent, sub} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s changed: %v %v", d, fi.Mode(), err)
		}
	}

	// Once made there, the cluster stays there even when the data_dir becomes
	// reachable.
	for _, d := range []string{parent, sub} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pg3, _ := start(t)
	if pg3.clusterDir != want {
		t.Fatalf("reachable data_dir: cluster %s, want %s", pg3.clusterDir, want)
	}
	kept(t, pg3)

	// A data_dir made afresh at the same path does not take over the old cluster.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = StartWith(ctx, dir, nil, Options{Fast: true})
	if err == nil || !strings.Contains(err.Error(), "made afresh") || !strings.Contains(err.Error(), home) {
		t.Fatalf("start with a new data_dir over an old cluster: %v", err)
	}
}

func TestEmbeddedFindPostgresBinaries(t *testing.T) {
	dir, err := FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if !isExecutable(filepath.Join(dir, name)) {
			t.Errorf("%s not in %s", name, dir)
		}
	}
	if !strings.Contains(ErrBinariesNotFound.Error(), "install the PostgreSQL server package (`apt-get install postgresql`) or set `database.url` / NXMESH_DATABASE_URL") {
		t.Errorf("error text changed: %v", ErrBinariesNotFound)
	}
}

func TestEmbeddedVersionOrder(t *testing.T) {
	for _, c := range []struct{ a, b string }{{"9.6", "10"}, {"15", "16"}, {"13", "13.1"}} {
		if !versionLess(c.a, c.b) || versionLess(c.b, c.a) {
			t.Errorf("want %s < %s", c.a, c.b)
		}
	}
}
