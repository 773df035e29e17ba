package agents

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// Agent states.
const (
	StatePending  = "pending"
	StateOnline   = "online"
	StateOffline  = "offline"
	StateDegraded = "degraded"
)

// Apply statuses of an agent's configuration (agents.apply_status).
const (
	ApplyPending    = "pending"
	ApplyValidating = "validating"
	ApplyApplying   = "applying"
	ApplySuccess    = "success"
	ApplyFailed     = "failed"
	ApplyRolledBack = "rolled_back"
)

// Audit object types written by this module.
const (
	ObjectAgent              = "agent"
	ObjectAgentToken         = "agent_token"
	ObjectRegistrationPolicy = "registration_policy"
	ObjectAgentCommand       = "agent_command"
)

// agentRow is a row of agents.
type agentRow struct {
	ID               uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	WorkspaceID      uuid.UUID  `gorm:"type:uuid;not null"`
	Name             string     `gorm:"not null"`
	Hostname         string     `gorm:"not null"`
	IPAddress        string     `gorm:"column:ip_address;not null"`
	PeerAddress      string     `gorm:"not null"`
	Version          string     `gorm:"not null"`
	State            string     `gorm:"not null"`
	DeploymentMode   string     `gorm:"not null"`
	Capabilities     textArray  `gorm:"type:text[];not null"`
	Labels           labels     `gorm:"type:jsonb;serializer:json;not null"`
	LastSeenAt       *time.Time ``
	RegisteredAt     *time.Time ``
	CertSerial       *string    ``
	CertExpiresAt    *time.Time ``
	DesiredVersion   int64      `gorm:"not null"`
	DesiredChecksum  string     `gorm:"not null"`
	AppliedVersion   int64      `gorm:"not null"`
	ApplyStatus      string     `gorm:"not null"`
	ApplyError       string     `gorm:"not null"`
	AppliedChecksum  string     `gorm:"not null"`
	ReportedChecksum string     `gorm:"not null"`
	Drift            bool       `gorm:"not null"`
	Health           *healthDoc `gorm:"type:jsonb;serializer:json"`
	AgentInfo        *AgentInfo `gorm:"type:jsonb;serializer:json"`
	// UpstreamHealth is read here and written only by recordUpstreamHealth.
	UpstreamHealth upstreamHealthList `gorm:"->;type:jsonb;serializer:json"`
	AutoRestart    bool               `gorm:"not null"`
	// RegistrationError says why the last registration attempt was refused
	// by the registration policy (its token was burned); "" after a success.
	RegistrationError string     `gorm:"not null"`
	ConnectedReplica  string     `gorm:"not null"`
	StreamID          *uuid.UUID `gorm:"type:uuid"`
	CreatedAt         time.Time  `gorm:"not null"`
	UpdatedAt         time.Time  `gorm:"not null"`
}

// TableName is the agents table.
func (agentRow) TableName() string { return "agents" }

// labels is an agent's label map (never nil once read).
type labels map[string]string

// healthDoc is what agents.health stores of the last HealthReport.
type healthDoc struct {
	NginxRunning       bool          `json:"nginx_running"`
	NginxPID           uint32        `json:"nginx_pid"`
	NginxUptimeSeconds uint64        `json:"nginx_uptime_seconds"`
	ActiveConnections  uint32        `json:"active_connections"`
	TotalRequests      uint64        `json:"total_requests"`
	RequestsPerSecond  float64       `json:"requests_per_second"`
	CPUPercent         float64       `json:"cpu_percent"`
	MemoryUsedBytes    uint64        `json:"memory_used_bytes"`
	MemoryTotalBytes   uint64        `json:"memory_total_bytes"`
	DiskUsedBytes      uint64        `json:"disk_used_bytes"`
	DiskTotalBytes     uint64        `json:"disk_total_bytes"`
	LoadAverage1m      float64       `json:"load_average_1m"`
	ConfigVersion      int64         `json:"config_version"`
	ConfigChecksum     string        `json:"config_checksum"`
	Alerts             []HealthAlert `json:"alerts"`
	ReportedAt         time.Time     `json:"reported_at"`
}

// HealthAlert is an alert an agent reported as active.
type HealthAlert struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	// Timestamp is when the agent raised it (Unix seconds).
	Timestamp int64 `json:"timestamp"`
}

// AgentInfo is the agent program's own description (its status command's output).
type AgentInfo struct {
	Version       string   `json:"version"`
	Commit        string   `json:"commit"`
	BuildDate     string   `json:"build_date"`
	UptimeSeconds uint64   `json:"uptime_seconds"`
	Features      []string `json:"features"`
	Hostname      string   `json:"hostname"`
}

// Agent is an agent as listed: the API's agent object plus the state of its
// configuration.
type Agent struct {
	ID             uuid.UUID         `json:"id"`
	WorkspaceID    uuid.UUID         `json:"workspace_id"`
	Name           string            `json:"name"`
	Hostname       string            `json:"hostname"`
	IPAddress      string            `json:"ip_address" doc:"the address the agent reports for itself (RegistrationRequest.ip_address); empty when it sent none or no valid IP"`
	Version        string            `json:"version"`
	State          string            `json:"state" doc:"pending (token created, not registered yet), online, offline or degraded"`
	DeploymentMode string            `json:"deployment_mode" doc:"docker_sidecar, kubernetes_sidecar, standalone, or empty before registration"`
	LastSeenAt     *app.Time         `json:"last_seen_at"`
	Capabilities   []string          `json:"capabilities"`
	Labels         map[string]string `json:"labels"`
	CreatedAt      app.Time          `json:"created_at"`
	// Beyond the core agent fields.
	UpdatedAt      app.Time `json:"updated_at"`
	PeerAddress    string   `json:"peer_address" doc:"the IP address the master saw the agent's gRPC connection come from (its last registration or reconnect); what the registration policy's address patterns are checked against"`
	AutoRestart    bool     `json:"auto_restart" doc:"the agent restarts nginx when it dies"`
	DesiredVersion int64    `json:"desired_version" doc:"workspace configuration version last pushed to the agent"`
	AppliedVersion int64    `json:"applied_version" doc:"version the agent last applied successfully"`
	ApplyStatus    string   `json:"apply_status" doc:"pending, validating, applying, success, failed, rolled_back, or empty before the first push"`
	Drift          bool     `json:"drift" doc:"the agent reports a configuration other than the one pushed to it"`
}

// Health is the API's health object of an agent, from its last report.
type Health struct {
	NginxStatus        string  `json:"nginx_status" doc:"running, stopped, or unknown before the first report"`
	NginxUptimeSeconds uint64  `json:"nginx_uptime_seconds"`
	ActiveConnections  uint32  `json:"active_connections"`
	RequestsPerSecond  float64 `json:"requests_per_second"`
	CPUPercent         float64 `json:"cpu_percent"`
	MemoryUsedMB       uint64  `json:"memory_used_mb"`
	ConfigVersion      int64   `json:"config_version"`
	// Additions.
	Alerts     []HealthAlert `json:"alerts"`
	ReportedAt *app.Time     `json:"reported_at"`
	// Upstreams are the agent's active health-check verdicts on upstream
	// servers (health.go).
	Upstreams []UpstreamServerHealth `json:"upstreams" doc:"the agent's active health-check verdict on each upstream server it probes"`
}

// AgentDetail is one agent with its health (GET /v1/agents/:id).
type AgentDetail struct {
	Agent
	Health Health `json:"health"`
	// Additions.
	LastError     string     `json:"last_error" doc:"why the last configuration failed: nginx's error text of a failed apply, or why the update could not be delivered (larger than the agent or the master accepts, or its send failed); empty after a success"`
	AgentInfo     *AgentInfo `json:"agent_info"`
	RegisteredAt  *app.Time  `json:"registered_at"`
	CertExpiresAt *app.Time  `json:"cert_expires_at" doc:"expiry of the agent's client certificate"`
	// RegistrationError is why the registration policy refused the agent's
	// last registration attempt.
	RegistrationError string `json:"registration_error" doc:"why the registration policy refused the last registration attempt (hostname, peer address and labels it was checked against); that token was burned, register with a new one; empty after a successful registration"`
}

func (r agentRow) agent() Agent {
	caps := []string(r.Capabilities)
	if caps == nil {
		caps = []string{}
	}
	l := map[string]string(r.Labels)
	if l == nil {
		l = map[string]string{}
	}
	return Agent{
		ID:             r.ID,
		WorkspaceID:    r.WorkspaceID,
		Name:           r.Name,
		Hostname:       r.Hostname,
		IPAddress:      r.IPAddress,
		PeerAddress:    r.PeerAddress,
		Version:        r.Version,
		State:          r.State,
		DeploymentMode: r.DeploymentMode,
		LastSeenAt:     app.TimePtr(r.LastSeenAt),
		Capabilities:   caps,
		Labels:         l,
		CreatedAt:      app.Time{Time: r.CreatedAt},
		UpdatedAt:      app.Time{Time: r.UpdatedAt},
		AutoRestart:    r.AutoRestart,
		DesiredVersion: r.DesiredVersion,
		AppliedVersion: r.AppliedVersion,
		ApplyStatus:    r.ApplyStatus,
		Drift:          r.Drift,
	}
}

func (r agentRow) detail() AgentDetail {
	d := AgentDetail{
		Agent:             r.agent(),
		Health:            Health{NginxStatus: "unknown", Alerts: []HealthAlert{}, Upstreams: []UpstreamServerHealth{}},
		LastError:         r.ApplyError,
		AgentInfo:         r.AgentInfo,
		RegisteredAt:      app.TimePtr(r.RegisteredAt),
		CertExpiresAt:     app.TimePtr(r.CertExpiresAt),
		RegistrationError: r.RegistrationError,
	}
	if h := r.Health; h != nil {
		d.Health = Health{
			NginxStatus:        "stopped",
			NginxUptimeSeconds: h.NginxUptimeSeconds,
			ActiveConnections:  h.ActiveConnections,
			RequestsPerSecond:  h.RequestsPerSecond,
			CPUPercent:         h.CPUPercent,
			MemoryUsedMB:       h.MemoryUsedBytes / (1 << 20),
			ConfigVersion:      h.ConfigVersion,
			Alerts:             h.Alerts,
			ReportedAt:         &app.Time{Time: h.ReportedAt},
		}
		if h.NginxRunning {
			d.Health.NginxStatus = "running"
		}
		if d.Health.Alerts == nil {
			d.Health.Alerts = []HealthAlert{}
		}
	}
	if len(r.UpstreamHealth) > 0 {
		d.Health.Upstreams = r.UpstreamHealth
	} else {
		d.Health.Upstreams = []UpstreamServerHealth{}
	}
	return d
}

// tokenRow is a row of agent_tokens.
type tokenRow struct {
	ID          uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	AgentID     uuid.UUID  `gorm:"type:uuid;not null"`
	WorkspaceID uuid.UUID  `gorm:"type:uuid;not null"`
	TokenHash   []byte     `gorm:"not null"`
	ExpiresAt   time.Time  `gorm:"not null"`
	UsedAt      *time.Time ``
	RevokedAt   *time.Time ``
	// Refusal is set with RevokedAt when the registration policy refused the
	// token's registration: why.
	Refusal           string     `gorm:"not null"`
	CreatedBy         *uuid.UUID `gorm:"type:uuid"`
	CreatedByAPIKeyID *uuid.UUID `gorm:"column:created_by_api_key_id;type:uuid"`
	CreatedAt         time.Time  `gorm:"not null"`
}

// TableName is the agent_tokens table.
func (tokenRow) TableName() string { return "agent_tokens" }

// RegistrationToken is a freshly created token, shown once.
type RegistrationToken struct {
	Token     string    `json:"token"`
	AgentID   uuid.UUID `json:"agent_id"`
	ExpiresAt app.Time  `json:"expires_at"`
	// InstallCommand is a copy-paste command line that registers an agent with
	// the token.
	InstallCommand string `json:"install_command"`
}

// aclRow is a row of registration_acls.
type aclRow struct {
	WorkspaceID uuid.UUID `gorm:"type:uuid;primaryKey"`
	Action      string    `gorm:"primaryKey"`
	Position    int       `gorm:"primaryKey"`
	Pattern     string    `gorm:"not null"`
}

// TableName is the registration_acls table.
func (aclRow) TableName() string { return "registration_acls" }

// RegistrationPolicy is a workspace's registration ACL. Each pattern is one
// of three kinds, told apart by its form:
//
//   - key=glob (contains '='): a label set on the token (the agent's labels,
//     chosen by admins), e.g. env=production or role=web-*;
//   - an IP address or CIDR (10.0.0.7, 10.0.0.0/8, fd00::/8): the peer address
//     of the agent's gRPC connection, as the master sees it;
//   - anything else: a glob on the hostname the agent claims, e.g.
//     web-*.internal.
//
// Globs use path.Match syntax (* ? [a-z]); everything compares
// case-insensitively. No patterns: every registration passes. A matching
// deny pattern of any kind always refuses. For each kind that has allow
// patterns, one of that kind must match (kinds combine with AND, patterns of
// a kind with OR). A refusal burns the token.
type RegistrationPolicy struct {
	Allow []string `json:"allow" doc:"patterns: hostname globs (web-*.internal), peer IP addresses or CIDRs (10.0.0.0/8), token label matches (env=production); for each kind present one must match"`
	Deny  []string `json:"deny" doc:"patterns of the same kinds; a match always refuses"`
}

// Command kinds.
const (
	CommandReload         = "reload"
	CommandRestart        = "restart"
	CommandStop           = "stop"
	CommandGetStatus      = "get_status"
	CommandValidateConfig = "validate_config"
)

// Command statuses.
const (
	CommandPending   = "pending"
	CommandSent      = "sent"
	CommandSucceeded = "succeeded"
	CommandFailed    = "failed"
)

// CommandParams are the options of a command.
type CommandParams struct {
	Graceful       *bool `json:"graceful,omitempty" doc:"reload and stop"`
	Force          *bool `json:"force,omitempty" doc:"restart"`
	TimeoutSeconds *int  `json:"timeout_seconds,omitempty" doc:"stop: 1 to 3600"`
}

// commandRow is a row of agent_commands.
type commandRow struct {
	ID                uuid.UUID     `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	AgentID           uuid.UUID     `gorm:"type:uuid;not null"`
	WorkspaceID       uuid.UUID     `gorm:"type:uuid;not null"`
	Kind              string        `gorm:"not null"`
	Params            CommandParams `gorm:"type:jsonb;serializer:json;not null"`
	Status            string        `gorm:"not null"`
	Message           string        `gorm:"not null"`
	Output            string        `gorm:"not null"`
	CreatedBy         *uuid.UUID    `gorm:"type:uuid"`
	CreatedByAPIKeyID *uuid.UUID    `gorm:"column:created_by_api_key_id;type:uuid"`
	CreatedAt         time.Time     `gorm:"not null"`
	SentAt            *time.Time    ``
	FinishedAt        *time.Time    ``
}

// TableName is the agent_commands table.
func (commandRow) TableName() string { return "agent_commands" }

// Command is a command sent to an agent and, once it answered, its result.
type Command struct {
	ID         uuid.UUID     `json:"id"`
	AgentID    uuid.UUID     `json:"agent_id"`
	Command    string        `json:"command" doc:"reload, restart, stop, get_status or validate_config"`
	Params     CommandParams `json:"params"`
	Status     string        `json:"status" doc:"pending, sent, succeeded or failed"`
	Message    string        `json:"message"`
	Output     string        `json:"output"`
	CreatedAt  app.Time      `json:"created_at"`
	SentAt     *app.Time     `json:"sent_at"`
	FinishedAt *app.Time     `json:"finished_at"`
}

func (r commandRow) command() Command {
	return Command{
		ID:         r.ID,
		AgentID:    r.AgentID,
		Command:    r.Kind,
		Params:     r.Params,
		Status:     r.Status,
		Message:    r.Message,
		Output:     r.Output,
		CreatedAt:  app.Time{Time: r.CreatedAt},
		SentAt:     app.TimePtr(r.SentAt),
		FinishedAt: app.TimePtr(r.FinishedAt),
	}
}

// ReloadResult is the answer to POST /v1/agents/:id/reload.
type ReloadResult struct {
	Success   bool     `json:"success"`
	Message   string   `json:"message"`
	Timestamp app.Time `json:"timestamp"`
}

// textArray is a PostgreSQL text[] column.
type textArray []string

// Value writes the array literal, every element quoted.
func (a textArray) Value() (driver.Value, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, r := range s {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String(), nil
}

// Scan parses PostgreSQL's text form of a one-dimensional text[] ({a,"b c"}).
func (a *textArray) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case nil:
		*a = nil
		return nil
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("scan text[]: unsupported source %T", src)
	}
	out, err := parseTextArray(s)
	if err != nil {
		return fmt.Errorf("scan text[] %q: %w", s, err)
	}
	*a = out
	return nil
}

var errBadArray = errors.New("malformed array literal")

func parseTextArray(s string) ([]string, error) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, errBadArray
	}
	body := s[1 : len(s)-1]
	out := []string{}
	if body == "" {
		return out, nil
	}
	for i := 0; ; {
		var elem strings.Builder
		if i < len(body) && body[i] == '"' {
			i++
			for {
				if i >= len(body) {
					return nil, errBadArray
				}
				c := body[i]
				if c == '\\' && i+1 < len(body) {
					elem.WriteByte(body[i+1])
					i += 2
					continue
				}
				if c == '"' {
					i++
					break
				}
				elem.WriteByte(c)
				i++
			}
			out = append(out, elem.String())
		} else {
			j := strings.IndexByte(body[i:], ',')
			if j < 0 {
				j = len(body) - i
			}
			raw := body[i : i+j]
			if raw == "NULL" {
				raw = ""
			}
			out = append(out, raw)
			i += j
		}
		if i >= len(body) {
			return out, nil
		}
		if body[i] != ',' {
			return nil, errBadArray
		}
		i++
	}
}
