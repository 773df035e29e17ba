package render

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func freePort(t *testing.T) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// rawTokens are argument spellings written straight into a config file;
// TestLiveNginx checks that real nginx reads each one as parseNginx does.
var rawTokens = []string{
	`a\nb`, `"a\tb"`, `'it\'s'`, `"say \"hi\""`, `a\"b`, `a\\b`, `a\.b`, `a}b`, `a#b`,
	`"a;b {c}"`, `a\ b`, `'x\\y'`, `"\r"`, `'"'`, `"'"`, `\a`, `"a\qb"`,
}

// TestLiveNginx runs a real nginx with a rendered config and checks what
// nginx -t cannot: that basic auth accepts the password hash formats the
// package documents, that the status server answers, and that the
// reimplementation of nginx's tokenizer agrees with nginx.
func TestLiveNginx(t *testing.T) {
	t.Parallel()
	nginx := nginxBinary(t)

	const password = "secret"
	bc, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]string{
		"bcrypt2a":  string(bc),
		"bcrypt2b":  "$2b$" + string(bc[4:]),
		"bcrypt2y":  "$2y$" + string(bc[4:]),
		"apr1":      "$apr1$nxmeshAA$nW9ooceUnSKN0x2a0/yVl0",
		"sha512":    "$6$nxmeshsalt$cEgNXK5gKR15Ch00.Zf/jTT9U9DktmOFmzpPU17NNZP1Ae1e6rlY3pUL7r8s6iJEB5la0Exf4ZK.q36DhiHZw/",
		"sha256":    "$5$nxmeshsalt$6GXeOMOAs8PEOgjYM.Bu0MgtyVcAdeWcSABQ3/QeGhB",
		"ldap-sha1": "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
	}
	var users []*agentv1.BasicAuthUser
	for _, name := range sortedKeys(hashes) {
		users = append(users, &agentv1.BasicAuthUser{Username: name, PasswordHash: hashes[name]})
	}

	authPort, statusPort, rawPort := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	u := &agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{{
		Id:         "vh-auth",
		ServerName: "localhost",
		ListenPort: authPort,
		// Requests name 127.0.0.1, not localhost.
		DefaultServer:    true,
		AccessList:       &agentv1.AccessList{BasicAuthUsers: users, Realm: "test"},
		CustomDirectives: map[string]string{"default_type": "text/plain"},
		// Not "return": it runs before the access phase and would bypass
		// auth_basic.
		Locations: []*agentv1.Location{{Path: "/", Root: filepath.Join(dir, "www")}},
	}}}
	files, err := Render(u, Options{ConfDir: filepath.Join(dir, "conf"), StatusPort: statusPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A server whose locations echo raw tokens.
	var raw strings.Builder
	fmt.Fprintf(&raw, "server {\n    listen 127.0.0.1:%d;\n    default_type text/plain;\n", rawPort)
	for i, tok := range rawTokens {
		fmt.Fprintf(&raw, "    location = /t/%d { return 200 %s; }\n", i, tok)
	}
	raw.WriteString("}\n")
	files[HTTPConf] = append(files[HTTPConf], raw.String()...)

	logs := runNginx(t, nginx, dir, files, statusPort)
	ctx := t.Context()

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(port uint32, path, user, pass string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(int(port))+path, nil)
		if err != nil {
			return 0, "", err
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}

	t.Run("status server answers on loopback", func(t *testing.T) {
		code, body, err := get(statusPort, "/nxmesh_status", "", "")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "Active connections") {
			t.Errorf("GET /nxmesh_status = %d %q %v", code, body, err)
		}
	})
	t.Run("basic auth rejects a missing password", func(t *testing.T) {
		if code, _, err := get(authPort, "/", "", ""); err != nil || code != http.StatusUnauthorized {
			t.Errorf("GET / without credentials = %d %v, want 401", code, err)
		}
	})
	for _, name := range sortedKeys(hashes) {
		t.Run("basic auth accepts "+name, func(t *testing.T) {
			if code, body, err := get(authPort, "/", name, password); err != nil || code != http.StatusOK {
				t.Errorf("right password: %d %q %v, want 200\n%s", code, body, err, logs.Bytes())
			}
			if code, _, err := get(authPort, "/", name, "wrong"); err != nil || code != http.StatusUnauthorized {
				t.Errorf("wrong password: %d %v, want 401", code, err)
			}
		})
	}
	t.Run("tokenizer agrees with nginx", func(t *testing.T) {
		for i, tok := range rawTokens {
			tree, err := parseNginx([]byte("return 200 " + tok + ";"))
			if err != nil {
				t.Errorf("parseNginx(%s): %v", tok, err)
				continue
			}
			want := tree[0].Args[1]
			code, body, err := get(rawPort, "/t/"+strconv.Itoa(i), "", "")
			if err != nil || code != http.StatusOK {
				t.Errorf("%s: GET = %d %v", tok, code, err)
				continue
			}
			if body != want {
				t.Errorf("nginx reads %s as %q, parseNginx as %q", tok, body, want)
			}
		}
	})
}

// syncBuffer is a bytes.Buffer safe for nginx's output and a test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what was written so far.
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// runNginx installs files under dir, runs nginx in the foreground until
// the test ends and waits until the stub_status server on statusPort
// answers. It returns nginx's output.
func runNginx(t *testing.T, nginx, dir string, files Files, statusPort uint32) *syncBuffer {
	t.Helper()
	site := installSite(t, dir, files, func(o *MainOptions) { o.Foreground = true })
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	cmd := exec.CommandContext(ctx, nginx, "-p", site.dir, "-c", site.conf)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

	client := &http.Client{Timeout: time.Second}
	status := "http://127.0.0.1:" + strconv.Itoa(int(statusPort)) + "/nxmesh_status"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := client.Get(status); err == nil {
			resp.Body.Close()
			return logs
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("nginx exited: %v\n%s", err, logs.Bytes())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not start listening\n%s", logs.Bytes())
		}
	}
}

// staticHost is a virtual host serving dir/www-<id>/index.html, whose
// content is the host's id.
func staticHost(t *testing.T, dir, id, serverName string, port uint32) *agentv1.VirtualHost {
	t.Helper()
	root := filepath.Join(dir, "www-"+id)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte(id), 0o644); err != nil {
		t.Fatal(err)
	}
	return &agentv1.VirtualHost{
		Id: id, ServerName: serverName, ListenPort: port,
		Locations: []*agentv1.Location{{Path: "/", Root: root}},
	}
}

// TestLiveNginxHostSelection checks with a real nginx which server answers
// a request: a name no server lists gets the rendered default server's 404
// (or, on a TLS port, a refused handshake) unless a host is marked
// default_server, and rate-limited requests get 429.
func TestLiveNginxHostSelection(t *testing.T) {
	t.Parallel()
	nginx := nginxBinary(t)
	dir := t.TempDir()
	plainPort, defaultPort, tlsPort, limitPort, statusPort := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)

	marked := staticHost(t, dir, "vh-marked", "marked.example.test", defaultPort)
	marked.DefaultServer = true
	tlsHost := staticHost(t, dir, "vh-tls", "example.test", tlsPort)
	tlsHost.SslEnabled, tlsHost.SslCertificateId = true, "cert-example"
	limited := staticHost(t, dir, "vh-limited", "limited.example.test", limitPort)
	limited.RateLimit = &agentv1.RateLimit{RequestsPerSecond: 1}
	u := &agentv1.ConfigUpdate{
		VirtualHosts: []*agentv1.VirtualHost{
			staticHost(t, dir, "vh-known", "known.example.test", plainPort),
			staticHost(t, dir, "vh-first", "first.example.test", defaultPort),
			marked, tlsHost, limited,
		},
		Certificates: map[string]*agentv1.Certificate{"cert-example": goldenCertificate(t)},
	}
	files, err := Render(u, Options{ConfDir: filepath.Join(dir, "conf"), StatusPort: statusPort})
	if err != nil {
		t.Fatal(err)
	}
	logs := runNginx(t, nginx, dir, files, statusPort)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(t *testing.T, port uint32, host string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(int(port))+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET Host %s: %v\n%s", host, err, logs.Bytes())
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}

	t.Run("KnownNameIsServedByItsHost", func(t *testing.T) {
		t.Parallel()
		if code, body := get(t, plainPort, "known.example.test"); code != http.StatusOK || body != "vh-known" {
			t.Errorf("got %d %q, want 200 vh-known", code, body)
		}
	})
	t.Run("UnknownNameGets404FromTheDefaultServer", func(t *testing.T) {
		t.Parallel()
		if code, body := get(t, plainPort, "unknown.example.test"); code != http.StatusNotFound || strings.Contains(body, "vh-known") {
			t.Errorf("got %d %q, want 404 from the default server", code, body)
		}
	})
	t.Run("UnknownNameIsServedByTheHostMarkedDefault", func(t *testing.T) {
		t.Parallel()
		if code, body := get(t, defaultPort, "unknown.example.test"); code != http.StatusOK || body != "vh-marked" {
			t.Errorf("got %d %q, want 200 vh-marked (the first host is vh-first)", code, body)
		}
		if code, body := get(t, defaultPort, "first.example.test"); code != http.StatusOK || body != "vh-first" {
			t.Errorf("known name: got %d %q, want 200 vh-first", code, body)
		}
	})
	t.Run("UnknownTLSNameIsRefusedInTheHandshake", func(t *testing.T) {
		t.Parallel()
		addr := "127.0.0.1:" + strconv.Itoa(int(tlsPort))
		dial := func(name string) error {
			d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
				Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}} //nolint:gosec // test certificate
			c, err := d.DialContext(t.Context(), "tcp", addr)
			if err == nil {
				c.Close()
			}
			return err
		}
		if err := dial("example.test"); err != nil {
			t.Errorf("handshake for the configured name: %v\n%s", err, logs.Bytes())
		}
		if err := dial("unknown.example.test"); err == nil {
			t.Error("handshake for an unknown name succeeded, want it refused")
		}
	})
	t.Run("RateLimitedRequestsGet429", func(t *testing.T) {
		t.Parallel()
		// 1 request per second without burst: of a quick series, all but
		// the first within a second are rejected.
		codes := map[int]int{}
		for range 5 {
			code, _ := get(t, limitPort, "limited.example.test")
			codes[code]++
		}
		if codes[http.StatusOK] < 1 || codes[http.StatusTooManyRequests] < 1 || len(codes) != 2 {
			t.Errorf("status codes %v, want 200 then 429 (never 503)", codes)
		}
	})
}
