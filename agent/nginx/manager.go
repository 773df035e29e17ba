// Package nginx installs configuration into nginx and keeps nginx running.
//
// # Two modes
//
// Supervise mode (Options.Prefix set): the agent owns a whole nginx. Under
// the prefix directory it writes nginx.conf (render.MainConfig: pid file,
// temp paths in run/, error log in logs/error.log, daemon on), starts nginx
// with `nginx -p <prefix> -c <prefix>/nginx.conf`, adopts an nginx already
// running from its pid file after an agent restart, and restarts it when it
// dies (the watchdog). nginx runs as a daemon so that it keeps serving while
// the agent restarts or upgrades.
//
// Manage mode (Options.Conf and Options.IncludeDir set): the operator's
// nginx stays the operator's. The agent owns only the include directory and
// writes two stub files there, which the operator includes from nginx.conf:
//
//	http   { ... include <include-dir>/http.conf; }
//	stream { ... include <include-dir>/stream.conf; }
//
// Each stub includes current/http.conf (current/stream.conf). The agent
// reloads with nginx's own signal (SIGHUP to the master from the pid file,
// which is what `nginx -s reload` does) and never starts, stops or restarts
// that nginx.
//
// # Layout (root = the prefix or the include directory)
//
//	root/versions/<version>-<checksum8>/  http.conf stream.conf certs/ htpasswd/ + metadata
//	root/current -> versions/<...>        the live version; swapped with rename(2)
//	root/nginx.conf, run/, logs/          supervise mode
//	root/http.conf, root/stream.conf      manage mode stubs
//
// # An apply (Manager.Apply)
//
//  1. An update whose checksum is live and whose version is not newer is
//     acknowledged as SUCCESS without touching anything.
//  2. VALIDATING: refuse (FAILED, nothing written) a static root that is,
//     contains or lies inside the prefix or include directory or one of
//     Options.ProtectedDirs, compared after resolving symbolic links of the
//     part of each path that exists; then render the update (render.Render with ConfDir = the
//     version directory, so certificate paths point into it) into
//     versions/<version>-<checksum8>/; private keys get mode 0600.
//  3. nginx -t on a standalone nginx.conf (render.MainConfig) that includes
//     the new directory. Failure: the directory is removed, FAILED with
//     nginx's text; nothing live was touched.
//  4. APPLYING: swap current to the new directory. In manage mode, nginx -t
//     on the operator's nginx.conf too; a failure swaps back before any
//     reload and is FAILED.
//  5. Reload (SIGHUP), or start nginx in supervise mode when it is not
//     running. A stopped nginx (Stop) is left stopped: the new version is
//     used when it starts.
//  6. Verify: the master starts worker processes that were not there before
//     the reload, and appends no [emerg] line to the error log. nginx -t does
//     not catch a listen port taken by another process (it ignores
//     EADDRINUSE); the reload does, logs "[emerg] bind() ... Address already
//     in use" and keeps the old workers. Verification sees that. Then it
//     waits until the old workers have closed their listening sockets
//     (nginx tells them to 100 ms after starting the new ones), so that a
//     request sent after SUCCESS is served by the new version.
//  7. Any failure in 5–6: wait until nginx is done with the failed reload (a
//     failed bind() is retried for about 2.5 s, each try logged), swap current
//     back, reload again, ROLLED_BACK with nginx's messages. The failed
//     directory is removed.
//  8. SUCCESS: versions beyond the newest Options.KeepVersions are deleted.
//
// Operations that change files or nginx's state hold one lock: applies,
// commands and the watchdog never interleave. Status does not take it.
package nginx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Mode is how the agent runs nginx.
type Mode string

// The modes.
const (
	// ModeSupervise: the agent starts and supervises its own nginx.
	ModeSupervise Mode = "supervise"
	// ModeManage: the agent manages the include directory of an nginx it
	// does not run.
	ModeManage Mode = "manage"
)

// Defaults of Options.
const (
	DefaultBinary        = "nginx"
	DefaultKeepVersions  = 5
	DefaultReloadTimeout = 15 * time.Second
	DefaultStopTimeout   = 10 * time.Second
	DefaultWatchInterval = time.Second
	// DefaultMimeTypes is included by the supervised nginx.conf when it
	// exists.
	DefaultMimeTypes = "/etc/nginx/mime.types"
)

// ErrNotSupervised is returned by operations only available in supervise
// mode.
var ErrNotSupervised = errors.New("restart is only available when the agent supervises nginx")

// ErrNotRunning is returned when an operation needs a running nginx.
var ErrNotRunning = errors.New("nginx is not running")

// Options configure a Manager. Set Prefix for supervise mode, or Conf and
// IncludeDir for manage mode.
type Options struct {
	// Binary is the nginx executable, looked up in PATH when it has no
	// slash. Default "nginx".
	Binary string

	// Prefix is the directory of a supervised nginx (supervise mode).
	Prefix string
	// User, in supervise mode, is the user directive (the account worker
	// processes run as when nginx starts as root); empty keeps nginx's
	// default.
	User string
	// MimeTypes is included by the supervised nginx.conf; empty means
	// DefaultMimeTypes when that file exists. "-" includes none.
	MimeTypes string
	// StreamModulePath is the dynamic stream module; empty means
	// render.DefaultStreamModulePath.
	StreamModulePath string
	// StopOnClose stops the supervised nginx when the Manager is closed.
	// By default nginx keeps serving while the agent is away.
	StopOnClose bool
	// DisableAutoRestart turns the watchdog's restarts off at start
	// (SetAutoRestart changes it later). Auto-restart only ever applies in
	// supervise mode.
	DisableAutoRestart bool

	// Conf is the operator's nginx.conf (manage mode).
	Conf string
	// IncludeDir is the directory the agent owns (manage mode).
	IncludeDir string
	// PIDFile and ErrorLog of the operator's nginx (manage mode). Empty
	// means the pid and error_log directives of Conf, then nginx's
	// compiled-in defaults.
	PIDFile  string
	ErrorLog string

	// AccessLog, if set, is the absolute path of the access log every
	// rendered http server and stream writes, in the renderer's JSON
	// formats (render.Options.AccessLog).
	AccessLog string

	// ProtectedDirs are directories a static location's root may neither
	// be, contain nor lie inside (the agent passes its data directory); the
	// prefix or include directory is always protected. An update with such
	// a root fails before anything is written.
	ProtectedDirs []string

	// ACMEChallengeDir, if set, is rendered into every version
	// (render.Options.ACMEChallengeDir): its plain-HTTP servers answer ACME
	// HTTP-01 challenges from that directory. A live version rendered
	// without it (or with another directory) is rendered again at the next
	// apply, even of the same update.
	ACMEChallengeDir string

	// StatusPort is the loopback stub_status port rendered into every
	// version. Zero keeps the port of the live version, or picks a free
	// one.
	StatusPort uint32
	// KeepVersions is how many versions stay on disk, the live one
	// included. Default 5.
	KeepVersions int
	// ReloadTimeout bounds how long a reload or start may take to show new
	// worker processes. Default 15 s.
	ReloadTimeout time.Duration
	// StopTimeout is how long a graceful stop waits before killing.
	// Default 10 s.
	StopTimeout time.Duration
	// WatchInterval is how often the watchdog checks nginx. Default 1 s.
	WatchInterval time.Duration

	// Logger receives the manager's logs; nil means slog.Default().
	Logger *slog.Logger
	// EventFunc, if set, is called (from the watchdog's goroutine) when
	// nginx goes down, is restarted, or fails to restart.
	EventFunc func(Event)
}

// Event types passed to Options.EventFunc.
const (
	EventNginxDown          = "nginx.down"
	EventNginxUp            = "nginx.up"
	EventNginxRestarted     = "nginx.restarted"
	EventNginxRestartFailed = "nginx.restart_failed"
)

// Event is something the watchdog noticed or did.
type Event struct {
	Type    string
	Message string
	Time    time.Time
	// PID is the nginx master after the event (0 when down).
	PID int
}

// Manager owns an nginx configuration directory and, in supervise mode, the
// nginx process. Create it with New, then call Start.
type Manager struct {
	opts  Options
	mode  Mode
	root  string
	log   *slog.Logger
	build Build

	// Paths resolved by New/Start.
	pidFile  string
	errorLog string

	// mu serialises everything that changes files or nginx's state.
	mu sync.Mutex
	// wantRunning is whether a supervised nginx should be running; Stop
	// clears it, Start and Restart set it, always with mu held.
	wantRunning atomic.Bool
	statusPort  uint32 // guarded by mu, set in Start

	autoRestart atomic.Bool
	restarts    atomic.Int64

	// state is read by Status without waiting for an apply.
	stateMu        sync.RWMutex
	live           *Version
	lastApplyError string
	lastRestart    time.Time

	watchCancel context.CancelFunc
	watchDone   chan struct{}
}

// New validates opts and returns a Manager; it touches nothing on disk.
func New(opts Options) (*Manager, error) {
	if opts.Binary == "" {
		opts.Binary = DefaultBinary
	}
	if opts.KeepVersions <= 0 {
		opts.KeepVersions = DefaultKeepVersions
	}
	if opts.ReloadTimeout <= 0 {
		opts.ReloadTimeout = DefaultReloadTimeout
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = DefaultWatchInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	m := &Manager{opts: opts, log: opts.Logger.With("component", "nginx")}
	switch {
	case opts.Prefix != "" && (opts.Conf != "" || opts.IncludeDir != ""):
		return nil, errors.New("nginx: set either a prefix (supervise mode) or nginx.conf and an include directory (manage mode), not both")
	case opts.Prefix != "":
		if !filepath.IsAbs(opts.Prefix) {
			return nil, fmt.Errorf("nginx: prefix %q must be an absolute path", opts.Prefix)
		}
		m.mode = ModeSupervise
		m.root = filepath.Clean(opts.Prefix)
		m.pidFile = filepath.Join(m.root, "run", "nginx.pid")
		m.errorLog = filepath.Join(m.root, "logs", "error.log")
		m.autoRestart.Store(!opts.DisableAutoRestart)
	case opts.Conf != "" && opts.IncludeDir != "":
		if !filepath.IsAbs(opts.Conf) || !filepath.IsAbs(opts.IncludeDir) {
			return nil, fmt.Errorf("nginx: nginx.conf %q and include directory %q must be absolute paths", opts.Conf, opts.IncludeDir)
		}
		m.mode = ModeManage
		m.root = filepath.Clean(opts.IncludeDir)
		m.pidFile = opts.PIDFile
		m.errorLog = opts.ErrorLog
	default:
		return nil, errors.New("nginx: set a prefix (supervise mode) or both nginx.conf and an include directory (manage mode)")
	}
	for _, d := range opts.ProtectedDirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("nginx: protected directory %q must be an absolute path", d)
		}
	}
	if opts.AccessLog != "" {
		if !filepath.IsAbs(opts.AccessLog) {
			return nil, fmt.Errorf("nginx: access log %q must be an absolute path", opts.AccessLog)
		}
		if err := render.ValidateArg(opts.AccessLog); err != nil {
			return nil, fmt.Errorf("nginx: access log %q cannot be written into nginx config: %w", opts.AccessLog, err)
		}
	}
	if err := render.ValidateArg(m.root); err != nil {
		return nil, fmt.Errorf("nginx: directory %q cannot be written into nginx config: %w", m.root, err)
	}
	return m, nil
}

// Mode returns the manager's mode.
func (m *Manager) Mode() Mode { return m.mode }

// Build returns what `nginx -V` said about the binary (after Start).
func (m *Manager) Build() Build { return m.build }

// Paths of the layout.
func (m *Manager) versionsDir() string { return filepath.Join(m.root, "versions") }
func (m *Manager) currentLink() string { return filepath.Join(m.root, "current") }
func (m *Manager) mainConf() string    { return filepath.Join(m.root, "nginx.conf") }
func (m *Manager) runDir() string      { return filepath.Join(m.root, "run") }
func (m *Manager) testConf() string    { return filepath.Join(m.runDir(), "nginx-test.conf") }

// Start prepares the directory and brings nginx up:
//
//  1. Inspect the binary (`nginx -V`); a missing binary is an error.
//  2. Create the layout. When no version is live, install an empty
//     configuration (version 0) so that nginx has something to serve.
//  3. Supervise mode: write nginx.conf; adopt the nginx whose pid file
//     names a live master started with this nginx.conf, or start one with
//     the live version. A failure to start is logged and left to the
//     watchdog: the agent must still reach the master to report it.
//     Manage mode: write the stub files; nginx is not touched.
//  4. Start the watchdog.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watchDone != nil {
		return errors.New("nginx: manager already started")
	}
	build, err := inspectBinary(ctx, m.opts.Binary)
	if err != nil {
		return fmt.Errorf("nginx: inspect binary: %w", err)
	}
	m.build = build
	if m.mode == ModeManage {
		if err := m.resolveManagedPaths(); err != nil {
			return err
		}
	}
	for _, d := range []string{m.root, m.versionsDir(), m.runDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("nginx: create %s: %w", d, err)
		}
	}
	if m.mode == ModeSupervise {
		if err := os.MkdirAll(filepath.Dir(m.errorLog), 0o755); err != nil {
			return fmt.Errorf("nginx: create log directory: %w", err)
		}
	}

	live := linkedVersion(m.currentLink())
	m.statusPort = m.opts.StatusPort
	if m.statusPort == 0 && live != nil {
		m.statusPort = live.StatusPort
	}
	if m.statusPort == 0 {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("nginx: pick a status port: %w", err)
		}
		m.statusPort = port
	}

	mainChanged := false
	if m.mode == ModeSupervise {
		if mainChanged, err = m.writeMainConf(); err != nil {
			return err
		}
	} else if err := m.writeStubs(); err != nil {
		return err
	}
	if live == nil {
		v, err := m.installInitial(ctx)
		if err != nil {
			return err
		}
		live = v
	}
	m.setLive(live)
	m.log.Info("nginx configuration directory ready", "mode", m.mode, "dir", m.root,
		"live_version", live.Version, "live", live.Name, "status_port", m.statusPort, "nginx", m.build.Version)

	if m.mode == ModeSupervise {
		m.wantRunning.Store(true)
		if pid := m.masterPID(); pid != 0 {
			m.log.Info("adopted running nginx", "pid", pid)
			if mainChanged {
				// A new agent version may render nginx.conf differently.
				if err := m.reloadLocked(ctx); err != nil {
					m.log.Error("reload the adopted nginx with the new nginx.conf", "error", err)
				}
			}
		} else if err := m.startLocked(ctx); err != nil {
			m.log.Error("nginx did not start with the live version; the watchdog retries", "version", live.Name, "error", err)
		}
	}

	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.watchCancel = cancel
	m.watchDone = make(chan struct{})
	go m.watch(wctx)
	return nil
}

// Close stops the watchdog and, in supervise mode with StopOnClose, stops
// nginx gracefully.
func (m *Manager) Close(ctx context.Context) error {
	if m.watchCancel != nil {
		m.watchCancel()
		<-m.watchDone
	}
	if m.mode != ModeSupervise || !m.opts.StopOnClose {
		return nil
	}
	return m.Stop(ctx, true, m.opts.StopTimeout)
}

// resolveManagedPaths finds the operator nginx's pid file and error log:
// the options, then nginx.conf's directives, then the compiled defaults.
func (m *Manager) resolveManagedPaths() error {
	if _, err := os.Stat(m.opts.Conf); err != nil {
		return fmt.Errorf("nginx: nginx.conf: %w", err)
	}
	pid, errLog, err := confPaths(m.opts.Conf, m.build.Prefix)
	if err != nil {
		m.log.Warn("could not read pid and error_log from nginx.conf; using nginx's defaults", "error", err)
	}
	if m.pidFile == "" {
		m.pidFile = pid
	}
	if m.pidFile == "" {
		m.pidFile = m.build.PIDPath
	}
	if m.errorLog == "" {
		m.errorLog = errLog
	}
	if m.errorLog == "" {
		m.errorLog = m.build.ErrorLogPath
	}
	if !filepath.IsAbs(m.errorLog) {
		// stderr or syslog: reload failures are detected by the absence of
		// new workers only.
		m.log.Warn("nginx's error log is not a file; reload errors will not include nginx's message", "error_log", m.errorLog)
		m.errorLog = ""
	}
	if m.pidFile == "" {
		return errors.New("nginx: cannot tell where the operator's nginx writes its pid file; set the pid file path")
	}
	return nil
}

// mainOptions are the render.MainConfig options of the supervised nginx
// (and of the standalone test config) for a configuration directory.
func (m *Manager) mainOptions(confDir string) render.MainOptions {
	mime := m.opts.MimeTypes
	switch mime {
	case "":
		if _, err := os.Stat(DefaultMimeTypes); err == nil {
			mime = DefaultMimeTypes
		}
	case "-":
		mime = ""
	}
	return render.MainOptions{
		ConfDir:          confDir,
		RuntimeDir:       m.runDir(),
		ErrorLog:         m.errorLog,
		MimeTypes:        mime,
		Streams:          m.build.Has("stream"),
		StreamModulePath: m.opts.StreamModulePath,
		User:             m.opts.User,
	}
}

// writeMainConf writes the supervised nginx.conf, which includes current/.
// It reports whether the file changed.
func (m *Manager) writeMainConf() (bool, error) {
	conf, err := render.MainConfig(m.mainOptions(m.currentLink()))
	if err != nil {
		return false, fmt.Errorf("nginx: render nginx.conf: %w", err)
	}
	if old, err := os.ReadFile(m.mainConf()); err == nil && string(old) == string(conf) {
		return false, nil
	}
	if err := writeFileAtomic(m.mainConf(), conf, 0o644); err != nil {
		return false, fmt.Errorf("nginx: %w", err)
	}
	return true, nil
}

// writeStubs writes the manage-mode stub files the operator includes.
func (m *Manager) writeStubs() error {
	for _, name := range []string{render.HTTPConf, render.StreamConf} {
		text := fmt.Sprintf("# Managed by the NxMesh agent. Local changes are overwritten.\ninclude %s;\n",
			filepath.Join(m.currentLink(), name))
		p := filepath.Join(m.root, name)
		if old, err := os.ReadFile(p); err == nil && string(old) == text {
			continue
		}
		if err := writeFileAtomic(p, []byte(text), 0o644); err != nil {
			return fmt.Errorf("nginx: %w", err)
		}
	}
	return nil
}

// IncludeLines returns the lines an operator adds to nginx.conf in manage
// mode.
func IncludeLines(includeDir string) (httpLine, streamLine string) {
	return fmt.Sprintf("include %s;", filepath.Join(includeDir, render.HTTPConf)),
		fmt.Sprintf("include %s;", filepath.Join(includeDir, render.StreamConf))
}

// installInitial installs an empty configuration as version 0 and makes it
// live, without reloading anything.
func (m *Manager) installInitial(ctx context.Context) (*Version, error) {
	u := &agentv1.ConfigUpdate{}
	meta := Version{Version: 0, Checksum: checksumOf(u), StatusPort: m.statusPort, CreatedAt: time.Now().UTC(),
		AccessLog: m.opts.AccessLog, ACMEChallengeDir: m.opts.ACMEChallengeDir}
	meta.Name = versionName(0, meta.Checksum) + accessLogSuffix(m.opts.AccessLog)
	dir := filepath.Join(m.versionsDir(), meta.Name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("nginx: clear %s: %w", dir, err)
	}
	files, err := render.Render(u, m.renderOptions(dir))
	if err != nil {
		return nil, fmt.Errorf("nginx: render the initial configuration: %w", err)
	}
	if err := writeVersion(dir, files, meta, u); err != nil {
		return nil, fmt.Errorf("nginx: install the initial configuration: %w", err)
	}
	if out, err := m.testVersion(ctx, dir); err != nil {
		return nil, fmt.Errorf("nginx: the initial (empty) configuration fails nginx -t: %s", out)
	}
	if err := swapLink(m.currentLink(), filepath.Join("versions", meta.Name)); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	return &meta, nil
}

// setLive records the live version.
func (m *Manager) setLive(v *Version) {
	m.stateMu.Lock()
	m.live = v
	m.stateMu.Unlock()
}

// setApplyError records the outcome of the last apply ("" for success).
func (m *Manager) setApplyError(msg string) {
	m.stateMu.Lock()
	m.lastApplyError = msg
	m.stateMu.Unlock()
}

// Live returns the live version, nil before Start.
func (m *Manager) Live() *Version {
	m.stateMu.RLock()
	defer m.stateMu.RUnlock()
	if m.live == nil {
		return nil
	}
	v := *m.live
	return &v
}

// masterPID returns the pid of the running nginx master, 0 when none.
func (m *Manager) masterPID() int {
	pid := readPIDFile(m.pidFile)
	if m.mode == ModeSupervise {
		// Only an nginx started with this nginx.conf is ours.
		if alive(pid, "nginx", m.mainConf()) {
			return pid
		}
		return 0
	}
	if alive(pid, "nginx") {
		return pid
	}
	return 0
}

// Status is a snapshot of the manager's view of nginx.
type Status struct {
	Mode      Mode      `json:"mode"`
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Live is the version nginx was last successfully given.
	Live           *Version `json:"live,omitempty"`
	LastApplyError string   `json:"last_apply_error,omitempty"`
	// Restarts counts the watchdog's restarts since the agent started.
	Restarts    int64     `json:"restarts"`
	LastRestart time.Time `json:"last_restart,omitzero"`
	AutoRestart bool      `json:"auto_restart"`
	// Stopped is set when a supervised nginx was stopped on purpose (Stop)
	// and is not to be restarted by the watchdog.
	Stopped bool `json:"stopped,omitempty"`
	// StatusURL is the stub_status URL of the live version.
	StatusURL    string   `json:"status_url,omitempty"`
	NginxVersion string   `json:"nginx_version,omitempty"`
	Features     []string `json:"features,omitempty"`
}

// Status reports nginx's state without waiting for a running apply.
func (m *Manager) Status() Status {
	s := Status{
		Mode:         m.mode,
		Restarts:     m.restarts.Load(),
		AutoRestart:  m.mode == ModeSupervise && m.autoRestart.Load(),
		Stopped:      m.mode == ModeSupervise && !m.wantRunning.Load(),
		NginxVersion: m.build.Version,
		Features:     m.build.Features,
	}
	if pid := m.masterPID(); pid != 0 {
		s.Running, s.PID = true, pid
		if t, err := startedAt(pid); err == nil {
			s.StartedAt = t
		}
	}
	m.stateMu.RLock()
	if m.live != nil {
		v := *m.live
		s.Live = &v
		if v.StatusPort != 0 {
			s.StatusURL = fmt.Sprintf("http://127.0.0.1:%d/nxmesh_status", v.StatusPort)
		}
	}
	s.LastApplyError = m.lastApplyError
	s.LastRestart = m.lastRestart
	m.stateMu.RUnlock()
	return s
}

// SetAutoRestart turns the watchdog's restarts on or off (the master's
// per-agent policy). It has no effect in manage mode.
func (m *Manager) SetAutoRestart(on bool) {
	m.autoRestart.Store(on)
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (uint32, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port), nil
}
