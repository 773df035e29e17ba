// Package cptest provides a controlplane.Handler for tests and benchmarks
// that run many real agent clients (controlplane.Client) in one process
// without nginx.
package cptest

import (
	"context"
	"slices"
	"sync"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// NoopAgent is the agent's Handler without nginx: every configuration update
// is reported applied (SUCCESS) as soon as it arrives, and its health says
// nginx runs the last update. It records the version of every update it
// received, in order. Use NewNoopAgent; the zero value is not usable.
type NoopAgent struct {
	onApply func(u *agentv1.ConfigUpdate, at time.Time)

	up     chan struct{}
	upOnce sync.Once

	mu       sync.Mutex
	last     *agentv1.ConfigUpdate
	versions []int64
}

// NewNoopAgent returns a NoopAgent. onApply, when not nil, is called with
// every update and the time it arrived, before the update is recorded and
// reported applied; it is called from the client's applier goroutine, one
// update at a time.
func NewNoopAgent(onApply func(u *agentv1.ConfigUpdate, at time.Time)) *NoopAgent {
	return &NoopAgent{onApply: onApply, up: make(chan struct{})}
}

// ApplyConfig records the update and reports it applied.
func (a *NoopAgent) ApplyConfig(_ context.Context, u *agentv1.ConfigUpdate, report func(*agentv1.ConfigStatus)) {
	now := time.Now()
	if a.onApply != nil {
		a.onApply(u, now)
	}
	a.mu.Lock()
	a.last = u
	a.versions = append(a.versions, u.GetVersion())
	a.mu.Unlock()
	report(&agentv1.ConfigStatus{ConfigId: u.GetConfigId(), Version: u.GetVersion(), Status: agentv1.ConfigApplyStatus_SUCCESS, AppliedAt: now.Unix()})
}

// RunCommand reports every command done.
func (a *NoopAgent) RunCommand(context.Context, *agentv1.Command) *agentv1.CommandResult {
	return &agentv1.CommandResult{Success: true}
}

// Health reports nginx running the last update.
func (a *NoopAgent) Health(context.Context) *agentv1.HealthReport {
	// The client asks for the first report right after the registration
	// answer: the stream is up.
	a.upOnce.Do(func() { close(a.up) })
	a.mu.Lock()
	defer a.mu.Unlock()
	return &agentv1.HealthReport{
		Nginx:          &agentv1.NginxStatus{IsRunning: true, Pid: 1},
		ConfigVersion:  a.last.GetVersion(),
		ConfigChecksum: a.last.GetChecksum(),
	}
}

// Up is closed once the client's first stream is up (its first health report
// was asked for).
func (a *NoopAgent) Up() <-chan struct{} { return a.up }

// Last returns the last update received, nil before the first.
func (a *NoopAgent) Last() *agentv1.ConfigUpdate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Versions returns the versions of every update received, in the order they
// arrived (a version sent again, as on a reconnection, appears again).
func (a *NoopAgent) Versions() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.versions)
}
