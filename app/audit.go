package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// AuditEntry is one row of the audit log: who changed what, when, from where, with
// the object's state before and after (secrets removed).
type AuditEntry struct {
	ID             uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	OrganizationID *uuid.UUID `gorm:"type:uuid"`
	WorkspaceID    *uuid.UUID `gorm:"type:uuid"`
	ActorUserID    *uuid.UUID `gorm:"type:uuid"`
	ActorAPIKeyID  *uuid.UUID `gorm:"column:actor_api_key_id;type:uuid"`
	ActorEmail     string     `gorm:"not null;default:''"`
	IP             string     `gorm:"column:ip;not null;default:''"`
	RequestID      string     `gorm:"not null;default:''"`
	Action         string     `gorm:"not null"`
	ObjectType     string     `gorm:"not null"`
	ObjectID       string     `gorm:"not null;default:''"`
	// ObjectName is the object's name at the change (see AuditParams.ObjectName).
	ObjectName string    `gorm:"not null;default:''"`
	Before     JSON      `gorm:"type:jsonb"`
	After      JSON      `gorm:"type:jsonb"`
	CreatedAt  time.Time `gorm:"not null"`
}

// TableName is the audit log's table.
func (AuditEntry) TableName() string { return "audit_log" }

// AuditParams describes a change for Audit.
type AuditParams struct {
	OrgID       uuid.UUID
	WorkspaceID uuid.UUID
	// Action is "<object>.<verb>", e.g. "workspace.create".
	Action     string
	ObjectType string
	ObjectID   string
	// ObjectName is how people know the object (a name, an e-mail address, a
	// domain). When empty it is taken from After, else Before: their "email",
	// "name", "domain" or "hostname" field, in that order.
	ObjectName string
	// Before and After are the object's public representation (what the API
	// returns); fields whose names suggest secrets are removed anyway.
	Before any
	After  any
}

// Audit records a change in tx, so it commits or rolls back with the change. The
// actor and IP come from ctx.
func Audit(ctx context.Context, tx *gorm.DB, p AuditParams) error {
	e := AuditEntry{
		Action:     p.Action,
		ObjectType: p.ObjectType,
		ObjectID:   p.ObjectID,
		CreatedAt:  time.Now().UTC(),
	}
	if p.OrgID != uuid.Nil {
		e.OrganizationID = &p.OrgID
	}
	if p.WorkspaceID != uuid.Nil {
		e.WorkspaceID = &p.WorkspaceID
	}
	if pr := PrincipalFrom(ctx); pr != nil {
		if pr.UserID != uuid.Nil {
			id := pr.UserID
			e.ActorUserID = &id
		}
		if pr.APIKey != nil {
			id := pr.APIKey.ID
			e.ActorAPIKeyID = &id
		}
		e.ActorEmail = pr.Email
	}
	ri := RequestInfoFrom(ctx)
	e.IP, e.RequestID = ri.IP, ri.ID
	var err error
	if e.Before, err = scrubbedJSON(p.Before); err != nil {
		return fmt.Errorf("audit %s: %w", p.Action, err)
	}
	if e.After, err = scrubbedJSON(p.After); err != nil {
		return fmt.Errorf("audit %s: %w", p.Action, err)
	}
	e.ObjectName = p.ObjectName
	if e.ObjectName == "" {
		e.ObjectName = objectName(e.After, e.Before)
	}
	e.ObjectName = truncateRunes(strings.TrimSpace(e.ObjectName), maxObjectName)
	if err := tx.WithContext(ctx).Create(&e).Error; err != nil {
		return fmt.Errorf("audit %s: %w", p.Action, err)
	}
	return nil
}

// secretish names fields that never enter the audit log.
var secretish = []string{"password", "secret", "token", "private_key", "key_hash", "hash", "otp", "code_hash"}

func scrubbedJSON(v any) (JSON, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return nil, err
	}
	scrub(generic)
	out, err := json.Marshal(generic)
	return JSON(out), err
}

func scrub(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			lk := strings.ToLower(k)
			for _, s := range secretish {
				if strings.Contains(lk, s) {
					t[k] = "[redacted]"
					break
				}
			}
			if t[k] != "[redacted]" {
				scrub(val)
			}
		}
	case []any:
		for _, e := range t {
			scrub(e)
		}
	}
}

// maxObjectName bounds the stored object name (characters).
const maxObjectName = 200

// objectNameFields are the fields of an object's JSON that name it, best first.
var objectNameFields = []string{"email", "name", "domain", "hostname"}

// objectName returns the first naming field of the first of docs that has one.
func objectName(docs ...JSON) string {
	for _, doc := range docs {
		if len(doc) == 0 {
			continue
		}
		var m map[string]any
		if json.Unmarshal(doc, &m) != nil {
			continue
		}
		for _, f := range objectNameFields {
			if s, ok := m[f].(string); ok && strings.TrimSpace(s) != "" && s != "[redacted]" {
				return s
			}
		}
	}
	return ""
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}
