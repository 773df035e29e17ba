package agents

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/deploy/systemd"
)

// Agent downloads, served without authentication: a machine about to become
// an agent has no credentials yet, and the binaries are not secret.
//
//	GET /downloads/nxmesh-agent-linux-amd64   the agent binary (from downloads.dir)
//	GET /downloads/nxmesh-agent-linux-arm64
//	GET /downloads/SHA256SUMS                 "<sha256>  <name>" of the binaries present
//	GET /downloads/install.sh                 the install script, with this master's addresses
//
// Only these names are served: each route is a fixed path and reads the file
// of that fixed name, so no part of a request's path reaches the filesystem.
// A binary that was not built is a 404 saying how to build it.

// Agent binaries the master serves, by GOARCH.
var downloadArchs = []string{"amd64", "arm64"}

// downloadName is the file name of the agent binary for arch.
func downloadName(arch string) string { return "nxmesh-agent-linux-" + arch }

const (
	downloadSums   = "SHA256SUMS"
	downloadScript = "install.sh"
)

//go:embed install.sh.tmpl
var installScriptText string

var installScript = template.Must(template.New("install.sh").Funcs(template.FuncMap{"sq": shellQuoteAlways}).Parse(installScriptText))

// shellQuoteAlways single-quotes s for a POSIX shell.
func shellQuoteAlways(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// onboarding is what the install commands and the downloads need: the
// configured addresses, and the binaries' checksums cached by size and
// modification time.
type onboarding struct {
	dir string
	// grpcPublic is grpc.public_addr, grpcPort the port of grpc.addr and
	// grpcFallback PublicAddr of the configuration.
	grpcPublic, grpcPort, grpcFallback string
	// publicURL is http.public_url without a trailing slash.
	publicURL string

	mu   sync.Mutex
	sums map[string]fileSum
}

type fileSum struct {
	size int64
	mod  time.Time
	sum  string
}

func newOnboarding(cfg app.Config) *onboarding {
	port := "9443"
	if _, p, err := net.SplitHostPort(cfg.GRPC.Addr); err == nil && p != "" {
		port = p
	}
	return &onboarding{
		dir: cfg.DownloadsDir(), grpcPublic: cfg.GRPC.PublicAddr, grpcPort: port, grpcFallback: PublicAddr(cfg),
		publicURL: strings.TrimRight(cfg.HTTP.PublicURL, "/"), sums: map[string]fileSum{},
	}
}

// endpoints are where an agent host reaches the master.
type endpoints struct {
	// URL is the master's HTTP base URL (downloads), without a trailing slash.
	URL string
	// GRPC is the host:port agents dial.
	GRPC string
}

var hostnameGrammar = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

// requestHost is the host and port of the request's Host header when they are
// a valid DNS name or IP address (and port); ok is false otherwise.
func requestHost(c *fiber.Ctx) (host, port string, ok bool) {
	hp := c.Hostname()
	host, port = hp, ""
	if h, p, err := net.SplitHostPort(hp); err == nil {
		host, port = h, p
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || strconv.Itoa(n) != port {
			return "", "", false
		}
	}
	if net.ParseIP(host) == nil && !hostnameGrammar.MatchString(host) {
		return "", "", false
	}
	return host, port, true
}

// isLoopback reports whether host names this machine only.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// endpointsFor are the master's addresses as seen by whoever made request c:
//
//   - gRPC: grpc.public_addr when set; else the request's host (its Host
//     header) with the port of grpc.addr, unless that host is a loopback
//     name; else the host of http.public_url with that port.
//   - HTTP: http.public_url when its host is not a loopback name; else the
//     request's scheme and host, unless a loopback name; else
//     http.public_url.
//
// So an admin reached as nxmesh.internal prints nxmesh.internal, never
// 127.0.0.1, even with the default configuration.
func (o *onboarding) endpointsFor(c *fiber.Ctx) endpoints {
	e := endpoints{URL: o.publicURL, GRPC: o.grpcFallback}
	host, port, ok := requestHost(c)
	ok = ok && !isLoopback(host)
	switch {
	case o.grpcPublic != "":
		e.GRPC = o.grpcPublic
	case ok:
		e.GRPC = net.JoinHostPort(host, o.grpcPort)
	}
	configured := false
	if u, err := url.Parse(o.publicURL); err == nil && u.Hostname() != "" && !isLoopback(u.Hostname()) {
		configured = true
	}
	if !configured && ok {
		hp := host
		if strings.Contains(host, ":") {
			hp = "[" + host + "]"
		}
		if port != "" {
			hp = net.JoinHostPort(host, port)
		}
		scheme := "http"
		if c.Protocol() == "https" {
			scheme = "https"
		}
		e.URL = scheme + "://" + hp
	}
	return e
}

// ---- Files ----

// errNotBuilt is a missing agent binary.
var errNotBuilt = errors.New("not built")

// sum is the hex SHA-256 of the file name in the downloads directory,
// recomputed when its size or modification time changed.
func (o *onboarding) sum(name string) (string, error) {
	path := filepath.Join(o.dir, name)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !st.Mode().IsRegular()) {
		return "", errNotBuilt
	}
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", name, err)
	}
	o.mu.Lock()
	cached, ok := o.sums[name]
	o.mu.Unlock()
	if ok && cached.size == st.Size() && cached.mod.Equal(st.ModTime()) {
		return cached.sum, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	o.mu.Lock()
	o.sums[name] = fileSum{size: st.Size(), mod: st.ModTime(), sum: sum}
	o.mu.Unlock()
	return sum, nil
}

// sumsFile is SHA256SUMS of the binaries present, in sha256sum's format.
func (o *onboarding) sumsFile() ([]byte, error) {
	var b bytes.Buffer
	for _, arch := range downloadArchs {
		name := downloadName(arch)
		sum, err := o.sum(name)
		if errors.Is(err, errNotBuilt) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, name)
	}
	return b.Bytes(), nil
}

// notBuilt is the 404 of a binary that is not in the downloads directory.
func notBuilt(c *fiber.Ctx, what string) error {
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	return c.Status(http.StatusNotFound).SendString(what + " is not available on this master: the agent binaries are built with " +
		"`go tool task build-agents` (CGO_ENABLED=0 GOOS=linux GOARCH=amd64|arm64 go build -o <downloads.dir>/nxmesh-agent-linux-<arch> ./agent) " +
		"into the master's downloads.dir (default <data_dir>/downloads).\n")
}

// mountDownloads mounts the public download routes.
func (m *Module) mountDownloads(r *app.Router) {
	o := m.svc.onboard
	for _, arch := range downloadArchs {
		name := downloadName(arch)
		r.Get("/downloads/"+name, app.Public(), app.Doc{Summary: "The agent binary for linux/" + arch}, func(c *fiber.Ctx) error {
			sum, err := o.sum(name)
			if errors.Is(err, errNotBuilt) {
				return notBuilt(c, name)
			}
			if err != nil {
				return err
			}
			c.Set(fiber.HeaderContentType, "application/octet-stream")
			c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+name+`"`)
			c.Set(fiber.HeaderCacheControl, "no-cache")
			c.Set("X-Checksum-Sha256", sum)
			return c.SendFile(filepath.Join(o.dir, name))
		})
	}
	r.Get("/downloads/"+downloadSums, app.Public(), app.Doc{Summary: "SHA-256 checksums of the agent binaries"}, func(c *fiber.Ctx) error {
		b, err := o.sumsFile()
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return notBuilt(c, "No agent binary")
		}
		c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.Send(b)
	})
	r.Get("/downloads/"+downloadScript, app.Public(), app.Doc{Summary: "The agent install script (POSIX sh), with this master's addresses"}, func(c *fiber.Ctx) error {
		b, err := m.svc.InstallScript(o.endpointsFor(c))
		if err != nil {
			return err
		}
		c.Set(fiber.HeaderContentType, "text/x-shellscript; charset=utf-8")
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.Send(b)
	})
}

// addrGrammar is what the install script accepts as the master's gRPC
// address and URL: no quote, space or shell metacharacter can appear even
// before quoting.
var (
	addrGrammar = regexp.MustCompile(`^[A-Za-z0-9.\[\]:-]+$`)
	urlGrammar  = regexp.MustCompile(`^https?://[A-Za-z0-9.\[\]:-]+(/[A-Za-z0-9._~/-]*)?$`)
)

// InstallScript renders install.sh for a master reached at e.
func (s *Service) InstallScript(e endpoints) ([]byte, error) {
	url := strings.TrimRight(e.URL, "/")
	if !urlGrammar.MatchString(url) {
		return nil, fmt.Errorf("install script: http.public_url %q is not a plain http(s) URL", url)
	}
	if !addrGrammar.MatchString(e.GRPC) {
		return nil, fmt.Errorf("install script: gRPC address %q is not host:port", e.GRPC)
	}
	var b bytes.Buffer
	err := installScript.Execute(&b, map[string]string{
		"URL": url, "GRPC": e.GRPC, "Fingerprint": s.ca.Fingerprint(), "Unit": systemd.AgentUnit,
	})
	if err != nil {
		return nil, fmt.Errorf("render install script: %w", err)
	}
	return b.Bytes(), nil
}

// ---- Install commands ----

// Onboarding are the ways to install an agent with a registration token, each
// a command to copy (the "Add agent" dialog's tabs).
type Onboarding struct {
	// Script pipes the master's install script into sh.
	Script string
	// Download fetches the binary, checks it and runs it with Command's flags.
	Download string
	// Command is the agent's command line (the API's install_command).
	Command string
	// Container runs the agent image of deploy/agent/Containerfile.
	Container string
	// Source builds the agent from a checkout and runs it.
	Source string
}

// commandAt is tok's install command for agents dialing addr.
func (s *Service) commandAt(tok RegistrationToken, addr string) string {
	return strings.Replace(tok.InstallCommand, "--master "+shellQuote(s.publicAddr)+" ", "--master "+shellQuote(addr)+" ", 1)
}

// tokenAt is tok with its install command for a master reached at e.
func (s *Service) tokenAt(tok RegistrationToken, e endpoints) RegistrationToken {
	tok.InstallCommand = s.commandAt(tok, e.GRPC)
	return tok
}

// OnboardingFor are the install commands of tok for a master reached at e.
func (s *Service) OnboardingFor(e endpoints, tok RegistrationToken) Onboarding {
	cmd := s.commandAt(tok, e.GRPC)
	token := tok.Token
	u := shellQuote(e.URL + "/downloads")
	fp := s.ca.Fingerprint()
	return Onboarding{
		Script: "curl -fsSL " + shellQuote(e.URL+"/downloads/install.sh") + " | sudo sh -s -- --token " + shellQuote(token),
		Download: "arch=$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')\n" +
			"curl -fsSLO " + u + "/nxmesh-agent-linux-$arch\n" +
			"curl -fsSL " + u + "/SHA256SUMS | grep \" nxmesh-agent-linux-$arch\\$\" | sha256sum -c -\n" +
			"sudo install -m 0755 nxmesh-agent-linux-$arch /usr/local/bin/nxmesh-agent\n" +
			"sudo " + cmd,
		Command: cmd,
		Container: "docker build -t nxmesh-agent -f deploy/agent/Containerfile .\n" +
			"docker run -d --name nxmesh-agent --restart unless-stopped -p 80:80 -p 443:443 \\\n" +
			"  -v nxmesh-agent:/var/lib/nxmesh-agent \\\n" +
			"  -e NXMESH_AGENT_MASTER=" + shellQuote(e.GRPC) + " \\\n" +
			"  -e NXMESH_AGENT_CA_FINGERPRINT=" + shellQuote(fp) + " \\\n" +
			"  -e NXMESH_AGENT_TOKEN=" + shellQuote(token) + " \\\n" +
			"  nxmesh-agent",
		Source: "go build -trimpath -o nxmesh-agent ./agent\n" +
			"sudo ./" + cmd,
	}
}
