package render

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

// DefaultStreamModulePath is where Debian's libnginx-mod-stream installs
// the stream module.
const DefaultStreamModulePath = "/usr/lib/nginx/modules/ngx_stream_module.so"

// MainOptions configure MainConfig.
type MainOptions struct {
	// ConfDir is the absolute directory holding http.conf and stream.conf.
	ConfDir string
	// RuntimeDir is the absolute directory for the pid file and nginx's
	// temporary files (client bodies, proxy buffers, ...). It must exist;
	// nginx creates the subdirectories. Empty means ConfDir.
	RuntimeDir string
	// ErrorLog is the error_log target; empty means "stderr".
	ErrorLog string
	// AccessLog is the access_log path; empty turns access logging off.
	AccessLog string
	// MimeTypes is the path of a mime.types file to include, such as
	// /etc/nginx/mime.types; empty includes none.
	MimeTypes string
	// Streams adds a stream{} block that includes stream.conf.
	Streams bool
	// StreamModulePath is the dynamic stream module. When Streams is set
	// and this file exists, a load_module line is added; when it does not
	// exist, the stream module is assumed to be built in. Empty means
	// DefaultStreamModulePath.
	StreamModulePath string
	// User, if set, adds a user directive (the user worker processes run
	// as when nginx is started as root).
	User string
	// WorkerProcesses is the worker_processes value; empty means "auto".
	WorkerProcesses string
	// WorkerConnections is worker_connections; zero means 1024.
	WorkerConnections uint32
	// Foreground adds "daemon off", for running nginx under a supervisor.
	Foreground bool
}

// MainConfig renders a complete, standalone nginx.conf that includes the
// http.conf and stream.conf produced by Render. The agent uses it when it
// supervises its own nginx; the tests use it to run nginx -t.
//
// Its http{} block sets only default_type, access_log, the temp paths and
// server_names_hash_bucket_size/server_names_hash_max_size (so that
// thousands of server names fit); every other http-level setting comes from
// GlobalSettings.nginx_directives in http.conf, which must therefore not
// repeat these.
func MainConfig(opts MainOptions) ([]byte, error) {
	if opts.ConfDir == "" || !filepath.IsAbs(opts.ConfDir) {
		return nil, fmt.Errorf("%w: MainOptions.ConfDir must be an absolute path, got %q", ErrInvalidConfig, opts.ConfDir)
	}
	confDir := path.Clean(opts.ConfDir)
	runtimeDir := confDir
	if opts.RuntimeDir != "" {
		if !filepath.IsAbs(opts.RuntimeDir) {
			return nil, fmt.Errorf("%w: MainOptions.RuntimeDir must be an absolute path, got %q", ErrInvalidConfig, opts.RuntimeDir)
		}
		runtimeDir = path.Clean(opts.RuntimeDir)
	}
	errorLog := opts.ErrorLog
	if errorLog == "" {
		errorLog = "stderr"
	}
	workers := opts.WorkerProcesses
	if workers == "" {
		workers = "auto"
	}
	conns := opts.WorkerConnections
	if conns == 0 {
		conns = 1024
	}

	tree := crossplane.Directives{headerComment()}
	if opts.User != "" {
		tree = append(tree, dir("user", opts.User))
	}
	tree = append(tree,
		dir("worker_processes", workers),
		dir("pid", path.Join(runtimeDir, "nginx.pid")),
		dir("error_log", errorLog),
	)
	if opts.Foreground {
		tree = append(tree, dir("daemon", "off"))
	}
	if opts.Streams {
		module := opts.StreamModulePath
		if module == "" {
			module = DefaultStreamModulePath
		}
		switch _, err := os.Stat(module); {
		case err == nil:
			tree = append(tree, dir("load_module", module))
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("stream module: %w", err)
		}
	}
	tree = append(tree, block("events", nil, crossplane.Directives{
		dir("worker_connections", strconv.FormatUint(uint64(conns), 10)),
	}))

	var http crossplane.Directives
	if opts.MimeTypes != "" {
		http = append(http, dir("include", opts.MimeTypes), dir("types_hash_max_size", "2048"))
	}
	http = append(http, dir("default_type", "application/octet-stream"))
	if opts.AccessLog != "" {
		http = append(http, dir("access_log", opts.AccessLog))
	} else {
		http = append(http, dir("access_log", "off"))
	}
	http = append(http,
		// Room for many long server names; nginx refuses to start when
		// the hash does not fit.
		dir("server_names_hash_bucket_size", "128"),
		dir("server_names_hash_max_size", "8192"),
		dir("client_body_temp_path", path.Join(runtimeDir, "client_body_temp")),
		dir("proxy_temp_path", path.Join(runtimeDir, "proxy_temp")),
		dir("fastcgi_temp_path", path.Join(runtimeDir, "fastcgi_temp")),
		dir("uwsgi_temp_path", path.Join(runtimeDir, "uwsgi_temp")),
		dir("scgi_temp_path", path.Join(runtimeDir, "scgi_temp")),
		dir("include", path.Join(confDir, HTTPConf)),
	)
	tree = append(tree, block("http", nil, http))
	if opts.Streams {
		tree = append(tree, block("stream", nil, crossplane.Directives{
			dir("include", path.Join(confDir, StreamConf)),
		}))
	}
	if err := validateTree(tree, ValidateArg); err != nil {
		return nil, fmt.Errorf("%w: main config: %w", ErrInvalidConfig, err)
	}
	return buildConf(tree)
}
