package nginx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestManager_AccessLog renders the access log into every server and
// reopens the logs after a rotation, with a real nginx.
func TestManager_AccessLog(t *testing.T) {
	t.Parallel()
	logDir := t.TempDir()
	access := filepath.Join(logDir, "access.log")
	b := setup(t, func(o *Options) { o.AccessLog = access })
	if got, want := b.m.ErrorLogPath(), filepath.Join(b.dir, "logs", "error.log"); got != want {
		t.Errorf("ErrorLogPath = %q, want %q", got, want)
	}
	port := freeTestPort(t)
	mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "one")}))
	get(t, port)
	waitFor := func(path, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			data, err := os.ReadFile(path)
			if err == nil && strings.Contains(string(data), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %q lacks %q", path, data, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(access, `"virtual_host_id":"vh0"`)

	if err := os.Rename(access, access+".1"); err != nil {
		t.Fatal(err)
	}
	if err := b.m.ReopenLogs(); err != nil {
		t.Fatal(err)
	}
	waitFor(access, "") // nginx created the file again
	get(t, port)
	waitFor(access, `"kind":"http"`)

	if err := b.m.Stop(t.Context(), false, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.m.ReopenLogs(); err != ErrNotRunning {
		t.Errorf("ReopenLogs of a stopped nginx = %v, want ErrNotRunning", err)
	}
}

func TestNew_RejectsBadAccessLog(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"relative/access.log", "/tmp/new\nline.log"} {
		if _, err := New(Options{Prefix: t.TempDir(), AccessLog: p}); err == nil || !strings.Contains(err.Error(), "access log") {
			t.Errorf("AccessLog %q: err = %v", p, err)
		}
	}
}

// TestManager_AccessLogTurnedOn restarts the manager with an access log
// over a live update rendered without one: the same update is rendered
// again, with the access log, instead of being "already applied".
func TestManager_AccessLogTurnedOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	port := freeTestPort(t)
	u := proxyUpdate(1, []uint32{port}, []string{backend(t, "one")})
	mustApply(t, b.m, u)
	if err := b.m.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	access := filepath.Join(t.TempDir(), "access.log")
	b.opts.AccessLog = access
	m := b.start(t)
	res := mustApply(t, m, u)
	if res.Message == "already applied" || !res.Reloaded || res.Version.AccessLog != access {
		t.Fatalf("apply with the access log turned on: %+v", res)
	}
	get(t, port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(access)
		if err == nil && strings.Contains(string(data), `"virtual_host_id":"vh0"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log %q, %v", data, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if res := mustApply(t, m, u); res.Message != "already applied" {
		t.Errorf("the same update again: %+v, want already applied", res)
	}
}
