package orgs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
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
	keys   *auth.Service
}

// NewService returns a Service over db. keys is the auth service that stores API
// keys (only the API key methods use it).
func NewService(db *gorm.DB, logger *slog.Logger, keys *auth.Service) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, logger: logger.With("module", "orgs"), keys: keys}
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

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, gorm.ErrDuplicatedKey) || (errors.As(err, &pgErr) && pgErr.Code == "23505")
}

func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, gorm.ErrForeignKeyViolated) || (errors.As(err, &pgErr) && pgErr.Code == "23503")
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
func (s *Service) Role(ctx context.Context, userID uuid.UUID, scope app.Scope) (string, error) {
	return membershipRole(s.db.WithContext(ctx), userID, scope.OrgID)
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
	if err != nil {
		return Organization{}, err
	}
	return org, nil
}

// createOrganization inserts org and ownerID's owner membership, with audit rows.
func createOrganization(ctx context.Context, tx *gorm.DB, org *Organization, ownerID uuid.UUID) error {
	if err := tx.Create(org).Error; err != nil {
		if isUniqueViolation(err) {
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
		if isForeignKeyViolation(err) {
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
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count organizations: %w", err)
	}
	var out []Organization
	if err := q.Order("created_at, id").Offset(page.Offset()).Limit(page.PerPage).Find(&out).Error; err != nil {
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

// UpdateOrganization changes the organization with id.
func (s *Service) UpdateOrganization(ctx context.Context, id uuid.UUID, p UpdateOrganizationParams) (Organization, error) {
	v := &app.Validator{}
	if p.Name == nil && p.Slug == nil && p.RequireEmailCode == nil {
		v.Add("body", app.FieldRequired, "at least one of name, slug, require_email_code is required")
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
			if isUniqueViolation(err) {
				return fmt.Errorf("update organization %s: %w", id, ErrOrgSlugTaken)
			}
			return fmt.Errorf("update organization %s: %w", id, err)
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: org.ID, Action: "organization.update", ObjectType: ObjectOrganization,
			ObjectID: org.ID.String(), Before: before, After: org,
		})
	})
	if err != nil {
		return Organization{}, err
	}
	return org, nil
}

// DeleteOrganization deletes the organization with id and, through the schema's
// cascades, everything it owns.
func (s *Service) DeleteOrganization(ctx context.Context, id uuid.UUID) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
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
	})
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
	if err != nil {
		return Workspace{}, err
	}
	return ws, nil
}

func createWorkspace(ctx context.Context, tx *gorm.DB, ws *Workspace) error {
	if err := tx.Create(ws).Error; err != nil {
		switch {
		case isUniqueViolation(err):
			return fmt.Errorf("create workspace %q: %w", ws.Slug, ErrWorkspaceSlugTaken)
		case isForeignKeyViolation(err):
			return fmt.Errorf("create workspace %q: %w", ws.Slug, ErrOrganizationNotFound)
		}
		return fmt.Errorf("create workspace %q: %w", ws.Slug, err)
	}
	return app.Audit(ctx, tx, app.AuditParams{
		OrgID: ws.OrganizationID, WorkspaceID: ws.ID, Action: "workspace.create",
		ObjectType: ObjectWorkspace, ObjectID: ws.ID.String(), After: ws,
	})
}

// ListWorkspaces returns an organization's workspaces, oldest first.
func (s *Service) ListWorkspaces(ctx context.Context, orgID uuid.UUID, page app.Page) ([]Workspace, int64, error) {
	q := s.db.WithContext(ctx).Model(&Workspace{}).Where("organization_id = ?", orgID)
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count workspaces of %s: %w", orgID, err)
	}
	var out []Workspace
	if err := q.Order("created_at, id").Offset(page.Offset()).Limit(page.PerPage).Find(&out).Error; err != nil {
		return nil, 0, fmt.Errorf("list workspaces of %s: %w", orgID, err)
	}
	return out, total, nil
}

// GetWorkspace returns the workspace with id.
func (s *Service) GetWorkspace(ctx context.Context, id uuid.UUID) (Workspace, error) {
	var ws Workspace
	err := s.db.WithContext(ctx).Take(&ws, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ws, ErrWorkspaceNotFound
	}
	if err != nil {
		return ws, fmt.Errorf("get workspace %s: %w", id, err)
	}
	return ws, nil
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
			if isUniqueViolation(err) {
				return fmt.Errorf("update workspace %s: %w", id, ErrWorkspaceSlugTaken)
			}
			return fmt.Errorf("update workspace %s: %w", id, err)
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: ws.OrganizationID, WorkspaceID: ws.ID, Action: "workspace.update",
			ObjectType: ObjectWorkspace, ObjectID: ws.ID.String(), Before: before, After: ws,
		})
	})
	if err != nil {
		return Workspace{}, err
	}
	return ws, nil
}

// DeleteWorkspace deletes the workspace with id and, through the schema's
// cascades, everything it holds.
func (s *Service) DeleteWorkspace(ctx context.Context, id uuid.UUID) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
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
	})
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

// AddMemberParams are the inputs of AddMember.
type AddMemberParams struct {
	OrgID uuid.UUID
	// Email names an existing user.
	Email string
	Role  string
}

// memberChange runs fn in a transaction holding the organization's lock, with the
// caller's role in it; callers below admin are refused.
func (s *Service) memberChange(ctx context.Context, orgID uuid.UUID, fn func(tx *gorm.DB, callerRole string) error) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
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
	})
}

// AddMember gives an existing user a role in the organization. Only owners may
// add owners.
func (s *Service) AddMember(ctx context.Context, p AddMemberParams) (Member, error) {
	p.Email = strings.TrimSpace(p.Email)
	v := &app.Validator{}
	v.Check(p.Email != "", "email", app.FieldRequired, "is required")
	checkRole(v, "role", p.Role)
	if err := v.Err(); err != nil {
		return Member{}, err
	}
	var m Member
	err := s.memberChange(ctx, p.OrgID, func(tx *gorm.DB, caller string) error {
		if p.Role == authz.RoleOwner && caller != authz.RoleOwner {
			return ErrOwnerRequired
		}
		var ids []uuid.UUID
		if err := tx.Table("users").Where("lower(email) = lower(?)", p.Email).Limit(1).Pluck("id", &ids).Error; err != nil {
			return fmt.Errorf("find user %q: %w", p.Email, err)
		}
		if len(ids) == 0 {
			return app.Invalid("email", app.FieldNotFound, "no user with this email")
		}
		if err := tx.Create(&Membership{OrganizationID: p.OrgID, UserID: ids[0], Role: p.Role}).Error; err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("add member %q: %w", p.Email, ErrAlreadyMember)
			}
			return fmt.Errorf("add member %q: %w", p.Email, err)
		}
		var err error
		if m, err = loadMember(tx, p.OrgID, ids[0]); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: p.OrgID, Action: "member.add", ObjectType: ObjectMember,
			ObjectID: m.UserID.String(), After: m,
		})
	})
	if err != nil {
		return Member{}, err
	}
	return m, nil
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

// RemoveMember removes a user from the organization. Only owners may remove an
// owner, and the last owner cannot be removed.
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
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, Action: "member.remove", ObjectType: ObjectMember,
			ObjectID: userID.String(), Before: before,
		})
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
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count audit entries of %s: %w", f.OrgID, err)
	}
	var rows []app.AuditEntry
	if err := q.Order("created_at DESC, id DESC").Offset(page.Offset()).Limit(page.PerPage).Find(&rows).Error; err != nil {
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
