package render

import (
	"bytes"
	"context"
	"fmt"
	"io"
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
		Id:               "vh-auth",
		ServerName:       "localhost",
		ListenPort:       authPort,
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

	site := installSite(t, dir, files, func(o *MainOptions) { o.Foreground = true })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cmd := exec.CommandContext(ctx, nginx, "-p", site.dir, "-c", site.conf)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

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

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := get(statusPort, "/nxmesh_status", "", ""); err == nil {
			break
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
