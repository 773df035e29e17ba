package orgs

import (
	"net/http"
	"regexp"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// Request bodies.

type createOrganizationRequest struct {
	Name string `json:"name"`
	Slug string `json:"slug"`
}

type updateOrganizationRequest struct {
	Name             *string `json:"name"`
	Slug             *string `json:"slug"`
	RequireEmailCode *bool   `json:"require_email_code"`
}

type createWorkspaceRequest struct {
	Name string `json:"name"`
	Slug string `json:"slug"`
}

type updateWorkspaceRequest struct {
	Name *string `json:"name"`
	Slug *string `json:"slug"`
}

type addMemberRequest struct {
	Email string `json:"email"`
	Role  string `json:"role"`
}

type updateMemberRequest struct {
	Role string `json:"role"`
}

var pageQuery = []string{"page", "per_page"}

// ---- Organizations ----

func (m *Module) bindOrganizations(r *app.Router) {
	org := ScopeOrg(m.db, "id")
	r.Get("/organizations", app.Authenticated(),
		app.Doc{Summary: "List the organizations the caller belongs to (all for superadmins, its own for an API key); per_page is capped at 100", Response: Organization{}, List: true, Query: pageQuery},
		app.ListHandler(m.listOrganizations))
	r.Post("/organizations", app.Authenticated(),
		app.Doc{Summary: "Create an organization; the caller becomes its owner (not available to API keys)", Body: createOrganizationRequest{}, Response: Organization{}, Status: http.StatusCreated},
		m.createOrganization)
	r.Get("/organizations/:id", app.Require(ObjOrganization, authz.Read, org),
		app.Doc{Summary: "Get an organization", Response: Organization{}},
		m.getOrganization)
	r.Patch("/organizations/:id", app.Require(ObjOrganization, authz.Write, org),
		app.Doc{Summary: "Update an organization's name, slug or email-code requirement", Body: updateOrganizationRequest{}, Response: Organization{}},
		m.updateOrganization)
	r.Delete("/organizations/:id", app.Require(ObjOrganization, authz.Delete, org),
		app.Doc{Summary: "Delete an organization with its workspaces and everything in them", Status: http.StatusNoContent},
		m.deleteOrganization)
}

func (m *Module) listOrganizations(c *fiber.Ctx, page app.Page) ([]Organization, int64, error) {
	return m.svc.ListOrganizations(app.Ctx(c), app.Caller(c), page)
}

func (m *Module) createOrganization(c *fiber.Ctx) error {
	var req createOrganizationRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	org, err := m.svc.CreateOrganization(app.Ctx(c), CreateOrganizationParams{
		Name: req.Name, Slug: req.Slug, OwnerID: app.Caller(c).UserID,
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(org)
}

func (m *Module) getOrganization(c *fiber.Ctx) error {
	org, err := m.svc.GetOrganization(app.Ctx(c), app.ScopeOf(c).OrgID)
	if err != nil {
		return err
	}
	return c.JSON(org)
}

func (m *Module) updateOrganization(c *fiber.Ctx) error {
	var req updateOrganizationRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	org, err := m.svc.UpdateOrganization(app.Ctx(c), app.ScopeOf(c).OrgID, UpdateOrganizationParams(req))
	if err != nil {
		return err
	}
	return c.JSON(org)
}

func (m *Module) deleteOrganization(c *fiber.Ctx) error {
	if err := m.svc.DeleteOrganization(app.Ctx(c), app.ScopeOf(c).OrgID); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

// ---- Workspaces ----

func (m *Module) bindWorkspaces(r *app.Router) {
	org := ScopeOrg(m.db, "id")
	ws := ScopeWorkspace(m.db, "id")
	r.Get("/organizations/:id/workspaces", app.Require(ObjWorkspace, authz.Read, org),
		app.Doc{Summary: "List an organization's workspaces; per_page is capped at 100", Response: Workspace{}, List: true, Query: pageQuery},
		m.listWorkspaces)
	r.Post("/organizations/:id/workspaces", app.Require(ObjWorkspace, authz.Write, org),
		app.Doc{Summary: "Create a workspace", Body: createWorkspaceRequest{}, Response: Workspace{}, Status: http.StatusCreated},
		m.createWorkspace)
	r.Get("/workspaces/:id", app.Require(ObjWorkspace, authz.Read, ws),
		app.Doc{Summary: "Get a workspace", Response: Workspace{}},
		m.getWorkspace)
	r.Patch("/workspaces/:id", app.Require(ObjWorkspace, authz.Write, ws),
		app.Doc{Summary: "Update a workspace's name or slug", Body: updateWorkspaceRequest{}, Response: Workspace{}},
		m.updateWorkspace)
	r.Delete("/workspaces/:id", app.Require(ObjWorkspace, authz.Delete, ws),
		app.Doc{Summary: "Delete a workspace and everything in it", Status: http.StatusNoContent},
		m.deleteWorkspace)
}

// listWorkspaces answers as app.ListHandler would, from the encoded page the
// service caches.
func (m *Module) listWorkspaces(c *fiber.Ctx) error {
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	body, err := m.svc.listWorkspacesJSON(app.Ctx(c), app.ScopeOf(c).OrgID, page)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

func (m *Module) createWorkspace(c *fiber.Ctx) error {
	var req createWorkspaceRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	ws, err := m.svc.CreateWorkspace(app.Ctx(c), CreateWorkspaceParams{
		OrgID: app.ScopeOf(c).OrgID, Name: req.Name, Slug: req.Slug,
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(ws)
}

func (m *Module) getWorkspace(c *fiber.Ctx) error {
	body, err := m.svc.workspaceJSON(app.Ctx(c), app.ScopeOf(c).WorkspaceID)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

func (m *Module) updateWorkspace(c *fiber.Ctx) error {
	var req updateWorkspaceRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	ws, err := m.svc.UpdateWorkspace(app.Ctx(c), app.ScopeOf(c).WorkspaceID, UpdateWorkspaceParams(req))
	if err != nil {
		return err
	}
	return c.JSON(ws)
}

func (m *Module) deleteWorkspace(c *fiber.Ctx) error {
	if err := m.svc.DeleteWorkspace(app.Ctx(c), app.ScopeOf(c).WorkspaceID); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

// ---- Members ----

func (m *Module) bindMembers(r *app.Router) {
	org := ScopeOrg(m.db, "id")
	r.Get("/organizations/:id/members", app.Require(ObjMember, authz.Read, org),
		app.Doc{Summary: "List an organization's members; per_page is capped at 100", Response: Member{}, List: true, Query: pageQuery},
		app.ListHandler(m.listMembers))
	r.Post("/organizations/:id/members", app.Require(ObjMember, authz.Write, org),
		app.Doc{Summary: "Invite an existing user to the organization with a role (owner only by owners): answers 202 with the pending invitation, valid 7 days; the user becomes a member by accepting it (POST /v1/invitations/{id}/accept). An e-mail without an account gets a single-use link, mailed to it (or, without smtp.*, answered once in accept_url), to choose a password and join (POST /v1/invitations/accept)", Body: addMemberRequest{}, Response: Invitation{}, Status: http.StatusAccepted},
		m.addMember)
	r.Patch("/organizations/:id/members/:user_id", app.Require(ObjMember, authz.Write, org),
		app.Doc{Summary: "Change a member's role (owners only by owners; the last owner stays)", Body: updateMemberRequest{}, Response: Member{}},
		m.updateMember)
	r.Delete("/organizations/:id/members/:user_id", app.Require(ObjMember, authz.Delete, org),
		app.Doc{Summary: "Remove a member (owners only by owners; the last owner stays)", Status: http.StatusNoContent},
		m.removeMember)
}

func (m *Module) listMembers(c *fiber.Ctx, page app.Page) ([]Member, int64, error) {
	return m.svc.ListMembers(app.Ctx(c), app.ScopeOf(c).OrgID, page)
}

func (m *Module) addMember(c *fiber.Ctx) error {
	var req addMemberRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	inv, err := m.svc.InviteMember(app.Ctx(c), AddMemberParams{OrgID: app.ScopeOf(c).OrgID, Email: req.Email, Role: req.Role})
	if err != nil {
		return err
	}
	return c.Status(http.StatusAccepted).JSON(inv)
}

func (m *Module) updateMember(c *fiber.Ctx) error {
	userID, err := app.ParamUUID(c, "user_id")
	if err != nil {
		return ErrMemberNotFound
	}
	var req updateMemberRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	mem, err := m.svc.UpdateMember(app.Ctx(c), UpdateMemberParams{OrgID: app.ScopeOf(c).OrgID, UserID: userID, Role: req.Role})
	if err != nil {
		return err
	}
	return c.JSON(mem)
}

func (m *Module) removeMember(c *fiber.Ctx) error {
	userID, err := app.ParamUUID(c, "user_id")
	if err != nil {
		return ErrMemberNotFound
	}
	if err := m.svc.RemoveMember(app.Ctx(c), app.ScopeOf(c).OrgID, userID); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

// ---- Invitations ----

func (m *Module) bindInvitations(r *app.Router) {
	org := ScopeOrg(m.db, "id")
	r.Get("/organizations/:id/invitations", app.Require(ObjMember, authz.Read, org),
		app.Doc{Summary: "List the organization's pending invitations, oldest first; per_page is capped at 100", Response: Invitation{}, List: true, Query: pageQuery},
		app.ListHandler(m.listInvitations))
	r.Delete("/organizations/:id/invitations/:invitation_id", app.Require(ObjMember, authz.Delete, org),
		app.Doc{Summary: "Revoke a pending invitation (owner invitations only by owners)", Status: http.StatusNoContent},
		m.revokeInvitation)
	r.Get("/invitations", app.Authenticated(),
		app.Doc{Summary: "List the caller's pending invitations, oldest first (users only, not API keys); per_page is capped at 100", Tag: "invitations", Response: Invitation{}, List: true, Query: pageQuery},
		app.ListHandler(m.listMyInvitations))
	r.Post("/invitations/accept", app.Public(),
		app.Doc{Summary: "Answer an invitation link: create the invited address's account with a password and join with the invitation's role; the token then stops working", Tag: "invitations", Body: acceptInvitationTokenRequest{}, Response: Invitation{}, Status: http.StatusCreated}, m.acceptInvitationToken)
	r.Post("/invitations/:id/accept", app.Authenticated(),
		app.Doc{Summary: "Accept one of the caller's pending invitations: the caller becomes a member with its role; answers the invitation, now accepted", Tag: "invitations", Response: Invitation{}},
		m.acceptInvitation)
	r.Post("/invitations/:id/decline", app.Authenticated(),
		app.Doc{Summary: "Decline one of the caller's pending invitations", Tag: "invitations", Status: http.StatusNoContent},
		m.declineInvitation)
}

func (m *Module) listInvitations(c *fiber.Ctx, page app.Page) ([]Invitation, int64, error) {
	return m.svc.ListInvitations(app.Ctx(c), app.ScopeOf(c).OrgID, page)
}

func (m *Module) revokeInvitation(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "invitation_id")
	if err != nil {
		return ErrInvitationNotFound
	}
	if err := m.svc.RevokeInvitation(app.Ctx(c), app.ScopeOf(c).OrgID, id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) listMyInvitations(c *fiber.Ctx, page app.Page) ([]Invitation, int64, error) {
	return m.svc.ListMyInvitations(app.Ctx(c), page)
}

func (m *Module) acceptInvitation(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrInvitationNotFound
	}
	inv, err := m.svc.AcceptInvitation(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(inv)
}

func (m *Module) declineInvitation(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrInvitationNotFound
	}
	if err := m.svc.DeclineInvitation(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

// ---- Audit log ----

func (m *Module) bindAudit(r *app.Router) {
	r.Get("/organizations/:id/audit-log", app.Require(ObjAudit, authz.Read, ScopeOrg(m.db, "id")),
		app.Doc{
			Summary:  "List the organization's audit log, newest first, optionally filtered by actor (user id), object_type and workspace_id; per_page is capped at 100",
			Response: AuditEntry{}, List: true,
			Query: []string{"page", "per_page", "actor", "object_type", "workspace_id"},
		},
		m.listAudit)
}

var objectTypePattern = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,63}$`)

// parseAuditFilter reads the audit log's query filters; a malformed value is a
// 422 naming its parameter.
func parseAuditFilter(c *fiber.Ctx, orgID uuid.UUID) (AuditFilter, error) {
	f := AuditFilter{OrgID: orgID}
	v := &app.Validator{}
	parseID := func(name string) uuid.UUID {
		s := c.Query(name)
		if s == "" {
			return uuid.Nil
		}
		id, err := uuid.Parse(s)
		v.Check(err == nil && len(s) == 36, name, app.FieldInvalidFormat, "must be a UUID")
		return id
	}
	f.ActorID = parseID("actor")
	f.WorkspaceID = parseID("workspace_id")
	if s := c.Query("object_type"); s != "" {
		v.Check(objectTypePattern.MatchString(s), "object_type", app.FieldInvalidFormat, "must be an object type such as organization, workspace or member")
		f.ObjectType = s
	}
	return f, v.Err()
}

func (m *Module) listAudit(c *fiber.Ctx) error {
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	f, err := parseAuditFilter(c, app.ScopeOf(c).OrgID)
	if err != nil {
		return err
	}
	items, total, err := m.svc.ListAudit(app.Ctx(c), f, page)
	if err != nil {
		return err
	}
	return c.JSON(app.NewList(items, page, total))
}

// ---- API keys ----

type createAPIKeyRequest struct {
	Name string `json:"name"`
	Role string `json:"role" doc:"owner, admin, operator or viewer; at most the caller's role"`
	// WorkspaceID and ExpiresAt are decoded here so a malformed value is a 422
	// naming the field.
	WorkspaceID *string `json:"workspace_id" doc:"limits the key to one workspace of the organization; null for the whole organization"`
	ExpiresAt   *string `json:"expires_at" doc:"RFC 3339 time in the future; null for a key that does not expire"`
}

func (m *Module) bindAPIKeys(r *app.Router) {
	org := ScopeOrg(m.db, "id")
	r.Get("/organizations/:id/api-keys", app.Require(ObjAPIKey, authz.Read, org),
		app.Doc{Summary: "List the organization's API keys, newest first (secrets are never listed); per_page is capped at 100", Response: auth.APIKey{}, List: true, Query: pageQuery},
		app.ListHandler(m.listAPIKeys))
	r.Post("/organizations/:id/api-keys", app.Require(ObjAPIKey, authz.Write, org),
		app.Doc{Summary: "Create an API key; the response holds the secret (key), shown only this once", Body: createAPIKeyRequest{}, Response: auth.APIKeyWithSecret{}, Status: http.StatusCreated},
		m.createAPIKey)
	r.Delete("/organizations/:id/api-keys/:key_id", app.Require(ObjAPIKey, authz.Delete, org),
		app.Doc{Summary: "Revoke an API key", Status: http.StatusNoContent},
		m.revokeAPIKey)
	r.Post("/organizations/:id/api-keys/:key_id/rotate", app.Require(ObjAPIKey, authz.Write, org),
		app.Doc{Summary: "Replace an API key's secret; the old one stops working and the new one is shown only this once", Response: auth.APIKeyWithSecret{}},
		m.rotateAPIKey)
}

func (m *Module) listAPIKeys(c *fiber.Ctx, page app.Page) ([]auth.APIKey, int64, error) {
	return m.svc.ListAPIKeys(app.Ctx(c), app.ScopeOf(c).OrgID, page)
}

func (m *Module) createAPIKey(c *fiber.Ctx) error {
	var req createAPIKeyRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	p := CreateAPIKeyParams{OrgID: app.ScopeOf(c).OrgID, Name: req.Name, Role: req.Role, CreatedBy: app.Caller(c).UserID}
	v := &app.Validator{}
	if req.WorkspaceID != nil && *req.WorkspaceID != "" {
		id, err := uuid.Parse(*req.WorkspaceID)
		v.Check(err == nil && len(*req.WorkspaceID) == 36, "workspace_id", app.FieldInvalidFormat, "must be a UUID")
		p.WorkspaceID = id
	}
	if req.ExpiresAt != nil && *req.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, *req.ExpiresAt)
		v.Check(err == nil, "expires_at", app.FieldInvalidFormat, "must be an RFC 3339 time")
		p.ExpiresAt = &t
	}
	if err := v.Err(); err != nil {
		return err
	}
	key, err := m.svc.CreateAPIKey(app.Ctx(c), p)
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(key)
}

func (m *Module) revokeAPIKey(c *fiber.Ctx) error {
	keyID, err := app.ParamUUID(c, "key_id")
	if err != nil {
		return auth.ErrAPIKeyNotFound
	}
	if err := m.svc.RevokeAPIKey(app.Ctx(c), app.ScopeOf(c).OrgID, keyID); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) rotateAPIKey(c *fiber.Ctx) error {
	keyID, err := app.ParamUUID(c, "key_id")
	if err != nil {
		return auth.ErrAPIKeyNotFound
	}
	key, err := m.svc.RotateAPIKey(app.Ctx(c), app.ScopeOf(c).OrgID, keyID)
	if err != nil {
		return err
	}
	return c.JSON(key)
}

type acceptInvitationTokenRequest struct {
	Token    string `json:"token"`
	Name     string `json:"name"`
	Password string `json:"password"`
}

func (m *Module) acceptInvitationToken(c *fiber.Ctx) error {
	var req acceptInvitationTokenRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	inv, err := m.svc.AcceptInvitationToken(app.Ctx(c), AcceptInvitationTokenParams(req))
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(inv)
}
