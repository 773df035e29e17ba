package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/nxmesh/nxmesh/agent/collect"
	"github.com/nxmesh/nxmesh/agent/controlplane"
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
	res := a.mgr.Apply(ctx, u, func(st agentv1.ConfigApplyStatus) { report(status(st)) })
	final := status(res.Status)
	final.AppliedAt = time.Now().Unix()
	if res.Status != agentv1.ConfigApplyStatus_SUCCESS {
		final.ErrorMessage = res.Message
	}
	report(final)
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
		LastApplyError: st.LastApplyError,
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
		rep.ConfigChecksum = st.Live.Checksum
		rep.ConfigVersion = st.Live.Version
	}
	ts := now.Unix()
	if !st.Running {
		msg := "nginx is not running"
		if st.Stopped {
			msg = "nginx is stopped (stop command)"
		}
		rep.Alerts = append(rep.Alerts, &agentv1.Alert{Id: "nginx_down", Severity: "critical", Message: msg, Timestamp: ts})
	}
	if st.LastApplyError != "" {
		rep.Alerts = append(rep.Alerts, &agentv1.Alert{Id: "config_apply_failed", Severity: "error",
			Message: "last config apply failed: " + st.LastApplyError, Timestamp: ts})
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
