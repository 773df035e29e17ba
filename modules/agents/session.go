package agents

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/jsonenc"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// This file is the database side of the agents' gRPC sessions: registration
// and reconnects, health reports, configuration statuses, command results,
// and marking silent agents offline.

// errGone: the agent was deleted, or the stream is no longer its current one
// (it reconnected elsewhere, or was marked offline); the stream must end.
var errGone = errors.New("agent deleted or stream superseded")

// connectParams describe a stream's first message.
type connectParams struct {
	Req *agentv1.RegistrationRequest
	// Leaf is the verified client certificate (reconnects); nil when
	// registering with a token.
	Leaf     *x509.Certificate
	PeerIP   string
	Replica  string
	StreamID uuid.UUID
}

// connected is an agent whose stream was accepted.
type connected struct {
	Agent agentRow
	OrgID uuid.UUID
	// CertificatePEM is a client certificate signed in this step (first
	// registration, or renewal from a CSR in a reconnect's hello).
	CertificatePEM string
	// PrivateKeyPEM is the key generated for an agent that registered
	// without a CSR; it is sent once and never stored.
	PrivateKeyPEM string
}

func deploymentMode(m agentv1.DeploymentMode) string {
	switch m {
	case agentv1.DeploymentMode_DOCKER_SIDECAR:
		return "docker_sidecar"
	case agentv1.DeploymentMode_KUBERNETES_SIDECAR:
		return "kubernetes_sidecar"
	case agentv1.DeploymentMode_STANDALONE:
		return "standalone"
	}
	return ""
}

// clip bounds a string an agent sends before it is stored: valid UTF-8 without
// NUL bytes (PostgreSQL text refuses them), at most n bytes.
func clip(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\x00", "")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// stateOf is an agent's state from its apply status and last health report
// (nil: none yet): degraded when nginx is not running, the last apply failed
// or alerts are active, else online.
func stateOf(applyStatus string, h *healthDoc) string {
	if applyStatus == ApplyFailed || applyStatus == ApplyRolledBack {
		return StateDegraded
	}
	if h != nil && (!h.NginxRunning || len(h.Alerts) > 0) {
		return StateDegraded
	}
	return StateOnline
}

// connect accepts a stream's first message, in one transaction:
//
//  1. with a token: the token must exist, not be revoked, used or expired,
//     and the claimed hostname, the peer address and the token's labels must
//     pass the workspace's registration ACL (a denial burns the token, see
//     redeemToken); the CSR is signed (CN = agent id), or without a CSR a key
//     is generated for the agent and its certificate signed (the key is
//     returned once, never stored); the serial is recorded, the token is
//     used up; without a token: the verified client certificate's CN names
//     the agent, which must exist, and its serial must be the one recorded (a
//     CSR in the hello renews the certificate);
//  2. the agent's row takes what it said about itself (hostname, reported
//     ip_address, version, capabilities, deployment mode; labels stay the
//     admins'), the peer address the master saw, its state (online, or
//     degraded after a failed apply), this replica and stream;
//  3. agent.connected is published and OpConnected notified, so a stale
//     stream of the agent on another replica is closed.
//
// A refusal is a *refusal; nothing is changed then, except what a policy
// denial records.
func (s *Service) connect(ctx context.Context, p connectParams) (connected, error) {
	var out connected
	// committed is a refusal whose writes (a burned token) must persist.
	var committed *refusal
	ctx = app.WithRequestInfo(ctx, app.RequestInfo{IP: p.PeerIP})
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.now()
		var row agentRow
		var err error
		registering := p.Req.GetToken() != ""
		if registering {
			row, err = s.redeemToken(ctx, tx, p, now)
		} else {
			row, err = identify(tx, p.Leaf, true)
		}
		if ref := (*refusal)(nil); errors.As(err, &ref) && ref.commit {
			committed = ref
			return nil
		}
		if err != nil {
			return err
		}
		switch csr := p.Req.GetCsrPem(); {
		case registering && csr == "":
			// A client following the contract's proto sends no CSR: it gets
			// a key generated here, sent once and never stored.
			certPEM, keyPEM, serial, notAfter, err := s.ca.IssueAgentKey(row.ID, now)
			if err != nil {
				return err
			}
			row.CertSerial, row.CertExpiresAt, out.CertificatePEM, out.PrivateKeyPEM = &serial, &notAfter, certPEM, keyPEM
		case csr != "":
			certPEM, serial, notAfter, err := s.ca.SignAgentCSR(csr, row.ID, now)
			if errors.Is(err, errBadCSR) {
				return &refusal{reason: RefusedBadCSR}
			}
			if err != nil {
				return err
			}
			row.CertSerial, row.CertExpiresAt, out.CertificatePEM = &serial, &notAfter, certPEM
		}
		if registering {
			row.RegisteredAt = &now
			row.RegistrationError = ""
		}
		if h := clip(p.Req.GetHostname(), 253); h != "" {
			row.Hostname = h
		}
		// Both addresses are kept: what the agent says about itself (a valid
		// IP or nothing) and what the master saw.
		row.IPAddress = ""
		if ip, err := netip.ParseAddr(p.Req.GetIpAddress()); err == nil {
			row.IPAddress = ip.String()
		}
		row.PeerAddress = p.PeerIP
		if v := clip(p.Req.GetVersion(), 64); v != "" {
			row.Version = v
		}
		if caps := p.Req.GetCapabilities(); caps != nil {
			row.Capabilities = make(textArray, 0, min(len(caps), 64))
			for _, c := range caps[:min(len(caps), 64)] {
				row.Capabilities = append(row.Capabilities, clip(c, 64))
			}
		}
		if m := deploymentMode(p.Req.GetDeploymentMode()); m != "" {
			row.DeploymentMode = m
		}
		row.State = stateOf(row.ApplyStatus, nil)
		row.LastSeenAt = &now
		row.ConnectedReplica = p.Replica
		streamID := p.StreamID
		row.StreamID = &streamID
		row.UpdatedAt = now
		err = tx.Model(&agentRow{}).Where("id = ?", row.ID).Select(
			"hostname", "ip_address", "peer_address", "version", "capabilities", "deployment_mode", "state", "last_seen_at",
			"connected_replica", "stream_id", "cert_serial", "cert_expires_at", "registered_at", "registration_error", "updated_at",
		).Updates(&row).Error
		if err != nil {
			return fmt.Errorf("record connection of agent %s: %w", row.ID, err)
		}
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		out.Agent, out.OrgID = row, orgID
		if registering {
			if err := app.Audit(ctx, tx, app.AuditParams{
				OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: ObjectAgent + ".register",
				ObjectType: ObjectAgent, ObjectID: row.ID.String(), After: row.agent(),
			}); err != nil {
				return err
			}
		}
		if err := notify(tx, AgentNotice{AgentID: row.ID, Op: OpConnected, Replica: p.Replica, StreamID: &streamID}); err != nil {
			return err
		}
		return s.publish(ctx, tx, app.Event{
			Type: EventAgentConnected, WorkspaceID: row.WorkspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{"agent_id": row.ID.String(), "hostname": row.Hostname, "ip_address": row.IPAddress, "peer_address": row.PeerAddress},
		})
	})
	if err != nil {
		return connected{}, err
	}
	if committed != nil {
		return connected{}, committed
	}
	return out, nil
}

// redeemToken checks a registration token and the registration ACL, and uses
// the token up. It returns the agent's row, locked.
//
// The ACL is checked on the hostname the agent claims, the peer address the
// master sees and the labels set on the token. A denial burns the token
// (revoked, with the reason in agent_tokens.refusal) and records the reason
// on the agent (registration_error) and in the audit log, so the same token
// cannot be retried with another claimed hostname; the returned refusal has
// commit set, as those writes must persist.
func (s *Service) redeemToken(ctx context.Context, tx *gorm.DB, p connectParams, now time.Time) (agentRow, error) {
	req := p.Req
	var tok tokenRow
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&tok, "token_hash = ?", hashToken(req.GetToken())).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return agentRow{}, &refusal{reason: RefusedUnknownToken}
	}
	if err != nil {
		return agentRow{}, fmt.Errorf("read registration token: %w", err)
	}
	switch {
	case tok.RevokedAt != nil && tok.Refusal != "":
		return agentRow{}, &refusal{reason: RefusedTokenBurned, permission: true}
	case tok.RevokedAt != nil:
		return agentRow{}, &refusal{reason: RefusedTokenRevoked}
	case tok.UsedAt != nil:
		return agentRow{}, &refusal{reason: RefusedTokenUsed}
	case !now.Before(tok.ExpiresAt):
		return agentRow{}, &refusal{reason: RefusedTokenExpired}
	}
	row, err := lockAgent(tx, tok.AgentID)
	if errors.Is(err, ErrAgentNotFound) {
		return agentRow{}, &refusal{reason: RefusedUnknownToken}
	}
	if err != nil {
		return agentRow{}, err
	}
	policy, err := loadPolicy(tx, row.WorkspaceID)
	if err != nil {
		return agentRow{}, err
	}
	who := Registrant{Hostname: clip(req.GetHostname(), 253), PeerAddress: p.PeerIP, Labels: row.Labels}
	if d := policy.Check(who); d != nil {
		return agentRow{}, s.burnToken(ctx, tx, tok, row, who, clip(req.GetIpAddress(), 64), d, now)
	}
	if err := tx.Model(&tokenRow{}).Where("id = ?", tok.ID).Update("used_at", now).Error; err != nil {
		return agentRow{}, fmt.Errorf("use registration token of agent %s: %w", row.ID, err)
	}
	return row, nil
}

// burnToken records a registration the policy denied: the token is revoked
// with the reason, the agent's registration_error says why, an audit entry
// "agent.register_refused" keeps the attempt. It returns the refusal to send,
// or an error if recording failed.
func (s *Service) burnToken(ctx context.Context, tx *gorm.DB, tok tokenRow, row agentRow, who Registrant, reportedIP string, d *PolicyDenial, now time.Time) error {
	peer := who.PeerAddress
	if peer == "" {
		peer = "unknown"
	}
	detail := fmt.Sprintf("denied by the registration policy: %s (claimed hostname %q, peer address %s, reported ip_address %q); the token is burned, create a new one",
		d.Detail, who.Hostname, peer, reportedIP)
	err := tx.Model(&tokenRow{}).Where("id = ?", tok.ID).Updates(map[string]any{"revoked_at": now, "refusal": clip(d.Detail, 2048)}).Error
	if err != nil {
		return fmt.Errorf("burn registration token of agent %s: %w", row.ID, err)
	}
	err = tx.Model(&agentRow{}).Where("id = ?", row.ID).Updates(map[string]any{"registration_error": clip(detail, 4096), "updated_at": now}).Error
	if err != nil {
		return fmt.Errorf("record refused registration of agent %s: %w", row.ID, err)
	}
	orgID, err := workspaceOrg(tx, row.WorkspaceID)
	if err != nil {
		return err
	}
	if err := app.Audit(ctx, tx, app.AuditParams{
		OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: ObjectAgent + ".register_refused",
		ObjectType: ObjectAgent, ObjectID: row.ID.String(),
		After: map[string]any{
			"hostname": who.Hostname, "peer_address": who.PeerAddress, "ip_address": reportedIP, "labels": who.Labels,
			"denied_by": d.Kind, "reason": d.Detail,
		},
	}); err != nil {
		return err
	}
	s.logger.WarnContext(ctx, "agents: registration denied by the registration policy; token burned",
		"agent_id", row.ID, "workspace_id", row.WorkspaceID, "hostname", who.Hostname, "peer_address", who.PeerAddress,
		"denied_by", d.Kind, "reason", d.Detail)
	reason := RefusedHostnameDeny
	switch d.Kind {
	case PatternPeerAddress:
		reason = RefusedAddressDeny
	case PatternLabel:
		reason = RefusedLabelsDeny
	}
	return &refusal{reason: reason, permission: true, commit: true}
}

// identify finds the agent a verified client certificate belongs to: its CN
// is the agent's id, and its serial must be the one recorded for the agent
// (deleting the agent or registering it again revokes older certificates).
func identify(tx *gorm.DB, leaf *x509.Certificate, lock bool) (agentRow, error) {
	if leaf == nil {
		return agentRow{}, &refusal{reason: RefusedNoCertificate}
	}
	id, err := uuid.Parse(leaf.Subject.CommonName)
	if err != nil {
		return agentRow{}, &refusal{reason: RefusedUnknownAgent}
	}
	q := tx
	if lock {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	var row agentRow
	err = q.Take(&row, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return agentRow{}, &refusal{reason: RefusedUnknownAgent}
	}
	if err != nil {
		return agentRow{}, fmt.Errorf("read agent %s: %w", id, err)
	}
	if row.CertSerial == nil || *row.CertSerial != serialHex(leaf.SerialNumber) {
		return agentRow{}, &refusal{reason: RefusedCertRevoked}
	}
	return row, nil
}

// Identify returns the agent a verified client certificate belongs to (for
// the unary RPCs), or a *refusal.
func (s *Service) identify(ctx context.Context, leaf *x509.Certificate) (agentRow, error) {
	return identify(s.db.WithContext(ctx), leaf, false)
}

// disconnect records that stream streamID of an agent ended: if it is still
// the agent's current stream, the agent goes offline, its unanswered commands
// fail, and agent.disconnected is published. For a deleted agent only the
// event is published.
func (s *Service) disconnect(ctx context.Context, agentID, workspaceID, orgID, streamID uuid.UUID, reason string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.now()
		ev := app.Event{
			Type: EventAgentDisconnected, WorkspaceID: workspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{"agent_id": agentID.String(), "reason": reason},
		}
		if reason == ReasonDeleted {
			return s.publish(ctx, tx, ev)
		}
		res := tx.Model(&agentRow{}).Where("id = ? AND stream_id = ?", agentID, streamID).Updates(map[string]any{
			"state": StateOffline, "connected_replica": "", "stream_id": nil, "updated_at": now,
		})
		if res.Error != nil {
			return fmt.Errorf("record disconnection of agent %s: %w", agentID, res.Error)
		}
		if res.RowsAffected == 0 {
			return nil
		}
		if err := s.failOpenCommands(tx, []uuid.UUID{agentID}, "the agent disconnected before answering"); err != nil {
			return err
		}
		return s.publish(ctx, tx, ev)
	})
}

// failOpenCommands fails the pending and sent commands of agents and wakes
// whoever waits for them.
func (s *Service) failOpenCommands(tx *gorm.DB, agentIDs []uuid.UUID, message string) error {
	var failed []commandRow
	err := tx.Model(&failed).Clauses(clause.Returning{Columns: []clause.Column{{Name: "id"}, {Name: "agent_id"}}}).
		Where("agent_id IN ? AND status IN ?", agentIDs, []string{CommandPending, CommandSent}).
		Updates(map[string]any{"status": CommandFailed, "message": message, "finished_at": s.now()}).Error
	if err != nil {
		return fmt.Errorf("fail open commands: %w", err)
	}
	for _, c := range failed {
		id := c.ID
		if err := notify(tx, AgentNotice{AgentID: c.AgentID, Op: OpCommandResult, CommandID: &id}); err != nil {
			return err
		}
	}
	return nil
}

// healthOf summarizes a HealthReport.
func healthOf(rep *agentv1.HealthReport, now time.Time) *healthDoc {
	h := &healthDoc{
		ConfigVersion:  rep.GetConfigVersion(),
		ConfigChecksum: clip(rep.GetConfigChecksum(), 128),
		Alerts:         []HealthAlert{},
		ReportedAt:     now,
	}
	if n := rep.GetNginx(); n != nil {
		h.NginxRunning, h.NginxPID, h.NginxUptimeSeconds = n.GetIsRunning(), n.GetPid(), n.GetUptimeSeconds()
		h.ActiveConnections, h.TotalRequests = n.GetActiveConnections(), n.GetTotalRequests()
		h.RequestsPerSecond = float64(n.GetRequestsPerSecond())
	}
	if m := rep.GetSystem(); m != nil {
		h.CPUPercent, h.LoadAverage1m = float64(m.GetCpuPercent()), float64(m.GetLoadAverage_1M())
		h.MemoryUsedBytes, h.MemoryTotalBytes = m.GetMemoryUsedBytes(), m.GetMemoryTotalBytes()
		h.DiskUsedBytes, h.DiskTotalBytes = m.GetDiskUsedBytes(), m.GetDiskTotalBytes()
	}
	for _, a := range rep.GetAlerts()[:min(len(rep.GetAlerts()), 50)] {
		h.Alerts = append(h.Alerts, HealthAlert{
			ID: clip(a.GetId(), 128), Severity: clip(a.GetSeverity(), 16), Message: clip(a.GetMessage(), 1024), Timestamp: a.GetTimestamp(),
		})
	}
	return h
}

func agentInfoOf(i *agentv1.AgentInfo) *AgentInfo {
	if i == nil {
		return nil
	}
	out := &AgentInfo{
		Version: clip(i.GetVersion(), 64), Commit: clip(i.GetCommit(), 64), BuildDate: clip(i.GetBuildDate(), 64),
		UptimeSeconds: i.GetUptimeSeconds(), Hostname: clip(i.GetHostname(), 253), Features: []string{},
	}
	for _, f := range i.GetFeatures()[:min(len(i.GetFeatures()), 64)] {
		out.Features = append(out.Features, clip(f, 64))
	}
	return out
}

// healthItem is one health report to record: from the agent's stream
// streamID, or (streamID nil) from the unary ReportHealth.
type healthItem struct {
	agentID  uuid.UUID
	streamID *uuid.UUID
	rep      *agentv1.HealthReport
}

// healthWrite is the agents row's columns a health report sets.
type healthWrite struct {
	ID               uuid.UUID       `json:"id"`
	Health           json.RawMessage `json:"health"`
	State            string          `json:"state"`
	ReportedChecksum string          `json:"reported_checksum"`
	Drift            bool            `json:"drift"`
	AgentInfo        json.RawMessage `json:"agent_info,omitempty"`
	Version          string          `json:"version,omitempty"`
}

// appendJSON appends w as a JSON object, as encoding/json would write it,
// without encoding/json's second pass over the documents already encoded
// (Health, AgentInfo): a thousand reports a second go through here.
func (w healthWrite) appendJSON(b []byte) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, w.ID.String()...)
	b = append(b, `","health":`...)
	b = append(b, w.Health...)
	b = append(b, `,"state":`...)
	b = jsonenc.AppendString(b, w.State)
	b = append(b, `,"reported_checksum":`...)
	b = jsonenc.AppendString(b, w.ReportedChecksum)
	b = append(b, `,"drift":`...)
	b = strconv.AppendBool(b, w.Drift)
	if w.AgentInfo != nil {
		b = append(b, `,"agent_info":`...)
		b = append(b, w.AgentInfo...)
	}
	if w.Version != "" {
		b = append(b, `,"version":`...)
		b = jsonenc.AppendString(b, w.Version)
	}
	return append(b, '}')
}

// recordHealth stores one health report (see recordHealthBatch); errGone
// when the agent is deleted or streamID is no longer its stream.
func (s *Service) recordHealth(ctx context.Context, agentID uuid.UUID, streamID *uuid.UUID, rep *agentv1.HealthReport) error {
	errs, err := s.recordHealthBatch(ctx, []healthItem{{agentID: agentID, streamID: streamID, rep: rep}})
	if err != nil {
		return err
	}
	return errs[0]
}

// recordHealthBatch stores health reports in one transaction, in order: for
// each, the health summary, agent info, last_seen_at, state, the checksum
// the agent runs and whether it drifted from the one pushed, and the
// upstream servers' health-check verdicts (health.go, publishing
// upstream.health on changes). New alerts are published as health.alert,
// and an agent coming back from offline as agent.connected. The agents'
// rows are locked in id order and written with one statement. errs[i] is
// errGone when item i's agent is deleted or its stream is no longer the
// agent's; err is a failure of the whole batch.
func (s *Service) recordHealthBatch(ctx context.Context, items []healthItem) (errs []error, err error) {
	errs = make([]error, len(items))
	ids := make([]uuid.UUID, 0, len(items))
	for _, it := range items {
		ids = append(ids, it.agentID)
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.now()
		rows, byID, err := lockForReports(tx, ids, false)
		if err != nil {
			return err
		}
		orgOf := orgsOf(tx)
		writes := make(map[uuid.UUID]healthWrite, len(rows))
		for i, it := range items {
			row := byID[it.agentID]
			if row == nil || it.streamID != nil && (row.StreamID == nil || *row.StreamID != *it.streamID) {
				errs[i] = errGone
				continue
			}
			orgID, err := orgOf(row.WorkspaceID)
			if err != nil {
				return err
			}
			w, err := s.applyHealth(ctx, tx, row, orgID, it.rep, now)
			if err != nil {
				return err
			}
			if prev, ok := writes[row.ID]; ok && w.AgentInfo == nil {
				w.AgentInfo, w.Version = prev.AgentInfo, prev.Version
			}
			writes[row.ID] = w
		}
		if len(writes) == 0 {
			return nil
		}
		data := make([]byte, 0, len(writes)*512)
		data = append(data, '[')
		for _, w := range writes {
			if len(data) > 1 {
				data = append(data, ',')
			}
			data = w.appendJSON(data)
		}
		data = append(data, ']')
		err = tx.Exec(`UPDATE agents AS a SET health = u.health, last_seen_at = ?,
				state = u.state, reported_checksum = u.reported_checksum, drift = u.drift, updated_at = ?,
				agent_info = coalesce(u.agent_info, a.agent_info), version = coalesce(nullif(u.version, ''), a.version)
			FROM jsonb_to_recordset(?::jsonb) AS u(id uuid, health jsonb, state text, reported_checksum text,
				drift boolean, agent_info jsonb, version text)
			WHERE a.id = u.id`, now, now, string(data)).Error
		if err != nil {
			return fmt.Errorf("record health reports: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return errs, nil
}

// lockForReports locks the agents ids in tx, in id order, and reads
// what recording their reports needs: the columns applyHealth uses, or
// recordStatuses (forStatuses), and of the health document only what
// each compares. Rows are scanned by hand: thousands of agents a second
// pass through here.
// It returns the rows in id order and by id.
func lockForReports(tx *gorm.DB, ids []uuid.UUID, forStatuses bool) ([]agentRow, map[uuid.UUID]*agentRow, error) {
	ids = sortedIDs(ids)
	// Health reports replace the document and the upstream health, and
	// compare alerts; statuses need what stateOf reads.
	health, upstream := "jsonb_build_object('alerts', coalesce(health->'alerts', '[]'))", "upstream_health"
	if forStatuses {
		health = `CASE WHEN jsonb_typeof(health) = 'object' THEN jsonb_build_object(
			'nginx_running', coalesce(health->'nginx_running', 'false'), 'alerts', coalesce(health->'alerts', '[]')) END`
		upstream = "'[]'::jsonb"
	}
	rs, err := tx.Raw(`SELECT id, stream_id, workspace_id, state, apply_status, apply_error, applied_version,
			applied_checksum, desired_checksum, hostname, ip_address, peer_address, `+health+`, `+upstream+`
		FROM agents WHERE id = ANY(?::uuid[]) ORDER BY id FOR UPDATE`, uuidArray(ids)).Rows()
	if err != nil {
		return nil, nil, fmt.Errorf("read %d agents: %w", len(ids), err)
	}
	defer rs.Close()
	rows := make([]agentRow, 0, len(ids))
	for rs.Next() {
		var r agentRow
		var healthJSON, upstreamJSON []byte
		if err := rs.Scan(&r.ID, &r.StreamID, &r.WorkspaceID, &r.State, &r.ApplyStatus, &r.ApplyError, &r.AppliedVersion,
			&r.AppliedChecksum, &r.DesiredChecksum, &r.Hostname, &r.IPAddress, &r.PeerAddress, &healthJSON, &upstreamJSON); err != nil {
			return nil, nil, fmt.Errorf("read agents: %w", err)
		}
		switch string(healthJSON) {
		case "", "null":
		case `{"alerts": []}`: // most agents, most of the time
			r.Health = &healthDoc{Alerts: []HealthAlert{}}
		case `{"alerts": [], "nginx_running": true}`, `{"alerts": [], "nginx_running": false}`:
			r.Health = &healthDoc{Alerts: []HealthAlert{}, NginxRunning: string(healthJSON) == `{"alerts": [], "nginx_running": true}`}
		default:
			r.Health = &healthDoc{}
			if err := json.Unmarshal(healthJSON, r.Health); err != nil {
				return nil, nil, fmt.Errorf("read health of agent %s: %w", r.ID, err)
			}
		}
		if len(upstreamJSON) > 2 { // not "[]"
			if err := json.Unmarshal(upstreamJSON, &r.UpstreamHealth); err != nil {
				return nil, nil, fmt.Errorf("read upstream health of agent %s: %w", r.ID, err)
			}
		}
		rows = append(rows, r)
	}
	if err := rs.Err(); err != nil {
		return nil, nil, fmt.Errorf("read agents: %w", err)
	}
	byID := make(map[uuid.UUID]*agentRow, len(rows))
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	return rows, byID, nil
}

// uuidArray is ids as one PostgreSQL array literal: a single parameter
// however many ids a batch has.
func uuidArray(ids []uuid.UUID) string {
	b := make([]byte, 0, 2+len(ids)*37)
	b = append(b, '{')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, id.String()...)
	}
	return string(append(b, '}'))
}

// sortedIDs sorts ids in place, in PostgreSQL's uuid order, without
// repeats: the order batches lock agents in.
func sortedIDs(ids []uuid.UUID) []uuid.UUID {
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(ids)
}

// orgsOf looks up workspaces' organizations in tx, each once.
func orgsOf(tx *gorm.DB) func(ws uuid.UUID) (uuid.UUID, error) {
	seen := map[uuid.UUID]uuid.UUID{}
	return func(ws uuid.UUID) (uuid.UUID, error) {
		if id, ok := seen[ws]; ok {
			return id, nil
		}
		id, err := workspaceOrg(tx, ws)
		if err == nil {
			seen[ws] = id
		}
		return id, err
	}
}

// applyHealth works out what report rep of the agent of row (locked in tx)
// changes, publishes its events and stores its upstream health, and
// updates row as the next report in the same batch must see it.
func (s *Service) applyHealth(ctx context.Context, tx *gorm.DB, row *agentRow, orgID uuid.UUID, rep *agentv1.HealthReport, now time.Time) (healthWrite, error) {
	agentID := row.ID
	h := healthOf(rep, now)
	prev := map[string]bool{}
	if row.Health != nil {
		for _, a := range row.Health.Alerts {
			prev[a.ID] = true
		}
	}
	inFlight := slices.Contains([]string{ApplyPending, ApplyValidating, ApplyApplying}, row.ApplyStatus)
	drift := h.ConfigChecksum != "" && row.DesiredChecksum != "" && h.ConfigChecksum != row.DesiredChecksum && !inFlight
	state := stateOf(row.ApplyStatus, h)
	healthJSON, err := json.Marshal(h)
	if err != nil {
		return healthWrite{}, fmt.Errorf("record health of agent %s: %w", agentID, err)
	}
	w := healthWrite{ID: agentID, Health: healthJSON, State: state, ReportedChecksum: h.ConfigChecksum, Drift: drift}
	if info := agentInfoOf(rep.GetAgentInfo()); info != nil {
		if w.AgentInfo, err = json.Marshal(info); err != nil {
			return healthWrite{}, fmt.Errorf("record health of agent %s: %w", agentID, err)
		}
		w.Version = info.Version
	}
	if err := s.recordUpstreamHealth(ctx, tx, *row, orgID, rep.GetUpstreamHealth(), now); err != nil {
		return healthWrite{}, err
	}
	if row.State == StateOffline || row.State == StatePending {
		if err := s.publish(ctx, tx, app.Event{
			Type: EventAgentConnected, WorkspaceID: row.WorkspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{"agent_id": agentID.String(), "hostname": row.Hostname, "ip_address": row.IPAddress, "peer_address": row.PeerAddress},
		}); err != nil {
			return healthWrite{}, err
		}
	}
	for _, a := range h.Alerts {
		if prev[a.ID] {
			continue
		}
		prev[a.ID] = true
		if err := s.publish(ctx, tx, app.Event{
			Type: EventHealthAlert, WorkspaceID: row.WorkspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{
				"agent_id": agentID.String(), "alert_id": a.ID, "severity": a.Severity,
				"message": a.Message, "metric": "", "value": nil,
			},
		}); err != nil {
			return healthWrite{}, err
		}
	}
	row.Health, row.State, row.ReportedChecksum, row.Drift = h, state, h.ConfigChecksum, drift
	row.UpstreamHealth = upstreamHealthOf(rep.GetUpstreamHealth())
	return w, nil
}

// pushItem is a configuration pushed (about to be sent) on the agent's
// stream streamID.
type pushItem struct {
	AgentID  uuid.UUID `json:"agent_id"`
	StreamID uuid.UUID `json:"stream_id"`
	Version  int64     `json:"version"`
	Checksum string    `json:"checksum"`
}

// recordRollout records in one transaction a batch of pushes, then a batch
// of statuses, then versions that left configurations unchanged
// (recordPushes, recordStatuses, recordUnchanged), their agents locked in
// id order first. pushErrs and statusErrs are the items' own errors; err is a
// failure of the whole batch, which then records nothing.
func (s *Service) recordRollout(ctx context.Context, pushes []pushItem, statuses []statusItem, unchanged []unchangedItem) (pushErrs, statusErrs []error, err error) {
	ids := make([]uuid.UUID, 0, len(pushes)+len(statuses)+len(unchanged))
	for _, it := range unchanged {
		ids = append(ids, it.AgentID)
	}
	for _, it := range pushes {
		ids = append(ids, it.AgentID)
	}
	for _, it := range statuses {
		ids = append(ids, it.agentID)
	}
	ids = sortedIDs(ids)
	kinds := 0
	for _, n := range []int{len(pushes), len(statuses), len(unchanged)} {
		if n > 0 {
			kinds++
		}
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// One kind locks its agents in order itself; several lock them
		// all first, so that no two transactions wait for each other.
		// The rows read then serve pushes and statuses alike, kept up to
		// date in memory as the pushes are written.
		var locked *lockedAgents
		if kinds > 1 {
			rows, byID, err := lockForReports(tx, ids, true)
			if err != nil {
				return err
			}
			locked = &lockedAgents{rows: rows, byID: byID}
		}
		answered := answeredPushes(pushes, statuses)
		var err error
		if len(pushes) > 0 {
			if pushErrs, err = s.recordPushes(tx, pushes, answered, locked); err != nil {
				return err
			}
		}
		if len(statuses) > 0 {
			if statusErrs, err = s.recordStatuses(ctx, tx, statuses, answered, locked); err != nil {
				return err
			}
		}
		if len(unchanged) > 0 {
			return s.recordUnchanged(tx, unchanged)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return pushErrs, statusErrs, nil
}

// lockedAgents are agents' rows locked in a transaction (lockForReports,
// with what statuses need), in id order and by id.
type lockedAgents struct {
	rows []agentRow
	byID map[uuid.UUID]*agentRow
}

// answeredPushes returns, by agent, the last push of pushes that a final
// status among statuses answers: recordPushes leaves such a push to
// recordStatuses, which writes it with its answer.
func answeredPushes(pushes []pushItem, statuses []statusItem) map[uuid.UUID]pushItem {
	if len(pushes) == 0 || len(statuses) == 0 {
		return nil
	}
	last := make(map[uuid.UUID]pushItem, len(pushes))
	for _, p := range pushes {
		last[p.AgentID] = p
	}
	out := map[uuid.UUID]pushItem{}
	for _, st := range statuses {
		p, ok := last[st.agentID]
		status := applyStatusOf(st.r.Status.GetStatus())
		final := status == ApplySuccess || status == ApplyFailed || status == ApplyRolledBack
		if ok && final && st.r.Current && st.r.Status.GetVersion() == p.Version && st.streamID == p.StreamID {
			out[st.agentID] = p
		}
	}
	return out
}

// recordPushes records in tx that configurations are being
// sent: each agent's desired version and checksum, apply_status pending, and
// the version's rollout to the agent pending. The rows are locked in id
// order and written with one statement each for the agents and the
// versions. errs[i] is errGone when item i's stream is no longer the
// agent's; err is a failure of the whole batch. Of several pushes to one
// agent in a batch the last counts. With locked (the agents' rows read and
// locked already), the rows are not read again, and those written are
// updated as the statuses after the pushes must see them.
func (s *Service) recordPushes(tx *gorm.DB, items []pushItem, answered map[uuid.UUID]pushItem, locked *lockedAgents) ([]error, error) {
	errs := make([]error, len(items))
	last := map[uuid.UUID]pushItem{}
	for _, it := range items {
		last[it.AgentID] = it
	}
	ids := make([]uuid.UUID, 0, len(last))
	for id := range last {
		ids = append(ids, id)
	}
	ids = sortedIDs(ids)
	now := s.now()
	type streamOf struct {
		ID       uuid.UUID
		StreamID *uuid.UUID
	}
	var streams []streamOf
	if locked != nil {
		for _, id := range ids {
			if r := locked.byID[id]; r != nil {
				streams = append(streams, streamOf{ID: id, StreamID: r.StreamID})
			}
		}
	} else if err := tx.Raw("SELECT id, stream_id FROM agents WHERE id = ANY(?::uuid[]) ORDER BY id FOR UPDATE", uuidArray(ids)).Scan(&streams).Error; err != nil {
		return nil, fmt.Errorf("read %d agents: %w", len(ids), err)
	}
	current := map[uuid.UUID]bool{}
	list := make([]pushItem, 0, len(streams))
	for _, l := range streams {
		if it := last[l.ID]; l.StreamID != nil && *l.StreamID == it.StreamID {
			current[l.ID] = true
			if _, ok := answered[l.ID]; !ok {
				list = append(list, it)
			}
		}
	}
	for i, it := range items {
		if !current[it.AgentID] {
			errs[i] = errGone
		}
	}
	if len(list) == 0 {
		return errs, nil
	}
	if err := execJSON(tx, "record configuration pushes", `UPDATE agents AS a SET desired_version = u.version,
				desired_checksum = u.checksum, apply_status = '`+ApplyPending+`', drift = false, updated_at = ?
			FROM jsonb_to_recordset(?::jsonb) AS u(agent_id uuid, version bigint, checksum text)
			WHERE a.id = u.agent_id`, list, now); err != nil {
		return nil, err
	}
	if err := execJSON(tx, "record the pushed versions", `INSERT INTO agent_config_results
				(agent_id, workspace_id, version, status, error_message, updated_at)
			SELECT a.id, a.workspace_id, u.version, '`+ApplyPending+`', '', ?
			FROM jsonb_to_recordset(?::jsonb) AS u(agent_id uuid, version bigint)
			JOIN agents a ON a.id = u.agent_id
			WHERE u.version >= 1
			ON CONFLICT (agent_id, version) DO UPDATE
			SET status = EXCLUDED.status, error_message = EXCLUDED.error_message, updated_at = EXCLUDED.updated_at`, list, now); err != nil {
		return nil, err
	}
	if locked != nil {
		for _, it := range list {
			r := locked.byID[it.AgentID]
			r.ApplyStatus, r.DesiredChecksum = ApplyPending, it.Checksum
		}
	}
	return errs, nil
}

func applyStatusOf(st agentv1.ConfigApplyStatus) string {
	switch st {
	case agentv1.ConfigApplyStatus_VALIDATING:
		return ApplyValidating
	case agentv1.ConfigApplyStatus_APPLYING:
		return ApplyApplying
	case agentv1.ConfigApplyStatus_SUCCESS:
		return ApplySuccess
	case agentv1.ConfigApplyStatus_FAILED:
		return ApplyFailed
	case agentv1.ConfigApplyStatus_ROLLED_BACK:
		return ApplyRolledBack
	}
	return ApplyPending
}

// statusReport is a ConfigStatus with what the hub knows of the push it
// answers.
type statusReport struct {
	Status *agentv1.ConfigStatus
	// Current: it answers the last configuration pushed on this stream.
	Current bool
	// Checksum of the configuration it answers ("" when unknown).
	Checksum string
	// SentAt is when that configuration was pushed (zero when unknown).
	SentAt time.Time
}

// statusItem is a ConfigStatus received on the agent's stream streamID.
type statusItem struct {
	agentID, streamID uuid.UUID
	r                 statusReport
}

// statusWrite is the agents row's columns a ConfigStatus sets.
type statusWrite struct {
	ID              uuid.UUID `json:"id"`
	ApplyStatus     string    `json:"apply_status"`
	ApplyError      string    `json:"apply_error"`
	AppliedVersion  int64     `json:"applied_version"`
	AppliedChecksum string    `json:"applied_checksum"`
	State           string    `json:"state"`
	// DesiredVersion and DesiredChecksum are the push this status answers,
	// when it was recorded together with it (answeredPushes).
	DesiredVersion  *int64  `json:"desired_version,omitempty"`
	DesiredChecksum *string `json:"desired_checksum,omitempty"`
}

// versionStatus is an agent's status of one version (agent_config_results).
type versionStatus struct {
	AgentID uuid.UUID `json:"agent_id"`
	Version int64     `json:"version"`
	Status  string    `json:"status"`
	Message string    `json:"error_message"`
}

// recordStatuses stores ConfigStatus messages in tx, in
// order. For each: the apply status (and error) when it answers the current
// push, the applied version and checksum on SUCCESS, the state, and the
// version's status for the agent (a final status of the current push also
// settles the later versions that left its configuration unchanged); final
// statuses (SUCCESS, FAILED, ROLLED_BACK) publish config.applied. The rows
// are locked in id order and written set-wise: one statement each for the
// agents, the versions' statuses and the settled versions. errs[i] is
// errGone when item i's stream is no longer the agent's; err is a failure of
// the whole batch.
func (s *Service) recordStatuses(ctx context.Context, tx *gorm.DB, items []statusItem, answered map[uuid.UUID]pushItem, locked *lockedAgents) ([]error, error) {
	errs := make([]error, len(items))
	now := s.now()
	if locked == nil {
		ids := make([]uuid.UUID, 0, len(items))
		for _, it := range items {
			ids = append(ids, it.agentID)
		}
		rows, byID, err := lockForReports(tx, ids, true)
		if err != nil {
			return nil, err
		}
		locked = &lockedAgents{rows: rows, byID: byID}
	}
	rows, byID := locked.rows, locked.byID
	type versionKey struct {
		agent   uuid.UUID
		version int64
	}
	written := map[uuid.UUID]bool{}
	results := map[versionKey]versionStatus{}
	var resultOrder []versionKey
	settles := map[uuid.UUID]versionStatus{}
	orgOf := orgsOf(tx)
	var events []app.Event
	for i, it := range items {
		row := byID[it.agentID]
		if row == nil || row.StreamID == nil || *row.StreamID != it.streamID {
			errs[i] = errGone
			continue
		}
		st := it.r.Status
		status := applyStatusOf(st.GetStatus())
		final := status == ApplySuccess || status == ApplyFailed || status == ApplyRolledBack
		applyStatus := row.ApplyStatus
		if it.r.Current {
			applyStatus = status
			row.ApplyStatus = status
			switch status {
			case ApplySuccess:
				row.ApplyError = ""
			case ApplyFailed, ApplyRolledBack:
				row.ApplyError = clip(st.GetErrorMessage(), 8192)
			}
		}
		if status == ApplySuccess && (it.r.Current || st.GetVersion() > row.AppliedVersion) {
			row.AppliedVersion = st.GetVersion()
			if it.r.Checksum != "" {
				row.AppliedChecksum = it.r.Checksum
			}
		}
		if row.State == StateOnline || row.State == StateDegraded {
			row.State = stateOf(applyStatus, row.Health)
		}
		written[row.ID] = true
		vs := versionStatus{AgentID: row.ID, Version: st.GetVersion(), Status: status, Message: clip(st.GetErrorMessage(), 8192)}
		if vs.Version >= 1 {
			k := versionKey{row.ID, vs.Version}
			if _, ok := results[k]; !ok {
				resultOrder = append(resultOrder, k)
			}
			results[k] = vs
		}
		if it.r.Current && final {
			settles[row.ID] = vs
		}
		if !final {
			continue
		}
		orgID, err := orgOf(row.WorkspaceID)
		if err != nil {
			return nil, err
		}
		var ms int64
		if !it.r.SentAt.IsZero() {
			ms = max(now.Sub(it.r.SentAt).Milliseconds(), 0)
		}
		events = append(events, app.Event{
			Type: EventConfigApplied, WorkspaceID: row.WorkspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{
				"agent_id": row.ID.String(), "config_id": st.GetConfigId(), "version": st.GetVersion(),
				"duration_ms": ms, "success": status == ApplySuccess,
				"status": status, "error_message": st.GetErrorMessage(),
			},
		})
	}
	if len(written) == 0 {
		return errs, nil
	}
	agentsData := make([]statusWrite, 0, len(written))
	for _, r := range rows {
		if written[r.ID] {
			w := statusWrite{ID: r.ID, ApplyStatus: r.ApplyStatus, ApplyError: r.ApplyError,
				AppliedVersion: r.AppliedVersion, AppliedChecksum: r.AppliedChecksum, State: r.State}
			if p, ok := answered[r.ID]; ok {
				w.DesiredVersion, w.DesiredChecksum = &p.Version, &p.Checksum
			}
			agentsData = append(agentsData, w)
		}
	}
	if err := execJSON(tx, "record configuration statuses", `UPDATE agents AS a SET apply_status = u.apply_status,
				apply_error = u.apply_error, applied_version = u.applied_version, applied_checksum = u.applied_checksum,
				state = u.state, updated_at = ?, last_seen_at = ?,
				desired_version = coalesce(u.desired_version, a.desired_version),
				desired_checksum = coalesce(u.desired_checksum, a.desired_checksum),
				drift = CASE WHEN u.desired_version IS NULL THEN a.drift ELSE false END
			FROM jsonb_to_recordset(?::jsonb) AS u(id uuid, apply_status text, apply_error text,
				applied_version bigint, applied_checksum text, state text, desired_version bigint, desired_checksum text)
			WHERE a.id = u.id`, agentsData, now, now); err != nil {
		return nil, err
	}
	if len(resultOrder) > 0 {
		list := make([]versionStatus, len(resultOrder))
		for i, k := range resultOrder {
			list[i] = results[k]
		}
		if err := execJSON(tx, "record the versions' statuses", `INSERT INTO agent_config_results
					(agent_id, workspace_id, version, status, error_message, updated_at)
				SELECT a.id, a.workspace_id, u.version, u.status, u.error_message, ?
				FROM jsonb_to_recordset(?::jsonb) AS u(agent_id uuid, version bigint, status text, error_message text)
				JOIN agents a ON a.id = u.agent_id
				ON CONFLICT (agent_id, version) DO UPDATE
				SET status = EXCLUDED.status, error_message = EXCLUDED.error_message, updated_at = EXCLUDED.updated_at`, list, now); err != nil {
			return nil, err
		}
	}
	if len(settles) > 0 {
		// The later versions still in flight left the configuration
		// as the settled push made it; versions this batch recorded
		// itself (updated at now) keep their own status.
		list := make([]versionStatus, 0, len(settles))
		for _, v := range settles {
			list = append(list, v)
		}
		if err := execJSON(tx, "settle the unchanged versions", `UPDATE agent_config_results AS r
					SET status = u.status, error_message = u.error_message, updated_at = n.now
				FROM (SELECT ?::timestamptz AS now) AS n,
					jsonb_to_recordset(?::jsonb) AS u(agent_id uuid, version bigint, status text, error_message text)
				WHERE r.agent_id = u.agent_id AND r.version > u.version AND r.updated_at < n.now
					AND r.status IN ('`+ApplyPending+`', '`+ApplyValidating+`', '`+ApplyApplying+`')`, list, now); err != nil {
			return nil, err
		}
	}
	if err := s.publishAll(ctx, tx, events); err != nil {
		return nil, err
	}
	return errs, nil
}

// jsonRow is a row a rollout statement reads with jsonb_to_recordset,
// encoded by hand: a rollout writes thousands of them.
type jsonRow interface {
	appendJSON(b []byte) []byte
}

// execJSON runs query in tx with args and, last, rows encoded as a JSON
// array (for jsonb_to_recordset).
func execJSON[T jsonRow](tx *gorm.DB, what, query string, rows []T, args ...any) error {
	data := make([]byte, 0, 2+len(rows)*256)
	data = append(data, '[')
	for i := range rows {
		if i > 0 {
			data = append(data, ',')
		}
		data = rows[i].appendJSON(data)
	}
	data = append(data, ']')
	if err := tx.Exec(query, append(args, string(data))...).Error; err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// appendField appends "name": (after a comma unless first).
func appendField(b []byte, name string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func appendUUID(b []byte, id uuid.UUID) []byte {
	b = append(b, '"')
	b = append(b, id.String()...)
	return append(b, '"')
}

func (p pushItem) appendJSON(b []byte) []byte {
	b = appendUUID(appendField(append(b, '{'), "agent_id", true), p.AgentID)
	b = appendUUID(appendField(b, "stream_id", false), p.StreamID)
	b = strconv.AppendInt(appendField(b, "version", false), p.Version, 10)
	b = jsonenc.AppendString(appendField(b, "checksum", false), p.Checksum)
	return append(b, '}')
}

func (u unchangedItem) appendJSON(b []byte) []byte {
	b = appendUUID(appendField(append(b, '{'), "agent_id", true), u.AgentID)
	b = strconv.AppendInt(appendField(b, "version", false), u.Version, 10)
	return append(b, '}')
}

func (v versionStatus) appendJSON(b []byte) []byte {
	b = appendUUID(appendField(append(b, '{'), "agent_id", true), v.AgentID)
	b = strconv.AppendInt(appendField(b, "version", false), v.Version, 10)
	b = jsonenc.AppendString(appendField(b, "status", false), v.Status)
	b = jsonenc.AppendString(appendField(b, "error_message", false), v.Message)
	return append(b, '}')
}

func (w statusWrite) appendJSON(b []byte) []byte {
	b = appendUUID(appendField(append(b, '{'), "id", true), w.ID)
	b = jsonenc.AppendString(appendField(b, "apply_status", false), w.ApplyStatus)
	b = jsonenc.AppendString(appendField(b, "apply_error", false), w.ApplyError)
	b = strconv.AppendInt(appendField(b, "applied_version", false), w.AppliedVersion, 10)
	b = jsonenc.AppendString(appendField(b, "applied_checksum", false), w.AppliedChecksum)
	b = jsonenc.AppendString(appendField(b, "state", false), w.State)
	if w.DesiredVersion != nil {
		b = strconv.AppendInt(appendField(b, "desired_version", false), *w.DesiredVersion, 10)
	}
	if w.DesiredChecksum != nil {
		b = jsonenc.AppendString(appendField(b, "desired_checksum", false), *w.DesiredChecksum)
	}
	return append(b, '}')
}

// claimCommands marks the agent's pending commands sent and returns them,
// oldest first; only the replica holding the agent's current stream
// (streamID) gets them.
func (s *Service) claimCommands(ctx context.Context, agentID, streamID uuid.UUID) ([]commandRow, error) {
	var claimed []commandRow
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ids []uuid.UUID
		err := tx.Raw(`UPDATE agent_commands SET status = ?, sent_at = ?
			WHERE agent_id = ? AND status = ? AND EXISTS (SELECT 1 FROM agents WHERE id = ? AND stream_id = ?)
			RETURNING id`, CommandSent, s.now(), agentID, CommandPending, agentID, streamID).Scan(&ids).Error
		if err != nil {
			return fmt.Errorf("claim commands of agent %s: %w", agentID, err)
		}
		if len(ids) == 0 {
			return nil
		}
		if err := tx.Where("id IN ?", ids).Order("created_at, id").Find(&claimed).Error; err != nil {
			return fmt.Errorf("claim commands of agent %s: %w", agentID, err)
		}
		return nil
	})
	return claimed, err
}

// recordCommandResult stores an agent's answer to a command and wakes whoever
// waits for it. Answers to unknown or finished commands are ignored.
func (s *Service) recordCommandResult(ctx context.Context, agentID uuid.UUID, res *agentv1.CommandResult) error {
	id, err := uuid.Parse(res.GetCommandId())
	if err != nil {
		return nil
	}
	status := CommandFailed
	if res.GetSuccess() {
		status = CommandSucceeded
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		r := tx.Model(&commandRow{}).Where("id = ? AND agent_id = ? AND status IN ?", id, agentID, []string{CommandPending, CommandSent}).
			Updates(map[string]any{
				"status": status, "message": clip(res.GetMessage(), 4096), "output": clip(res.GetOutput(), 65536),
				"finished_at": s.now(),
			})
		if r.Error != nil {
			return fmt.Errorf("record result of command %s: %w", id, r.Error)
		}
		if r.RowsAffected == 0 {
			return nil
		}
		return notify(tx, AgentNotice{AgentID: agentID, Op: OpCommandResult, CommandID: &id})
	})
}

// MarkOffline marks offline every online or degraded agent not heard from
// for three heartbeat intervals before now, fails their open commands and
// publishes agent.disconnected (reason connection_timeout). It returns how
// many agents it marked. The River job agents.mark_offline runs it; it covers
// agents whose replica died, as each replica's hub closes silent streams
// itself: an agent whose stream a live replica holds (its replicas row
// refreshed within app.ReplicaDownAfter, not stopped) is left to that
// replica. Its last_seen_at lags when the replica could not write for a
// while (a database outage), and marking it offline would end a stream
// that is alive and lose the answers in flight on it.
func (s *Service) MarkOffline(ctx context.Context, now time.Time) (int, error) {
	cutoff := now.Add(-3 * s.heartbeat)
	replicaCutoff := now.Add(-app.ReplicaDownAfter)
	var n int
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []struct {
			ID             uuid.UUID
			WorkspaceID    uuid.UUID
			OrganizationID uuid.UUID
		}
		err := tx.Raw(`UPDATE agents AS a SET state = ?, connected_replica = '', stream_id = NULL, updated_at = ?
			FROM workspaces AS w
			WHERE w.id = a.workspace_id AND a.state IN (?, ?) AND (a.last_seen_at IS NULL OR a.last_seen_at < ?)
				AND NOT EXISTS (SELECT 1 FROM replicas AS r WHERE r.id = a.connected_replica
					AND r.stopped_at IS NULL AND r.last_seen_at > ?)
			RETURNING a.id, a.workspace_id, w.organization_id`,
			StateOffline, now.UTC(), StateOnline, StateDegraded, cutoff.UTC(), replicaCutoff.UTC()).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("mark silent agents offline: %w", err)
		}
		n = len(rows)
		if n == 0 {
			return nil
		}
		ids := make([]uuid.UUID, n)
		for i, r := range rows {
			ids[i] = r.ID
		}
		if err := s.failOpenCommands(tx, ids, "the agent went offline before answering"); err != nil {
			return err
		}
		for _, r := range rows {
			if err := s.publish(ctx, tx, app.Event{
				Type: EventAgentDisconnected, WorkspaceID: r.WorkspaceID, OrgID: r.OrganizationID, Timestamp: now.UTC(),
				Data: map[string]any{"agent_id": r.ID.String(), "reason": ReasonTimeout},
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}
