package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// Notification channels belong to an organization; alert rules of its
// workspaces name the channels they notify (AlertRule.Notify). A channel is
// a webhook (an http or https URL and a secret its deliveries are signed
// with, sealed at rest and never returned: responses say secret_set) or a
// list of e-mail addresses (sent through the master's SMTP server).
//
// A channel that rules use cannot be deleted: DeleteChannel answers 409
// naming the rules, which must stop notifying it first (so no rule is left
// silently notifying nothing).

// Channel types.
const (
	ChannelWebhook = "webhook"
	ChannelEmail   = "email"
)

// Bounds of the channels.
const (
	maxChannelName    = 100
	maxChannelsPerOrg = 100
	maxNotify         = 20
)

// ObjNotificationChannel is the Casbin object of the notification channels:
// members read them, admins write and delete them.
const ObjNotificationChannel = "metrics.notification_channel"

// channelPolicies is the role matrix of the channels:
//
//	object                        read    write  delete
//	metrics.notification_channel  viewer  admin  admin
func channelPolicies() []authz.Policy {
	var ps []authz.Policy
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjNotificationChannel, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleAdmin, ObjNotificationChannel, authz.Write)...)
	ps = append(ps, authz.AtLeast(authz.RoleAdmin, ObjNotificationChannel, authz.Delete)...)
	return ps
}

// Errors of the channels.
var (
	// ErrChannelNotFound: no notification channel has that id.
	ErrChannelNotFound = fmt.Errorf("%w: notification channel not found", app.ErrNotFound)
	// ErrChannelNameTaken: another channel of the organization has the name.
	ErrChannelNameTaken = fmt.Errorf("%w: a notification channel of this organization already has this name", app.ErrConflict)
	// ErrTooManyChannels: the organization has maxChannelsPerOrg channels.
	ErrTooManyChannels = fmt.Errorf("%w: an organization holds at most %d notification channels", app.ErrConflict, maxChannelsPerOrg)
)

// NotificationChannel is a channel as the API shows it. The secret is never
// shown: secret_set says whether one is stored.
type NotificationChannel struct {
	ID             uuid.UUID `json:"id"`
	OrganizationID uuid.UUID `json:"organization_id"`
	Name           string    `json:"name"`
	// Type is webhook or email.
	Type string `json:"type"`
	// URL is the webhook's URL ("" for an e-mail channel).
	URL       string `json:"url"`
	SecretSet bool   `json:"secret_set"`
	// Addresses are the e-mail channel's recipients (empty for a webhook).
	Addresses []string `json:"addresses"`
	CreatedAt app.Time `json:"created_at"`
	UpdatedAt app.Time `json:"updated_at"`
}

// NotificationChannelInput creates (POST) or changes (PATCH) a channel; in
// a PATCH an absent field is kept, and type cannot change.
type NotificationChannelInput struct {
	Name *string `json:"name" doc:"1 to 100 characters, unique in the organization"`
	// Type is webhook or email.
	Type *string `json:"type" doc:"webhook or email; cannot change in a PATCH"`
	// URL is the webhook's http:// or https:// URL.
	URL *string `json:"url" doc:"webhook: an http:// or https:// URL"`
	// Secret signs the webhook's deliveries (16 to 256 bytes; write-only;
	// required with a new webhook, kept when absent).
	Secret *string `json:"secret" doc:"webhook: 16 to 256 bytes the deliveries are signed with (X-NxMesh-Signature: sha256=<hex HMAC-SHA256 of the body>); write-only, kept when absent"`
	// Addresses are the e-mail channel's recipients (1 to 20).
	Addresses *[]string `json:"addresses" doc:"email: 1 to 20 addresses"`
}

// channelRow is a notification_channels row.
type channelRow struct {
	ID, OrgID            uuid.UUID
	Name, Type, URL      string
	Secret               []byte
	Addresses            []string
	CreatedAt, UpdatedAt time.Time
}

const channelColumns = `id, organization_id, name, type, url, secret_sealed, addresses, created_at, updated_at`

func scanChannel(row pgx.Row) (channelRow, error) {
	var c channelRow
	err := row.Scan(&c.ID, &c.OrgID, &c.Name, &c.Type, &c.URL, &c.Secret, &c.Addresses, &c.CreatedAt, &c.UpdatedAt)
	return c, err
}

func (c channelRow) api() NotificationChannel {
	out := NotificationChannel{ID: c.ID, OrganizationID: c.OrgID, Name: c.Name, Type: c.Type, URL: c.URL,
		SecretSet: len(c.Secret) > 0, Addresses: c.Addresses,
		CreatedAt: app.Time{Time: c.CreatedAt}, UpdatedAt: app.Time{Time: c.UpdatedAt}}
	if out.Addresses == nil {
		out.Addresses = []string{}
	}
	return out
}

// querier is a pgx pool or transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *AlertService) channel(ctx context.Context, q querier, id uuid.UUID, lock bool) (channelRow, error) {
	sqlText := `SELECT ` + channelColumns + ` FROM notification_channels WHERE id = $1`
	if lock {
		sqlText += ` FOR UPDATE`
	}
	c, err := scanChannel(q.QueryRow(ctx, sqlText, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrChannelNotFound
	}
	if err != nil {
		return c, fmt.Errorf("read notification channel %s: %w", id, err)
	}
	return c, nil
}

// Channels lists an organization's channels by name.
func (s *AlertService) Channels(ctx context.Context, orgID uuid.UUID, p app.Page) ([]NotificationChannel, int64, error) {
	var total int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM notification_channels WHERE organization_id = $1`, orgID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count notification channels of organization %s: %w", orgID, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+channelColumns+` FROM notification_channels WHERE organization_id = $1
		ORDER BY lower(name), id LIMIT $2 OFFSET $3`, orgID, p.PerPage, p.Offset())
	if err != nil {
		return nil, 0, fmt.Errorf("list notification channels of organization %s: %w", orgID, err)
	}
	defer rows.Close()
	out := []NotificationChannel{}
	for rows.Next() {
		c, err := scanChannel(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("read notification channel: %w", err)
		}
		out = append(out, c.api())
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list notification channels of organization %s: %w", orgID, err)
	}
	return out, total, nil
}

// Channel returns one channel.
func (s *AlertService) Channel(ctx context.Context, id uuid.UUID) (NotificationChannel, error) {
	c, err := s.channel(ctx, s.pool, id, false)
	if err != nil {
		return NotificationChannel{}, err
	}
	return c.api(), nil
}

// CreateChannel validates in and stores a new channel of the organization;
// name and type are required, and the type's fields.
func (s *AlertService) CreateChannel(ctx context.Context, orgID uuid.UUID, in NotificationChannelInput) (NotificationChannel, error) {
	c := channelRow{OrgID: orgID, Addresses: []string{}}
	var v app.Validator
	v.Check(in.Name != nil, "name", app.FieldRequired, "is required")
	if v.Check(in.Type != nil, "type", app.FieldRequired, "is required: webhook or email") {
		t := strings.TrimSpace(*in.Type)
		if v.Check(t == ChannelWebhook || t == ChannelEmail, "type", app.FieldInvalidValue, "must be webhook or email") {
			c.Type = t
		}
	}
	switch c.Type {
	case ChannelWebhook:
		v.Check(in.URL != nil, "url", app.FieldRequired, "is required with a webhook: an http:// or https:// URL")
		v.Check(in.Secret != nil, "secret", app.FieldRequired, "is required with a webhook: deliveries are signed with it")
	case ChannelEmail:
		v.Check(in.Addresses != nil, "addresses", app.FieldRequired, "is required with an e-mail channel: at least one address")
	}
	if err := s.applyChannel(&c, in, &v); err != nil {
		return NotificationChannel{}, err
	}
	if err := v.Err(); err != nil {
		return NotificationChannel{}, err
	}
	var created NotificationChannel
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialize the count check of the organization's channels.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE`, orgID); err != nil {
			return fmt.Errorf("lock organization %s: %w", orgID, err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM notification_channels WHERE organization_id = $1`, orgID).Scan(&n); err != nil {
			return fmt.Errorf("count notification channels of organization %s: %w", orgID, err)
		}
		if n >= maxChannelsPerOrg {
			return ErrTooManyChannels
		}
		got, err := scanChannel(tx.QueryRow(ctx, `INSERT INTO notification_channels (organization_id, name, type, url, secret_sealed, addresses)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+channelColumns, orgID, c.Name, c.Type, c.URL, c.Secret, c.Addresses))
		if app.IsUniqueViolation(err) {
			return ErrChannelNameTaken
		}
		if err != nil {
			return fmt.Errorf("insert notification channel %q: %w", c.Name, err)
		}
		created = got.api()
		return nil
	})
	return created, err
}

// UpdateChannel changes the fields set in in.
func (s *AlertService) UpdateChannel(ctx context.Context, id uuid.UUID, in NotificationChannelInput) (NotificationChannel, error) {
	var updated NotificationChannel
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		c, err := s.channel(ctx, tx, id, true)
		if err != nil {
			return err
		}
		var v app.Validator
		if in.Type != nil {
			v.Check(strings.TrimSpace(*in.Type) == c.Type, "type", app.FieldInvalidValue, "cannot be changed: create another channel")
		}
		if err := s.applyChannel(&c, in, &v); err != nil {
			return err
		}
		if err := v.Err(); err != nil {
			return err
		}
		got, err := scanChannel(tx.QueryRow(ctx, `UPDATE notification_channels SET name = $2, url = $3, secret_sealed = $4,
				addresses = $5, updated_at = now() WHERE id = $1 RETURNING `+channelColumns, id, c.Name, c.URL, c.Secret, c.Addresses))
		if app.IsUniqueViolation(err) {
			return ErrChannelNameTaken
		}
		if err != nil {
			return fmt.Errorf("update notification channel %s: %w", id, err)
		}
		updated = got.api()
		return nil
	})
	return updated, err
}

// ChannelInUseError refuses to delete a channel that rules notify.
type ChannelInUseError struct {
	// Rules are the rules' names, with their workspace.
	Rules []string
}

func (e *ChannelInUseError) Error() string {
	return fmt.Sprintf("%s: the channel is notified by the alert rules %s; remove it from them first",
		app.ErrConflict, strings.Join(e.Rules, ", "))
}

// Unwrap makes the error a conflict (409).
func (e *ChannelInUseError) Unwrap() error { return app.ErrConflict }

// DeleteChannel deletes a channel no rule notifies; one that rules notify
// is refused with a *ChannelInUseError (409) naming them.
func (s *AlertService) DeleteChannel(ctx context.Context, id uuid.UUID) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := s.channel(ctx, tx, id, true); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT r.name || ' (workspace ' || w.name || ')' FROM alert_rule_channels rc
			JOIN alert_rules r ON r.id = rc.rule_id JOIN workspaces w ON w.id = r.workspace_id
			WHERE rc.channel_id = $1 ORDER BY w.name, r.name LIMIT 20`, id)
		if err != nil {
			return fmt.Errorf("find rules notifying channel %s: %w", id, err)
		}
		users, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("find rules notifying channel %s: %w", id, err)
		}
		if len(users) > 0 {
			return &ChannelInUseError{Rules: users}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM notification_channels WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete notification channel %s: %w", id, err)
		}
		return nil
	})
}

// applyChannel validates in into c (the fields set). Field errors go to v.
func (s *AlertService) applyChannel(c *channelRow, in NotificationChannelInput, v *app.Validator) error {
	if in.Name != nil {
		n := strings.TrimSpace(*in.Name)
		if v.Check(n != "", "name", app.FieldRequired, "must not be empty") &&
			v.Check(len([]rune(n)) <= maxChannelName, "name", app.FieldTooLong, fmt.Sprintf("at most %d characters", maxChannelName)) &&
			v.Check(!strings.ContainsAny(n, "\x00\r\n"), "name", app.FieldInvalidValue, "must be one line of text") {
			c.Name = n
		}
	}
	switch c.Type {
	case ChannelWebhook:
		v.Check(in.Addresses == nil, "addresses", app.FieldInvalidValue, "is only for e-mail channels")
		if in.URL != nil {
			u := strings.TrimSpace(*in.URL)
			msg := checkWebhookURL(u)
			if u == "" {
				msg = "must be an http:// or https:// URL with a host"
			}
			if v.Check(msg == "", "url", app.FieldInvalidValue, msg) {
				c.URL = u
			}
		}
		if in.Secret != nil {
			sec := *in.Secret
			if v.Check(len(sec) >= minSecretLen && len(sec) <= maxSecretLen, "secret", app.FieldInvalidValue,
				fmt.Sprintf("must be %d to %d bytes", minSecretLen, maxSecretLen)) {
				sealed, err := s.secrets.Seal([]byte(sec))
				if err != nil {
					return fmt.Errorf("seal webhook secret: %w", err)
				}
				c.Secret = sealed
			}
		}
	case ChannelEmail:
		v.Check(in.URL == nil, "url", app.FieldInvalidValue, "is only for webhook channels")
		v.Check(in.Secret == nil, "secret", app.FieldInvalidValue, "is only for webhook channels")
		if in.Addresses != nil {
			if addrs, ok := s.checkAddresses(*in.Addresses, "addresses", v); ok {
				c.Addresses = addrs
			}
		}
	}
	return nil
}

// checkAddresses validates a list of e-mail addresses named field (1 to
// maxEmails, each field[i]; outgoing mail configured) and returns them
// without duplicates.
func (s *AlertService) checkAddresses(list []string, field string, v *app.Validator) ([]string, bool) {
	if !v.Check(len(list) > 0, field, app.FieldRequired, "must list at least one address") ||
		!v.Check(s.mailer.Configured(), field, app.FieldInvalidValue, "outgoing mail is not configured on this master (smtp.host)") ||
		!v.Check(len(list) <= maxEmails, field, app.FieldInvalidValue, fmt.Sprintf("at most %d addresses", maxEmails)) {
		return nil, false
	}
	out := []string{}
	seen := map[string]bool{}
	ok := true
	for i, e := range list {
		addr, good := emailAddress(e)
		if !v.Check(good, fmt.Sprintf("%s[%d]", field, i), app.FieldInvalidFormat, "must be an e-mail address such as ops@example.com") {
			ok = false
			continue
		}
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	return out, ok
}

// ---- Rules' channels ----

// ChannelRef is a channel a rule notifies, as the rule shows it.
type ChannelRef struct {
	ID   uuid.UUID `json:"id"`
	Name string    `json:"name"`
	Type string    `json:"type"`
}

// ruleChannels reads the channels of the rules ids notify, in order.
func ruleChannels(ctx context.Context, q querier, ids []uuid.UUID) (map[uuid.UUID][]ChannelRef, error) {
	out := map[uuid.UUID][]ChannelRef{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `SELECT rc.rule_id, c.id, c.name, c.type FROM alert_rule_channels rc
		JOIN notification_channels c ON c.id = rc.channel_id WHERE rc.rule_id = ANY($1) ORDER BY rc.rule_id, rc.position`, ids)
	if err != nil {
		return nil, fmt.Errorf("read channels of alert rules: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rule uuid.UUID
		var c ChannelRef
		if err := rows.Scan(&rule, &c.ID, &c.Name, &c.Type); err != nil {
			return nil, fmt.Errorf("read channels of alert rules: %w", err)
		}
		out[rule] = append(out[rule], c)
	}
	return out, rows.Err()
}

// checkNotify validates a rule's notify list: channel UUIDs of the
// organization orgID, each once (notify[i]). It returns the ids, in order.
func checkNotify(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, list []string, v *app.Validator) ([]uuid.UUID, error) {
	if !v.Check(len(list) <= maxNotify, "notify", app.FieldInvalidValue, fmt.Sprintf("at most %d channels", maxNotify)) {
		return nil, nil
	}
	ids := []uuid.UUID{}
	seen := map[uuid.UUID]bool{}
	for i, s := range list {
		field := fmt.Sprintf("notify[%d]", i)
		id, err := uuid.Parse(strings.TrimSpace(s))
		if !v.Check(err == nil, field, app.FieldInvalidFormat, "must be a notification channel id (UUID)") ||
			!v.Check(!seen[id], field, app.FieldInvalidValue, "is listed twice") {
			continue
		}
		seen[id] = true
		var ok bool
		// FOR SHARE: a channel cannot be deleted while a rule starts using it.
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM notification_channels WHERE id = $1 AND organization_id = $2 FOR SHARE)`,
			id, orgID).Scan(&ok); err != nil {
			return nil, fmt.Errorf("find notification channel %s: %w", id, err)
		}
		if v.Check(ok, field, app.FieldNotFound, "no notification channel of this organization has this id") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// setRuleChannels replaces the channels rule notifies.
func setRuleChannels(ctx context.Context, tx pgx.Tx, rule uuid.UUID, ids []uuid.UUID) error {
	if _, err := tx.Exec(ctx, `DELETE FROM alert_rule_channels WHERE rule_id = $1`, rule); err != nil {
		return fmt.Errorf("clear channels of alert rule %s: %w", rule, err)
	}
	for i, id := range ids {
		if _, err := tx.Exec(ctx, `INSERT INTO alert_rule_channels (rule_id, channel_id, position) VALUES ($1, $2, $3)`, rule, id, i); err != nil {
			return fmt.Errorf("add channel %s to alert rule %s: %w", id, rule, err)
		}
	}
	return nil
}
