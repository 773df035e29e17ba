package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// buildNxmesh builds this package's binary into a temporary directory.
func buildNxmesh(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nxmesh")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// privateDir is a fresh directory of mode 0700 directly under the temporary
// directory, like a clone under /root: as root, the embedded PostgreSQL's user
// cannot reach anything inside it. Its embedded cluster, kept outside when so,
// is removed with it.
func privateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nxmesh-main-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if loc, err := os.ReadFile(filepath.Join(dir, "data", "postgres.location")); err == nil {
			if home := filepath.Dir(strings.TrimSpace(string(loc))); strings.HasPrefix(home, "/var/lib/nxmesh/") {
				_ = os.RemoveAll(home)
			}
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// nxmeshEnv is the environment without NXMESH_* variables, plus env.
func nxmeshEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NXMESH_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// syncBuffer collects a process's output while it runs.
type syncBuffer = apptest.SyncBuffer

// runToEnd runs bin with args in dir and returns its exit code and its stderr.
func runToEnd(t *testing.T, bin, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%v did not end within the deadline; stderr:\n%s", args, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// assertStartFailure checks that a start-up failure ended with a non-zero exit and
// a "nxmesh: …" message holding every one of want, and no panic.
func assertStartFailure(t *testing.T, code int, stdout, stderr string, want ...string) {
	t.Helper()
	if code == 0 {
		t.Errorf("exit code 0, want non-zero")
	}
	if code == 2 || strings.Contains(stderr+stdout, "panic") || strings.Contains(stderr+stdout, "goroutine") {
		t.Errorf("exit code %d with a panic:\n%s", code, stderr)
	}
	// The message is the last thing written; a driver's error may span lines.
	msg := stderr
	if i := strings.LastIndex(stderr, "\nnxmesh: "); i >= 0 {
		msg = stderr[i+1:]
	}
	if !strings.HasPrefix(msg, "nxmesh: ") {
		t.Fatalf("no \"nxmesh: …\" message on stderr:\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not say %q", msg, w)
		}
	}
}

// Every start-up failure of the master ends with its cause on stderr and a
// non-zero exit, never with a panic.
func TestStartupFailuresExitWithTheirCause(t *testing.T) {
	t.Parallel()
	bin := buildNxmesh(t)

	t.Run("unreachable database", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			name string
			args []string
		}{
			{"serve fails", []string{"serve"}},
			{"users create fails", []string{"users", "create", "--email", "ops@example.com", "--password", "long-enough-password"}},
			{"migrate status fails", []string{"migrate", "status"}},
			{"migrate up fails", []string{"migrate", "up"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				dir := privateDir(t)
				env := nxmeshEnv(
					"NXMESH_DATABASE_URL=postgres://nobody@127.0.0.1:1/x?connect_timeout=5",
					"NXMESH_DATA_DIR="+filepath.Join(dir, "data"),
					"NXMESH_HTTP_ADDR="+apptest.FreeAddr(t),
					"NXMESH_GRPC_ADDR="+apptest.FreeAddr(t),
				)
				code, stdout, stderr := runToEnd(t, bin, dir, env, c.args...)
				assertStartFailure(t, code, stdout, stderr, "database", "connection refused")
			})
		}
	})

	t.Run("data dir in use by a running master", func(t *testing.T) {
		t.Parallel()
		// The default configuration (no config.yaml in the working directory) with
		// its embedded PostgreSQL, from a 0700 directory.
		dir := privateDir(t)
		httpAddr := apptest.FreeAddr(t)
		env := nxmeshEnv(
			"NXMESH_DATABASE_URL=",
			"NXMESH_DATA_DIR="+filepath.Join(dir, "data"),
			"NXMESH_HTTP_ADDR="+httpAddr,
			"NXMESH_GRPC_ADDR="+apptest.FreeAddr(t),
		)
		first := exec.Command(bin, "serve")
		first.Dir = dir
		first.Env = env
		var out syncBuffer
		first.Stdout, first.Stderr = &out, &out
		if err := first.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = first.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = first.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(time.Minute):
				_ = first.Process.Kill()
				<-exited
			}
		})

		client := &http.Client{Timeout: 2 * time.Second}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			resp, err := client.Get("http://" + httpAddr + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-exited:
				t.Fatalf("the first master exited:\n%s", out.String())
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("the first master is not healthy after 3 minutes:\n%s", out.String())
			}
		}

		second := nxmeshEnv(
			"NXMESH_DATABASE_URL=",
			"NXMESH_DATA_DIR="+filepath.Join(dir, "data"),
			"NXMESH_HTTP_ADDR="+apptest.FreeAddr(t),
			"NXMESH_GRPC_ADDR="+apptest.FreeAddr(t),
		)
		code, stdout, stderr := runToEnd(t, bin, dir, second, "serve")
		assertStartFailure(t, code, stdout, stderr, "embedded postgres", filepath.Join(dir, "data"), "already in use")

		// The running master was not disturbed.
		resp, err := client.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			t.Fatalf("first master after the second start: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first master's /readyz: %d", resp.StatusCode)
		}
	})
}
