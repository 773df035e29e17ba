package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// skipNginxEnv, when set to 1, turns the tests that need a real nginx into
// skips instead of failures.
const skipNginxEnv = "NXMESH_SKIP_NGINX"

// nginxBinary returns the nginx executable: $NXMESH_NGINX if set, else
// nginx from PATH or /usr/sbin. When there is none the test fails, because
// the nginx checks are part of what this package promises, unless
// NXMESH_SKIP_NGINX=1.
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
	tb.Fatal("nginx not found: install it with `go tool task deps` (or set " + skipNginxEnv + "=1 to skip tests that need it)")
	return ""
}

// mimeTypes returns the system mime.types if there is one.
func mimeTypes() string {
	const p = "/etc/nginx/mime.types"
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// nginxSite is a rendered config installed in a directory of its own.
type nginxSite struct {
	dir     string // prefix, runtime dir and ConfDir parent
	confDir string
	conf    string // main nginx.conf
}

// installSite writes files and a main config into a new directory under
// dir. mutate may adjust the main options (e.g. to run in the foreground).
func installSite(tb testing.TB, dir string, files Files, mutate func(*MainOptions)) nginxSite {
	tb.Helper()
	s := nginxSite{dir: dir, confDir: filepath.Join(dir, "conf"), conf: filepath.Join(dir, "nginx.conf")}
	for name, data := range files {
		p := filepath.Join(s.confDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, data, FileMode(name)); err != nil {
			tb.Fatal(err)
		}
	}
	opts := MainOptions{
		ConfDir:    s.confDir,
		RuntimeDir: dir,
		MimeTypes:  mimeTypes(),
		Streams:    true,
	}
	if os.Geteuid() == 0 {
		// Workers of a root-started nginx run as "nobody", which cannot
		// read a test's temporary directory.
		opts.User = "root"
	}
	if mutate != nil {
		mutate(&opts)
	}
	main, err := MainConfig(opts)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(s.conf, main, 0o644); err != nil {
		tb.Fatal(err)
	}
	return s
}

// nginxT runs nginx -t over an installed site.
func nginxT(ctx context.Context, nginx string, s nginxSite) error {
	cmd := exec.CommandContext(ctx, nginx, "-t", "-q", "-p", s.dir, "-c", s.conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nginx -t: %w\n%s", err, out.Bytes())
	}
	return nil
}

func TestGoldenPassesNginxT(t *testing.T) {
	t.Parallel()
	nginx := nginxBinary(t)
	for _, c := range loadGoldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			opts := c.opts
			opts.ConfDir = filepath.Join(dir, "conf")
			if opts.AccessLog != "" {
				opts.AccessLog = filepath.Join(dir, "logs", "access.log")
				if err := os.MkdirAll(filepath.Dir(opts.AccessLog), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			files, err := Render(c.input, opts)
			if err != nil {
				t.Fatal(err)
			}
			site := installSite(t, dir, files, nil)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := nginxT(ctx, nginx, site); err != nil {
				main, _ := os.ReadFile(site.conf)
				t.Fatalf("%v\nnginx.conf:\n%s\nhttp.conf:\n%s\nstream.conf:\n%s", err, main, files[HTTPConf], files[StreamConf])
			}
		})
	}
}

func TestMainConfigWithoutStreamModuleFile(t *testing.T) {
	t.Parallel()
	conf, err := MainConfig(MainOptions{ConfDir: "/etc/nxmesh/nginx", Streams: true, StreamModulePath: "/nonexistent/ngx_stream_module.so"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(conf, []byte("load_module")) {
		t.Errorf("load_module rendered for a missing module file:\n%s", conf)
	}
	if !bytes.Contains(conf, []byte("include /etc/nxmesh/nginx/stream.conf;")) {
		t.Errorf("stream.conf not included:\n%s", conf)
	}
}

func TestMainConfigRejectsRelativeDirs(t *testing.T) {
	t.Parallel()
	for _, opts := range []MainOptions{{ConfDir: "conf"}, {ConfDir: "/etc/nxmesh", RuntimeDir: "run"}} {
		if _, err := MainConfig(opts); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("MainConfig(%+v) error = %v, want ErrInvalidConfig", opts, err)
		}
	}
}
