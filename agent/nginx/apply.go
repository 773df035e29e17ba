package nginx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Result is the outcome of an Apply.
type Result struct {
	// Status is SUCCESS, FAILED or ROLLED_BACK.
	Status agentv1.ConfigApplyStatus
	// Message is nginx's error text for FAILED and ROLLED_BACK, and a note
	// for a SUCCESS that changed nothing.
	Message string
	// Version is the version that is live afterwards.
	Version *Version
	// Reloaded is set when nginx was reloaded (or started) with the update.
	Reloaded bool
}

// Apply installs u following the steps in the package documentation.
// progress, if non-nil, is called with VALIDATING and APPLYING as the
// apply reaches them; the final status is in the Result.
func (m *Manager) Apply(ctx context.Context, u *agentv1.ConfigUpdate, progress func(agentv1.ConfigApplyStatus)) Result {
	if progress == nil {
		progress = func(agentv1.ConfigApplyStatus) {}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	log := m.log.With("config_id", u.GetConfigId(), "version", u.GetVersion())

	prev := m.Live()
	if prev == nil {
		return Result{Status: agentv1.ConfigApplyStatus_FAILED, Message: "the nginx manager is not started"}
	}
	sum := checksumOf(u)
	running := m.mode == ModeManage || !m.wantRunning.Load() || m.masterPID() != 0
	// 1. Already live.
	sameRender := prev.ACMEChallengeDir == m.opts.ACMEChallengeDir && prev.AccessLog == m.opts.AccessLog
	if prev.Checksum == sum && u.GetVersion() <= prev.Version && running && sameRender {
		log.Debug("config update already applied", "live", prev.Name)
		m.setApplyError("")
		return Result{Status: agentv1.ConfigApplyStatus_SUCCESS, Message: "already applied", Version: prev}
	}

	// 2. Render into the version directory.
	progress(agentv1.ConfigApplyStatus_VALIDATING)
	meta := Version{
		Name:       versionName(u.GetVersion(), sum) + accessLogSuffix(m.opts.AccessLog),
		ConfigID:   u.GetConfigId(),
		Version:    u.GetVersion(),
		Checksum:   sum,
		StatusPort: m.statusPort,
		CreatedAt:  time.Now().UTC(),
		AccessLog:  m.opts.AccessLog,

		ACMEChallengeDir: m.opts.ACMEChallengeDir,
	}
	if prev.Name == meta.Name && !sameRender {
		// The same update rendered with other options: a new directory,
		// so that the live one stays intact until the swap.
		meta.Name += "-r"
	}
	if prev.Name == meta.Name {
		// The same files are live but nginx is not running: only start it.
		progress(agentv1.ConfigApplyStatus_APPLYING)
		if err := m.reloadLocked(ctx); err != nil {
			return m.failed(log, agentv1.ConfigApplyStatus_FAILED, fmt.Sprintf("start nginx: %v", err), prev)
		}
		m.setApplyError("")
		return Result{Status: agentv1.ConfigApplyStatus_SUCCESS, Version: prev, Reloaded: true}
	}
	if err := m.checkRoots(u); err != nil {
		return m.failed(log, agentv1.ConfigApplyStatus_FAILED, err.Error(), prev)
	}
	dir := filepath.Join(m.versionsDir(), meta.Name)
	if err := os.RemoveAll(dir); err != nil {
		return m.failed(log, agentv1.ConfigApplyStatus_FAILED, fmt.Sprintf("clear version directory: %v", err), prev)
	}
	files, err := render.Render(u, m.renderOptions(dir))
	if err != nil {
		return m.failed(log, agentv1.ConfigApplyStatus_FAILED, fmt.Sprintf("render: %v", err), prev)
	}
	if err := writeVersion(dir, files, meta, u); err != nil {
		os.RemoveAll(dir)
		return m.failed(log, agentv1.ConfigApplyStatus_FAILED, err.Error(), prev)
	}

	// 3. nginx -t against the new directory.
	if out, err := m.testVersion(ctx, dir); err != nil {
		os.RemoveAll(dir)
		return m.failed(log, agentv1.ConfigApplyStatus_FAILED, out, prev)
	}

	// 4. Swap.
	progress(agentv1.ConfigApplyStatus_APPLYING)
	if err := swapLink(m.currentLink(), filepath.Join("versions", meta.Name)); err != nil {
		os.RemoveAll(dir)
		return m.failed(log, agentv1.ConfigApplyStatus_FAILED, err.Error(), prev)
	}
	if m.mode == ModeManage {
		if out, err := m.testLive(ctx); err != nil {
			m.restore(prev)
			os.RemoveAll(dir)
			return m.failed(log, agentv1.ConfigApplyStatus_FAILED, out, prev)
		}
	}

	// 5–6. Reload and verify.
	if m.mode == ModeSupervise && !m.wantRunning.Load() {
		log.Info("config installed; nginx is stopped and uses it when started", "live", meta.Name)
		return m.succeeded(log, &meta, false, "installed; nginx is stopped")
	}
	reloadErr := m.reloadLocked(ctx)
	if errors.Is(reloadErr, ErrNotRunning) && m.mode == ModeManage {
		log.Warn("config installed; nginx is not running and uses it when started", "live", meta.Name)
		return m.succeeded(log, &meta, false, "installed; nginx is not running")
	}
	if reloadErr == nil {
		return m.succeeded(log, &meta, true, "")
	}

	// 7. Roll back, even when ctx ended meanwhile: the previous version
	// must be live again.
	msg := reloadErr.Error()
	log.Warn("reload with the new config failed; rolling back", "error", msg, "previous", prev.Name)
	m.restore(prev)
	if err := m.reloadLocked(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, ErrNotRunning) {
		log.Error("reload with the previous config failed too", "error", err)
		msg += " (reload of the previous version also failed: " + err.Error() + ")"
	}
	os.RemoveAll(dir)
	return m.failed(log, agentv1.ConfigApplyStatus_ROLLED_BACK, msg, prev)
}

// restore points current back at prev.
func (m *Manager) restore(prev *Version) {
	if prev == nil {
		os.Remove(m.currentLink())
		return
	}
	if err := swapLink(m.currentLink(), filepath.Join("versions", prev.Name)); err != nil {
		m.log.Error("restore the previous config version", "version", prev.Name, "error", err)
	}
}

// failed records and returns a FAILED or ROLLED_BACK result; prev stays
// live.
func (m *Manager) failed(log *slog.Logger, status agentv1.ConfigApplyStatus, msg string, prev *Version) Result {
	log.Warn("config apply failed", "status", status.String(), "error", msg)
	m.setApplyError(msg)
	return Result{Status: status, Message: msg, Version: prev}
}

// succeeded records v as live and prunes old versions.
func (m *Manager) succeeded(log *slog.Logger, v *Version, reloaded bool, note string) Result {
	m.setLive(v)
	m.setApplyError("")
	if err := pruneVersions(m.versionsDir(), v.Name, m.opts.KeepVersions); err != nil {
		log.Warn("prune old config versions", "error", err)
	}
	log.Info("config applied", "live", v.Name, "reloaded", reloaded)
	return Result{Status: agentv1.ConfigApplyStatus_SUCCESS, Message: note, Version: v, Reloaded: reloaded}
}

// checkRoots refuses static roots that would let nginx serve the agent's
// own files: a root that is, contains or lies inside the manager's
// directory (prefix or include directory: configuration, certificates,
// htpasswd files, logs) or one of Options.ProtectedDirs (the agent's
// identity). Both sides are compared after resolving symbolic links, so a
// link cannot hide either.
func (m *Manager) checkRoots(u *agentv1.ConfigUpdate) error {
	protected := append([]string{m.root}, m.opts.ProtectedDirs...)
	resolved := make([]string, len(protected))
	for i, d := range protected {
		resolved[i] = resolveExisting(d)
	}
	for _, vh := range u.GetVirtualHosts() {
		for i, loc := range vh.GetLocations() {
			root := loc.GetRoot()
			if root == "" {
				continue
			}
			field := fmt.Sprintf("virtual host %s: locations[%d].root %q", vh.GetId(), i, root)
			if !filepath.IsAbs(root) {
				return fmt.Errorf("%s: must be an absolute path", field)
			}
			r := resolveExisting(root)
			for j, d := range resolved {
				if within(r, d) || within(d, r) {
					return fmt.Errorf("%s: refused: it overlaps the agent's directory %s, whose files nginx must not serve", field, protected[j])
				}
			}
		}
	}
	return nil
}

// within reports whether p is dir or lies inside it; both are clean and
// absolute.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolveExisting returns p, cleaned, with the symbolic links of its
// longest existing ancestor (p itself when it exists) resolved.
func resolveExisting(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// renderOptions are the options every version is rendered with. In manage
// mode the operator's nginx.conf decides what answers unknown names on the
// ports it shares: its own default servers would clash with rendered ones.
func (m *Manager) renderOptions(dir string) render.Options {
	return render.Options{ConfDir: dir, StatusPort: m.statusPort, NoDefaultServers: m.mode == ModeManage,
		AccessLog: m.opts.AccessLog, ACMEChallengeDir: m.opts.ACMEChallengeDir}
}
