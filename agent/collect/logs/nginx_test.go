package logs

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestRealNginxAccessLog renders a virtual host with the agent's access
// log, serves requests through a real nginx and parses what it wrote.
func TestRealNginxAccessLog(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("/usr/sbin/nginx")
	if err != nil {
		if os.Getenv("NXMESH_SKIP_NGINX") == "1" {
			t.Skip("no nginx")
		}
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint32(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	accessLog := filepath.Join(dir, "logs", "access.log")
	os.MkdirAll(filepath.Dir(accessLog), 0o755)
	confDir := filepath.Join(dir, "conf")
	files, err := render.Render(&agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{{
		Id: "0190f0e0-0000-7000-8000-000000000001", ServerName: "localhost", ListenPort: port,
		Locations: []*agentv1.Location{{Path: "/", CustomDirectives: map[string]string{"return": "204"}}, {Path: "/missing", Root: dir}},
	}}}, render.Options{ConfDir: confDir, AccessLog: accessLog})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		p := filepath.Join(confDir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, data, 0o644)
	}
	opts := render.MainOptions{ConfDir: confDir, RuntimeDir: dir, ErrorLog: filepath.Join(dir, "logs", "error.log"), Foreground: true}
	if os.Geteuid() == 0 {
		opts.User = "root"
	}
	main, err := render.MainConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "nginx.conf"), main, 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })

	get := func(path, ua, ref string) (int, error) {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(int(port))+path, nil)
		req.Host = "localhost"
		req.Header.Set("User-Agent", ua)
		req.Header.Set("Referer", ref)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := get("/warmup", "w", ""); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, err := get("/ok?x=1", "ua-\"one\"", "https://ref.example/"); err != nil || st != 204 {
		t.Fatalf("GET /ok = %d, %v", st, err)
	}
	if st, err := get("/missing/file", "ua-two", ""); err != nil || st != 404 {
		t.Fatalf("GET /missing = %d, %v", st, err)
	}
	var entries []*agentv1.AccessLogEntry
	for time.Now().Before(deadline) && len(entries) < 3 {
		entries = entries[:0]
		f, err := os.Open(accessLog)
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				e, err := ParseAccessLine(sc.Bytes())
				if err != nil {
					t.Fatalf("%v: %s", err, sc.Text())
				}
				entries = append(entries, e)
			}
			f.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(entries) < 3 {
		t.Fatalf("%d entries in the access log", len(entries))
	}
	ok, missing := entries[len(entries)-2], entries[len(entries)-1]
	if ok.GetStatus() != 204 || ok.GetUri() != "/ok?x=1" || ok.GetUserAgent() != `ua-"one"` || ok.GetReferer() != "https://ref.example/" ||
		ok.GetVirtualHostId() != "0190f0e0-0000-7000-8000-000000000001" || ok.GetMethod() != "GET" || ok.GetHost() != "localhost" ||
		ok.GetServerPort() != port || ok.GetKind() != "http" || ok.GetRequestId() == "" || ok.GetTimestampMs() < time.Now().Add(-time.Minute).UnixMilli() ||
		ok.GetProtocol() != "HTTP/1.1" || ok.GetScheme() != "http" || ok.GetBytesSent() == 0 || ok.GetRequestLength() == 0 {
		t.Errorf("204 entry = %v", ok)
	}
	if missing.GetStatus() != 404 || !strings.HasPrefix(missing.GetUri(), "/missing/") || missing.GetUserAgent() != "ua-two" || missing.GetReferer() != "" {
		t.Errorf("404 entry = %v", missing)
	}
}
