package nginx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
)

// pollInterval is how often start, reload and stop look at /proc and the
// error log while they wait for nginx.
const pollInterval = 25 * time.Millisecond

// nginxCmd builds an nginx command line for the mode's configuration.
func (m *Manager) nginxCmd(ctx context.Context, args ...string) *exec.Cmd {
	var base []string
	if m.mode == ModeSupervise {
		base = []string{"-p", m.root + "/", "-c", m.mainConf()}
	} else {
		base = []string{"-c", m.opts.Conf}
	}
	cmd := exec.CommandContext(ctx, m.opts.Binary, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// runOutput runs cmd with its output in a temporary file rather than a
// pipe: a daemonising nginx hands the pipe to its master, and reading a
// pipe would wait for the master to exit.
func runOutput(cmd *exec.Cmd) (string, error) {
	f, err := os.CreateTemp("", "nxmesh-nginx-*.out")
	if err != nil {
		return "", fmt.Errorf("create output file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	runErr := cmd.Run()
	out, err := os.ReadFile(f.Name())
	if err != nil {
		return "", fmt.Errorf("read nginx output: %w", err)
	}
	return cleanOutput(out), runErr
}

// testVersion runs nginx -t on a standalone nginx.conf that includes the
// configuration directory dir. It returns nginx's output.
func (m *Manager) testVersion(ctx context.Context, dir string) (string, error) {
	opts := m.mainOptions(dir)
	opts.ErrorLog = "stderr"
	conf, err := render.MainConfig(opts)
	if err != nil {
		return err.Error(), err
	}
	if err := writeFile(m.testConf(), conf, 0o644); err != nil {
		return err.Error(), err
	}
	defer os.Remove(m.testConf())
	cmd := exec.CommandContext(ctx, m.opts.Binary, "-t", "-p", m.root+"/", "-c", m.testConf())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := runOutput(cmd)
	if err != nil {
		if out == "" {
			out = err.Error()
		}
		return out, fmt.Errorf("nginx -t: %w", err)
	}
	return out, nil
}

// testLive runs nginx -t on the live configuration (the supervised
// nginx.conf, or the operator's nginx.conf).
func (m *Manager) testLive(ctx context.Context) (string, error) {
	out, err := runOutput(m.nginxCmd(ctx, "-t"))
	if err != nil {
		if out == "" {
			out = err.Error()
		}
		return out, fmt.Errorf("nginx -t: %w", err)
	}
	return out, nil
}

// startLocked starts the supervised nginx and waits until its master has
// written the pid file and started worker processes. m.mu must be held.
func (m *Manager) startLocked(ctx context.Context) error {
	if m.mode != ModeSupervise {
		return ErrNotSupervised
	}
	if _, err := m.writeMainConf(); err != nil {
		return err
	}
	offset := logSize(m.errorLog)
	out, err := runOutput(m.nginxCmd(ctx))
	if err != nil {
		if out == "" {
			out = err.Error()
		}
		return fmt.Errorf("start nginx: %s", out)
	}
	deadline := time.Now().Add(m.opts.ReloadTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if pid := m.masterPID(); pid != 0 && len(children(pid)) > 0 {
			m.log.Info("nginx started", "pid", pid)
			return nil
		}
		if lines := emergencies(m.errorLog, offset); len(lines) > 0 {
			return fmt.Errorf("start nginx: %s", strings.Join(lines, "; "))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start nginx: no running master with workers after %s", m.opts.ReloadTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start nginx: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// reloadLocked sends SIGHUP to the master and verifies that it started new
// worker processes and logged no [emerg]. In supervise mode an nginx that
// should run but does not is started instead. m.mu must be held.
func (m *Manager) reloadLocked(ctx context.Context) error {
	pid := m.masterPID()
	if pid == 0 {
		if m.mode == ModeSupervise && m.wantRunning.Load() {
			return m.startLocked(ctx)
		}
		return ErrNotRunning
	}
	before := children(pid)
	offset := logSize(m.errorLog)
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal nginx master %d to reload: %w", pid, err)
	}
	deadline := time.Now().Add(m.opts.ReloadTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if lines := emergencies(m.errorLog, offset); len(lines) > 0 {
			m.awaitReloadSettled()
			return fmt.Errorf("%s", strings.Join(lines, "; "))
		}
		if !alive(pid) {
			return fmt.Errorf("nginx master %d exited during the reload", pid)
		}
		if newWorker(before, children(pid)) {
			// The new configuration is loaded. A last look at the log
			// catches an [emerg] written just before the fork.
			if lines := emergencies(m.errorLog, offset); len(lines) > 0 {
				m.awaitReloadSettled()
				return fmt.Errorf("%s", strings.Join(lines, "; "))
			}
			m.awaitOldWorkersClosed(ctx, before, deadline)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx started no new worker processes within %s of the reload", m.opts.ReloadTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify reload: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// awaitOldWorkersClosed waits, until deadline, for the worker processes in
// before to exit or to retitle themselves "worker process is shutting down",
// which nginx does once they have closed their listening sockets: until then
// an old worker may still accept a connection and answer it with the old
// configuration. Old workers that keep serving open connections past the
// deadline are left to finish; the reload has succeeded either way.
func (m *Manager) awaitOldWorkersClosed(ctx context.Context, before []int, deadline time.Time) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		open := false
		for _, p := range before {
			if alive(p, "worker process") && !alive(p, "shutting down") {
				open = true
				break
			}
		}
		if !open || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reloadSettle is how long nginx's error log must stay unchanged before a
// failed reload counts as over. A master that cannot bind() a port keeps
// trying for about 2.5 s (five tries, 500 ms apart, each logged as [emerg])
// before it gives up and keeps the running configuration.
const reloadSettle = time.Second

// awaitReloadSettled waits, at most ReloadTimeout, until nginx's master is
// done with a failed reload: until then it has not read the next SIGHUP, and
// its later [emerg] lines would be taken for the next reload's (a rollback's,
// a command's) own failure. It ignores the caller's context: whatever
// follows must not race the failed reload.
func (m *Manager) awaitReloadSettled() {
	if m.errorLog == "" {
		return
	}
	deadline := time.Now().Add(m.opts.ReloadTimeout)
	size, changed := logSize(m.errorLog), time.Now()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for time.Since(changed) < reloadSettle && time.Now().Before(deadline) {
		<-tick.C
		if s := logSize(m.errorLog); s != size {
			size, changed = s, time.Now()
		}
	}
}

// newWorker reports whether after holds a process not in before.
func newWorker(before, after []int) bool {
	for _, p := range after {
		if !slices.Contains(before, p) {
			return true
		}
	}
	return false
}

// stopLocked stops the supervised nginx: SIGQUIT (graceful) or SIGTERM
// (fast) to the master, then SIGKILL to the master and its workers after
// timeout. m.mu must be held.
func (m *Manager) stopLocked(ctx context.Context, graceful bool, timeout time.Duration) error {
	m.wantRunning.Store(false)
	pid := m.masterPID()
	if pid == 0 {
		return nil
	}
	workers := children(pid)
	sig := syscall.SIGQUIT
	if !graceful {
		sig = syscall.SIGTERM
	}
	if timeout <= 0 {
		timeout = m.opts.StopTimeout
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal nginx master %d to stop: %w", pid, err)
	}
	if waitGone(ctx, pid, timeout) {
		m.log.Info("nginx stopped", "pid", pid, "graceful", graceful)
		return nil
	}
	m.log.Warn("nginx did not stop in time; killing it", "pid", pid, "timeout", timeout)
	for _, p := range append([]int{pid}, workers...) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if !waitGone(ctx, pid, 5*time.Second) {
		return fmt.Errorf("nginx master %d survived SIGKILL", pid)
	}
	return nil
}

// waitGone waits until pid is no longer a live process.
func waitGone(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for alive(pid) {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return !alive(pid)
		case <-tick.C:
		}
	}
	return true
}

// Reload reloads nginx with the live configuration and verifies it.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode == ModeSupervise && m.masterPID() == 0 {
		return ErrNotRunning
	}
	return m.reloadLocked(ctx)
}

// Restart stops and starts the supervised nginx with the live
// configuration. In manage mode it returns ErrNotSupervised.
func (m *Manager) Restart(ctx context.Context) error {
	if m.mode != ModeSupervise {
		return ErrNotSupervised
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.stopLocked(ctx, true, m.opts.StopTimeout); err != nil {
		return err
	}
	m.wantRunning.Store(true)
	return m.startLocked(ctx)
}

// StartNginx starts the supervised nginx after a Stop. It is a no-op when
// nginx runs.
func (m *Manager) StartNginx(ctx context.Context) error {
	if m.mode != ModeSupervise {
		return ErrNotSupervised
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wantRunning.Store(true)
	if m.masterPID() != 0 {
		return nil
	}
	return m.startLocked(ctx)
}

// Stop stops the supervised nginx (gracefully: finishing open requests, up
// to timeout, then killing it). The watchdog leaves a stopped nginx alone
// until Restart or StartNginx. In manage mode it returns ErrNotSupervised.
func (m *Manager) Stop(ctx context.Context, graceful bool, timeout time.Duration) error {
	if m.mode != ModeSupervise {
		return errors.New("stop is only available when the agent supervises nginx")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stopLocked(ctx, graceful, timeout)
}

// Validate runs nginx -t on the live configuration and returns nginx's
// output; the error is non-nil when the test fails.
func (m *Manager) Validate(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.testLive(ctx)
}
