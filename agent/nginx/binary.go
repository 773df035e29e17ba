package nginx

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

// Build describes the nginx binary, from `nginx -V`.
type Build struct {
	// Version is e.g. "1.22.1".
	Version string
	// Prefix, ConfPath, PIDPath and ErrorLogPath are the compiled-in
	// defaults (--prefix, --conf-path, --pid-path, --error-log-path).
	Prefix       string
	ConfPath     string
	PIDPath      string
	ErrorLogPath string
	// Features lists what the build supports among "ssl", "http2",
	// "stream" and "stub_status".
	Features []string
	// StreamDynamic is set when the stream module is a loadable module
	// (--with-stream=dynamic) rather than built in.
	StreamDynamic bool
}

// Has reports whether the build supports feature.
func (b Build) Has(feature string) bool {
	for _, f := range b.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// inspectBinary runs `nginx -V` and parses its configure arguments.
func inspectBinary(ctx context.Context, binary string) (Build, error) {
	out, err := exec.CommandContext(ctx, binary, "-V").CombinedOutput()
	if err != nil {
		return Build{}, fmt.Errorf("run %s -V: %w: %s", binary, err, bytes.TrimSpace(out))
	}
	return parseBuild(string(out)), nil
}

// parseBuild parses the output of `nginx -V`.
func parseBuild(out string) Build {
	var b Build
	features := map[string]bool{}
	for line := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(line, "nginx version: "); ok {
			b.Version = strings.TrimPrefix(strings.TrimSpace(v), "nginx/")
		}
		if strings.HasPrefix(line, "built with OpenSSL") || strings.HasPrefix(line, "TLS SNI support enabled") {
			features["ssl"] = true
		}
		args, ok := strings.CutPrefix(line, "configure arguments:")
		if !ok {
			continue
		}
		for _, a := range strings.Fields(args) {
			name, value, _ := strings.Cut(a, "=")
			switch name {
			case "--prefix":
				b.Prefix = value
			case "--conf-path":
				b.ConfPath = value
			case "--pid-path":
				b.PIDPath = value
			case "--error-log-path":
				b.ErrorLogPath = value
			case "--with-http_ssl_module":
				features["ssl"] = true
			case "--with-http_v2_module":
				features["http2"] = true
			case "--with-http_stub_status_module":
				features["stub_status"] = true
			case "--with-stream":
				features["stream"] = true
				b.StreamDynamic = value == "dynamic"
			}
		}
	}
	for _, f := range []string{"http2", "ssl", "stream", "stub_status"} {
		if features[f] {
			b.Features = append(b.Features, f)
		}
	}
	return b
}

// confPaths reads the main-context pid and error_log directives of an
// operator's nginx.conf. Missing directives give empty strings; relative
// paths are resolved against prefix, as nginx does.
func confPaths(conf, prefix string) (pid, errorLog string, err error) {
	payload, err := crossplane.Parse(conf, &crossplane.ParseOptions{
		SingleFile:                true,
		StopParsingOnError:        true,
		SkipDirectiveContextCheck: true,
		SkipDirectiveArgsCheck:    true,
	})
	if err != nil {
		return "", "", fmt.Errorf("parse %s: %w", conf, err)
	}
	if len(payload.Config) == 0 {
		return "", "", nil
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || p == "stderr" || strings.HasPrefix(p, "syslog:") || strings.HasPrefix(p, "memory:") {
			return p
		}
		return filepath.Join(prefix, p)
	}
	for _, d := range payload.Config[0].Parsed {
		if len(d.Args) == 0 {
			continue
		}
		switch d.Directive {
		case "pid":
			pid = abs(d.Args[0])
		case "error_log":
			if errorLog == "" {
				errorLog = abs(d.Args[0])
			}
		}
	}
	return pid, errorLog, nil
}
