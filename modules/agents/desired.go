package agents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Checksum is the checksum of a ConfigUpdate's content: the hex SHA-256 of
// its deterministic protobuf encoding (proto.MarshalOptions{Deterministic:
// true}, so map entries are sorted) with config_id, version and checksum
// cleared. Two updates with the same checksum make the agent write the same
// files, so the checksum changes exactly when what an agent must apply
// changes, whatever the workspace's version number. The master never needs
// the agent's rendering options (ConfDir) for it, and the agent does not
// recompute it: it echoes the checksum of the update it applied in
// HealthReport.config_checksum, and drift is that value differing from the
// checksum last pushed.
//
// The deterministic encoding is stable for one build of the master (it is not
// a canonical form across protobuf libraries), which is all a comparison
// between the master's own values needs.
func Checksum(u *agentv1.ConfigUpdate) string {
	c := proto.CloneOf(u)
	c.ConfigId, c.Version, c.Checksum = "", 0, ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// Marshalling a valid message built in memory cannot fail; make the
		// impossible visible instead of returning a checksum of nothing.
		panic(fmt.Sprintf("marshal ConfigUpdate: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// DesiredConfig returns the complete ConfigUpdate the agent with id must run
// now: the virtual hosts and streams of its workspace's current configuration
// version whose target_agents match it ({"type":"all"}, a label selector
// against its labels, or a list of agent ids), the upstreams they use, the
// certificates they use with their PEM material (private keys included), and
// the agent's policy. ConfigId is "v<version>-<first 12 hex of checksum>", so
// it names the content and not only the version (a relabelled agent gets new
// content at the same version).
func (s *Service) DesiredConfig(ctx context.Context, id uuid.UUID) (*agentv1.ConfigUpdate, error) {
	var ag agentRow
	err := s.db.WithContext(ctx).Select("id", "workspace_id", "labels", "auto_restart").Take(&ag, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrAgentNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read agent %s: %w", id, err)
	}
	return s.desiredFor(ctx, ag)
}

// DesiredConfigs is DesiredConfig for the agents ids of workspace ws, with
// two reads for all of them (their rows and the workspace's version) and
// one read of certificate material per set of certificates. Agents not
// found there are absent from the result. Agents that every target of the
// version includes or leaves out alike (and with the same policy) share
// one ConfigUpdate, computed once: callers must not modify the updates.
func (s *Service) DesiredConfigs(ctx context.Context, ws uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]*agentv1.ConfigUpdate, error) {
	rows, err := s.targetingOf(ctx, ws, ids)
	if err != nil {
		return nil, err
	}
	version, err := s.vh.CurrentVersion(ctx, ws)
	if err != nil {
		return nil, fmt.Errorf("desired config of workspace %s: %w", ws, err)
	}
	material := map[string]map[string]*agentv1.Certificate{}
	out := make(map[uuid.UUID]*agentv1.ConfigUpdate, len(rows))
	var groups []*targetGroup
next:
	for _, ag := range rows {
		for _, g := range groups {
			if g.has(ag) {
				out[ag.ID] = g.u
				continue next
			}
		}
		g := &targetGroup{autoRestart: ag.AutoRestart}
		u, err := s.desiredAt(ctx, ag, version, material, g.record)
		if err != nil {
			return nil, err
		}
		out[ag.ID], g.u = u, u
		if len(groups) < maxTargetGroups {
			groups = append(groups, g)
		}
	}
	return out, nil
}

// targetingOf reads what targeting needs of the agents ids of workspace ws
// (id, workspace, labels, policy), scanned by hand: a rollout reads every
// agent of the workspace here. The rows' labels must not be modified.
func (s *Service) targetingOf(ctx context.Context, ws uuid.UUID, ids []uuid.UUID) ([]agentRow, error) {
	rs, err := s.db.WithContext(ctx).Raw(`SELECT id, labels, auto_restart FROM agents
		WHERE id = ANY(?::uuid[]) AND workspace_id = ?`, uuidArray(ids), ws).Rows()
	if err != nil {
		return nil, fmt.Errorf("read %d agents: %w", len(ids), err)
	}
	defer rs.Close()
	rows := make([]agentRow, 0, len(ids))
	// Agents with the same labels share one map, read only: a fleet has
	// few distinct label sets.
	shared := map[string]labels{}
	var lbls []byte
	for rs.Next() {
		r := agentRow{WorkspaceID: ws}
		if err := rs.Scan(&r.ID, &lbls, &r.AutoRestart); err != nil {
			return nil, fmt.Errorf("read agents: %w", err)
		}
		if string(lbls) != "{}" {
			l, ok := shared[string(lbls)]
			if !ok {
				if err := json.Unmarshal(lbls, &l); err != nil {
					return nil, fmt.Errorf("read the labels of agent %s: %w", r.ID, err)
				}
				if len(shared) < 1024 {
					shared[string(lbls)] = l
				}
			}
			r.Labels = l
		}
		rows = append(rows, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read agents: %w", err)
	}
	return rows, nil
}

// maxTargetGroups bounds the groups DesiredConfigs compares each agent
// with; agents past them get their own update.
const maxTargetGroups = 64

// targetGroup is the agents whose configuration is u: the targets the
// configuration of version asked about, in order, answered as decisions,
// and the policy.
type targetGroup struct {
	targets     []vhosts.TargetAgents
	decisions   []bool
	autoRestart bool
	u           *agentv1.ConfigUpdate
}

// record notes that target t was asked about and answered ok.
func (g *targetGroup) record(t vhosts.TargetAgents, ok bool) {
	g.targets = append(g.targets, t)
	g.decisions = append(g.decisions, ok)
}

// has reports whether ag's configuration is g's: building it asks about
// the same targets in turn, so the same answers give the same update.
func (g *targetGroup) has(ag agentRow) bool {
	if ag.AutoRestart != g.autoRestart {
		return false
	}
	lbls := map[string]string(ag.Labels)
	for i, t := range g.targets {
		if t.Matches(ag.ID, lbls) != g.decisions[i] {
			return false
		}
	}
	return true
}

func (s *Service) desiredFor(ctx context.Context, ag agentRow) (*agentv1.ConfigUpdate, error) {
	version, err := s.vh.CurrentVersion(ctx, ag.WorkspaceID)
	if err != nil {
		return nil, fmt.Errorf("desired config of agent %s: %w", ag.ID, err)
	}
	return s.desiredAt(ctx, ag, version, nil, nil)
}

// desiredAt is the agent's configuration at version; memo, when not nil,
// keeps the certificate material read, by set of certificate ids; record,
// when not nil, is told each target asked about and the answer.
func (s *Service) desiredAt(ctx context.Context, ag agentRow, version int64, memo map[string]map[string]*agentv1.Certificate, record func(vhosts.TargetAgents, bool)) (*agentv1.ConfigUpdate, error) {
	lbls := map[string]string(ag.Labels)
	u, err := s.vh.DesiredConfig(ctx, ag.WorkspaceID, version, func(t vhosts.TargetAgents) bool {
		ok := t.Matches(ag.ID, lbls)
		if record != nil {
			record(t, ok)
		}
		return ok
	})
	if err != nil {
		return nil, fmt.Errorf("desired config of agent %s: %w", ag.ID, err)
	}
	if len(u.Certificates) > 0 {
		ids := make([]uuid.UUID, 0, len(u.Certificates))
		for id := range u.Certificates {
			if cid, err := uuid.Parse(id); err == nil {
				ids = append(ids, cid)
			}
		}
		key := fmt.Sprint(sortedIDs(ids))
		material, ok := memo[key]
		if !ok {
			var err error
			if material, err = s.certs.Material(ctx, nil, ids); err != nil {
				return nil, fmt.Errorf("desired config of agent %s: %w", ag.ID, err)
			}
			if memo != nil {
				memo[key] = material
			}
		}
		for id := range u.Certificates {
			if m, ok := material[id]; ok {
				u.Certificates[id] = m
			} else {
				// Pending or failed issuance: the reference stays without
				// material and the agent reports what nginx says about it.
				s.logger.WarnContext(ctx, "certificate without material in an agent's configuration",
					"agent_id", ag.ID, "certificate_id", id)
			}
		}
	}
	u.AgentPolicy = &agentv1.AgentPolicy{AutoRestart: ag.AutoRestart}
	u.Checksum = Checksum(u)
	u.ConfigId = fmt.Sprintf("v%d-%s", u.Version, u.Checksum[:12])
	return u, nil
}
