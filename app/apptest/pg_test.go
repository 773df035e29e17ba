package apptest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestMain(m *testing.M) { Main(m) }

func TestNewDatabaseIsFreshAndDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var name string
	t.Run("use", func(t *testing.T) {
		u := NewDatabase(t)
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatalf("connect %s: %v", u, err)
		}
		// Left open on purpose: dropping must not wait for it.
		if err := conn.QueryRow(ctx, "select current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		var tables int
		if err := conn.QueryRow(ctx, "select count(*) from pg_tables where schemaname = 'public'").Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Fatalf("fresh database has %d tables", tables)
		}
		if _, err := conn.Exec(ctx, "create table t (id int)"); err != nil {
			t.Fatal(err)
		}
		other := NewDatabase(t)
		if other == u {
			t.Fatal("two databases share a URL")
		}
	})

	conn, err := pgx.Connect(ctx, ServerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "select exists (select 1 from pg_database where datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if name == "" || exists {
		t.Fatalf("database %q still exists after its test", name)
	}
}

func TestWithDatabase(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"postgres://nxmesh@/nxmesh?host=%2Ftmp%2Fs&port=5432", "postgres://nxmesh@/test_x?host=%2Ftmp%2Fs&port=5432"},
		{"postgresql://u:p@localhost:5433/db?dbname=db&sslmode=disable", "postgresql://u:p@localhost:5433/test_x?sslmode=disable"},
		{"host=/tmp/s user=nxmesh dbname=nxmesh", "host=/tmp/s user=nxmesh dbname=nxmesh dbname='test_x'"},
	} {
		got, err := WithDatabase(c.in, "test_x")
		if err != nil || got != c.want {
			t.Errorf("WithDatabase(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		cfg, err := pgconn.ParseConfig(got)
		if err != nil {
			t.Errorf("parse %q: %v", got, err)
		} else if cfg.Database != "test_x" {
			t.Errorf("%q parses to database %q", got, cfg.Database)
		}
	}
}

func TestRemoveStaleServers(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	mk := func(pid int, mtime time.Time) string {
		dir, err := os.MkdirTemp("", TempDirPrefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		if pid != 0 {
			if err := os.MkdirAll(filepath.Join(dir, "postgres"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "postgres", "postmaster.pid"), []byte(strconv.Itoa(pid)+"\n/x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(dir, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	staleDead := mk(dead.Process.Pid, old)
	staleNoPid := mk(0, old)
	live := mk(os.Getpid(), old)
	fresh := mk(0, time.Now())

	RemoveStaleServers()
	for dir, wantKept := range map[string]bool{staleDead: false, staleNoPid: false, live: true, fresh: true} {
		_, err := os.Stat(dir)
		if kept := err == nil; kept != wantKept {
			t.Errorf("%s kept = %v, want %v", dir, kept, wantKept)
		}
	}
}
