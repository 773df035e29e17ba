package nginx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app/apptest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// skipNginxEnv, when set to 1, turns the tests that need a real nginx into
// skips instead of failures.
const skipNginxEnv = "NXMESH_SKIP_NGINX"

// nginxBinary returns the nginx executable; without one the test fails
// unless NXMESH_SKIP_NGINX=1.
func nginxBinary(tb testing.TB) string {
	tb.Helper()
	for _, p := range []string{os.Getenv("NXMESH_NGINX"), "nginx", "/usr/sbin/nginx"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv(skipNginxEnv) == "1" {
		tb.Skip("nginx not installed and " + skipNginxEnv + "=1")
	}
	tb.Fatal("nginx not found: install it with `bash deploy/setup/ensure-deps.sh nginx` (or set " + skipNginxEnv + "=1 to skip tests that need it)")
	return ""
}

// testUser is the user directive for nginx started by tests: workers of a
// root-started nginx would otherwise run as nobody, which cannot enter a
// test's temporary directory.
func testUser() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	return ""
}

func freeTestPort(t *testing.T) uint32 {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// killTree kills an nginx master and its workers and waits for the master
// to be gone.
func killTree(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 || !alive(pid) {
		return
	}
	for _, p := range append([]int{pid}, children(pid)...) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if !waitGone(context.Background(), pid, 10*time.Second) {
		t.Errorf("nginx master %d still alive after SIGKILL", pid)
	}
}

// bundle is what setup returns.
type bundle struct {
	dir    string
	opts   Options
	m      *Manager
	events chan Event
}

// setup starts a Manager in supervise mode in a fresh directory; nginx is
// killed when the test ends.
func setup(t *testing.T, mutate ...func(*Options)) *bundle {
	t.Helper()
	b := &bundle{dir: t.TempDir(), events: make(chan Event, 64)}
	b.opts = Options{
		Binary:        nginxBinary(t),
		Prefix:        b.dir,
		User:          testUser(),
		WatchInterval: 50 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		EventFunc: func(e Event) {
			select {
			case b.events <- e:
			default:
			}
		},
	}
	for _, f := range mutate {
		f(&b.opts)
	}
	b.m = b.start(t)
	return b
}

// start creates and starts a Manager over the bundle's directory, as the
// agent does when it starts.
func (b *bundle) start(t *testing.T) *Manager {
	t.Helper()
	m, err := New(b.opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("close manager: %v", err)
		}
		killTree(t, readPIDFile(m.pidFile))
	})
	return m
}

// backend starts an HTTP server on loopback answering body.
func backend(t *testing.T, body string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// proxyUpdate is a config with one virtual host per port, each proxying to
// the backend address of the same index.
func proxyUpdate(version int64, ports []uint32, backends []string) *agentv1.ConfigUpdate {
	u := &agentv1.ConfigUpdate{ConfigId: fmt.Sprintf("cfg-%d", version), Version: version}
	for i, port := range ports {
		id := fmt.Sprintf("up%d", i)
		u.Upstreams = append(u.Upstreams, &agentv1.Upstream{
			Id: id, Name: id, Servers: []*agentv1.UpstreamServer{{Address: backends[i]}},
		})
		u.VirtualHosts = append(u.VirtualHosts, &agentv1.VirtualHost{
			Id: fmt.Sprintf("vh%d", i), Name: "site", ServerName: "localhost", ListenPort: port,
			// Requests name 127.0.0.1, not localhost.
			DefaultServer: true,
			Locations:     []*agentv1.Location{{Path: "/", UpstreamId: id}},
		})
	}
	return u
}

// get fetches http://127.0.0.1:port/ and returns the body.
func get(t *testing.T, port uint32) string {
	t.Helper()
	body, err := fetch(port)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func fetch(port uint32) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET :%d: %s: %s", port, resp.Status, body)
	}
	return string(body), nil
}

// apply applies u and records the progress steps.
func apply(t *testing.T, m *Manager, u *agentv1.ConfigUpdate) (Result, []agentv1.ConfigApplyStatus) {
	t.Helper()
	var steps []agentv1.ConfigApplyStatus
	res := m.Apply(t.Context(), u, func(s agentv1.ConfigApplyStatus) { steps = append(steps, s) })
	return res, steps
}

func mustApply(t *testing.T, m *Manager, u *agentv1.ConfigUpdate) Result {
	t.Helper()
	res, _ := apply(t, m, u)
	if res.Status != agentv1.ConfigApplyStatus_SUCCESS {
		t.Fatalf("apply version %d: %s: %s", u.GetVersion(), res.Status, res.Message)
	}
	return res
}

func versionDirs(t *testing.T, m *Manager) []string {
	t.Helper()
	entries, err := os.ReadDir(m.versionsDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestManager_Apply(t *testing.T) {
	t.Parallel()

	t.Run("ServesTraffic", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		res, steps := apply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		if res.Status != agentv1.ConfigApplyStatus_SUCCESS || !res.Reloaded {
			t.Fatalf("apply: %s (reloaded %v): %s", res.Status, res.Reloaded, res.Message)
		}
		want := []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING}
		if !slices.Equal(steps, want) {
			t.Errorf("progress = %v, want %v", steps, want)
		}
		if got := get(t, port); got != "backend-one" {
			t.Errorf("GET through nginx = %q, want backend-one", got)
		}
		st := b.m.Status()
		if !st.Running || st.Live == nil || st.Live.Version != 1 || st.Live.ConfigID != "cfg-1" || st.LastApplyError != "" {
			t.Errorf("status = %+v", st)
		}
		target, err := os.Readlink(b.m.currentLink())
		if err != nil || target != filepath.Join("versions", res.Version.Name) {
			t.Errorf("current -> %q (%v), want versions/%s", target, err, res.Version.Name)
		}
	})

	t.Run("AcknowledgesAppliedVersionWithoutReload", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		u := proxyUpdate(3, []uint32{freeTestPort(t)}, []string{backend(t, "x")})
		u.Checksum = "abcdef0123456789"
		mustApply(t, b.m, u)
		pid := b.m.Status().PID
		workers := children(pid)
		res, steps := apply(t, b.m, u)
		if res.Status != agentv1.ConfigApplyStatus_SUCCESS || res.Reloaded || len(steps) != 0 {
			t.Errorf("re-apply: %s reloaded=%v steps=%v", res.Status, res.Reloaded, steps)
		}
		if got := children(pid); !slices.Equal(got, workers) {
			t.Errorf("workers changed from %v to %v: nginx was reloaded", workers, got)
		}
		if res.Version.Name != "3-abcdef01" {
			t.Errorf("version name = %q, want 3-abcdef01", res.Version.Name)
		}
	})

	t.Run("InvalidConfigFailsAndKeepsServing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		bad := proxyUpdate(2, []uint32{port}, []string{backend(t, "backend-two")})
		bad.VirtualHosts[0].CustomDirectives = map[string]string{"no_such_directive": "on"}

		res, steps := apply(t, b.m, bad)
		if res.Status != agentv1.ConfigApplyStatus_FAILED {
			t.Fatalf("apply = %s (%s), want FAILED", res.Status, res.Message)
		}
		if !strings.Contains(res.Message, `unknown directive "no_such_directive"`) {
			t.Errorf("message = %q, want nginx's unknown directive error", res.Message)
		}
		if !slices.Equal(steps, []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING}) {
			t.Errorf("progress = %v, want only VALIDATING", steps)
		}
		if got := get(t, port); got != "backend-one" {
			t.Errorf("GET after failed apply = %q, want backend-one", got)
		}
		st := b.m.Status()
		if st.Live.Version != 1 || st.LastApplyError != res.Message {
			t.Errorf("status after failure: live %d, last error %q", st.Live.Version, st.LastApplyError)
		}
		if slices.ContainsFunc(versionDirs(t, b.m), func(n string) bool { return strings.HasPrefix(n, "2-") }) {
			t.Errorf("failed version left on disk: %v", versionDirs(t, b.m))
		}
	})

	t.Run("RefusesRootsOverlappingTheAgentsDirectories", func(t *testing.T) {
		t.Parallel()
		data := t.TempDir()
		b := setup(t, func(o *Options) { o.ProtectedDirs = []string{data} })
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		links := t.TempDir()
		for name, target := range map[string]string{"to-prefix": filepath.Join(b.dir, "versions"), "to-data": data} {
			if err := os.Symlink(target, filepath.Join(links, name)); err != nil {
				t.Fatal(err)
			}
		}
		www := t.TempDir()
		before := versionDirs(t, b.m)
		version := int64(1)
		for _, c := range []struct {
			name, root string
			ok         bool
		}{
			{"ThePrefix", b.dir, false},
			{"InsideThePrefix", filepath.Join(b.dir, "logs"), false},
			{"AParentOfThePrefix", filepath.Dir(b.dir), false},
			{"TheFileSystemRoot", "/", false},
			{"TheDataDirectory", data, false},
			{"InsideTheDataDirectory", filepath.Join(data, "identity"), false},
			{"ALinkIntoThePrefix", filepath.Join(links, "to-prefix", "not-yet"), false},
			{"ALinkToTheDataDirectory", filepath.Join(links, "to-data"), false},
			{"AnUnrelatedDirectory", www, true},
		} {
			version++
			u := proxyUpdate(version, []uint32{port}, []string{backend(t, "backend-two")})
			u.VirtualHosts[0].Locations = append(u.VirtualHosts[0].Locations, &agentv1.Location{Path: "/static/", Root: c.root})
			res, _ := apply(t, b.m, u)
			if c.ok {
				if res.Status != agentv1.ConfigApplyStatus_SUCCESS {
					t.Errorf("%s: apply = %s (%s), want SUCCESS", c.name, res.Status, res.Message)
				}
				continue
			}
			if res.Status != agentv1.ConfigApplyStatus_FAILED || !strings.Contains(res.Message, "locations[1].root") {
				t.Errorf("%s: apply = %s (%s), want FAILED naming locations[1].root", c.name, res.Status, res.Message)
			}
			if got := versionDirs(t, b.m); !slices.Equal(got, before) {
				t.Errorf("%s: version directories %v, want %v unchanged", c.name, got, before)
			}
			if got := get(t, port); got != "backend-one" {
				t.Errorf("%s: GET after refused apply = %q, want backend-one", c.name, got)
			}
		}
	})

	t.Run("BindConflictRollsBack", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		before := b.m.Live()

		// Another process holds the port the new version listens on.
		held, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		heldPort := uint32(held.Addr().(*net.TCPAddr).Port)
		two := backend(t, "backend-two")
		res, steps := apply(t, b.m, proxyUpdate(2, []uint32{port, heldPort}, []string{two, two}))
		if res.Status != agentv1.ConfigApplyStatus_ROLLED_BACK {
			t.Fatalf("apply = %s (%s), want ROLLED_BACK", res.Status, res.Message)
		}
		if !strings.Contains(res.Message, "Address already in use") || !strings.Contains(res.Message, strconv.Itoa(int(heldPort))) {
			t.Errorf("message = %q, want nginx's bind error for port %d", res.Message, heldPort)
		}
		want := []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING}
		if !slices.Equal(steps, want) {
			t.Errorf("progress = %v, want %v", steps, want)
		}
		if got := get(t, port); got != "backend-one" {
			t.Errorf("GET after rollback = %q, want backend-one (the previous version)", got)
		}
		if live := b.m.Live(); live.Name != before.Name {
			t.Errorf("live = %s, want %s", live.Name, before.Name)
		}
		if target, _ := os.Readlink(b.m.currentLink()); target != filepath.Join("versions", before.Name) {
			t.Errorf("current -> %s, want versions/%s", target, before.Name)
		}
		if !strings.Contains(b.m.Status().LastApplyError, "Address already in use") {
			t.Errorf("last apply error = %q", b.m.Status().LastApplyError)
		}
		// nginx retries a failed bind for a few seconds, logging [emerg]
		// each time: neither the rollback nor the next apply may take those
		// lines for their own failure.
		if strings.Contains(res.Message, "also failed") {
			t.Errorf("message = %q: the rollback's reload was reported as failed", res.Message)
		}
		three := backend(t, "backend-three")
		if res, _ := apply(t, b.m, proxyUpdate(3, []uint32{port}, []string{three})); res.Status != agentv1.ConfigApplyStatus_SUCCESS {
			t.Fatalf("valid apply after the rollback = %s (%s), want SUCCESS", res.Status, res.Message)
		}
		if got := get(t, port); got != "backend-three" {
			t.Errorf("GET after the next apply = %q, want backend-three", got)
		}
	})

	t.Run("KeepsFiveVersions", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		addr := backend(t, "x")
		var last Result
		for v := int64(1); v <= 7; v++ {
			last = mustApply(t, b.m, proxyUpdate(v, []uint32{port}, []string{addr}))
		}
		dirs := versionDirs(t, b.m)
		if len(dirs) != DefaultKeepVersions {
			t.Fatalf("versions on disk = %v, want %d", dirs, DefaultKeepVersions)
		}
		for v := 3; v <= 7; v++ {
			if !slices.ContainsFunc(dirs, func(n string) bool { return strings.HasPrefix(n, strconv.Itoa(v)+"-") }) {
				t.Errorf("version %d missing from %v", v, dirs)
			}
		}
		if !slices.Contains(dirs, last.Version.Name) {
			t.Errorf("live version %s pruned", last.Version.Name)
		}
	})

	t.Run("WritesCertificatesWithPrivateKeyMode", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		certPEM, keyPEM := apptest.SelfSignedCert(t, "localhost")
		port := freeTestPort(t)
		u := proxyUpdate(1, []uint32{port}, []string{backend(t, "tls-backend")})
		u.VirtualHosts[0].SslEnabled = true
		u.VirtualHosts[0].SslCertificateId = "c1"
		u.Certificates = map[string]*agentv1.Certificate{"c1": {Id: "c1", Domain: "localhost", CertificatePem: certPEM, PrivateKeyPem: keyPEM}}
		res := mustApply(t, b.m, u)

		dir := filepath.Join(b.m.versionsDir(), res.Version.Name, "certs")
		for name, mode := range map[string]os.FileMode{"c1.key": 0o600, "c1.crt": 0o644} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("%s mode = %v, want %v", name, fi.Mode().Perm(), mode)
			}
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(certPEM))
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body, _ := io.ReadAll(resp.Body); string(body) != "tls-backend" {
			t.Errorf("HTTPS GET = %q", body)
		}
	})
}

func TestManager_Restart(t *testing.T) {
	t.Parallel()

	t.Run("AdoptsRunningNginx", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		pid := b.m.Status().PID
		if err := b.m.Close(t.Context()); err != nil {
			t.Fatal(err)
		}

		m2 := b.start(t)
		st := m2.Status()
		if !st.Running || st.PID != pid {
			t.Errorf("after restart: running=%v pid=%d, want the adopted pid %d", st.Running, st.PID, pid)
		}
		if st.Live == nil || st.Live.Version != 1 {
			t.Errorf("live after restart = %+v, want version 1", st.Live)
		}
		if got := get(t, port); got != "backend-one" {
			t.Errorf("GET = %q", got)
		}
	})

	t.Run("StartsLastGoodVersion", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		// A bad update must not be what comes back.
		bad := proxyUpdate(2, []uint32{port}, []string{backend(t, "backend-two")})
		bad.VirtualHosts[0].CustomDirectives = map[string]string{"no_such_directive": "on"}
		if res, _ := apply(t, b.m, bad); res.Status != agentv1.ConfigApplyStatus_FAILED {
			t.Fatalf("bad apply = %s", res.Status)
		}
		if err := b.m.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		killTree(t, b.m.Status().PID)
		if _, err := fetch(port); err == nil {
			t.Fatal("nginx still serving after it was killed")
		}

		m2 := b.start(t)
		if st := m2.Status(); !st.Running || st.Live.Version != 1 {
			t.Fatalf("after restart: running=%v live=%+v", st.Running, st.Live)
		}
		if got := get(t, port); got != "backend-one" {
			t.Errorf("GET = %q, want backend-one", got)
		}
	})
}

func TestManager_Watchdog(t *testing.T) {
	t.Parallel()

	t.Run("RestartsKilledNginx", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		old := b.m.Status().PID
		killTree(t, old)

		restarted := waitEvent(t, b.events, EventNginxRestarted)
		if restarted.PID == 0 || restarted.PID == old {
			t.Errorf("restart event pid = %d (old %d)", restarted.PID, old)
		}
		if got := get(t, port); got != "backend-one" {
			t.Errorf("GET after watchdog restart = %q", got)
		}
		if st := b.m.Status(); st.Restarts != 1 || st.PID != restarted.PID {
			t.Errorf("status after restart: restarts=%d pid=%d", st.Restarts, st.PID)
		}
	})

	t.Run("LeavesStoppedNginxAlone", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		port := freeTestPort(t)
		mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))
		if err := b.m.Stop(t.Context(), true, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if b.m.Status().Running {
			t.Fatal("nginx running after Stop")
		}
		// An apply while stopped installs without starting nginx.
		res := mustApply(t, b.m, proxyUpdate(2, []uint32{port}, []string{backend(t, "backend-two")}))
		if res.Reloaded || b.m.Status().Running {
			t.Errorf("apply started a stopped nginx (reloaded=%v)", res.Reloaded)
		}
		if err := b.m.StartNginx(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := get(t, port); got != "backend-two" {
			t.Errorf("GET after start = %q, want backend-two", got)
		}
		for len(b.events) > 0 {
			if e := <-b.events; e.Type == EventNginxRestarted || e.Type == EventNginxDown {
				t.Errorf("watchdog event %s for a deliberately stopped nginx", e.Type)
			}
		}
		if n := b.m.Status().Restarts; n != 0 {
			t.Errorf("restarts = %d, want 0", n)
		}
	})
}

func TestManager_Commands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	port := freeTestPort(t)
	mustApply(t, b.m, proxyUpdate(1, []uint32{port}, []string{backend(t, "backend-one")}))

	out, err := b.m.Validate(t.Context())
	if err != nil || !strings.Contains(out, "test is successful") {
		t.Errorf("Validate = %q, %v", out, err)
	}
	pid := b.m.Status().PID
	if err := b.m.Reload(t.Context()); err != nil {
		t.Errorf("Reload: %v", err)
	}
	if err := b.m.Restart(t.Context()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if st := b.m.Status(); !st.Running || st.PID == pid {
		t.Errorf("after Restart: running=%v pid=%d (was %d)", st.Running, st.PID, pid)
	}
	if got := get(t, port); got != "backend-one" {
		t.Errorf("GET after restart = %q", got)
	}
	if err := b.m.Stop(t.Context(), false, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.m.Reload(t.Context()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Reload of a stopped nginx = %v, want ErrNotRunning", err)
	}
}

// TestManager_ManageMode runs an "operator" nginx whose nginx.conf
// includes the agent's stub files.
func TestManager_ManageMode(t *testing.T) {
	t.Parallel()
	bin := nginxBinary(t)
	dir := t.TempDir()
	inc := filepath.Join(dir, "nxmesh")
	opDir := filepath.Join(dir, "op")
	if err := os.MkdirAll(opDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(opDir, "nginx.conf")
	httpLine, streamLine := IncludeLines(inc)
	var user, module string
	if u := testUser(); u != "" {
		user = "user " + u + ";"
	}
	if _, err := os.Stat(render.DefaultStreamModulePath); err == nil {
		module = "load_module " + render.DefaultStreamModulePath + ";"
	}
	// The operator's own default server, as Debian's default site has one.
	opPort := freeTestPort(t)
	text := fmt.Sprintf(`%s
%s
worker_processes 1;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[3]s/client_body;
    proxy_temp_path %[3]s/proxy;
    fastcgi_temp_path %[3]s/fastcgi;
    uwsgi_temp_path %[3]s/uwsgi;
    scgi_temp_path %[3]s/scgi;
    server { listen %[6]d default_server; return 418; }
    %[4]s
}
stream {
    %[5]s
}
`, user, module, opDir, httpLine, streamLine, opPort)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	m, err := New(Options{Binary: bin, Conf: conf, IncludeDir: inc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close(context.Background())
		killTree(t, readPIDFile(filepath.Join(opDir, "nginx.pid")))
	})
	if m.pidFile != filepath.Join(opDir, "nginx.pid") || m.errorLog != filepath.Join(opDir, "error.log") {
		t.Errorf("paths from nginx.conf: pid %q, error log %q", m.pidFile, m.errorLog)
	}
	// The operator starts nginx once the stubs exist.
	if out, err := exec.Command(bin, "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("start operator nginx: %v: %s", err, out)
	}
	if err := waitRunning(t, m); err != nil {
		t.Fatal(err)
	}

	port := freeTestPort(t)
	mustApply(t, m, proxyUpdate(1, []uint32{port}, []string{backend(t, "managed-one")}))
	if got := get(t, port); got != "managed-one" {
		t.Errorf("GET = %q", got)
	}

	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := uint32(held.Addr().(*net.TCPAddr).Port)
	two := backend(t, "managed-two")
	res, _ := apply(t, m, proxyUpdate(2, []uint32{port, heldPort}, []string{two, two}))
	if res.Status != agentv1.ConfigApplyStatus_ROLLED_BACK || !strings.Contains(res.Message, "Address already in use") {
		t.Errorf("bind conflict: %s: %s", res.Status, res.Message)
	}
	if got := get(t, port); got != "managed-one" {
		t.Errorf("GET after rollback = %q", got)
	}

	// A host on the operator's default port is applied (no second default
	// server is rendered) and unknown names still reach the operator's.
	shared := proxyUpdate(3, []uint32{port, opPort}, []string{two, two})
	shared.VirtualHosts[1].DefaultServer = false
	mustApply(t, m, shared)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", opPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("unknown name on the operator's default port: %s, want the operator's 418", resp.Status)
	}

	if err := m.Restart(t.Context()); !errors.Is(err, ErrNotSupervised) {
		t.Errorf("Restart in manage mode = %v, want ErrNotSupervised", err)
	}
	if out, err := m.Validate(t.Context()); err != nil || !strings.Contains(out, conf) {
		t.Errorf("Validate = %q, %v", out, err)
	}
}

// waitRunning waits for the manager to see a running nginx.
func waitRunning(t *testing.T, m *Manager) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !m.Status().Running {
		if time.Now().After(deadline) {
			return errors.New("nginx not running after 10s")
		}
		<-tick.C
	}
	return nil
}

// waitEvent waits for an event of the given type.
func waitEvent(t *testing.T, events <-chan Event, typ string) Event {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-events:
			if e.Type == typ {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event within 30s", typ)
		}
	}
}
