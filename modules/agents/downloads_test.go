package agents

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/static"
)

// get requests path from the master without credentials.
func (e *env) get(t *testing.T, path string, headers ...string) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.URL.RawPath, req.URL.Path = path, strings.ReplaceAll(path, "%2e", ".")
	req.RequestURI = path
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		}
	}
	resp := apptest.Do(t, e.app, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw), resp.Header
}

func TestAPI_Downloads(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "downloads")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A file next to the downloads directory, and one inside it that is not
	// a download: neither may be served.
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte("secret outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("secret inside"), 0o600); err != nil {
		t.Fatal(err)
	}
	binary := []byte("\x7fELF pretend agent binary for amd64")
	if err := os.WriteFile(filepath.Join(dir, "nxmesh-agent-linux-amd64"), binary, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(binary)
	wantSum := hex.EncodeToString(sum[:])
	e := newEnv(t, func(cfg *app.Config) { cfg.Downloads.Dir = dir })

	t.Run("BinaryWithMatchingChecksum", func(t *testing.T) {
		status, body, h := e.get(t, "/downloads/nxmesh-agent-linux-amd64")
		if status != http.StatusOK || body != string(binary) {
			t.Fatalf("status %d, body %q", status, body)
		}
		if h.Get("X-Checksum-Sha256") != wantSum {
			t.Fatalf("X-Checksum-Sha256 %q, want %s", h.Get("X-Checksum-Sha256"), wantSum)
		}
		status, sums, _ := e.get(t, "/downloads/SHA256SUMS")
		if status != http.StatusOK || sums != wantSum+"  nxmesh-agent-linux-amd64\n" {
			t.Fatalf("SHA256SUMS: status %d, body %q", status, sums)
		}
	})

	t.Run("ChecksumFollowsAReplacedBinary", func(t *testing.T) {
		root := t.TempDir()
		o := newOnboarding(app.Config{Downloads: app.DownloadsConfig{Dir: root}, GRPC: app.GRPCConfig{Addr: "127.0.0.1:9443"}})
		path := filepath.Join(root, "nxmesh-agent-linux-arm64")
		for _, content := range []string{"first", "second, longer"} {
			if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
				t.Fatal(err)
			}
			got, err := o.sum("nxmesh-agent-linux-arm64")
			want := sha256.Sum256([]byte(content))
			if err != nil || got != hex.EncodeToString(want[:]) {
				t.Fatalf("sum of %q = %q, %v", content, got, err)
			}
		}
	})

	t.Run("MissingBinaryIs404SayingHowToBuildIt", func(t *testing.T) {
		status, body, _ := e.get(t, "/downloads/nxmesh-agent-linux-arm64")
		if status != http.StatusNotFound || !strings.Contains(body, "go tool task build-agents") || !strings.Contains(body, "downloads.dir") {
			t.Fatalf("status %d, body %q", status, body)
		}
		if strings.Contains(body, root) {
			t.Fatalf("the 404 names the directory: %q", body)
		}
	})

	t.Run("UnknownNamesAndTraversalAre404", func(t *testing.T) {
		for _, path := range []string{
			"/downloads/notes.txt",
			"/downloads/nxmesh-agent-linux-386",
			"/downloads/",
			"/downloads/../secret",
			"/downloads/%2e%2e/secret",
			"/downloads/..%2fsecret",
			"/downloads/nxmesh-agent-linux-amd64/../../secret",
			"/downloads//nxmesh-agent-linux-amd64/..",
			"/downloads/NXMESH-AGENT-LINUX-AMD64x",
		} {
			status, body, _ := e.get(t, path)
			if status != http.StatusNotFound && status != http.StatusBadRequest {
				t.Errorf("%s: status %d, want 404", path, status)
			}
			if strings.Contains(body, "secret") || strings.Contains(body, "ELF") {
				t.Errorf("%s: served %q", path, body)
			}
		}
	})

	t.Run("InstallScriptIsValidShWithQuotedValues", func(t *testing.T) {
		status, body, h := e.get(t, "/downloads/install.sh", "Host", "nxmesh.internal:8080")
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/x-shellscript") {
			t.Fatalf("status %d, type %q", status, h.Get("Content-Type"))
		}
		for _, want := range []string{
			"#!/bin/sh\n", "\nset -eu\n",
			"\nMASTER_URL='http://nxmesh.internal:8080'\n",
			"\nMASTER_GRPC='master.test.internal:9443'\n",
			"\nCA_FINGERPRINT='" + e.svc.CAFingerprint() + "'\n",
			"[Service]", "User=nxmesh-agent", "ProtectSystem=strict",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("install.sh lacks %q", want)
			}
		}
		shSyntax(t, body)
	})

	t.Run("AddAgentOffersEveryWayWithCopyButtons", func(t *testing.T) {
		b := e.setup(t)
		admin := e.browser(t, "admin")
		r := admin.do(t, http.MethodPost, "/workspaces/"+b.ws.String()+"/agents", url.Values{"name": {"edge 1"}, "labels": {"env=prod"}},
			"Host", "nxmesh.internal:8080")
		r.expect(t, http.StatusCreated, `<script src="`+static.Onboard+`" defer>`, `data-tabs`,
			`id="install-script-command"`, `data-copy="install-script-command"`,
			`id="install-download-command"`, `data-copy="install-download-command"`,
			`id="install-container-command"`, `id="install-source-command"`, `data-copy="install-command"`,
			"curl -fsSL http://nxmesh.internal:8080/downloads/install.sh | sudo sh -s -- --token nxmesh_agent_",
			"curl -fsSLO http://nxmesh.internal:8080/downloads/nxmesh-agent-linux-$arch",
			"sha256sum -c -", "NXMESH_AGENT_MASTER=master.test.internal:9443",
			"nxmesh-agent --master master.test.internal:9443 --token nxmesh_agent_", "--name &#39;edge 1&#39;")
		if strings.Contains(r.body, "127.0.0.1") {
			t.Fatalf("a loopback address in the dialog: %.3000s", r.body)
		}
		if strings.Contains(r.body, "<script>") {
			t.Fatal("inline script in the dialog")
		}
	})

	t.Run("InstallScriptRefusesValuesThatAreNotAddresses", func(t *testing.T) {
		for _, ep := range []endpoints{
			{URL: "http://x'; rm -rf /; '", GRPC: "a:1"},
			{URL: "http://a", GRPC: "a:1 $(id)"},
			{URL: "ftp://a", GRPC: "a:1"},
			{URL: "http://a/`id`", GRPC: "a:1"},
		} {
			if b, err := e.svc.InstallScript(ep); err == nil {
				t.Errorf("%+v rendered:\n%.300s", ep, b)
			}
		}
	})

	t.Run("InstallScriptInstallsTheCheckedBinary", func(t *testing.T) {
		arch := runtime.GOARCH
		if arch != "amd64" && arch != "arm64" {
			t.Fatalf("no agent binary for %s", arch)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		files := t.TempDir()
		fake := []byte("#!/bin/sh\necho fake agent\n")
		fsum := sha256.Sum256(fake)
		if err := os.WriteFile(filepath.Join(files, "nxmesh-agent-linux-"+arch), fake, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(files, "SHA256SUMS"), []byte(hex.EncodeToString(fsum[:])+"  nxmesh-agent-linux-"+arch+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// The script under test, not the master's routes (tested above):
		// a plain file server stands in for /downloads/.
		srv := &http.Server{Handler: http.StripPrefix("/downloads/", http.FileServer(http.Dir(files)))}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })

		script, err := e.svc.InstallScript(endpoints{URL: "http://" + ln.Addr().String(), GRPC: "nxmesh.internal:9443"})
		if err != nil {
			t.Fatal(err)
		}
		run := func(t *testing.T, prefix string, args ...string) (string, error) {
			cmd := exec.Command("sh", append([]string{"-s", "--", "--prefix", prefix, "--no-start"}, args...)...)
			cmd.Stdin = strings.NewReader(string(script))
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			out, err := cmd.CombinedOutput()
			return string(out), err
		}

		prefix := t.TempDir()
		token := "nxmesh_agent_AbC-123_xyz"
		if out, err := run(t, prefix, "--token", token); err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(prefix, "usr/local/bin/nxmesh-agent"))
		if err != nil || string(got) != string(fake) {
			t.Fatalf("installed binary %q, %v", got, err)
		}
		st, err := os.Stat(filepath.Join(prefix, "etc/nxmesh-agent/agent.env"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("agent.env: %v, %v", st, err)
		}
		envFile, _ := os.ReadFile(filepath.Join(prefix, "etc/nxmesh-agent/agent.env"))
		for _, want := range []string{"NXMESH_AGENT_TOKEN=" + token + "\n", "NXMESH_AGENT_MASTER=nxmesh.internal:9443\n", "NXMESH_AGENT_CA_FINGERPRINT=" + e.svc.CAFingerprint() + "\n"} {
			if !strings.Contains(string(envFile), want) {
				t.Errorf("agent.env lacks %q:\n%s", want, envFile)
			}
		}
		unit, err := os.ReadFile(filepath.Join(prefix, "etc/systemd/system/nxmesh-agent.service"))
		if err != nil || !strings.Contains(string(unit), "ExecStart=/usr/local/bin/nxmesh-agent") {
			t.Fatalf("unit: %v\n%s", err, unit)
		}

		// A token that is not one, however it is written, runs nothing.
		marker := filepath.Join(t.TempDir(), "ran")
		for _, bad := range []string{"", "not-a-token", "nxmesh_agent_$(touch " + marker + ")", "nxmesh_agent_`touch " + marker + "`", "nxmesh_agent_a;touch " + marker, "nxmesh_agent_a\nNXMESH_AGENT_MASTER=evil:1"} {
			p := t.TempDir()
			out, err := run(t, p, "--token", bad)
			if err == nil {
				t.Errorf("token %q accepted:\n%s", bad, out)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("token %q ran a command", bad)
			}
			if _, err := os.Stat(filepath.Join(p, "etc/nxmesh-agent/agent.env")); err == nil {
				t.Errorf("token %q: agent.env written", bad)
			}
		}

		// A binary that does not match SHA256SUMS is not installed.
		if err := os.WriteFile(filepath.Join(files, "nxmesh-agent-linux-"+arch), []byte("tampered"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := t.TempDir()
		out, err := run(t, p, "--token", token)
		if err == nil || !strings.Contains(out, "checksum mismatch") {
			t.Fatalf("tampered binary: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(p, "usr/local/bin/nxmesh-agent")); err == nil {
			t.Fatal("tampered binary installed")
		}
	})
}

// shSyntax fails unless script parses as POSIX sh (sh -n).
func shSyntax(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
}

func TestAPI_OnboardingEndpoints(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name               string
		publicAddr, pubURL string
		host               string
		wantGRPC, wantURL  string
	}{
		{"PublicAddrWins", "agents.example.com:443", "http://127.0.0.1:8080", "admin.internal:8080", "agents.example.com:443", "http://admin.internal:8080"},
		{"HostOfTheAdmin", "", "http://127.0.0.1:8080", "admin.internal:8080", "admin.internal:9443", "http://admin.internal:8080"},
		{"HostWithoutPort", "", "http://127.0.0.1:8080", "10.1.2.3", "10.1.2.3:9443", "http://10.1.2.3"},
		{"IPv6Host", "", "http://127.0.0.1:8080", "[fd00::5]:8080", "[fd00::5]:9443", "http://[fd00::5]:8080"},
		{"LoopbackHostKeepsTheConfiguration", "", "https://nxmesh.example.com", "127.0.0.1:8080", "nxmesh.example.com:9443", "https://nxmesh.example.com"},
		{"LocalhostIsLoopback", "", "http://127.0.0.1:8080", "localhost:8080", "127.0.0.1:9443", "http://127.0.0.1:8080"},
		{"ConfiguredPublicURLWins", "", "https://nxmesh.example.com/", "admin.internal:8080", "admin.internal:9443", "https://nxmesh.example.com"},
		{"InvalidHostIgnored", "", "http://127.0.0.1:8080", "evil'$(id)", "127.0.0.1:9443", "http://127.0.0.1:8080"},
		{"InvalidPortIgnored", "", "http://127.0.0.1:8080", "admin.internal:99999", "127.0.0.1:9443", "http://127.0.0.1:8080"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := app.DefaultConfig()
			cfg.GRPC.PublicAddr, cfg.HTTP.PublicURL = tc.publicAddr, tc.pubURL
			o := newOnboarding(cfg)
			f := fiber.New()
			f.Get("/", func(c *fiber.Ctx) error { return c.JSON(o.endpointsFor(c)) })
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Host = tc.host
			resp, err := f.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got endpoints
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.GRPC != tc.wantGRPC || got.URL != tc.wantURL {
				t.Fatalf("Host %q: %+v, want gRPC %s, URL %s", tc.host, got, tc.wantGRPC, tc.wantURL)
			}
		})
	}
}
