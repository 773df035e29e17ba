package vhosts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/pmezard/go-difflib/difflib"
	"google.golang.org/protobuf/proto"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// NotifyChannel is the PostgreSQL channel ConfigChanged notifies, with the
// payload {"workspace_id": "<uuid>", "version": <n>}.
const NotifyChannel = "nxmesh_config"

// RenderOptions are the options the master renders configurations with for
// people (previews, versions, diffs). Agents render with their own ConfDir.
var RenderOptions = render.Options{ConfDir: "/etc/nginx/nxmesh"}

// Notification is the payload of a NotifyChannel notification.
type Notification struct {
	WorkspaceID uuid.UUID `json:"workspace_id"`
	Version     int64     `json:"version"`
}

// ConfigChanged records a new configuration version of a workspace inside the
// transaction tx of a change, after the change's rows are written:
//
//  1. lock the workspace's row (SELECT ... FOR NO KEY UPDATE, see
//     lockWorkspace), which serializes the workspace's changes and makes
//     versions gap-free;
//  2. build the snapshot: every upstream, virtual host, stream and
//     certificate reference of the workspace as tx sees them;
//  3. measure the configuration update it makes for the workspace's agents
//     (checkUpdateSize): a change that would make it larger than
//     grpc.max_message_bytes, which no agent could receive, is refused with a
//     422 naming the largest part;
//  4. render it, so that a change leaving the configuration unrenderable
//     (an object it refers to is gone) fails with ErrNotRenderable;
//  5. increment workspaces.config_version, insert the config_versions row
//     (actor from ctx, summary),
//  6. pg_notify(NotifyChannel, {"workspace_id", "version"}), which PostgreSQL
//     delivers to every replica only if tx commits, and
//  7. note the version for the request's answer (app.RecordConfigVersion).
//
// It is the upstreams and certs modules' ChangeFunc; this module's own changes
// call it too. Its errors leave tx to be rolled back by the caller, so a
// refused change stores nothing.
func (s *Service) ConfigChanged(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, summary string) error {
	tx = tx.WithContext(ctx)
	ws, err := lockWorkspace(tx, workspaceID)
	if err != nil {
		return err
	}
	snap, err := s.buildSnapshot(ctx, tx, workspaceID)
	if err != nil {
		return err
	}
	u := snap.configUpdate(workspaceID, 0, nil)
	if err := s.checkUpdateSize(tx, workspaceID, ws.Version, u); err != nil {
		return err
	}
	if _, err := renderForPeople(u); err != nil {
		return fmt.Errorf("%w: %v", ErrNotRenderable, renderMessage(err))
	}
	row := configVersionRow{
		WorkspaceID: workspaceID,
		Version:     ws.Version + 1,
		Summary:     summary,
		Snapshot:    snap,
		CreatedAt:   s.now(),
	}
	if p := app.PrincipalFrom(ctx); p != nil {
		if p.UserID != uuid.Nil {
			id := p.UserID
			row.ActorUserID = &id
		}
		if p.APIKey != nil {
			id := p.APIKey.ID
			row.ActorAPIKeyID = &id
		}
		row.ActorEmail = p.Email
	}
	if err := tx.Exec("UPDATE workspaces SET config_version = ? WHERE id = ?", row.Version, workspaceID).Error; err != nil {
		return fmt.Errorf("bump config version of workspace %s: %w", workspaceID, err)
	}
	if err := tx.Create(&row).Error; err != nil {
		return fmt.Errorf("store config version %d of workspace %s: %w", row.Version, workspaceID, err)
	}
	payload, err := json.Marshal(Notification{WorkspaceID: workspaceID, Version: row.Version})
	if err != nil {
		return fmt.Errorf("notify config version %d of workspace %s: %w", row.Version, workspaceID, err)
	}
	if err := tx.Exec("SELECT pg_notify(?, ?)", NotifyChannel, string(payload)).Error; err != nil {
		return fmt.Errorf("notify config version %d of workspace %s: %w", row.Version, workspaceID, err)
	}
	// The request's answer names the version (app.HeaderConfigVersion).
	app.RecordConfigVersion(ctx, row.Version)
	return nil
}

// Allowances of checkUpdateSize for what an agent's update carries beyond the
// snapshot.
const (
	// certMaterialAllowance is what one certificate counts for: its chain and
	// private key, which snapshots do not hold (a chain and key are typically
	// 3 to 8 KiB).
	certMaterialAllowance = 16 << 10
	// updateOverhead covers what the agents module adds to an update (config
	// id, checksum, agent policy) and the MasterMessage around it.
	updateOverhead = 1 << 10
)

// updateSize is an upper bound of the encoded size of the MasterMessage that
// carries u to an agent, certificate material included.
func updateSize(u *agentv1.ConfigUpdate) int {
	return proto.Size(u) + len(u.Certificates)*certMaterialAllowance + updateOverhead
}

// checkUpdateSize refuses a configuration whose update for agents would be
// larger than grpc.max_message_bytes (s.maxUpdateBytes): the master could not
// send it, nor an agent receive it. u is the update of the whole workspace
// (targeting ignored), a cheap upper bound of every agent's, so a workspace
// whose hosts are split between groups of agents is held to the limit as a
// whole. A change that does not make an oversized configuration larger than
// version (the current one) was passes, so that a workspace over a lowered
// limit can be brought back under it object by object.
func (s *Service) checkUpdateSize(tx *gorm.DB, workspaceID uuid.UUID, version int64, u *agentv1.ConfigUpdate) error {
	size := updateSize(u)
	if size <= s.maxUpdateBytes {
		return nil
	}
	if version > 0 {
		prev, err := loadVersion(tx, workspaceID, version)
		if err != nil {
			return err
		}
		if size <= updateSize(prev.Snapshot.configUpdate(workspaceID, version, nil)) {
			return nil
		}
	}
	part, partSize := largestPart(u)
	msg := fmt.Sprintf("the workspace's configuration for agents would be %s, over the limit of %s (grpc.max_message_bytes)",
		formatMiB(size), formatMiB(s.maxUpdateBytes))
	if part != "" {
		msg += fmt.Sprintf("; its largest part is %s at %s", part, formatMiB(partSize))
	}
	return app.Invalid("body", app.FieldTooLong, msg)
}

// largestPart names the virtual host, stream or upstream of u with the
// largest encoding, and that size.
func largestPart(u *agentv1.ConfigUpdate) (string, int) {
	name, size := "", 0
	consider := func(kind, n, id string, m proto.Message) {
		if sz := proto.Size(m); sz > size {
			name, size = fmt.Sprintf("%s %q (%s)", kind, n, id), sz
		}
	}
	for _, v := range u.GetVirtualHosts() {
		consider("virtual host", v.GetName(), v.GetId(), v)
	}
	for _, st := range u.GetStreams() {
		consider("stream", st.GetName(), st.GetId(), st)
	}
	for _, up := range u.GetUpstreams() {
		consider("upstream", up.GetName(), up.GetId(), up)
	}
	return name, size
}

// formatMiB writes n bytes in MiB with at most two decimals ("4.6 MiB",
// "0.25 MiB", "64 MiB").
func formatMiB(n int) string {
	s := strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + " MiB"
}

// renderMessage is the part of a renderer error worth showing.
func renderMessage(err error) string {
	msg := err.Error()
	return strings.TrimPrefix(msg, render.ErrInvalidConfig.Error()+": ")
}

// buildSnapshot reads a workspace's whole configuration in tx.
func (s *Service) buildSnapshot(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID) (storedSnapshot, error) {
	ups, err := s.ups.ListAll(ctx, tx, workspaceID)
	if err != nil {
		return storedSnapshot{}, err
	}
	var rows []vhostRow
	if err := tx.Where("workspace_id = ?", workspaceID).Order("created_at, id").Find(&rows).Error; err != nil {
		return storedSnapshot{}, fmt.Errorf("read virtual hosts of workspace %s: %w", workspaceID, err)
	}
	var sts []Stream
	if err := tx.Where("workspace_id = ?", workspaceID).Order("created_at, id").Find(&sts).Error; err != nil {
		return storedSnapshot{}, fmt.Errorf("read streams of workspace %s: %w", workspaceID, err)
	}
	cs, err := s.certs.ListAll(ctx, tx, workspaceID)
	if err != nil {
		return storedSnapshot{}, err
	}
	snap := storedSnapshot{Snapshot: Snapshot{
		Upstreams:    ups,
		VirtualHosts: make([]VirtualHost, 0, len(rows)),
		Streams:      make([]Stream, 0, len(sts)),
		Certificates: make([]CertificateRef, 0, len(cs)),
	}}
	for _, r := range rows {
		vh, hashes := r.virtualHost()
		snap.VirtualHosts = append(snap.VirtualHosts, vh)
		if len(hashes) > 0 {
			if snap.PasswordHashes == nil {
				snap.PasswordHashes = map[string]map[string]string{}
			}
			snap.PasswordHashes[vh.ID.String()] = hashes
		}
	}
	for _, st := range sts {
		snap.Streams = append(snap.Streams, st.normalized())
	}
	for _, c := range cs {
		snap.Certificates = append(snap.Certificates, CertificateRef{ID: c.ID, Domain: c.Domain, ExpiresAt: c.ExpiresAt})
	}
	if snap.Upstreams == nil {
		snap.Upstreams = []upstreams.Upstream{}
	}
	return snap, nil
}

// renderSnapshot renders every object of snap (targeting ignored) with
// RenderOptions, with placeholder certificate material.
func renderSnapshot(snap storedSnapshot, workspaceID uuid.UUID, version int64) (render.Files, error) {
	u := snap.configUpdate(workspaceID, version, nil)
	return renderForPeople(u)
}

func renderForPeople(u *agentv1.ConfigUpdate) (render.Files, error) {
	for id, c := range u.Certificates {
		c.CertificatePem = placeholderPEM("CERTIFICATE", id)
		c.PrivateKeyPem = placeholderPEM("PRIVATE KEY", id)
	}
	return render.Render(u, RenderOptions)
}

// publicFiles is what people see of rendered files: the configuration files
// and htpasswd files with each hash replaced by a fingerprint (so a changed
// password shows in a diff); certificate files are left out.
func publicFiles(files render.Files) map[string]string {
	out := make(map[string]string, len(files))
	for name, content := range files {
		switch {
		case strings.HasPrefix(name, "certs/"):
		case strings.HasPrefix(name, "htpasswd/"):
			var b strings.Builder
			for _, line := range strings.SplitAfter(string(content), "\n") {
				user, hash, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
				if !ok {
					b.WriteString(line)
					continue
				}
				sum := sha256.Sum256([]byte(hash))
				fmt.Fprintf(&b, "%s:[password hash sha256:%s]\n", user, hex.EncodeToString(sum[:6]))
			}
			out[name] = b.String()
		default:
			out[name] = string(content)
		}
	}
	return out
}

// ---- History ----

// CurrentVersion returns the workspace's current configuration version (0
// before the first change).
func (s *Service) CurrentVersion(ctx context.Context, workspaceID uuid.UUID) (int64, error) {
	var vs []int64
	err := s.db.WithContext(ctx).Raw("SELECT config_version FROM workspaces WHERE id = ?", workspaceID).Scan(&vs).Error
	if err != nil {
		return 0, fmt.Errorf("read config version of workspace %s: %w", workspaceID, err)
	}
	if len(vs) == 0 {
		return 0, fmt.Errorf("read config version of workspace %s: %w", workspaceID, app.ErrNotFound)
	}
	return vs[0], nil
}

// ListVersions returns a workspace's configuration versions, newest first,
// and their total.
func (s *Service) ListVersions(ctx context.Context, workspaceID uuid.UUID, page app.Page) ([]VersionSummary, int64, error) {
	q := s.db.WithContext(ctx).Model(&configVersionRow{}).Where("workspace_id = ?", workspaceID)
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count config versions of workspace %s: %w", workspaceID, err)
	}
	var rows []configVersionRow
	err := q.Select("workspace_id", "version", "actor_user_id", "actor_api_key_id", "actor_email", "summary", "created_at").
		Order("version DESC").Offset(page.Offset()).Limit(page.PerPage).Find(&rows).Error
	if err != nil {
		return nil, 0, fmt.Errorf("list config versions of workspace %s: %w", workspaceID, err)
	}
	out := make([]VersionSummary, len(rows))
	for i, r := range rows {
		out[i] = r.summary()
	}
	return out, total, nil
}

// loadVersion reads one stored version of a workspace. Version 0 is the empty
// configuration before the first change.
func loadVersion(tx *gorm.DB, workspaceID uuid.UUID, version int64) (configVersionRow, error) {
	if version == 0 {
		return configVersionRow{WorkspaceID: workspaceID, Snapshot: storedSnapshot{Snapshot: emptySnapshot()}}, nil
	}
	var r configVersionRow
	err := tx.Take(&r, "workspace_id = ? AND version = ?", workspaceID, version).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return r, fmt.Errorf("%w %d", ErrVersionNotFound, version)
	}
	if err != nil {
		return r, fmt.Errorf("read config version %d of workspace %s: %w", version, workspaceID, err)
	}
	return r, nil
}

func emptySnapshot() Snapshot {
	return Snapshot{Upstreams: []upstreams.Upstream{}, VirtualHosts: []VirtualHost{}, Streams: []Stream{}, Certificates: []CertificateRef{}}
}

// GetVersion returns a configuration version with its snapshot, rendered
// files and rollout to the agents.
func (s *Service) GetVersion(ctx context.Context, workspaceID uuid.UUID, version int64) (Version, error) {
	if version < 1 {
		return Version{}, fmt.Errorf("%w %d", ErrVersionNotFound, version)
	}
	r, err := loadVersion(s.db.WithContext(ctx), workspaceID, version)
	if err != nil {
		return Version{}, err
	}
	files, err := renderSnapshot(r.Snapshot, workspaceID, version)
	if err != nil {
		return Version{}, fmt.Errorf("render config version %d of workspace %s: %w", version, workspaceID, err)
	}
	agents, err := s.rollout(ctx, workspaceID, version)
	if err != nil {
		return Version{}, fmt.Errorf("rollout of config version %d of workspace %s: %w", version, workspaceID, err)
	}
	return Version{VersionSummary: r.summary(), Snapshot: r.Snapshot.Snapshot, Files: publicFiles(files), Agents: agents}, nil
}

// renderedVersion renders a stored version (0: the empty configuration) with
// its real password hashes; for tests and diffs.
func (s *Service) renderedVersion(ctx context.Context, workspaceID uuid.UUID, version int64) (render.Files, error) {
	r, err := loadVersion(s.db.WithContext(ctx), workspaceID, version)
	if err != nil {
		return nil, err
	}
	files, err := renderSnapshot(r.Snapshot, workspaceID, version)
	if err != nil {
		return nil, fmt.Errorf("render config version %d of workspace %s: %w", version, workspaceID, err)
	}
	return files, nil
}

// DiffVersions returns the unified diff of the rendered files of version
// against version against (0: the empty configuration).
func (s *Service) DiffVersions(ctx context.Context, workspaceID uuid.UUID, version, against int64) (Diff, error) {
	if version < 1 {
		return Diff{}, fmt.Errorf("%w %d", ErrVersionNotFound, version)
	}
	if against < 0 {
		return Diff{}, app.Invalid("against", app.FieldInvalidValue, "must be a version number (0 for the empty configuration)")
	}
	newFiles, err := s.renderedVersion(ctx, workspaceID, version)
	if err != nil {
		return Diff{}, err
	}
	oldFiles, err := s.renderedVersion(ctx, workspaceID, against)
	if err != nil {
		if errors.Is(err, ErrVersionNotFound) {
			return Diff{}, app.Invalid("against", app.FieldNotFound, fmt.Sprintf("the workspace has no configuration version %d", against))
		}
		return Diff{}, err
	}
	text, err := unifiedDiff(publicFiles(oldFiles), publicFiles(newFiles))
	if err != nil {
		return Diff{}, fmt.Errorf("diff config versions %d and %d of workspace %s: %w", against, version, workspaceID, err)
	}
	return Diff{Version: version, Against: against, Diff: text}, nil
}

// unifiedDiff diffs two sets of files, file by file in name order.
func unifiedDiff(a, b map[string]string) (string, error) {
	names := map[string]bool{}
	for n := range a {
		names[n] = true
	}
	for n := range b {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	var out strings.Builder
	for _, n := range sorted {
		oldText, inOld := a[n]
		newText, inNew := b[n]
		if oldText == newText && inOld == inNew {
			continue
		}
		from, to := "a/"+n, "b/"+n
		if !inOld {
			from = "/dev/null"
		}
		if !inNew {
			to = "/dev/null"
		}
		d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: splitLines(oldText), B: splitLines(newText),
			FromFile: from, ToFile: to, Context: 3,
		})
		if err != nil {
			return "", err
		}
		out.WriteString(d)
	}
	return out.String(), nil
}

// splitLines splits text into lines that keep their "\n" (a last line
// without one gets it, so that the diff stays well-formed).
func splitLines(text string) []string {
	if text == "" {
		return nil
	}
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else {
		lines[len(lines)-1] += "\n"
	}
	return lines
}

// ---- Rollback ----

// Rollback restores a workspace's upstreams, virtual hosts and streams to a
// configuration version and records the result as a new version ("rollback to
// version N"), whose rendered configuration equals version N's. Certificates
// are not restored: if the version uses a certificate that no longer exists,
// nothing changes and the error (ErrCertificatesGone) names it.
func (s *Service) Rollback(ctx context.Context, workspaceID uuid.UUID, version int64) (VersionSummary, error) {
	if version < 1 {
		return VersionSummary{}, app.Invalid("version", app.FieldInvalidValue, "must be a version number of at least 1")
	}
	var out VersionSummary
	err := s.transaction(ctx, func(tx *gorm.DB) error {
		ws, err := lockWorkspace(tx, workspaceID)
		if err != nil {
			return err
		}
		target, err := loadVersion(tx, workspaceID, version)
		if errors.Is(err, ErrVersionNotFound) {
			return app.Invalid("version", app.FieldNotFound, fmt.Sprintf("the workspace has no configuration version %d", version))
		}
		if err != nil {
			return err
		}
		snap := target.Snapshot
		if err := s.checkRollbackCertificates(ctx, tx, workspaceID, snap); err != nil {
			return err
		}
		if err := s.ups.ReplaceAll(ctx, tx, workspaceID, snap.Upstreams); err != nil {
			return fmt.Errorf("roll back workspace %s to version %d: restore upstreams: %w", workspaceID, version, err)
		}
		if err := s.restoreVirtualHosts(tx, workspaceID, snap); err != nil {
			return err
		}
		if err := s.restoreStreams(tx, workspaceID, snap.Streams); err != nil {
			return err
		}
		summary := fmt.Sprintf("rollback to version %d", version)
		if err := s.ConfigChanged(ctx, tx, workspaceID, summary); err != nil {
			return fmt.Errorf("roll back workspace %s to version %d: %w", workspaceID, version, err)
		}
		r, err := loadVersion(tx, workspaceID, ws.Version+1)
		if err != nil {
			return err
		}
		out = r.summary()
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: ws.OrgID, WorkspaceID: workspaceID, Action: ObjectConfig + ".rollback",
			ObjectType: ObjectConfig, ObjectID: workspaceID.String(),
			Before: map[string]int64{"version": ws.Version},
			After:  map[string]int64{"version": r.Version, "restored_version": version},
		})
	})
	if err != nil {
		return VersionSummary{}, err
	}
	return out, nil
}

// checkRollbackCertificates returns ErrCertificatesGone naming every
// certificate snap uses that the workspace no longer has.
func (s *Service) checkRollbackCertificates(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, snap storedSnapshot) error {
	domains := map[uuid.UUID]string{}
	for _, c := range snap.Certificates {
		domains[c.ID] = c.Domain
	}
	r := s.refs(ctx, tx, workspaceID)
	var missing []string
	check := func(id *uuid.UUID, user string) error {
		if id == nil {
			return nil
		}
		v := &app.Validator{}
		if err := r.certificate(v, "", *id); err != nil {
			return err
		}
		if !v.OK() {
			missing = append(missing, fmt.Sprintf("certificate %s (%s) used by %s", id, domains[*id], user))
		}
		return nil
	}
	for _, vh := range snap.VirtualHosts {
		if err := check(vh.SSLCertificateID, describeVirtualHost(vh.Name, vh.ID)); err != nil {
			return err
		}
	}
	for _, st := range snap.Streams {
		if err := check(st.SSLCertificateID, describeStream(st.Name, st.ID)); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrCertificatesGone, strings.Join(missing, "; "))
	}
	return nil
}

// restoreVirtualHosts makes the workspace's virtual hosts exactly those of
// snap (ids included). Names may move between hosts, so their uniqueness is
// checked once every row is in place.
func (s *Service) restoreVirtualHosts(tx *gorm.DB, workspaceID uuid.UUID, snap storedSnapshot) error {
	if err := tx.Exec("SET CONSTRAINTS virtual_hosts_workspace_name_key DEFERRED").Error; err != nil {
		return fmt.Errorf("restore virtual hosts of workspace %s: defer name check: %w", workspaceID, err)
	}
	ids := make([]uuid.UUID, 0, len(snap.VirtualHosts))
	for _, vh := range snap.VirtualHosts {
		ids = append(ids, vh.ID)
	}
	del := tx.Where("workspace_id = ?", workspaceID)
	if len(ids) > 0 {
		del = del.Where("id NOT IN ?", ids)
	}
	if err := del.Delete(&vhostRow{}).Error; err != nil {
		return fmt.Errorf("restore virtual hosts of workspace %s: delete: %w", workspaceID, err)
	}
	t := s.now()
	for _, vh := range snap.VirtualHosts {
		row := vhostRowOf(vh, snap.PasswordHashes[vh.ID.String()])
		row.WorkspaceID = workspaceID
		row.UpdatedAt = t
		res := tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "id"}},
			DoUpdates: clause.AssignmentColumns(vhostColumns),
			Where:     clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "virtual_hosts.workspace_id = excluded.workspace_id"}}},
		}).Select(append([]string{"id", "workspace_id"}, vhostColumns...)).Create(&row)
		if res.Error != nil {
			return fmt.Errorf("restore virtual hosts of workspace %s: write %s: %w", workspaceID, vh.ID, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("restore virtual hosts of workspace %s: virtual host %s belongs to another workspace: %w",
				workspaceID, vh.ID, app.ErrConflict)
		}
	}
	if err := tx.Exec("SET CONSTRAINTS virtual_hosts_workspace_name_key IMMEDIATE").Error; err != nil {
		if app.IsUniqueViolation(err) {
			return fmt.Errorf("restore virtual hosts of workspace %s: %w", workspaceID, ErrVirtualHostNameTaken)
		}
		return fmt.Errorf("restore virtual hosts of workspace %s: check names: %w", workspaceID, err)
	}
	return nil
}

// restoreStreams makes the workspace's streams exactly sts (ids included).
func (s *Service) restoreStreams(tx *gorm.DB, workspaceID uuid.UUID, sts []Stream) error {
	if err := tx.Exec("SET CONSTRAINTS streams_workspace_name_key DEFERRED").Error; err != nil {
		return fmt.Errorf("restore streams of workspace %s: defer name check: %w", workspaceID, err)
	}
	ids := make([]uuid.UUID, 0, len(sts))
	for _, st := range sts {
		ids = append(ids, st.ID)
	}
	del := tx.Where("workspace_id = ?", workspaceID)
	if len(ids) > 0 {
		del = del.Where("id NOT IN ?", ids)
	}
	if err := del.Delete(&Stream{}).Error; err != nil {
		return fmt.Errorf("restore streams of workspace %s: delete: %w", workspaceID, err)
	}
	t := s.now()
	for _, st := range sts {
		st.WorkspaceID = workspaceID
		st.UpdatedAt = t
		res := tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "id"}},
			DoUpdates: clause.AssignmentColumns(streamColumns),
			Where:     clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "streams.workspace_id = excluded.workspace_id"}}},
		}).Select(append([]string{"id", "workspace_id"}, streamColumns...)).Create(&st)
		if res.Error != nil {
			return fmt.Errorf("restore streams of workspace %s: write %s: %w", workspaceID, st.ID, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("restore streams of workspace %s: stream %s belongs to another workspace: %w",
				workspaceID, st.ID, app.ErrConflict)
		}
	}
	if err := tx.Exec("SET CONSTRAINTS streams_workspace_name_key IMMEDIATE").Error; err != nil {
		if app.IsUniqueViolation(err) {
			return fmt.Errorf("restore streams of workspace %s: %w", workspaceID, ErrStreamNameTaken)
		}
		return fmt.Errorf("restore streams of workspace %s: check names: %w", workspaceID, err)
	}
	return nil
}

// ---- Desired configuration and previews ----

// DesiredConfig returns the ConfigUpdate of a configuration version for the
// objects whose TargetAgents include accepts (nil: every object), e.g.
// func(t TargetAgents) bool { return t.Matches(agentID, labels) }. Certificates
// carry no material: add it with the certs service's Material before sending.
func (s *Service) DesiredConfig(ctx context.Context, workspaceID uuid.UUID, version int64, include func(TargetAgents) bool) (*agentv1.ConfigUpdate, error) {
	snap, err := s.snapshot(ctx, workspaceID, version)
	if err != nil {
		return nil, err
	}
	return snap.configUpdate(workspaceID, version, include), nil
}

// PreviewVirtualHost renders the virtual host with id, with the upstreams it
// uses, exactly as an agent targeted by it alone would get it: the http.conf
// file.
func (s *Service) PreviewVirtualHost(ctx context.Context, id uuid.UUID) (Preview, error) {
	var r vhostRow
	err := s.db.WithContext(ctx).Take(&r, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Preview{}, ErrVirtualHostNotFound
	}
	if err != nil {
		return Preview{}, fmt.Errorf("preview virtual host %s: %w", id, err)
	}
	vh, hashes := r.virtualHost()
	snap, err := s.buildSnapshot(ctx, s.db.WithContext(ctx), r.WorkspaceID)
	if err != nil {
		return Preview{}, err
	}
	snap.VirtualHosts, snap.Streams = []VirtualHost{vh}, nil
	snap.PasswordHashes = map[string]map[string]string{vh.ID.String(): hashes}
	files, err := renderSnapshot(snap, r.WorkspaceID, 0)
	if err != nil {
		return Preview{}, fmt.Errorf("%w: %v", ErrNotRenderable, renderMessage(err))
	}
	return Preview{Files: map[string]string{render.HTTPConf: string(files[render.HTTPConf])}}, nil
}

// PreviewStream renders the stream with id, with its upstream: the
// stream.conf file.
func (s *Service) PreviewStream(ctx context.Context, id uuid.UUID) (Preview, error) {
	st, err := s.GetStream(ctx, id)
	if err != nil {
		return Preview{}, err
	}
	snap, err := s.buildSnapshot(ctx, s.db.WithContext(ctx), st.WorkspaceID)
	if err != nil {
		return Preview{}, err
	}
	snap.VirtualHosts, snap.Streams, snap.PasswordHashes = nil, []Stream{st}, nil
	files, err := renderSnapshot(snap, st.WorkspaceID, 0)
	if err != nil {
		return Preview{}, fmt.Errorf("%w: %v", ErrNotRenderable, renderMessage(err))
	}
	return Preview{Files: map[string]string{render.StreamConf: string(files[render.StreamConf])}}, nil
}
