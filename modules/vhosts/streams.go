package vhosts

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// checkStream checks in against every grammar and returns the stream as it
// will be stored (without id, workspace and timestamps). References are
// checked by checkStreamRefs.
func checkStream(in StreamInput) (Stream, *app.Validator) {
	v := &app.Validator{}
	out := Stream{
		Name:                strings.TrimSpace(in.Name),
		ListenPort:          in.ListenPort,
		Protocol:            in.Protocol,
		SSLEnabled:          in.SSLEnabled,
		ProxyProtocol:       in.ProxyProtocol,
		AcceptProxyProtocol: in.AcceptProxyProtocol,
	}
	checkName(v, "name", out.Name)
	switch {
	case in.ListenPort == 0:
		v.Add("listen_port", app.FieldRequired, "is required")
	case in.ListenPort < 1 || in.ListenPort > 65535:
		v.Add("listen_port", app.FieldInvalidValue, "must be between 1 and 65535")
	}
	if out.Protocol == "" {
		out.Protocol = ProtocolTCP
	}
	udp := out.Protocol == ProtocolUDP
	v.Check(out.Protocol == ProtocolTCP || udp, "protocol", app.FieldInvalidValue, `must be "tcp" or "udp"`)
	if in.UpstreamID == "" {
		v.Add("upstream_id", app.FieldRequired, "is required")
	} else if id, ok := parseUUID(in.UpstreamID); v.Check(ok, "upstream_id", app.FieldInvalidFormat, "must be a UUID") {
		out.UpstreamID = id
	}
	v.Check(!(udp && in.SSLEnabled), "ssl_enabled", app.FieldInvalidValue, "TLS is only available for tcp streams")
	switch {
	case in.SSLCertificateID != "":
		id, ok := parseUUID(in.SSLCertificateID)
		if v.Check(ok, "ssl_certificate_id", app.FieldInvalidFormat, "must be a UUID") &&
			v.Check(in.SSLEnabled, "ssl_certificate_id", app.FieldInvalidValue, "is only allowed when ssl_enabled is true") {
			out.SSLCertificateID = &id
		}
	case in.SSLEnabled:
		v.Add("ssl_certificate_id", app.FieldRequired, "is required when ssl_enabled is true")
	}
	v.Check(!(udp && in.AcceptProxyProtocol), "accept_proxy_protocol", app.FieldInvalidValue,
		"the PROXY protocol can only be accepted on tcp streams")
	if in.ConnectTimeout != nil {
		v.Check(*in.ConnectTimeout >= 1 && *in.ConnectTimeout <= MaxTimeoutSeconds, "connect_timeout", app.FieldInvalidValue,
			fmt.Sprintf("must be between 1 and %d seconds (null for nginx's default)", MaxTimeoutSeconds))
		out.ConnectTimeout = clonePtr(in.ConnectTimeout)
	}
	if in.Timeout != nil {
		v.Check(*in.Timeout >= 1 && *in.Timeout <= MaxStreamTimeoutSeconds, "timeout", app.FieldInvalidValue,
			fmt.Sprintf("must be between 1 and %d seconds (null for nginx's default)", MaxStreamTimeoutSeconds))
		out.Timeout = clonePtr(in.Timeout)
	}
	if in.BandwidthLimit != "" {
		if err := checkSize(in.BandwidthLimit); err != nil {
			v.Add("bandwidth_limit", app.FieldInvalidFormat, err.Error()+" (bytes per second)")
		}
		out.BandwidthLimit = in.BandwidthLimit
	}
	out.TargetAgents = normalizeTargetAgents(v, "target_agents", in.TargetAgents)
	return out, v
}

// checkStreamRefs checks the upstream, certificate and agents st refers to.
func (s *Service) checkStreamRefs(ctx context.Context, tx *gorm.DB, st Stream) error {
	v := &app.Validator{}
	r := s.refs(ctx, tx, st.WorkspaceID)
	if err := r.upstream(v, "upstream_id", st.UpstreamID); err != nil {
		return err
	}
	if err := r.targets(v, "target_agents", st.TargetAgents); err != nil {
		return err
	}
	if st.SSLCertificateID != nil {
		if err := r.certificate(v, "ssl_certificate_id", *st.SSLCertificateID); err != nil {
			return err
		}
	}
	return v.Err()
}

// ListStreams returns a workspace's streams, oldest first, and their total.
func (s *Service) ListStreams(ctx context.Context, workspaceID uuid.UUID, page app.Page) ([]Stream, int64, error) {
	return s.SearchStreams(ctx, workspaceID, ListFilter{}, page)
}

// SearchStreams is ListStreams narrowed by f (name or listen port): a 422
// naming q when it is too long.
func (s *Service) SearchStreams(ctx context.Context, workspaceID uuid.UUID, f ListFilter, page app.Page) ([]Stream, int64, error) {
	if err := f.check(); err != nil {
		return nil, 0, err
	}
	q := s.db.WithContext(ctx).Model(&Stream{}).Where("workspace_id = ?", workspaceID)
	if f.Q != "" {
		clause, args := app.SearchClause(f.Q, "name", "listen_port::text")
		q = q.Where(clause, args...)
	}
	out, total, err := app.FindPage[Stream](q, page, "created_at, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list streams of workspace %s: %w", workspaceID, err)
	}
	for i := range out {
		out[i] = out[i].normalized()
	}
	return out, total, nil
}

// normalized returns s with UTC timestamps and a canonical target.
func (s Stream) normalized() Stream {
	s.CreatedAt = s.CreatedAt.UTC()
	s.UpdatedAt = s.UpdatedAt.UTC()
	if s.TargetAgents.Type == "" {
		s.TargetAgents.Type = TargetAll
	}
	return s
}

// GetStream returns the stream with id.
func (s *Service) GetStream(ctx context.Context, id uuid.UUID) (Stream, error) {
	var st Stream
	err := s.db.WithContext(ctx).Take(&st, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Stream{}, ErrStreamNotFound
	}
	if err != nil {
		return Stream{}, fmt.Errorf("get stream %s: %w", id, err)
	}
	return st.normalized(), nil
}

// CreateStream validates in and creates a stream in the workspace. Nothing is
// stored when any check fails.
func (s *Service) CreateStream(ctx context.Context, workspaceID uuid.UUID, in StreamInput) (Stream, error) {
	st, v := checkStream(in)
	if err := v.Err(); err != nil {
		return Stream{}, err
	}
	st.ID = uuid.New()
	st.WorkspaceID = workspaceID
	st.CreatedAt = s.now()
	st.UpdatedAt = st.CreatedAt
	err := s.transaction(ctx, func(tx *gorm.DB) error {
		ws, err := lockWorkspace(tx, workspaceID)
		if err != nil {
			return err
		}
		if err := s.checkStreamRefs(ctx, tx, st); err != nil {
			return err
		}
		if err := checkPorts(tx, workspaceID, st.ID, []listener{streamListener(st)}); err != nil {
			return err
		}
		if err := tx.Select(append([]string{"id", "workspace_id"}, streamColumns...)).Create(&st).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("create stream %q: %w", st.Name, ErrStreamNameTaken)
			}
			return fmt.Errorf("create stream %q: %w", st.Name, err)
		}
		return s.streamChanged(ctx, tx, ws.OrgID, "create", nil, &st)
	})
	if err != nil {
		return Stream{}, err
	}
	return st, nil
}

// lockStream locks the workspace of the stream with id and then reads the
// stream.
func lockStream(tx *gorm.DB, id uuid.UUID) (Stream, workspaceLock, error) {
	var wsIDs []uuid.UUID
	if err := tx.Model(&Stream{}).Where("id = ?", id).Limit(1).Pluck("workspace_id", &wsIDs).Error; err != nil {
		return Stream{}, workspaceLock{}, fmt.Errorf("find stream %s: %w", id, err)
	}
	if len(wsIDs) == 0 {
		return Stream{}, workspaceLock{}, ErrStreamNotFound
	}
	ws, err := lockWorkspace(tx, wsIDs[0])
	if err != nil {
		return Stream{}, workspaceLock{}, err
	}
	var st Stream
	err = tx.Take(&st, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Stream{}, workspaceLock{}, ErrStreamNotFound
	}
	if err != nil {
		return Stream{}, workspaceLock{}, fmt.Errorf("read stream %s: %w", id, err)
	}
	return st.normalized(), ws, nil
}

// UpdateStream changes the stream with id: change receives the stream's
// current input (Stream.Input) and edits it inside the transaction; the result
// is validated like a create. An update that changes nothing writes nothing.
func (s *Service) UpdateStream(ctx context.Context, id uuid.UUID, change func(*StreamInput) error) (Stream, error) {
	var out Stream
	err := s.transaction(ctx, func(tx *gorm.DB) error {
		before, ws, err := lockStream(tx, id)
		if err != nil {
			return err
		}
		in := before.Input()
		if err := change(&in); err != nil {
			return err
		}
		st, v := checkStream(in)
		if err := v.Err(); err != nil {
			return err
		}
		st.ID, st.WorkspaceID, st.CreatedAt, st.UpdatedAt = before.ID, before.WorkspaceID, before.CreatedAt, before.UpdatedAt
		if reflect.DeepEqual(before, st) {
			out = before
			return nil
		}
		st.UpdatedAt = s.now()
		if err := s.checkStreamRefs(ctx, tx, st); err != nil {
			return err
		}
		if err := checkPorts(tx, st.WorkspaceID, st.ID, []listener{streamListener(st)}); err != nil {
			return err
		}
		if err := tx.Model(&st).Select(streamColumns).Updates(&st).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("update stream %s: %w", id, ErrStreamNameTaken)
			}
			return fmt.Errorf("update stream %s: %w", id, err)
		}
		out = st
		return s.streamChanged(ctx, tx, ws.OrgID, "update", &before, &st)
	})
	if err != nil {
		return Stream{}, err
	}
	return out, nil
}

// DeleteStream removes the stream with id.
func (s *Service) DeleteStream(ctx context.Context, id uuid.UUID) error {
	return s.transaction(ctx, func(tx *gorm.DB) error {
		before, ws, err := lockStream(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Delete(&Stream{}, "id = ?", id).Error; err != nil {
			return fmt.Errorf("delete stream %s: %w", id, err)
		}
		return s.streamChanged(ctx, tx, ws.OrgID, "delete", &before, nil)
	})
}

// streamChanged completes a change of a stream inside its transaction: a new
// configuration version and the audit row.
func (s *Service) streamChanged(ctx context.Context, tx *gorm.DB, orgID uuid.UUID, verb string, before, after *Stream) error {
	st := after
	if st == nil {
		st = before
	}
	if err := s.ConfigChanged(ctx, tx, st.WorkspaceID, fmt.Sprintf("stream %q %sd", st.Name, verb)); err != nil {
		return fmt.Errorf("%s stream %s: %w", verb, st.ID, err)
	}
	p := app.AuditParams{
		OrgID: orgID, WorkspaceID: st.WorkspaceID, Action: ObjectStream + "." + verb,
		ObjectType: ObjectStream, ObjectID: st.ID.String(),
	}
	if before != nil {
		p.Before = *before
	}
	if after != nil {
		p.After = *after
	}
	return app.Audit(ctx, tx, p)
}
