package agents

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/a-h/templ"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// The workspace overview's panels. The page is the orgs module's
// (/workspaces/:id), which sits below every module it summarises; this
// module, which sees agents, configuration versions and certificates, draws
// the panels and main.go hands Module.Overview to orgs as its OverviewFunc.
// The last changes on that page come from the orgs module's audit log.

// overviewExpiring is how far ahead the overview lists certificates that
// expire (certs.ExpiringWindow, 30 days); expired ones are listed too.
const overviewExpiring = certs.ExpiringWindow

// Overview is what a workspace's overview page shows of its agents,
// configuration and certificates.
type Overview struct {
	WorkspaceID uuid.UUID
	// States counts the agents by state (pending, online, degraded, offline).
	States map[string]int64
	// Agents is the number of agents.
	Agents int64
	// Version is the workspace's current configuration version (0: none).
	Version int64
	// OnVersion is how many agents run the current version; Rollout is that
	// version's rollout.
	OnVersion int
	Rollout   []vhosts.AgentRollout
	// Failing are the agents whose last configuration failed or was rolled
	// back, with the error.
	Failing []FailingAgent
	// Expiring are the certificates that expire within 30 days (or have),
	// soonest first.
	Expiring []certs.Certificate
}

// FailingAgent is an agent whose last configuration failed.
type FailingAgent struct {
	ID             uuid.UUID
	Name           string
	ApplyStatus    string
	ApplyError     string
	DesiredVersion int64
}

// WorkspaceOverview reads the overview of a workspace.
func (s *Service) WorkspaceOverview(ctx context.Context, workspaceID uuid.UUID) (Overview, error) {
	o := Overview{WorkspaceID: workspaceID, States: map[string]int64{}}
	var states []struct {
		State string
		N     int64
	}
	db := s.db.WithContext(ctx)
	if err := db.Model(&agentRow{}).Select("state, count(*) AS n").Where("workspace_id = ?", workspaceID).
		Group("state").Scan(&states).Error; err != nil {
		return o, fmt.Errorf("count the agents of workspace %s: %w", workspaceID, err)
	}
	for _, st := range states {
		o.States[st.State] = st.N
		o.Agents += st.N
	}
	v, err := s.vh.CurrentVersion(ctx, workspaceID)
	if err != nil {
		return o, err
	}
	o.Version = v
	if v > 0 {
		if o.Rollout, err = s.Rollout(ctx, workspaceID, v); err != nil {
			return o, err
		}
		for _, r := range o.Rollout {
			if r.Status == vhosts.RolloutApplied {
				o.OnVersion++
			}
		}
	}
	var failing []agentRow
	if err := db.Where("workspace_id = ? AND apply_status IN ?", workspaceID, []string{ApplyFailed, ApplyRolledBack}).
		Order("name, id").Find(&failing).Error; err != nil {
		return o, fmt.Errorf("read the failing agents of workspace %s: %w", workspaceID, err)
	}
	for _, a := range failing {
		o.Failing = append(o.Failing, FailingAgent{ID: a.ID, Name: a.Name, ApplyStatus: a.ApplyStatus, ApplyError: a.ApplyError, DesiredVersion: a.DesiredVersion})
	}
	all, err := s.certs.ListAll(ctx, nil, workspaceID)
	if err != nil {
		return o, err
	}
	limit := s.now().Add(overviewExpiring)
	for _, c := range all {
		if c.ExpiresAt != nil && c.ExpiresAt.Before(limit) {
			o.Expiring = append(o.Expiring, c)
		}
	}
	slices.SortFunc(o.Expiring, func(a, b certs.Certificate) int { return a.ExpiresAt.Compare(*b.ExpiresAt) })
	return o, nil
}

// Overview draws the workspace overview's panels (the orgs module's
// OverviewFunc).
func (m *Module) Overview(ctx context.Context, workspaceID uuid.UUID) (templ.Component, error) {
	o, err := m.svc.WorkspaceOverview(ctx, workspaceID)
	if err != nil {
		return nil, err
	}
	return uiOverview(o, m.svc.now()), nil
}

// uiDaysLeft says how long until t, from now ("in 12 days", "expired").
func uiDaysLeft(t *time.Time, now time.Time) string {
	if t == nil {
		return ""
	}
	d := t.Sub(now)
	switch {
	case d <= 0:
		return "expired"
	case d < 24*time.Hour:
		return "in less than a day"
	}
	return fmt.Sprintf("in %d days", int(d/(24*time.Hour)))
}

// uiStates are the agent states in the order the overview shows them.
var uiStates = []string{StateOnline, StateDegraded, StateOffline, StatePending}
