package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nxmesh/nxmesh/agent/acmechallenge"
	"github.com/nxmesh/nxmesh/agent/collect"
	"github.com/nxmesh/nxmesh/agent/controlplane"
	"github.com/nxmesh/nxmesh/agent/health"
	"github.com/nxmesh/nxmesh/agent/nginx"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// restartAlertWindow is how long a watchdog restart stays an alert.
const restartAlertWindow = 10 * time.Minute

// buildInfo identifies the agent binary.
type buildInfo struct {
	Version   string
	Commit    string
	BuildDate string
}

// agent connects the control plane to nginx: it is the
// controlplane.Handler.
//
// Active health checks (agent/health) change what is rendered without a
// new configuration from the master: every update is applied with the
// servers the checker marks down overridden to `down` (health.Overlay), and
// when a server's health changes the last update the master sent and that
// applied is applied again the same way, through the same Manager.Apply
// path (validate, swap, reload, verify, roll back), with the same version
// number. Such a re-apply sends no ConfigStatus; the health report names the
// master's checksum (health.MasterChecksum), so the master sees no drift,
// and a failed re-apply raises the alert upstream_health_apply_failed.
type agent struct {
	mgr      *nginx.Manager
	coll     *collect.Collector
	info     buildInfo
	hostname string
	started  time.Time
	log      *slog.Logger
	// client is set once the control plane client exists; watchdog events
	// are forwarded through it.
	client atomic.Pointer[controlplane.Client]
	// health runs the upstreams' active health checks; nil disables them.
	health *health.Checker
	// acme holds the ACME HTTP-01 challenge files nginx serves (acme.go).
	acme *acmechallenge.Store

	// applyMu serialises applies of the master's updates and health-driven
	// re-applies, and guards base: the master's last update that applied
	// (nil until one did).
	applyMu sync.Mutex
	base    *agentv1.ConfigUpdate
	// errMu guards applyErr, the error of the master's last update (""
	// after a success), and healthErr, that of the last health-driven
	// re-apply. Health reads them without waiting for an apply.
	errMu               sync.Mutex
	applyErr, healthErr string
}

// setErrors records the outcome of an apply.
func (a *agent) setErrors(applyErr, healthErr string) {
	a.errMu.Lock()
	a.applyErr, a.healthErr = applyErr, healthErr
	a.errMu.Unlock()
}

var _ controlplane.Handler = (*agent)(nil)

// ApplyConfig applies an update and reports every step as a ConfigStatus.
func (a *agent) ApplyConfig(ctx context.Context, u *agentv1.ConfigUpdate, report func(*agentv1.ConfigStatus)) {
	// The master's per-agent policy wins over --auto-restart.
	if p := u.GetAgentPolicy(); p != nil {
		a.mgr.SetAutoRestart(p.GetAutoRestart())
	}
	status := func(st agentv1.ConfigApplyStatus) *agentv1.ConfigStatus {
		return &agentv1.ConfigStatus{ConfigId: u.GetConfigId(), Version: u.GetVersion(), Status: st}
	}
	a.applyMu.Lock()
	eff, marked := a.overlay(u)
	res := a.mgr.Apply(ctx, eff, func(st agentv1.ConfigApplyStatus) { report(status(st)) })
	if res.Status == agentv1.ConfigApplyStatus_SUCCESS {
		a.base = u
		a.setErrors("", "")
		if a.health != nil {
			a.health.Configure(u.GetUpstreams())
			a.health.SetMarked(marked)
		}
	} else {
		a.errMu.Lock()
		a.applyErr = res.Message
		a.errMu.Unlock()
	}
	a.applyMu.Unlock()
	final := status(res.Status)
	final.AppliedAt = time.Now().Unix()
	if res.Status != agentv1.ConfigApplyStatus_SUCCESS {
		final.ErrorMessage = res.Message
	}
	report(final)
}

// overlay returns u with the servers the health checks mark down rendered
// down, and those servers.
func (a *agent) overlay(u *agentv1.ConfigUpdate) (*agentv1.ConfigUpdate, []health.Key) {
	if a.health == nil {
		return u, nil
	}
	keys := a.health.Overrides(u)
	return health.Overlay(u, nginx.Checksum(u), keys), keys
}

// reapplyHealth applies the master's last applied update again with the
// servers the health checks now mark down (a no-op when that is what is
// live).
func (a *agent) reapplyHealth(ctx context.Context) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if a.base == nil || a.health == nil {
		return
	}
	eff, marked := a.overlay(a.base)
	if live := a.mgr.Live(); live != nil && live.Checksum == nginx.Checksum(eff) {
		a.health.SetMarked(marked)
		return
	}
	res := a.mgr.Apply(ctx, eff, nil)
	if res.Status != agentv1.ConfigApplyStatus_SUCCESS {
		a.errMu.Lock()
		a.healthErr = res.Message
		a.errMu.Unlock()
		a.log.Error("re-apply the configuration for the upstream health checks", "version", a.base.GetVersion(),
			"status", res.Status.String(), "error", res.Message)
		return
	}
	a.errMu.Lock()
	a.healthErr = ""
	a.errMu.Unlock()
	a.health.SetMarked(marked)
	a.log.Info("configuration re-applied for the upstream health checks", "version", a.base.GetVersion(), "marked_down", len(marked))
}

// watchHealth re-applies the configuration and sends a health report each
// time changed fires, until ctx ends.
func (a *agent) watchHealth(ctx context.Context, changed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		a.reapplyHealth(ctx)
		if c := a.client.Load(); c != nil {
			c.ReportHealth()
		}
	}
}

// Health builds a HealthReport: nginx's process and traffic, host metrics,
// the live configuration, alerts and the agent's own description.
func (a *agent) Health(ctx context.Context) *agentv1.HealthReport {
	st := a.mgr.Status()
	now := time.Now()
	ns := &agentv1.NginxStatus{IsRunning: st.Running, Pid: uint32(st.PID)}
	if st.Running && !st.StartedAt.IsZero() && now.After(st.StartedAt) {
		ns.UptimeSeconds = uint64(now.Sub(st.StartedAt).Seconds())
	}
	if st.Running && st.StatusURL != "" {
		if s, err := a.coll.Nginx(ctx, st.StatusURL); err != nil {
			a.log.Debug("read nginx stub_status", "error", err)
		} else {
			ns.ActiveConnections = uint32(min(s.ActiveConnections, uint64(^uint32(0))))
			ns.TotalRequests = s.TotalRequests
			ns.RequestsPerSecond = float32(s.RequestsPerSecond)
		}
	}
	sys, err := a.coll.System()
	if err != nil {
		a.log.Debug("read host metrics", "error", err)
	}
	rep := &agentv1.HealthReport{
		Nginx: ns,
		System: &agentv1.SystemMetrics{
			CpuPercent:       float32(sys.CPUPercent),
			MemoryUsedBytes:  sys.MemoryUsedBytes,
			MemoryTotalBytes: sys.MemoryTotalBytes,
			DiskUsedBytes:    sys.DiskUsedBytes,
			DiskTotalBytes:   sys.DiskTotalBytes,
			LoadAverage_1M:   float32(sys.LoadAverage1m),
		},
		AgentInfo: &agentv1.AgentInfo{
			Version:       a.info.Version,
			Commit:        a.info.Commit,
			BuildDate:     a.info.BuildDate,
			UptimeSeconds: uint64(now.Sub(a.started).Seconds()),
			Features:      st.Features,
			Hostname:      a.hostname,
		},
	}
	if st.Live != nil {
		rep.ConfigChecksum = health.MasterChecksum(st.Live.Checksum)
		rep.ConfigVersion = st.Live.Version
	}
	a.errMu.Lock()
	applyErr, healthErr := a.applyErr, a.healthErr
	a.errMu.Unlock()
	rep.LastApplyError = applyErr
	if a.health != nil {
		rep.UpstreamHealth = a.health.Report()
	}
	ts := now.Unix()
	if !st.Running {
		msg := "nginx is not running"
		if st.Stopped {
			msg = "nginx is stopped (stop command)"
		}
		rep.Alerts = append(rep.Alerts, &agentv1.Alert{Id: "nginx_down", Severity: "critical", Message: msg, Timestamp: ts})
	}
	if rep.LastApplyError != "" {
		rep.Alerts = append(rep.Alerts, &agentv1.Alert{Id: "config_apply_failed", Severity: "error",
			Message: "last config apply failed: " + rep.LastApplyError, Timestamp: ts})
	}
	if healthErr != "" {
		rep.Alerts = append(rep.Alerts, &agentv1.Alert{Id: "upstream_health_apply_failed", Severity: "error",
			Message: "marking upstream servers down or up failed: " + healthErr, Timestamp: ts})
	}
	if st.Restarts > 0 && now.Sub(st.LastRestart) < restartAlertWindow {
		rep.Alerts = append(rep.Alerts, &agentv1.Alert{Id: "nginx_restarted", Severity: "warning",
			Message:   "the watchdog restarted nginx " + strconv.FormatInt(st.Restarts, 10) + " time(s); last at " + st.LastRestart.UTC().Format(time.RFC3339),
			Timestamp: st.LastRestart.Unix()})
	}
	return rep
}

// RunCommand runs one of the master's commands. Nothing here runs a shell.
func (a *agent) RunCommand(ctx context.Context, cmd *agentv1.Command) *agentv1.CommandResult {
	res := &agentv1.CommandResult{CommandId: cmd.GetCommandId()}
	done := func(err error, okMsg string) *agentv1.CommandResult {
		res.Success = err == nil
		res.Message = okMsg
		if err != nil {
			res.Message = err.Error()
		}
		res.FinishedAt = time.Now().Unix()
		return res
	}
	switch c := cmd.GetCommand().(type) {
	case *agentv1.Command_Reload:
		return done(a.mgr.Reload(ctx), "nginx reloaded")
	case *agentv1.Command_Restart:
		return done(a.mgr.Restart(ctx), "nginx restarted")
	case *agentv1.Command_Stop:
		// Always a graceful quit (open requests finish), bounded by
		// timeout_seconds, then nginx is killed.
		timeout := time.Duration(c.Stop.GetTimeoutSeconds()) * time.Second
		return done(a.mgr.Stop(ctx, true, timeout), "nginx stopped")
	case *agentv1.Command_GetStatus:
		out, err := a.statusJSON(ctx)
		res.Output = out
		return done(err, "status")
	case *agentv1.Command_ValidateConfig:
		out, err := a.mgr.Validate(ctx)
		res.Output = out
		if err != nil {
			return done(errors.New("nginx -t failed"), "")
		}
		return done(nil, "configuration is valid")
	default:
		return done(errors.New("unknown command"), "")
	}
}

// statusJSON is the output of get_status: the health report and the
// manager's view of nginx.
func (a *agent) statusJSON(ctx context.Context) (string, error) {
	health, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a.Health(ctx))
	if err != nil {
		return "", err
	}
	out, err := json.MarshalIndent(struct {
		Health json.RawMessage `json:"health"`
		Nginx  nginx.Status    `json:"nginx"`
	}{health, a.mgr.Status()}, "", "  ")
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// metricsInterval is how often the agent sends a MetricsBatch (every 5 s).
const metricsInterval = 5 * time.Second

// sendMetrics samples the host and nginx every interval with its own
// collector (its rates are independent of the health reports') and sends
// the batch on the stream, until ctx ends.
func (a *agent) sendMetrics(ctx context.Context, coll *collect.Collector, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c := a.client.Load()
		if c == nil || !c.Connected() {
			continue
		}
		now := time.Now().Unix()
		host, err := coll.Host()
		if err != nil {
			a.log.Debug("read host metrics", "error", err)
		}
		metrics := host.Metrics(now)
		if st := a.mgr.Status(); st.Running && st.StatusURL != "" {
			if ns, err := coll.Nginx(ctx, st.StatusURL); err != nil {
				a.log.Debug("read nginx stub_status", "error", err)
			} else {
				metrics = append(metrics, ns.Metrics(now)...)
			}
		}
		c.SendMetrics(&agentv1.MetricsBatch{Timestamp: now, Metrics: metrics})
	}
}

// onEvent forwards a watchdog event to the master.
func (a *agent) onEvent(e nginx.Event) {
	c := a.client.Load()
	if c == nil {
		return
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	data := map[string]string{"message": e.Message}
	if e.PID != 0 {
		data["pid"] = strconv.Itoa(e.PID)
	}
	c.SendEvent(&agentv1.Event{EventId: hex.EncodeToString(id[:]), EventType: e.Type, Timestamp: e.Time.Unix(), Data: data})
}
