package agents

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// Limits of the values people give agents.
const (
	MaxNameLength        = 100
	MaxLabels            = 64
	MaxLabelLength       = 63
	MaxPatterns          = 100
	MaxPatternLength     = 253
	DefaultTokenHours    = 24
	MaxTokenHours        = 720
	MaxStopTimeout       = 3600
	defaultReloadTimeout = 15 * time.Second
)

// TokenPrefix starts every registration token.
const TokenPrefix = "nxmesh_agent_"

// Service is the domain logic of the fleet and the only writer of this
// module's tables: agents and their tokens, registration ACLs, commands, and
// what agents report over gRPC (session.go).
type Service struct {
	db          *gorm.DB
	logger      *slog.Logger
	vh          *vhosts.Service
	certs       *certs.Service
	ca          *CA
	hub         *Hub
	events      app.Publisher
	logsFunc    LogsFunc
	metricsFunc MetricsFunc
	heartbeat   time.Duration
	publicAddr  string
	// onboard serves the downloads and prints the install commands (downloads.go).
	onboard *onboarding
	// clock is d.Clock; tests move it through app.Deps.Clock.
	clock app.Clock
	// reloadTimeout bounds how long Reload waits for the agent's answer.
	reloadTimeout time.Duration
	// maxMessageBytes is grpc.max_message_bytes (delivery.go).
	maxMessageBytes int
	// acmeTimeout bounds how long PresentHTTP01 waits for the agents
	// (defaultACMETimeout when zero).
	acmeTimeout time.Duration
}

// NewService returns the service over d.DB, with this replica's hub (see
// Module.Run). opts.CA must be set (New loads it); heartbeats are expected
// every grpc.heartbeat_interval and messages are held to
// grpc.max_message_bytes.
func NewService(d app.Deps, opts Options) *Service {
	cfg := d.Config
	heartbeat := cfg.GRPC.HeartbeatInterval
	if heartbeat <= 0 {
		heartbeat = app.DefaultConfig().GRPC.HeartbeatInterval
	}
	maxBytes := cfg.GRPC.MaxMessageBytes
	if maxBytes <= 0 {
		maxBytes = app.DefaultMaxMessageBytes
	}
	s := &Service{
		db: d.DB, logger: d.Logger, clock: d.Clock, vh: opts.VHosts, certs: opts.Certs, ca: opts.CA,
		events: d.Events, logsFunc: opts.LogsFunc, metricsFunc: opts.MetricsFunc,
		heartbeat: heartbeat, publicAddr: PublicAddr(cfg), reloadTimeout: defaultReloadTimeout,
		maxMessageBytes: maxBytes, onboard: newOnboarding(cfg),
	}
	s.hub = newHub(s, d.Pool, d.Logger, opts.ReplicaID)
	return s
}

func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// HeartbeatInterval is how often agents must report health.
func (s *Service) HeartbeatInterval() time.Duration { return s.heartbeat }

// CAFingerprint is the agents' CA fingerprint ("sha256:<hex>"), the value of
// the agent's --ca-fingerprint.
func (s *Service) CAFingerprint() string { return s.ca.Fingerprint() }

// CA returns the agents' certificate authority.
func (s *Service) CA() *CA { return s.ca }

// workspaceOrg returns the organization of a workspace.
func workspaceOrg(tx *gorm.DB, workspaceID uuid.UUID) (uuid.UUID, error) {
	var ids []uuid.UUID
	if err := tx.Table("workspaces").Where("id = ?", workspaceID).Limit(1).Pluck("organization_id", &ids).Error; err != nil {
		return uuid.Nil, fmt.Errorf("read organization of workspace %s: %w", workspaceID, err)
	}
	if len(ids) == 0 {
		return uuid.Nil, orgs.ErrWorkspaceNotFound
	}
	return ids[0], nil
}

// lockAgent reads an agent's row FOR UPDATE in tx.
func lockAgent(tx *gorm.DB, id uuid.UUID) (agentRow, error) {
	var r agentRow
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&r, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, ErrAgentNotFound
	}
	if err != nil {
		return r, fmt.Errorf("read agent %s: %w", id, err)
	}
	return r, nil
}

// ---- Notifications between replicas ----

// NotifyChannel is the PostgreSQL channel on which replicas tell each other
// about agents, with the payload of AgentNotice. Each replica's hub acts on
// the streams it holds.
const NotifyChannel = "nxmesh_agents"

// Operations of an AgentNotice.
const (
	// OpDeleted: the agent was deleted; drop its stream.
	OpDeleted = "deleted"
	// OpRetarget: its labels or policy changed; push its desired config.
	OpRetarget = "retarget"
	// OpCommand: a command is pending for it; deliver it.
	OpCommand = "command"
	// OpCommandResult: a command finished; wake whoever waits for it.
	OpCommandResult = "command_result"
	// OpConnected: the agent opened stream StreamID on Replica; other
	// streams of the agent are stale and closed.
	OpConnected = "connected"
)

// AgentNotice is the payload of a NotifyChannel notification.
type AgentNotice struct {
	AgentID   uuid.UUID  `json:"agent_id"`
	Op        string     `json:"op"`
	CommandID *uuid.UUID `json:"command_id,omitempty"`
	Replica   string     `json:"replica,omitempty"`
	StreamID  *uuid.UUID `json:"stream_id,omitempty"`
	// ACME is the challenge (OpACMEChallenge) or the answer (OpACMEStatus).
	ACME *ACMENotice `json:"acme,omitempty"`
}

// notify sends n on NotifyChannel in tx (delivered only if tx commits).
func notify(tx *gorm.DB, n AgentNotice) error {
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("notify %s of agent %s: %w", n.Op, n.AgentID, err)
	}
	if err := tx.Exec("SELECT pg_notify(?, ?)", NotifyChannel, string(b)).Error; err != nil {
		return fmt.Errorf("notify %s of agent %s: %w", n.Op, n.AgentID, err)
	}
	return nil
}

// ---- Validation ----

var labelToken = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,63}$`)

// checkName validates an agent's display name.
func checkName(v *app.Validator, field, name string) string {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		v.Add(field, app.FieldRequired, "is required")
	case utf8.RuneCountInString(name) > MaxNameLength:
		v.Add(field, app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxNameLength))
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		v.Add(field, app.FieldInvalidFormat, "must be printable characters")
	}
	return name
}

// checkLabels validates labels: at most MaxLabels, keys and values of 1 to 63
// letters, digits, '.', '_', '/' and '-' (the label selector grammar).
func checkLabels(v *app.Validator, field string, in map[string]string) map[string]string {
	if len(in) > MaxLabels {
		v.Add(field, app.FieldInvalidValue, fmt.Sprintf("must have at most %d labels", MaxLabels))
		return nil
	}
	out := make(map[string]string, len(in))
	for _, k := range slices.Sorted(maps.Keys(in)) {
		val := in[k]
		if !labelToken.MatchString(k) {
			v.Add(field, app.FieldInvalidFormat, fmt.Sprintf("key %q: keys must be 1 to %d letters, digits, '.', '_', '/' or '-'", k, MaxLabelLength))
			continue
		}
		if !labelToken.MatchString(val) {
			v.Add(field+"."+k, app.FieldInvalidFormat, fmt.Sprintf("must be 1 to %d letters, digits, '.', '_', '/' or '-'", MaxLabelLength))
			continue
		}
		out[k] = val
	}
	return out
}

// ---- Reading ----

// ListAgentsParams filter a workspace's agents.
type ListAgentsParams struct {
	Page app.Page
	// State is online, offline, degraded, pending, or all / empty for every
	// state.
	State string
	// LabelSelector is "key=value,key!=value" (the target_agents grammar); a
	// key!=value term also matches agents without the key.
	LabelSelector string
	// Q matches, ignoring case, a part of the name, the hostname or an
	// address (reported or seen by the master); '%' and '_' are plain
	// characters.
	Q string
}

// List returns a workspace's agents, oldest first, and their total.
func (s *Service) List(ctx context.Context, workspaceID uuid.UUID, p ListAgentsParams) ([]Agent, int64, error) {
	q := s.db.WithContext(ctx).Model(&agentRow{}).Where("workspace_id = ?", workspaceID)
	v := &app.Validator{}
	switch p.State {
	case "", "all":
	case StatePending, StateOnline, StateOffline, StateDegraded:
		q = q.Where("state = ?", p.State)
	default:
		v.Add("state", app.FieldInvalidValue, "must be online, offline, degraded, pending or all")
	}
	if p.LabelSelector != "" {
		terms, err := vhosts.ParseLabelSelector(p.LabelSelector)
		if err != nil {
			v.Add("label_selector", app.FieldInvalidFormat, err.Error())
		}
		for _, t := range terms {
			doc, _ := json.Marshal(map[string]string{t.Key: t.Value})
			if t.Not {
				q = q.Where("NOT (labels @> ?::jsonb)", string(doc))
			} else {
				q = q.Where("labels @> ?::jsonb", string(doc))
			}
		}
	}
	app.CheckSearch(v, "q", p.Q)
	if p.Q != "" {
		clause, args := app.SearchClause(p.Q, "name", "hostname", "ip_address", "peer_address")
		q = q.Where(clause, args...)
	}
	if err := v.Err(); err != nil {
		return nil, 0, err
	}
	rows, total, err := app.FindPage[agentRow](q, p.Page, "created_at, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list agents of workspace %s: %w", workspaceID, err)
	}
	out := make([]Agent, len(rows))
	for i, r := range rows {
		out[i] = r.agent()
	}
	return out, total, nil
}

// Get returns an agent with its health.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (AgentDetail, error) {
	var r agentRow
	err := s.db.WithContext(ctx).Take(&r, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return AgentDetail{}, ErrAgentNotFound
	}
	if err != nil {
		return AgentDetail{}, fmt.Errorf("read agent %s: %w", id, err)
	}
	return r.detail(), nil
}

// InWorkspace returns which of ids are agents of the workspace, read in tx
// (registered or still waiting for their first connection). It is the vhosts
// module's KnownAgentsFunc.
func (s *Service) InWorkspace(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	out := make(map[uuid.UUID]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var found []uuid.UUID
	err := tx.WithContext(ctx).Model(&agentRow{}).Where("workspace_id = ? AND id IN ?", workspaceID, ids).Pluck("id", &found).Error
	if err != nil {
		return nil, fmt.Errorf("read agents of workspace %s: %w", workspaceID, err)
	}
	for _, id := range found {
		out[id] = true
	}
	return out, nil
}

// ---- Registration tokens ----

// CreateTokenParams create an agent with its first registration token.
type CreateTokenParams struct {
	WorkspaceID uuid.UUID
	Name        string
	Labels      map[string]string
	// ExpiresInHours is 1 to 720; nil means 24.
	ExpiresInHours *int
}

func (s *Service) checkHours(v *app.Validator, hours *int) time.Duration {
	h := DefaultTokenHours
	if hours != nil {
		h = *hours
		v.Check(h >= 1 && h <= MaxTokenHours, "expires_in_hours", app.FieldInvalidValue, fmt.Sprintf("must be 1 to %d", MaxTokenHours))
	}
	return time.Duration(h) * time.Hour
}

// CreateToken creates a pending agent with name and labels, and a single-use
// registration token for it. The token is returned once; only its SHA-256 is
// stored.
func (s *Service) CreateToken(ctx context.Context, p CreateTokenParams) (RegistrationToken, error) {
	v := &app.Validator{}
	name := checkName(v, "name", p.Name)
	lbls := checkLabels(v, "labels", p.Labels)
	ttl := s.checkHours(v, p.ExpiresInHours)
	if err := v.Err(); err != nil {
		return RegistrationToken{}, err
	}
	var out RegistrationToken
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		orgID, err := workspaceOrg(tx, p.WorkspaceID)
		if err != nil {
			return err
		}
		now := s.now()
		row := agentRow{
			ID: uuid.New(), WorkspaceID: p.WorkspaceID, Name: name, State: StatePending,
			Capabilities: textArray{}, Labels: lbls, AutoRestart: true, CreatedAt: now, UpdatedAt: now,
		}
		if err := tx.Create(&row).Error; err != nil {
			return fmt.Errorf("create agent %q: %w", name, err)
		}
		out, err = s.issueToken(ctx, tx, row, ttl)
		if err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: p.WorkspaceID, Action: ObjectAgent + ".create",
			ObjectType: ObjectAgent, ObjectID: row.ID.String(), After: row.agent(),
		})
	})
	if err != nil {
		return RegistrationToken{}, err
	}
	return out, nil
}

// NewToken issues a fresh registration token for an existing agent (to
// reinstall it with the same id, labels and history) and revokes its unused
// ones. Registering with it replaces the agent's certificate.
func (s *Service) NewToken(ctx context.Context, agentID uuid.UUID, hours *int) (RegistrationToken, error) {
	v := &app.Validator{}
	ttl := s.checkHours(v, hours)
	if err := v.Err(); err != nil {
		return RegistrationToken{}, err
	}
	var out RegistrationToken
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockAgent(tx, agentID)
		if err != nil {
			return err
		}
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		if _, err := s.revokeTokens(tx, agentID); err != nil {
			return err
		}
		if out, err = s.issueToken(ctx, tx, row, ttl); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: ObjectAgentToken + ".create",
			ObjectType: ObjectAgent, ObjectID: agentID.String(),
			After: map[string]any{"expires_at": out.ExpiresAt},
		})
	})
	if err != nil {
		return RegistrationToken{}, err
	}
	return out, nil
}

// RevokeTokens revokes the agent's unused registration tokens and returns how
// many there were.
func (s *Service) RevokeTokens(ctx context.Context, agentID uuid.UUID) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockAgent(tx, agentID)
		if err != nil {
			return err
		}
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		if n, err = s.revokeTokens(tx, agentID); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: ObjectAgentToken + ".revoke",
			ObjectType: ObjectAgent, ObjectID: agentID.String(), After: map[string]int64{"revoked": n},
		})
	})
	return n, err
}

func (s *Service) revokeTokens(tx *gorm.DB, agentID uuid.UUID) (int64, error) {
	res := tx.Model(&tokenRow{}).Where("agent_id = ? AND used_at IS NULL AND revoked_at IS NULL", agentID).
		Update("revoked_at", s.now())
	if res.Error != nil {
		return 0, fmt.Errorf("revoke tokens of agent %s: %w", agentID, res.Error)
	}
	return res.RowsAffected, nil
}

func (s *Service) issueToken(ctx context.Context, tx *gorm.DB, ag agentRow, ttl time.Duration) (RegistrationToken, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return RegistrationToken{}, fmt.Errorf("generate registration token: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	now := s.now()
	row := tokenRow{
		ID: uuid.New(), AgentID: ag.ID, WorkspaceID: ag.WorkspaceID, TokenHash: hashToken(token),
		ExpiresAt: now.Add(ttl), CreatedAt: now,
	}
	if p := app.PrincipalFrom(ctx); p != nil {
		if p.UserID != uuid.Nil {
			id := p.UserID
			row.CreatedBy = &id
		}
		if p.APIKey != nil {
			id := p.APIKey.ID
			row.CreatedByAPIKeyID = &id
		}
	}
	if err := tx.Create(&row).Error; err != nil {
		return RegistrationToken{}, fmt.Errorf("store registration token of agent %s: %w", ag.ID, err)
	}
	return RegistrationToken{
		Token: token, AgentID: ag.ID, ExpiresAt: app.Time{Time: row.ExpiresAt},
		InstallCommand: s.InstallCommand(token, ag.Name, ag.Labels),
	}, nil
}

// hashToken is the stored form of a registration token (it carries 256 random
// bits, so a plain SHA-256 suffices).
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// InstallCommand is the command line that installs an agent with token:
//
//	nxmesh-agent --master <grpc public addr> --token <token> --ca-fingerprint sha256:<hex> --name <name> --labels k=v,...
//
// The name is shell-quoted when needed; labels need no quoting (their grammar
// has no shell metacharacters).
func (s *Service) InstallCommand(token, name string, lbls map[string]string) string {
	parts := []string{"nxmesh-agent", "--master", shellQuote(s.publicAddr), "--token", token, "--ca-fingerprint", s.ca.Fingerprint(), "--name", shellQuote(name)}
	if len(lbls) > 0 {
		kv := make([]string, 0, len(lbls))
		for _, k := range slices.Sorted(maps.Keys(lbls)) {
			kv = append(kv, k+"="+lbls[k])
		}
		parts = append(parts, "--labels", strings.Join(kv, ","))
	}
	return strings.Join(parts, " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9._/:=@%+,-]+$`)

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// PublicAddr is what agents dial: grpc.public_addr, else the host of
// http.public_url with the port of grpc.addr.
func PublicAddr(cfg app.Config) string {
	if cfg.GRPC.PublicAddr != "" {
		return cfg.GRPC.PublicAddr
	}
	host := "127.0.0.1"
	if u, err := url.Parse(cfg.HTTP.PublicURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	port := "9443"
	if _, p, err := net.SplitHostPort(cfg.GRPC.Addr); err == nil && p != "" {
		port = p
	}
	return net.JoinHostPort(host, port)
}

// ---- Changes ----

// UpdateAgentParams change an agent; nil fields stay.
type UpdateAgentParams struct {
	Name   *string
	Labels *map[string]string
	// AutoRestart is the watchdog policy pushed to the agent.
	AutoRestart *bool
}

// Update renames or relabels an agent or changes its restart policy. A label
// or policy change reaches the agent at once: the replica holding its stream
// pushes its new desired configuration (NotifyChannel, OpRetarget).
func (s *Service) Update(ctx context.Context, id uuid.UUID, p UpdateAgentParams) (AgentDetail, error) {
	v := &app.Validator{}
	var name string
	var lbls map[string]string
	if p.Name != nil {
		name = checkName(v, "name", *p.Name)
	}
	if p.Labels != nil {
		lbls = checkLabels(v, "labels", *p.Labels)
	}
	if err := v.Err(); err != nil {
		return AgentDetail{}, err
	}
	var out AgentDetail
	retarget := false
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockAgent(tx, id)
		if err != nil {
			return err
		}
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		before := row.agent()
		updates := map[string]any{}
		retarget = false
		if p.Name != nil && name != row.Name {
			row.Name, updates["name"] = name, name
		}
		if p.Labels != nil && !maps.Equal(lbls, row.Labels) {
			row.Labels = lbls
			b, _ := json.Marshal(lbls)
			updates["labels"] = string(b)
			retarget = true
		}
		if p.AutoRestart != nil && *p.AutoRestart != row.AutoRestart {
			row.AutoRestart, updates["auto_restart"] = *p.AutoRestart, *p.AutoRestart
			retarget = true
		}
		if len(updates) == 0 {
			out = row.detail()
			return nil
		}
		row.UpdatedAt = s.now()
		updates["updated_at"] = row.UpdatedAt
		if err := tx.Model(&agentRow{}).Where("id = ?", id).Updates(updates).Error; err != nil {
			return fmt.Errorf("update agent %s: %w", id, err)
		}
		if retarget {
			if err := notify(tx, AgentNotice{AgentID: id, Op: OpRetarget}); err != nil {
				return err
			}
		}
		out = row.detail()
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: ObjectAgent + ".update",
			ObjectType: ObjectAgent, ObjectID: id.String(), Before: before, After: out.Agent,
		})
	})
	if err != nil {
		return AgentDetail{}, err
	}
	if retarget {
		// A local stream need not wait for the notification's round trip.
		s.hub.retarget(id)
	}
	return out, nil
}

// Delete deletes an agent with its tokens and commands. Its certificate stops
// being accepted at once (the row holding its serial is gone), and the replica
// holding its stream drops it (NotifyChannel, OpDeleted).
func (s *Service) Delete(ctx context.Context, id uuid.UUID) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockAgent(tx, id)
		if err != nil {
			return err
		}
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		if err := tx.Delete(&agentRow{}, "id = ?", id).Error; err != nil {
			return fmt.Errorf("delete agent %s: %w", id, err)
		}
		if err := notify(tx, AgentNotice{AgentID: id, Op: OpDeleted}); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: ObjectAgent + ".delete",
			ObjectType: ObjectAgent, ObjectID: id.String(), Before: row.agent(),
		})
	})
	if err != nil {
		return err
	}
	s.hub.drop(id, ReasonDeleted)
	return nil
}

// ---- Registration policy ----

// RegistrationPolicy returns a workspace's registration ACL.
func (s *Service) RegistrationPolicy(ctx context.Context, workspaceID uuid.UUID) (RegistrationPolicy, error) {
	return loadPolicy(s.db.WithContext(ctx), workspaceID)
}

func loadPolicy(tx *gorm.DB, workspaceID uuid.UUID) (RegistrationPolicy, error) {
	var rows []aclRow
	if err := tx.Where("workspace_id = ?", workspaceID).Order("action, position").Find(&rows).Error; err != nil {
		return RegistrationPolicy{}, fmt.Errorf("read registration policy of workspace %s: %w", workspaceID, err)
	}
	p := RegistrationPolicy{Allow: []string{}, Deny: []string{}}
	for _, r := range rows {
		if r.Action == "allow" {
			p.Allow = append(p.Allow, r.Pattern)
		} else {
			p.Deny = append(p.Deny, r.Pattern)
		}
	}
	return p, nil
}

// Kinds of registration ACL patterns (see RegistrationPolicy), in the order
// their allow patterns are checked.
const (
	PatternHostname    = "hostname"
	PatternPeerAddress = "peer address"
	PatternLabel       = "labels"
)

// Registrant is what the registration policy is checked against: the
// hostname the agent claims, the peer address the master sees, and the
// labels set on the token.
type Registrant struct {
	Hostname    string
	PeerAddress string
	Labels      map[string]string
}

// describe is the registrant's value of a kind of pattern, for messages.
func (r Registrant) describe(kind string) string {
	switch kind {
	case PatternPeerAddress:
		if r.PeerAddress == "" {
			return "peer address unknown"
		}
		return "peer address " + r.PeerAddress
	case PatternLabel:
		if len(r.Labels) == 0 {
			return "labels none"
		}
		kv := make([]string, 0, len(r.Labels))
		for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
			kv = append(kv, k+"="+r.Labels[k])
		}
		return "labels " + strings.Join(kv, ",")
	}
	return fmt.Sprintf("hostname %q", r.Hostname)
}

// PolicyDenial is a registration the policy refuses: the kind of pattern
// that refused it and, for operators, why.
type PolicyDenial struct {
	Kind   string
	Detail string
}

// patternKind tells a pattern's kind by its form: key=glob is a label
// pattern, an IP address or CIDR a peer address pattern, anything else a
// hostname glob.
func patternKind(pat string) string {
	if strings.Contains(pat, "=") {
		return PatternLabel
	}
	if _, err := netip.ParsePrefix(pat); err == nil {
		return PatternPeerAddress
	}
	if _, err := netip.ParseAddr(pat); err == nil {
		return PatternPeerAddress
	}
	return PatternHostname
}

// matchPattern reports whether a pattern matches the registrant.
func matchPattern(pat string, r Registrant) bool {
	pat = strings.ToLower(pat)
	glob := func(pattern, s string) bool {
		ok, err := path.Match(pattern, strings.ToLower(s))
		return err == nil && ok
	}
	switch patternKind(pat) {
	case PatternLabel:
		key, val, _ := strings.Cut(pat, "=")
		for k, v := range r.Labels {
			if strings.ToLower(k) == key && glob(val, v) {
				return true
			}
		}
		return false
	case PatternPeerAddress:
		ip, err := netip.ParseAddr(r.PeerAddress)
		if err != nil {
			return false
		}
		ip = ip.WithZone("").Unmap()
		if pfx, err := netip.ParsePrefix(pat); err == nil {
			return pfx.Contains(ip)
		}
		a, err := netip.ParseAddr(pat)
		return err == nil && a.Unmap() == ip
	}
	return glob(pat, strings.TrimSuffix(r.Hostname, "."))
}

// Check evaluates the policy on a registrant: nil when it may register. A
// matching deny pattern refuses; then, for each kind with allow patterns, one
// of them must match.
func (p RegistrationPolicy) Check(r Registrant) *PolicyDenial {
	for _, pat := range p.Deny {
		if matchPattern(pat, r) {
			kind := patternKind(strings.ToLower(pat))
			return &PolicyDenial{Kind: kind, Detail: fmt.Sprintf("%s matches deny pattern %q", r.describe(kind), pat)}
		}
	}
	for _, kind := range []string{PatternHostname, PatternPeerAddress, PatternLabel} {
		var allow []string
		for _, pat := range p.Allow {
			if patternKind(strings.ToLower(pat)) == kind {
				allow = append(allow, pat)
			}
		}
		if len(allow) > 0 && !slices.ContainsFunc(allow, func(pat string) bool { return matchPattern(pat, r) }) {
			return &PolicyDenial{Kind: kind, Detail: fmt.Sprintf("%s matches no allow pattern (%s)", r.describe(kind), strings.Join(allow, ", "))}
		}
	}
	return nil
}

// checkPattern validates one pattern and returns its stored form (lower
// case; addresses and CIDRs canonical), or a field error's code and message.
func checkPattern(pat string) (string, string, string) {
	invalidGlob := func(g string) bool { _, err := path.Match(g, ""); return err != nil }
	switch patternKind(pat) {
	case PatternLabel:
		key, val, _ := strings.Cut(pat, "=")
		if !labelToken.MatchString(key) || val == "" || invalidGlob(val) {
			return "", app.FieldInvalidFormat, "must be key=glob: a label key, '=', and a glob pattern for its value (env=production, role=web-*)"
		}
	case PatternPeerAddress:
		if pfx, err := netip.ParsePrefix(pat); err == nil {
			if pfx.Addr().Zone() != "" {
				return "", app.FieldInvalidFormat, "must be an IP address or CIDR without a zone"
			}
			if pfx.Addr().Is4In6() && pfx.Bits() >= 96 {
				pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
			}
			return pfx.Masked().String(), "", ""
		}
		a, _ := netip.ParseAddr(pat)
		if a.Zone() != "" {
			return "", app.FieldInvalidFormat, "must be an IP address or CIDR without a zone"
		}
		return a.Unmap().String(), "", ""
	default:
		if invalidGlob(pat) {
			return "", app.FieldInvalidFormat, "must be a glob pattern (* ? [a-z]), an IP address or CIDR, or key=glob"
		}
	}
	return pat, "", ""
}

func checkPatterns(v *app.Validator, field string, in []string) []string {
	if len(in) > MaxPatterns {
		v.Add(field, app.FieldInvalidValue, fmt.Sprintf("must have at most %d patterns", MaxPatterns))
		return nil
	}
	out := make([]string, 0, len(in))
	for i, pat := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		pat = strings.ToLower(strings.TrimSpace(pat))
		switch {
		case pat == "":
			v.Add(f, app.FieldRequired, "must not be empty")
		case len(pat) > MaxPatternLength:
			v.Add(f, app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxPatternLength))
		case strings.IndexFunc(pat, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0:
			v.Add(f, app.FieldInvalidFormat, "must be printable ASCII without spaces")
		default:
			stored, code, msg := checkPattern(pat)
			if code != "" {
				v.Add(f, code, msg)
				continue
			}
			out = append(out, stored)
		}
	}
	return out
}

// SetRegistrationPolicy replaces a workspace's registration ACL. It applies to
// registrations from now on; registered agents are not affected.
func (s *Service) SetRegistrationPolicy(ctx context.Context, workspaceID uuid.UUID, p RegistrationPolicy) (RegistrationPolicy, error) {
	v := &app.Validator{}
	next := RegistrationPolicy{Allow: checkPatterns(v, "allow", p.Allow), Deny: checkPatterns(v, "deny", p.Deny)}
	if err := v.Err(); err != nil {
		return RegistrationPolicy{}, err
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var orgIDs []uuid.UUID
		if err := tx.Raw("SELECT organization_id FROM workspaces WHERE id = ? FOR UPDATE", workspaceID).Scan(&orgIDs).Error; err != nil {
			return fmt.Errorf("lock workspace %s: %w", workspaceID, err)
		}
		if len(orgIDs) == 0 {
			return orgs.ErrWorkspaceNotFound
		}
		before, err := loadPolicy(tx, workspaceID)
		if err != nil {
			return err
		}
		if err := tx.Where("workspace_id = ?", workspaceID).Delete(&aclRow{}).Error; err != nil {
			return fmt.Errorf("replace registration policy of workspace %s: %w", workspaceID, err)
		}
		var rows []aclRow
		for i, pat := range next.Allow {
			rows = append(rows, aclRow{WorkspaceID: workspaceID, Action: "allow", Position: i, Pattern: pat})
		}
		for i, pat := range next.Deny {
			rows = append(rows, aclRow{WorkspaceID: workspaceID, Action: "deny", Position: i, Pattern: pat})
		}
		if len(rows) > 0 {
			if err := tx.Create(&rows).Error; err != nil {
				return fmt.Errorf("replace registration policy of workspace %s: %w", workspaceID, err)
			}
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgIDs[0], WorkspaceID: workspaceID, Action: ObjectRegistrationPolicy + ".update",
			ObjectType: ObjectRegistrationPolicy, ObjectID: workspaceID.String(), Before: before, After: next,
		})
	})
	if err != nil {
		return RegistrationPolicy{}, err
	}
	return next, nil
}

// ---- Commands ----

// CreateCommandParams describe a command for an agent.
type CreateCommandParams struct {
	AgentID uuid.UUID
	// Command is reload, restart, stop, get_status or validate_config.
	Command string
	Params  CommandParams
}

func checkCommand(p CreateCommandParams) error {
	v := &app.Validator{}
	allowed := map[string][]string{
		CommandReload:         {"graceful"},
		CommandRestart:        {"force"},
		CommandStop:           {"graceful", "timeout_seconds"},
		CommandGetStatus:      {},
		CommandValidateConfig: {},
	}
	fields, ok := allowed[p.Command]
	if !ok {
		v.Add("command", app.FieldInvalidValue, "must be reload, restart, stop, get_status or validate_config")
		return v.Err()
	}
	set := map[string]bool{
		"graceful": p.Params.Graceful != nil, "force": p.Params.Force != nil, "timeout_seconds": p.Params.TimeoutSeconds != nil,
	}
	for _, f := range slices.Sorted(maps.Keys(set)) {
		if set[f] && !slices.Contains(fields, f) {
			v.Add(f, app.FieldInvalidValue, fmt.Sprintf("does not apply to %s", p.Command))
		}
	}
	if t := p.Params.TimeoutSeconds; t != nil {
		v.Check(*t >= 1 && *t <= MaxStopTimeout, "timeout_seconds", app.FieldInvalidValue, fmt.Sprintf("must be 1 to %d", MaxStopTimeout))
	}
	return v.Err()
}

// CreateCommand queues a command for an online agent; the replica holding its
// stream sends it (NotifyChannel, OpCommand). An agent without a stream is
// ErrAgentOffline: commands are not kept for later.
func (s *Service) CreateCommand(ctx context.Context, p CreateCommandParams) (Command, error) {
	return s.createCommand(ctx, uuid.New(), p)
}

func (s *Service) createCommand(ctx context.Context, id uuid.UUID, p CreateCommandParams) (Command, error) {
	if err := checkCommand(p); err != nil {
		return Command{}, err
	}
	var out Command
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ag agentRow
		err := tx.Clauses(clause.Locking{Strength: "SHARE"}).Select("id", "workspace_id", "state", "stream_id").Take(&ag, "id = ?", p.AgentID).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrAgentNotFound
		}
		if err != nil {
			return fmt.Errorf("read agent %s: %w", p.AgentID, err)
		}
		if (ag.State != StateOnline && ag.State != StateDegraded) || ag.StreamID == nil {
			return ErrAgentOffline
		}
		orgID, err := workspaceOrg(tx, ag.WorkspaceID)
		if err != nil {
			return err
		}
		row := commandRow{
			ID: id, AgentID: p.AgentID, WorkspaceID: ag.WorkspaceID, Kind: p.Command, Params: p.Params,
			Status: CommandPending, CreatedAt: s.now(),
		}
		if pr := app.PrincipalFrom(ctx); pr != nil {
			if pr.UserID != uuid.Nil {
				uid := pr.UserID
				row.CreatedBy = &uid
			}
			if pr.APIKey != nil {
				kid := pr.APIKey.ID
				row.CreatedByAPIKeyID = &kid
			}
		}
		if err := tx.Create(&row).Error; err != nil {
			return fmt.Errorf("queue %s command for agent %s: %w", p.Command, p.AgentID, err)
		}
		if err := notify(tx, AgentNotice{AgentID: p.AgentID, Op: OpCommand, CommandID: &id}); err != nil {
			return err
		}
		out = row.command()
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: ag.WorkspaceID, Action: ObjectAgentCommand + ".create",
			ObjectType: ObjectAgentCommand, ObjectID: id.String(), After: out,
		})
	})
	if err != nil {
		return Command{}, err
	}
	s.hub.deliverCommands(p.AgentID)
	return out, nil
}

// GetCommand returns a command of an agent.
func (s *Service) GetCommand(ctx context.Context, agentID, commandID uuid.UUID) (Command, error) {
	var r commandRow
	err := s.db.WithContext(ctx).Take(&r, "id = ? AND agent_id = ?", commandID, agentID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Command{}, ErrCommandNotFound
	}
	if err != nil {
		return Command{}, fmt.Errorf("read command %s: %w", commandID, err)
	}
	return r.command(), nil
}

// ListCommands returns an agent's commands, newest first, and their total.
func (s *Service) ListCommands(ctx context.Context, agentID uuid.UUID, page app.Page) ([]Command, int64, error) {
	q := s.db.WithContext(ctx).Model(&commandRow{}).Where("agent_id = ?", agentID)
	rows, total, err := app.FindPage[commandRow](q, page, "created_at DESC, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list commands of agent %s: %w", agentID, err)
	}
	out := make([]Command, len(rows))
	for i, r := range rows {
		out[i] = r.command()
	}
	return out, total, nil
}

// Reload asks an online agent to reload nginx gracefully and waits (up to 15
// seconds) for its answer. An offline agent is ErrAgentOffline; no answer in
// time is ErrNoAnswer (the command stays visible under the agent's commands).
func (s *Service) Reload(ctx context.Context, agentID uuid.UUID) (ReloadResult, error) {
	id := uuid.New()
	done := s.hub.watchCommand(id)
	defer s.hub.unwatchCommand(id)
	graceful := true
	if _, err := s.createCommand(ctx, id, CreateCommandParams{AgentID: agentID, Command: CommandReload, Params: CommandParams{Graceful: &graceful}}); err != nil {
		return ReloadResult{}, err
	}
	timeout := s.reloadTimeout
	if timeout <= 0 {
		timeout = defaultReloadTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		cmd, err := s.GetCommand(ctx, agentID, id)
		if err != nil {
			return ReloadResult{}, err
		}
		if cmd.Status == CommandSucceeded || cmd.Status == CommandFailed {
			ts := s.now()
			if cmd.FinishedAt != nil {
				ts = cmd.FinishedAt.Time
			}
			return ReloadResult{Success: cmd.Status == CommandSucceeded, Message: cmd.Message, Timestamp: app.Time{Time: ts}}, nil
		}
		select {
		case <-done:
		case <-timer.C:
			return ReloadResult{}, fmt.Errorf("%w (command %s)", ErrNoAnswer, id)
		case <-ctx.Done():
			return ReloadResult{}, ctx.Err()
		}
	}
}
