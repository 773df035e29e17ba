package orgs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// Service is the domain logic of organizations, workspaces, memberships and the
// organization audit log. Every write runs in one transaction with its audit row.
//
// Methods that change memberships check the caller's role themselves (besides the
// route guard), because the owner rules depend on the member being changed: the
// caller is read from ctx (app.PrincipalFrom). A ctx without a principal is the
// master itself (first start, CLI) and may do everything.
type Service struct {
	db     *gorm.DB
	logger *slog.Logger
	clock  app.Clock
	keys   *auth.Service
	// mailer sends invitation links; publicURL is where they point.
	mailer    *auth.Mailer
	publicURL string

	// inval keeps roles cached per (user, organization) consistent on every
	// replica; membership and organization changes Sync after committing.
	inval *app.Invalidator
	roles *app.Cache[roleEntry]
	// workspaces and workspaceLists cache GetWorkspace and ListWorkspaces,
	// dropped when a workspace of the organization changes.
	workspaces     *app.Cache[Workspace]
	workspaceLists *app.Cache[cachedWorkspaces]
	// workspaceBodies holds the API's encoded answers of both, under the
	// same keys prefixed "get/" and "list/".
	workspaceBodies *app.Cache[[]byte]
}

// cachedWorkspaces is one cached page of ListWorkspaces.
type cachedWorkspaces struct {
	Items []Workspace
	Total int64
}

// roleEntry is what Role caches: a membership's role ("" for none) and its
// organization's require_email_code.
type roleEntry struct {
	Role             string
	RequireEmailCode bool
}

// NewService returns a Service over d.DB. opts.Auth is the auth service that
// stores API keys (only the API key methods and require_email_code use it).
func NewService(d app.Deps, opts Options) *Service {
	return &Service{
		db: d.DB, logger: d.Logger.With("module", "orgs"), clock: d.Clock, keys: opts.Auth,
		mailer: auth.NewMailer(d.Config.SMTP), publicURL: d.Config.HTTP.PublicURL,
		inval: d.Invalidator, roles: app.NewCache[roleEntry](d.Invalidator, 0),
		workspaces:      app.NewCache[Workspace](d.Invalidator, 0),
		workspaceLists:  app.NewCache[cachedWorkspaces](d.Invalidator, 0),
		workspaceBodies: app.NewCache[[]byte](d.Invalidator, 0),
	}
}

// synced returns err; after a committed change (err nil) it first waits until
// this replica's caches have seen it (app.Invalidator.Sync).
func (s *Service) synced(ctx context.Context, err error) error {
	if err == nil {
		s.inval.Sync(ctx)
	}
	return err
}

// Validation limits.
const (
	// MaxNameLength is the longest organization or workspace name, in characters.
	MaxNameLength = 100
	// MinSlugLength and MaxSlugLength bound slugs.
	MinSlugLength = 2
	MaxSlugLength = 63
)

var slugPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*[a-z0-9]$`)

// checkName validates a (trimmed) display name.
func checkName(v *app.Validator, field, name string) {
	switch {
	case name == "":
		v.Add(field, app.FieldRequired, "is required")
	case utf8.RuneCountInString(name) > MaxNameLength:
		v.Add(field, app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxNameLength))
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		v.Add(field, app.FieldInvalidFormat, "must not contain control characters")
	}
}

// checkSlug validates a slug: lowercase letters, digits and '-', 2 to 63
// characters, not starting or ending with '-'.
func checkSlug(v *app.Validator, field, slug string) {
	switch {
	case slug == "":
		v.Add(field, app.FieldRequired, "is required")
	case len(slug) > MaxSlugLength:
		v.Add(field, app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxSlugLength))
	case len(slug) < MinSlugLength || !slugPattern.MatchString(slug):
		v.Add(field, app.FieldInvalidFormat, fmt.Sprintf("must be %d to %d lowercase letters, digits or '-', not starting or ending with '-'", MinSlugLength, MaxSlugLength))
	}
}

func checkRole(v *app.Validator, field, role string) {
	if role == "" {
		v.Add(field, app.FieldRequired, "is required")
		return
	}
	v.Check(authz.ValidRole(role), field, app.FieldInvalidValue, "must be one of owner, admin, operator, viewer")
}

// lockOrganization loads the organization and locks its row until tx ends, which
// serializes every membership change of the organization.
func lockOrganization(tx *gorm.DB, id uuid.UUID) (Organization, error) {
	var org Organization
	err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Take(&org, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return org, ErrOrganizationNotFound
	}
	if err != nil {
		return org, fmt.Errorf("lock organization %s: %w", id, err)
	}
	return org, nil
}

// callerRole is the role of ctx's caller in the organization, read in tx: an API
// key's role (organization-wide keys only), owner for superadmins and for the
// master itself (no principal), else the caller's membership ("" for none).
func callerRole(ctx context.Context, tx *gorm.DB, orgID uuid.UUID) (string, error) {
	p := app.PrincipalFrom(ctx)
	switch {
	case p == nil:
		return authz.RoleOwner, nil
	case p.APIKey != nil:
		if p.APIKey.OrgID != orgID || p.APIKey.WorkspaceID != uuid.Nil {
			return "", nil
		}
		return p.APIKey.Role, nil
	case p.Superadmin:
		return authz.RoleOwner, nil
	}
	return membershipRole(tx, p.UserID, orgID)
}

func membershipRole(tx *gorm.DB, userID, orgID uuid.UUID) (string, error) {
	var roles []string
	err := tx.Model(&Membership{}).Where("organization_id = ? AND user_id = ?", orgID, userID).Limit(1).Pluck("role", &roles).Error
	if err != nil {
		return "", fmt.Errorf("read role of user %s in organization %s: %w", userID, orgID, err)
	}
	if len(roles) == 0 {
		return "", nil
	}
	return roles[0], nil
}

// Role returns the user's role in the organization of scope, "" when the user is
// not a member. It is app.Wiring.Role.
//
// An organization with require_email_code refuses its members' sessions that
// were not confirmed with an emailed one-time code (ErrEmailCodeSessionRequired,
// 403): the caller comes from ctx (app.PrincipalFrom), where the guard puts it.
// Non-members still get "" (404), so the refusal discloses nothing to them. API
// keys and superadmins do not reach Role; a ctx without a principal is the
// master itself.
func (s *Service) Role(ctx context.Context, userID uuid.UUID, scope app.Scope) (string, error) {
	key := scope.OrgID.String() + ":" + userID.String()
	row, err := s.roles.Load(ctx, key, func(ctx context.Context) (roleEntry, []string, error) {
		var rows []roleEntry
		err := s.db.WithContext(ctx).Raw(`
			SELECT m.role, o.require_email_code
			FROM memberships m JOIN organizations o ON o.id = m.organization_id
			WHERE m.organization_id = ? AND m.user_id = ?`, scope.OrgID, userID).Scan(&rows).Error
		if err != nil {
			return roleEntry{}, nil, fmt.Errorf("read role of user %s in organization %s: %w", userID, scope.OrgID, err)
		}
		tags := []string{app.TagMember + key, app.TagOrg + scope.OrgID.String()}
		if len(rows) == 0 {
			return roleEntry{}, tags, nil
		}
		return rows[0], tags, nil
	})
	if err != nil {
		return "", err
	}
	if row.Role == "" {
		return "", nil
	}
	if row.RequireEmailCode {
		if p := app.PrincipalFrom(ctx); p != nil && p.APIKey == nil && !p.EmailCodeVerified {
			return "", ErrEmailCodeSessionRequired
		}
	}
	return row.Role, nil
}

// ---- Organizations ----

// CreateOrganizationParams are the inputs of CreateOrganization.
type CreateOrganizationParams struct {
	Name string
	Slug string
	// OwnerID is the user who becomes the organization's first owner.
	OwnerID uuid.UUID
}

// CreateOrganization creates an organization with OwnerID as its owner. API keys
// may not create organizations.
func (s *Service) CreateOrganization(ctx context.Context, p CreateOrganizationParams) (Organization, error) {
	if pr := app.PrincipalFrom(ctx); pr != nil && pr.APIKey != nil {
		return Organization{}, ErrAPIKeyCannotCreateOrganization
	}
	p.Name = strings.TrimSpace(p.Name)
	v := &app.Validator{}
	checkName(v, "name", p.Name)
	checkSlug(v, "slug", p.Slug)
	if err := v.Err(); err != nil {
		return Organization{}, err
	}
	if p.OwnerID == uuid.Nil {
		return Organization{}, errors.New("create organization: an owner is required")
	}
	org := Organization{ID: uuid.New(), Name: p.Name, Slug: p.Slug}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return createOrganization(ctx, tx, &org, p.OwnerID)
	})
	if err := s.synced(ctx, err); err != nil {
		return Organization{}, err
	}
	return org, nil
}

// createOrganization inserts org and ownerID's owner membership, with audit rows.
func createOrganization(ctx context.Context, tx *gorm.DB, org *Organization, ownerID uuid.UUID) error {
	if err := tx.Create(org).Error; err != nil {
		if app.IsUniqueViolation(err) {
			return fmt.Errorf("create organization %q: %w", org.Slug, ErrOrgSlugTaken)
		}
		return fmt.Errorf("create organization %q: %w", org.Slug, err)
	}
	if err := app.Audit(ctx, tx, app.AuditParams{
		OrgID: org.ID, Action: "organization.create", ObjectType: ObjectOrganization,
		ObjectID: org.ID.String(), After: org,
	}); err != nil {
		return err
	}
	if err := tx.Create(&Membership{OrganizationID: org.ID, UserID: ownerID, Role: authz.RoleOwner}).Error; err != nil {
		if app.IsForeignKeyViolation(err) {
			return fmt.Errorf("create organization %q: owner %s: %w", org.Slug, ownerID, app.ErrNotFound)
		}
		return fmt.Errorf("create organization %q: add owner %s: %w", org.Slug, ownerID, err)
	}
	m, err := loadMember(tx, org.ID, ownerID)
	if err != nil {
		return err
	}
	return app.Audit(ctx, tx, app.AuditParams{
		OrgID: org.ID, Action: "member.add", ObjectType: ObjectMember,
		ObjectID: ownerID.String(), After: m,
	})
}

// ListOrganizations returns the organizations p may see, oldest first: every
// organization for a superadmin, the key's organization for an API key, the
// user's organizations otherwise.
func (s *Service) ListOrganizations(ctx context.Context, p *app.Principal, page app.Page) ([]Organization, int64, error) {
	q := s.db.WithContext(ctx).Model(&Organization{})
	switch {
	case p == nil:
		return nil, 0, nil
	case p.APIKey != nil:
		q = q.Where("id = ?", p.APIKey.OrgID)
	case p.Superadmin:
	default:
		q = q.Where("id IN (SELECT organization_id FROM memberships WHERE user_id = ?)", p.UserID)
	}
	out, total, err := app.FindPage[Organization](q, page, "created_at, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list organizations: %w", err)
	}
	return out, total, nil
}

// GetOrganization returns the organization with id.
func (s *Service) GetOrganization(ctx context.Context, id uuid.UUID) (Organization, error) {
	var org Organization
	err := s.db.WithContext(ctx).Take(&org, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return org, ErrOrganizationNotFound
	}
	if err != nil {
		return org, fmt.Errorf("get organization %s: %w", id, err)
	}
	return org, nil
}

// UpdateOrganizationParams are the changes of UpdateOrganization; nil fields are
// left alone and at least one must be set.
type UpdateOrganizationParams struct {
	Name             *string
	Slug             *string
	RequireEmailCode *bool
}

// UpdateOrganization changes the organization with id. require_email_code can
// be turned on only when outgoing mail is configured (smtp.host): without it
// nobody could get the code the organization asks for.
func (s *Service) UpdateOrganization(ctx context.Context, id uuid.UUID, p UpdateOrganizationParams) (Organization, error) {
	v := &app.Validator{}
	if p.Name == nil && p.Slug == nil && p.RequireEmailCode == nil {
		v.Add("body", app.FieldRequired, "at least one of name, slug, require_email_code is required")
	}
	if p.RequireEmailCode != nil && *p.RequireEmailCode {
		v.Check(s.keys != nil && s.keys.MailConfigured(), "require_email_code", app.FieldInvalidValue,
			"can be enabled only when outgoing mail (SMTP, smtp.host) is configured, so members can receive their sign-in codes")
	}
	if p.Name != nil {
		*p.Name = strings.TrimSpace(*p.Name)
		checkName(v, "name", *p.Name)
	}
	if p.Slug != nil {
		checkSlug(v, "slug", *p.Slug)
	}
	if err := v.Err(); err != nil {
		return Organization{}, err
	}
	var org Organization
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if org, err = lockOrganization(tx, id); err != nil {
			return err
		}
		before := org
		if p.Name != nil {
			org.Name = *p.Name
		}
		if p.Slug != nil {
			org.Slug = *p.Slug
		}
		if p.RequireEmailCode != nil {
			org.RequireEmailCode = *p.RequireEmailCode
		}
		if org == before {
			return nil
		}
		if err := tx.Select("name", "slug", "require_email_code", "updated_at").Updates(&org).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("update organization %s: %w", id, ErrOrgSlugTaken)
			}
			return fmt.Errorf("update organization %s: %w", id, err)
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: org.ID, Action: "organization.update", ObjectType: ObjectOrganization,
			ObjectID: org.ID.String(), Before: before, After: org,
		})
	})
	if err := s.synced(ctx, err); err != nil {
		return Organization{}, err
	}
	return org, nil
}

// DeleteOrganization deletes the organization with id and, through the schema's
// cascades, everything it owns.
func (s *Service) DeleteOrganization(ctx context.Context, id uuid.UUID) error {
	return s.synced(ctx, s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		org, err := lockOrganization(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Delete(&Organization{}, "id = ?", id).Error; err != nil {
			return fmt.Errorf("delete organization %s: %w", id, err)
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: org.ID, Action: "organization.delete", ObjectType: ObjectOrganization,
			ObjectID: org.ID.String(), Before: org,
		})
	}))
}

// ---- Workspaces ----

// CreateWorkspaceParams are the inputs of CreateWorkspace.
type CreateWorkspaceParams struct {
	OrgID uuid.UUID
	Name  string
	Slug  string
}

// CreateWorkspace creates a workspace in an organization.
func (s *Service) CreateWorkspace(ctx context.Context, p CreateWorkspaceParams) (Workspace, error) {
	p.Name = strings.TrimSpace(p.Name)
	v := &app.Validator{}
	checkName(v, "name", p.Name)
	checkSlug(v, "slug", p.Slug)
	if err := v.Err(); err != nil {
		return Workspace{}, err
	}
	ws := Workspace{ID: uuid.New(), OrganizationID: p.OrgID, Name: p.Name, Slug: p.Slug}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return createWorkspace(ctx, tx, &ws)
	})
	if err := s.synced(ctx, err); err != nil {
		return Workspace{}, err
	}
	return ws, nil
}

func createWorkspace(ctx context.Context, tx *gorm.DB, ws *Workspace) error {
	if err := tx.Create(ws).Error; err != nil {
		switch {
		case app.IsUniqueViolation(err):
			return fmt.Errorf("create workspace %q: %w", ws.Slug, ErrWorkspaceSlugTaken)
		case app.IsForeignKeyViolation(err):
			return fmt.Errorf("create workspace %q: %w", ws.Slug, ErrOrganizationNotFound)
		}
		return fmt.Errorf("create workspace %q: %w", ws.Slug, err)
	}
	return app.Audit(ctx, tx, app.AuditParams{
		OrgID: ws.OrganizationID, WorkspaceID: ws.ID, Action: "workspace.create",
		ObjectType: ObjectWorkspace, ObjectID: ws.ID.String(), After: ws,
	})
}

// ListWorkspaces returns an organization's workspaces, oldest first. Pages
// are cached per replica until a workspace of the organization changes (see
// app.Invalidator); callers must not modify the returned slice.
func (s *Service) ListWorkspaces(ctx context.Context, orgID uuid.UUID, page app.Page) ([]Workspace, int64, error) {
	key := fmt.Sprintf("%s/%d/%d", orgID, page.Page, page.PerPage)
	p, err := s.workspaceLists.Load(ctx, key, func(ctx context.Context) (cachedWorkspaces, []string, error) {
		q := s.db.WithContext(ctx).Model(&Workspace{}).Where("organization_id = ?", orgID)
		out, total, err := app.FindPage[Workspace](q, page, "created_at, id")
		if err != nil {
			return cachedWorkspaces{}, nil, fmt.Errorf("list workspaces of %s: %w", orgID, err)
		}
		return cachedWorkspaces{Items: out, Total: total}, []string{app.TagOrgWorkspaces + orgID.String(), app.TagOrg + orgID.String()}, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return p.Items, p.Total, nil
}

// GetWorkspace returns the workspace with id, cached per replica until it
// changes (see app.Invalidator).
func (s *Service) GetWorkspace(ctx context.Context, id uuid.UUID) (Workspace, error) {
	return s.workspaces.Load(ctx, id.String(), func(ctx context.Context) (Workspace, []string, error) {
		var ws Workspace
		err := s.db.WithContext(ctx).Take(&ws, "id = ?", id).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ws, nil, ErrWorkspaceNotFound
		}
		if err != nil {
			return ws, nil, fmt.Errorf("get workspace %s: %w", id, err)
		}
		return ws, []string{app.TagWorkspace + id.String(), app.TagOrg + ws.OrganizationID.String()}, nil
	})
}

// workspaceJSON is GetWorkspace encoded as the API answers it, cached the same way.
func (s *Service) workspaceJSON(ctx context.Context, id uuid.UUID) ([]byte, error) {
	return s.workspaceBodies.Load(ctx, "get/"+id.String(), func(ctx context.Context) ([]byte, []string, error) {
		ws, err := s.GetWorkspace(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		b, err := json.Marshal(ws)
		return b, []string{app.TagWorkspace + id.String(), app.TagOrg + ws.OrganizationID.String()}, err
	})
}

// listWorkspacesJSON is ListWorkspaces encoded as the API's list envelope,
// cached the same way.
func (s *Service) listWorkspacesJSON(ctx context.Context, orgID uuid.UUID, page app.Page) ([]byte, error) {
	key := fmt.Sprintf("list/%s/%d/%d", orgID, page.Page, page.PerPage)
	return s.workspaceBodies.Load(ctx, key, func(ctx context.Context) ([]byte, []string, error) {
		items, total, err := s.ListWorkspaces(ctx, orgID, page)
		if err != nil {
			return nil, nil, err
		}
		b, err := json.Marshal(app.NewList(items, page, total))
		return b, []string{app.TagOrgWorkspaces + orgID.String(), app.TagOrg + orgID.String()}, err
	})
}

// UpdateWorkspaceParams are the changes of UpdateWorkspace; nil fields are left
// alone and at least one must be set.
type UpdateWorkspaceParams struct {
	Name *string
	Slug *string
}

// UpdateWorkspace changes the workspace with id.
func (s *Service) UpdateWorkspace(ctx context.Context, id uuid.UUID, p UpdateWorkspaceParams) (Workspace, error) {
	v := &app.Validator{}
	if p.Name == nil && p.Slug == nil {
		v.Add("body", app.FieldRequired, "at least one of name, slug is required")
	}
	if p.Name != nil {
		*p.Name = strings.TrimSpace(*p.Name)
		checkName(v, "name", *p.Name)
	}
	if p.Slug != nil {
		checkSlug(v, "slug", *p.Slug)
	}
	if err := v.Err(); err != nil {
		return Workspace{}, err
	}
	var ws Workspace
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Take(&ws, "id = ?", id).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrWorkspaceNotFound
		}
		if err != nil {
			return fmt.Errorf("lock workspace %s: %w", id, err)
		}
		before := ws
		if p.Name != nil {
			ws.Name = *p.Name
		}
		if p.Slug != nil {
			ws.Slug = *p.Slug
		}
		if ws == before {
			return nil
		}
		if err := tx.Select("name", "slug", "updated_at").Updates(&ws).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("update workspace %s: %w", id, ErrWorkspaceSlugTaken)
			}
			return fmt.Errorf("update workspace %s: %w", id, err)
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: ws.OrganizationID, WorkspaceID: ws.ID, Action: "workspace.update",
			ObjectType: ObjectWorkspace, ObjectID: ws.ID.String(), Before: before, After: ws,
		})
	})
	if err := s.synced(ctx, err); err != nil {
		return Workspace{}, err
	}
	return ws, nil
}

// DeleteWorkspace deletes the workspace with id and, through the schema's
// cascades, everything it holds.
func (s *Service) DeleteWorkspace(ctx context.Context, id uuid.UUID) error {
	return s.synced(ctx, s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ws Workspace
		err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Take(&ws, "id = ?", id).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrWorkspaceNotFound
		}
		if err != nil {
			return fmt.Errorf("lock workspace %s: %w", id, err)
		}
		if err := tx.Delete(&Workspace{}, "id = ?", id).Error; err != nil {
			return fmt.Errorf("delete workspace %s: %w", id, err)
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: ws.OrganizationID, WorkspaceID: ws.ID, Action: "workspace.delete",
			ObjectType: ObjectWorkspace, ObjectID: ws.ID.String(), Before: ws,
		})
	}))
}

// ---- Members ----

func memberQuery(tx *gorm.DB) *gorm.DB {
	return tx.Table("memberships AS m").
		Select("m.user_id, u.email, u.name, m.role, m.created_at").
		Joins("JOIN users AS u ON u.id = m.user_id")
}

func loadMember(tx *gorm.DB, orgID, userID uuid.UUID) (Member, error) {
	var out []Member
	err := memberQuery(tx).Where("m.organization_id = ? AND m.user_id = ?", orgID, userID).Limit(1).Scan(&out).Error
	if err != nil {
		return Member{}, fmt.Errorf("get member %s of %s: %w", userID, orgID, err)
	}
	if len(out) == 0 {
		return Member{}, ErrMemberNotFound
	}
	return out[0], nil
}

// ListMembers returns an organization's members in the order they joined.
func (s *Service) ListMembers(ctx context.Context, orgID uuid.UUID, page app.Page) ([]Member, int64, error) {
	db := s.db.WithContext(ctx)
	var total int64
	if err := db.Model(&Membership{}).Where("organization_id = ?", orgID).Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count members of %s: %w", orgID, err)
	}
	var out []Member
	err := memberQuery(db).Where("m.organization_id = ?", orgID).
		Order("m.created_at, m.user_id").Offset(page.Offset()).Limit(page.PerPage).Scan(&out).Error
	if err != nil {
		return nil, 0, fmt.Errorf("list members of %s: %w", orgID, err)
	}
	return out, total, nil
}

// GetMember returns one member of an organization.
func (s *Service) GetMember(ctx context.Context, orgID, userID uuid.UUID) (Member, error) {
	return loadMember(s.db.WithContext(ctx), orgID, userID)
}

// AddMemberParams are the inputs of AddMember and InviteMember.
type AddMemberParams struct {
	OrgID uuid.UUID
	// Email names an existing user.
	Email string
	Role  string
}

// memberChange runs fn in a transaction holding the organization's lock, with the
// caller's role in it; callers below admin are refused.
func (s *Service) memberChange(ctx context.Context, orgID uuid.UUID, fn func(tx *gorm.DB, callerRole string) error) error {
	return s.synced(ctx, s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := lockOrganization(tx, orgID); err != nil {
			return err
		}
		role, err := callerRole(ctx, tx, orgID)
		if err != nil {
			return err
		}
		if authz.RoleRank(role) < authz.RoleRank(authz.RoleAdmin) {
			return ErrNotPermitted
		}
		return fn(tx, role)
	}))
}

// checkMemberParams validates the inputs of AddMember and InviteMember.
func checkMemberParams(p *AddMemberParams) error {
	p.Email = strings.TrimSpace(p.Email)
	v := &app.Validator{}
	v.Check(p.Email != "", "email", app.FieldRequired, "is required")
	checkRole(v, "role", p.Role)
	return v.Err()
}

// findUserByEmail returns the id of the account with email (any case); an
// unknown address is a 422 naming email.
func findUserByEmail(tx *gorm.DB, email string) (uuid.UUID, error) {
	var ids []uuid.UUID
	if err := tx.Table("users").Where("lower(email) = lower(?)", email).Limit(1).Pluck("id", &ids).Error; err != nil {
		return uuid.Nil, fmt.Errorf("find user %q: %w", email, err)
	}
	if len(ids) == 0 {
		return uuid.Nil, app.Invalid("email", app.FieldNotFound, "no account with this e-mail")
	}
	return ids[0], nil
}

// AddMember gives an existing user a role in the organization at once, without
// asking them. Only the master itself may (a ctx without a principal: first
// start, the CLI, tests); requests invite instead (InviteMember), because
// membership changes how an organization's policy applies to the user.
func (s *Service) AddMember(ctx context.Context, p AddMemberParams) (Member, error) {
	if app.PrincipalFrom(ctx) != nil {
		return Member{}, ErrConsentRequired
	}
	if err := checkMemberParams(&p); err != nil {
		return Member{}, err
	}
	var m Member
	err := s.memberChange(ctx, p.OrgID, func(tx *gorm.DB, _ string) error {
		userID, err := findUserByEmail(tx, p.Email)
		if err != nil {
			return err
		}
		m, err = insertMember(ctx, tx, p.OrgID, userID, p.Role)
		return err
	})
	if err != nil {
		return Member{}, err
	}
	return m, nil
}

// insertMember creates the membership with its member.add audit row.
func insertMember(ctx context.Context, tx *gorm.DB, orgID, userID uuid.UUID, role string) (Member, error) {
	if err := tx.Create(&Membership{OrganizationID: orgID, UserID: userID, Role: role}).Error; err != nil {
		if app.IsUniqueViolation(err) {
			return Member{}, fmt.Errorf("add member %s: %w", userID, ErrAlreadyMember)
		}
		return Member{}, fmt.Errorf("add member %s: %w", userID, err)
	}
	m, err := loadMember(tx, orgID, userID)
	if err != nil {
		return Member{}, err
	}
	return m, app.Audit(ctx, tx, app.AuditParams{
		OrgID: orgID, Action: "member.add", ObjectType: ObjectMember,
		ObjectID: m.UserID.String(), After: m,
	})
}

// UpdateMemberParams are the inputs of UpdateMember.
type UpdateMemberParams struct {
	OrgID  uuid.UUID
	UserID uuid.UUID
	Role   string
}

// countOwners counts the organization's owners; call it holding the
// organization's lock.
func countOwners(tx *gorm.DB, orgID uuid.UUID) (int64, error) {
	var n int64
	err := tx.Model(&Membership{}).Where("organization_id = ? AND role = ?", orgID, authz.RoleOwner).Count(&n).Error
	if err != nil {
		return 0, fmt.Errorf("count owners of %s: %w", orgID, err)
	}
	return n, nil
}

// UpdateMember changes a member's role. Only owners may grant the owner role or
// change an owner, and the last owner cannot be demoted.
func (s *Service) UpdateMember(ctx context.Context, p UpdateMemberParams) (Member, error) {
	v := &app.Validator{}
	checkRole(v, "role", p.Role)
	if err := v.Err(); err != nil {
		return Member{}, err
	}
	var m Member
	err := s.memberChange(ctx, p.OrgID, func(tx *gorm.DB, caller string) error {
		before, err := loadMember(tx, p.OrgID, p.UserID)
		if err != nil {
			return err
		}
		if (before.Role == authz.RoleOwner || p.Role == authz.RoleOwner) && caller != authz.RoleOwner {
			return ErrOwnerRequired
		}
		m = before
		if before.Role == p.Role {
			return nil
		}
		if before.Role == authz.RoleOwner {
			n, err := countOwners(tx, p.OrgID)
			if err != nil {
				return err
			}
			if n <= 1 {
				return ErrLastOwner
			}
		}
		err = tx.Model(&Membership{}).Where("organization_id = ? AND user_id = ?", p.OrgID, p.UserID).
			Updates(map[string]any{"role": p.Role, "updated_at": gorm.Expr("now()")}).Error
		if err != nil {
			return fmt.Errorf("update member %s of %s: %w", p.UserID, p.OrgID, err)
		}
		m.Role = p.Role
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: p.OrgID, Action: "member.update", ObjectType: ObjectMember,
			ObjectID: p.UserID.String(), Before: before, After: m,
		})
	})
	if err != nil {
		return Member{}, err
	}
	return m, nil
}

// RemoveMember removes a user from the organization and, in the same
// transaction, revokes the API keys the user created in it. Only owners may
// remove an owner, and the last owner cannot be removed.
func (s *Service) RemoveMember(ctx context.Context, orgID, userID uuid.UUID) error {
	return s.memberChange(ctx, orgID, func(tx *gorm.DB, caller string) error {
		before, err := loadMember(tx, orgID, userID)
		if err != nil {
			return err
		}
		if before.Role == authz.RoleOwner {
			if caller != authz.RoleOwner {
				return ErrOwnerRequired
			}
			n, err := countOwners(tx, orgID)
			if err != nil {
				return err
			}
			if n <= 1 {
				return ErrLastOwner
			}
		}
		if err := tx.Delete(&Membership{}, "organization_id = ? AND user_id = ?", orgID, userID).Error; err != nil {
			return fmt.Errorf("remove member %s of %s: %w", userID, orgID, err)
		}
		if s.keys != nil {
			if err := s.keys.RevokeMemberAPIKeys(ctx, tx, orgID, userID); err != nil {
				return err
			}
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, Action: "member.remove", ObjectType: ObjectMember,
			ObjectID: userID.String(), Before: before,
		})
	})
}

// ---- Invitations ----

// InvitationTTL is how long an invitation waits for its answer.
const InvitationTTL = 7 * 24 * time.Hour

func invitationQuery(tx *gorm.DB) *gorm.DB {
	return tx.Table("invitations AS i").
		Select("i.id, i.organization_id, o.name AS organization_name, i.user_id, coalesce(u.email, i.email) AS email, i.role, " +
			"CASE WHEN i.status = 'pending' AND i.expires_at <= now() THEN 'expired' ELSE i.status END AS status, " +
			"i.invited_by, coalesce(b.email, '') AS invited_by_email, i.created_at, i.expires_at").
		Joins("JOIN organizations AS o ON o.id = i.organization_id").
		Joins("LEFT JOIN users AS u ON u.id = i.user_id").
		Joins("LEFT JOIN users AS b ON b.id = i.invited_by")
}

func loadInvitation(tx *gorm.DB, id uuid.UUID) (Invitation, error) {
	var out []Invitation
	if err := invitationQuery(tx).Where("i.id = ?", id).Limit(1).Scan(&out).Error; err != nil {
		return Invitation{}, fmt.Errorf("get invitation %s: %w", id, err)
	}
	if len(out) == 0 {
		return Invitation{}, ErrInvitationNotFound
	}
	return out[0], nil
}

// InviteMember invites a user to the organization with a role, valid for
// InvitationTTL; the user becomes a member only by accepting it
// (AcceptInvitation). Only admins invite, only owners invite owners. An e-mail
// without an account gets an invitation with a single-use token, mailed as a
// link to the page where the invitee sets a password (AcceptInvitationToken);
// when it cannot be mailed the link is returned once in AcceptURL. A member
// or an address with a pending invitation is a 409.
func (s *Service) InviteMember(ctx context.Context, p AddMemberParams) (Invitation, error) {
	if err := checkMemberParams(&p); err != nil {
		return Invitation{}, err
	}
	var inv Invitation
	err := s.memberChange(ctx, p.OrgID, func(tx *gorm.DB, caller string) error {
		if p.Role == authz.RoleOwner && caller != authz.RoleOwner {
			return ErrOwnerRequired
		}
		userID, err := findUserByEmail(tx, p.Email)
		if errors.Is(err, app.ErrInvalid) {
			inv, err = s.inviteByEmail(ctx, tx, p)
			return err
		}
		if err != nil {
			return err
		}
		role, err := membershipRole(tx, userID, p.OrgID)
		if err != nil {
			return err
		}
		if role != "" {
			return fmt.Errorf("invite %q: %w", p.Email, ErrAlreadyMember)
		}
		now := s.clock().UTC()
		// An expired invitation no longer blocks a new one.
		if err := tx.Model(&invitationRow{}).
			Where("organization_id = ? AND user_id = ? AND status = ? AND expires_at <= ?", p.OrgID, userID, InvitationPending, now).
			Update("status", InvitationExpired).Error; err != nil {
			return fmt.Errorf("expire old invitations of %q: %w", p.Email, err)
		}
		row := invitationRow{
			ID: uuid.New(), OrganizationID: p.OrgID, UserID: &userID, Role: p.Role,
			Status: InvitationPending, CreatedAt: now, ExpiresAt: now.Add(InvitationTTL),
		}
		if pr := app.PrincipalFrom(ctx); pr != nil {
			row.InvitedBy = &pr.UserID
		}
		if err := tx.Create(&row).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("invite %q: %w", p.Email, ErrAlreadyInvited)
			}
			return fmt.Errorf("invite %q: %w", p.Email, err)
		}
		if inv, err = loadInvitation(tx, row.ID); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: p.OrgID, Action: "invitation.create", ObjectType: ObjectInvitation,
			ObjectID: inv.ID.String(), After: inv,
		})
	})
	if err != nil {
		return Invitation{}, err
	}
	if inv.AcceptURL != "" {
		s.mailInvitation(ctx, &inv)
	}
	return inv, nil
}

// ListInvitations returns the organization's pending invitations, oldest first.
func (s *Service) ListInvitations(ctx context.Context, orgID uuid.UUID, page app.Page) ([]Invitation, int64, error) {
	db := s.db.WithContext(ctx)
	var total int64
	err := db.Model(&invitationRow{}).Where("organization_id = ? AND status = ? AND expires_at > now()", orgID, InvitationPending).
		Count(&total).Error
	if err != nil {
		return nil, 0, fmt.Errorf("count invitations of %s: %w", orgID, err)
	}
	var out []Invitation
	err = invitationQuery(db).Where("i.organization_id = ? AND i.status = ? AND i.expires_at > now()", orgID, InvitationPending).
		Order("i.created_at, i.id").Offset(page.Offset()).Limit(page.PerPage).Scan(&out).Error
	if err != nil {
		return nil, 0, fmt.Errorf("list invitations of %s: %w", orgID, err)
	}
	return out, total, nil
}

// lockPendingInvitation reads a pending, unexpired invitation for update in tx;
// where is its extra condition (organization or invited user).
func lockPendingInvitation(tx *gorm.DB, id uuid.UUID, where string, arg any) (invitationRow, error) {
	var row invitationRow
	err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).
		Where("id = ? AND status = ? AND expires_at > now() AND "+where, id, InvitationPending, arg).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, ErrInvitationNotFound
	}
	if err != nil {
		return row, fmt.Errorf("lock invitation %s: %w", id, err)
	}
	return row, nil
}

// answerInvitation sets a locked invitation's final status with its audit row.
func (s *Service) answerInvitation(ctx context.Context, tx *gorm.DB, row invitationRow, status, action string) error {
	before, err := loadInvitation(tx, row.ID)
	if err != nil {
		return err
	}
	if err := tx.Model(&invitationRow{}).Where("id = ?", row.ID).
		Updates(map[string]any{"status": status, "responded_at": s.clock().UTC()}).Error; err != nil {
		return fmt.Errorf("%s invitation %s: %w", status, row.ID, err)
	}
	after := before
	after.Status = status
	return app.Audit(ctx, tx, app.AuditParams{
		OrgID: row.OrganizationID, Action: action, ObjectType: ObjectInvitation,
		ObjectID: row.ID.String(), Before: before, After: after,
	})
}

// RevokeInvitation withdraws one of the organization's pending invitations.
// Only admins revoke, only owners revoke an owner invitation.
func (s *Service) RevokeInvitation(ctx context.Context, orgID, id uuid.UUID) error {
	return s.memberChange(ctx, orgID, func(tx *gorm.DB, caller string) error {
		row, err := lockPendingInvitation(tx, id, "organization_id = ?", orgID)
		if err != nil {
			return err
		}
		if row.Role == authz.RoleOwner && caller != authz.RoleOwner {
			return ErrOwnerRequired
		}
		return s.answerInvitation(ctx, tx, row, InvitationRevoked, "invitation.revoke")
	})
}

// invitee is the user answering invitations: the caller in ctx, which must be a
// user's session, not an API key or the master itself.
func invitee(ctx context.Context) (*app.Principal, error) {
	p := app.PrincipalFrom(ctx)
	if p == nil || p.APIKey != nil {
		return nil, ErrInvitationsNeedUser
	}
	return p, nil
}

// ListMyInvitations returns the caller's pending invitations, oldest first.
func (s *Service) ListMyInvitations(ctx context.Context, page app.Page) ([]Invitation, int64, error) {
	p, err := invitee(ctx)
	if err != nil {
		return nil, 0, err
	}
	db := s.db.WithContext(ctx)
	var total int64
	err = db.Model(&invitationRow{}).Where("user_id = ? AND status = ? AND expires_at > now()", p.UserID, InvitationPending).
		Count(&total).Error
	if err != nil {
		return nil, 0, fmt.Errorf("count invitations of user %s: %w", p.UserID, err)
	}
	var out []Invitation
	err = invitationQuery(db).Where("i.user_id = ? AND i.status = ? AND i.expires_at > now()", p.UserID, InvitationPending).
		Order("i.created_at, i.id").Offset(page.Offset()).Limit(page.PerPage).Scan(&out).Error
	if err != nil {
		return nil, 0, fmt.Errorf("list invitations of user %s: %w", p.UserID, err)
	}
	return out, total, nil
}

// AcceptInvitation makes the caller a member with the invitation's role and
// returns the invitation, now accepted. The
// invitation must be the caller's, pending and unexpired (else 404), and its
// inviter must still be allowed to grant the role (admin, owner for owner
// invitations; else 409), so an invitation does not outlive its sender's
// rights.
func (s *Service) AcceptInvitation(ctx context.Context, id uuid.UUID) (Invitation, error) {
	p, err := invitee(ctx)
	if err != nil {
		return Invitation{}, err
	}
	var inv Invitation
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The organization's lock first, as every membership change takes it.
		var orgIDs []uuid.UUID
		if err := tx.Model(&invitationRow{}).Where("id = ? AND user_id = ?", id, p.UserID).Limit(1).
			Pluck("organization_id", &orgIDs).Error; err != nil {
			return fmt.Errorf("find invitation %s: %w", id, err)
		}
		if len(orgIDs) == 0 {
			return ErrInvitationNotFound
		}
		if _, err := lockOrganization(tx, orgIDs[0]); err != nil {
			return err
		}
		row, err := lockPendingInvitation(tx, id, "user_id = ?", p.UserID)
		if err != nil {
			return err
		}
		if row.InvitedBy != nil {
			granter, err := userRoleIn(tx, *row.InvitedBy, row.OrganizationID)
			if err != nil {
				return err
			}
			if authz.RoleRank(granter) < authz.RoleRank(authz.RoleAdmin) || authz.RoleRank(row.Role) > authz.RoleRank(granter) {
				return ErrInvitationStale
			}
		}
		if err := s.answerInvitation(ctx, tx, row, InvitationAccepted, "invitation.accept"); err != nil {
			return err
		}
		if _, err := insertMember(ctx, tx, row.OrganizationID, p.UserID, row.Role); err != nil {
			return err
		}
		inv, err = loadInvitation(tx, row.ID)
		return err
	})
	if err := s.synced(ctx, err); err != nil {
		return Invitation{}, err
	}
	return inv, nil
}

// userRoleIn is a user's current role in the organization as the guard sees
// it: owner for an enabled superadmin, else the membership ("" for none or a
// disabled account).
func userRoleIn(tx *gorm.DB, userID, orgID uuid.UUID) (string, error) {
	var rows []struct {
		IsSuperadmin bool
		Disabled     bool
		Role         *string
	}
	err := tx.Raw(`
		SELECT u.is_superadmin, u.disabled_at IS NOT NULL AS disabled, m.role
		FROM users u LEFT JOIN memberships m ON m.user_id = u.id AND m.organization_id = ?
		WHERE u.id = ?`, orgID, userID).Scan(&rows).Error
	if err != nil {
		return "", fmt.Errorf("read role of user %s in organization %s: %w", userID, orgID, err)
	}
	switch {
	case len(rows) == 0 || rows[0].Disabled:
		return "", nil
	case rows[0].IsSuperadmin:
		return authz.RoleOwner, nil
	case rows[0].Role == nil:
		return "", nil
	}
	return *rows[0].Role, nil
}

// DeclineInvitation turns down one of the caller's pending invitations.
func (s *Service) DeclineInvitation(ctx context.Context, id uuid.UUID) error {
	p, err := invitee(ctx)
	if err != nil {
		return err
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockPendingInvitation(tx, id, "user_id = ?", p.UserID)
		if err != nil {
			return err
		}
		return s.answerInvitation(ctx, tx, row, InvitationDeclined, "invitation.decline")
	})
}

// ---- Audit log ----

// AuditFilter selects audit entries of one organization; zero fields match all.
type AuditFilter struct {
	OrgID uuid.UUID
	// ActorID is the acting user.
	ActorID     uuid.UUID
	WorkspaceID uuid.UUID
	ObjectType  string
}

// ListAudit returns an organization's audit entries, newest first.
func (s *Service) ListAudit(ctx context.Context, f AuditFilter, page app.Page) ([]AuditEntry, int64, error) {
	q := s.db.WithContext(ctx).Model(&app.AuditEntry{}).Where("organization_id = ?", f.OrgID)
	if f.ActorID != uuid.Nil {
		q = q.Where("actor_user_id = ?", f.ActorID)
	}
	if f.WorkspaceID != uuid.Nil {
		q = q.Where("workspace_id = ?", f.WorkspaceID)
	}
	if f.ObjectType != "" {
		q = q.Where("object_type = ?", f.ObjectType)
	}
	rows, total, err := app.FindPage[app.AuditEntry](q, page, "created_at DESC, id DESC")
	if err != nil {
		return nil, 0, fmt.Errorf("list audit entries of %s: %w", f.OrgID, err)
	}
	out := make([]AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = newAuditEntry(r)
	}
	return out, total, nil
}

// ---- API keys ----

// CreateAPIKeyParams are the inputs of CreateAPIKey.
type CreateAPIKeyParams struct {
	OrgID uuid.UUID
	// WorkspaceID limits the key to one workspace of the organization; uuid.Nil
	// means the whole organization.
	WorkspaceID uuid.UUID
	Name        string
	Role        string
	ExpiresAt   *time.Time
	// CreatedBy is the user the key acts for; zero takes the caller in ctx.
	CreatedBy uuid.UUID
}

// checkKeyRole refuses callers whose role in the organization is below role:
// an admin may not create, rotate or revoke an owner key.
func (s *Service) checkKeyRole(ctx context.Context, orgID uuid.UUID, role string) error {
	caller, err := callerRole(ctx, s.db.WithContext(ctx), orgID)
	if err != nil {
		return err
	}
	if authz.RoleRank(caller) < authz.RoleRank(authz.RoleAdmin) {
		return ErrNotPermitted
	}
	if authz.RoleRank(role) > authz.RoleRank(caller) {
		return ErrOwnerKeyRequired
	}
	return nil
}

// CreateAPIKey creates an API key of the organization and returns it with its
// secret, shown only this once. The caller may not give the key a role above
// their own; the workspace must belong to the organization.
func (s *Service) CreateAPIKey(ctx context.Context, p CreateAPIKeyParams) (auth.APIKeyWithSecret, error) {
	if p.CreatedBy == uuid.Nil {
		if pr := app.PrincipalFrom(ctx); pr != nil {
			p.CreatedBy = pr.UserID
		}
	}
	if authz.ValidRole(p.Role) {
		if err := s.checkKeyRole(ctx, p.OrgID, p.Role); err != nil {
			return auth.APIKeyWithSecret{}, err
		}
	}
	key, secret, err := s.keys.CreateAPIKey(ctx, auth.CreateAPIKeyParams{
		OrgID: p.OrgID, WorkspaceID: p.WorkspaceID, Name: p.Name, Role: p.Role,
		ExpiresAt: p.ExpiresAt, CreatedBy: p.CreatedBy,
	})
	if err != nil {
		return auth.APIKeyWithSecret{}, err
	}
	return auth.APIKeyWithSecret{APIKey: key, Key: secret}, nil
}

// ListAPIKeys returns the organization's API keys (without secrets), newest first.
func (s *Service) ListAPIKeys(ctx context.Context, orgID uuid.UUID, page app.Page) ([]auth.APIKey, int64, error) {
	return s.keys.ListAPIKeys(ctx, orgID, page)
}

// RevokeAPIKey revokes one of the organization's API keys. Only owners may
// revoke an owner key.
func (s *Service) RevokeAPIKey(ctx context.Context, orgID, keyID uuid.UUID) error {
	key, err := s.keys.GetAPIKey(ctx, orgID, keyID)
	if err != nil {
		return err
	}
	if err := s.checkKeyRole(ctx, orgID, key.Role); err != nil {
		return err
	}
	return s.keys.RevokeAPIKey(ctx, orgID, keyID)
}

// RotateAPIKey replaces the secret of one of the organization's API keys and
// returns the new one, shown only this once. Only owners may rotate an owner key.
func (s *Service) RotateAPIKey(ctx context.Context, orgID, keyID uuid.UUID) (auth.APIKeyWithSecret, error) {
	key, err := s.keys.GetAPIKey(ctx, orgID, keyID)
	if err != nil {
		return auth.APIKeyWithSecret{}, err
	}
	if err := s.checkKeyRole(ctx, orgID, key.Role); err != nil {
		return auth.APIKeyWithSecret{}, err
	}
	key, secret, err := s.keys.RotateAPIKey(ctx, orgID, keyID)
	if err != nil {
		return auth.APIKeyWithSecret{}, err
	}
	return auth.APIKeyWithSecret{APIKey: key, Key: secret}, nil
}

// ---- Bootstrap ----

// Default names of the organization and workspace made for a user who has none.
const (
	DefaultName = "Default"
	DefaultSlug = "default"
)

// EnsureDefaultOrganization gives the user an organization when they belong to
// none: "Default" (slug "default", or "default-<id prefix>" when taken) with a
// workspace "Default" and the user as owner. When the user already belongs to an
// organization it returns the oldest one and its oldest workspace (zero when it
// has none) with created false.
func (s *Service) EnsureDefaultOrganization(ctx context.Context, userID uuid.UUID) (org Organization, ws Workspace, created bool, err error) {
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Serializes concurrent first starts for the same user.
		var ids []uuid.UUID
		if err := tx.Table("users").Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).
			Where("id = ?", userID).Pluck("id", &ids).Error; err != nil {
			return fmt.Errorf("lock user %s: %w", userID, err)
		}
		if len(ids) == 0 {
			return fmt.Errorf("ensure default organization: user %s: %w", userID, app.ErrNotFound)
		}
		var existing []Organization
		err := tx.Where("id IN (SELECT organization_id FROM memberships WHERE user_id = ?)", userID).
			Order("created_at, id").Limit(1).Find(&existing).Error
		if err != nil {
			return fmt.Errorf("find organizations of user %s: %w", userID, err)
		}
		if len(existing) > 0 {
			org = existing[0]
			var wss []Workspace
			if err := tx.Where("organization_id = ?", org.ID).Order("created_at, id").Limit(1).Find(&wss).Error; err != nil {
				return fmt.Errorf("find workspaces of %s: %w", org.ID, err)
			}
			if len(wss) > 0 {
				ws = wss[0]
			}
			return nil
		}
		slug := DefaultSlug
		var taken int64
		if err := tx.Model(&Organization{}).Where("slug = ?", slug).Count(&taken).Error; err != nil {
			return fmt.Errorf("check slug %q: %w", slug, err)
		}
		if taken > 0 {
			slug = DefaultSlug + "-" + userID.String()[:8]
		}
		org = Organization{ID: uuid.New(), Name: DefaultName, Slug: slug}
		if err := createOrganization(ctx, tx, &org, userID); err != nil {
			return err
		}
		ws = Workspace{ID: uuid.New(), OrganizationID: org.ID, Name: DefaultName, Slug: DefaultSlug}
		if err := createWorkspace(ctx, tx, &ws); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return Organization{}, Workspace{}, false, err
	}
	if created {
		s.logger.InfoContext(ctx, "default organization created", "organization_id", org.ID, "slug", org.Slug, "user_id", userID)
	}
	return org, ws, created, nil
}
