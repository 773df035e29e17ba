package agents

import (
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// Request bodies.

type createTokenRequest struct {
	Name           string            `json:"name" doc:"1 to 100 printable characters"`
	Labels         map[string]string `json:"labels" doc:"at most 64; keys and values 1-63 of A-Z a-z 0-9 . _ / -"`
	ExpiresInHours *int              `json:"expires_in_hours" doc:"1 to 720, default 24"`
}

type newTokenRequest struct {
	ExpiresInHours *int `json:"expires_in_hours" doc:"1 to 720, default 24"`
}

type updateAgentRequest struct {
	Name        *string            `json:"name"`
	Labels      *map[string]string `json:"labels" doc:"replaces every label; re-targets the agent at once"`
	AutoRestart *bool              `json:"auto_restart" doc:"restart nginx when it dies (pushed to the agent)"`
}

type createCommandRequest struct {
	Command        string `json:"command" doc:"reload, restart, stop, get_status or validate_config"`
	Graceful       *bool  `json:"graceful" doc:"reload and stop; default true"`
	Force          *bool  `json:"force" doc:"restart"`
	TimeoutSeconds *int   `json:"timeout_seconds" doc:"stop: 1 to 3600"`
}

var (
	pageQuery  = []string{"page", "per_page"}
	agentQuery = []string{"page", "per_page", "q", "state", "label_selector"}
)

func (m *Module) bindAgents(r *app.Router) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	agent := ScopeAgent(m.db, "id")
	r.Get("/workspaces/:id/agents", app.Require(ObjAgent, authz.Read, ws),
		app.Doc{Summary: "List a workspace's agents; q matches a part of the name, hostname or an address (ignoring case); state filters by online, offline, degraded, pending or all (default); label_selector is key=value,key!=value", Response: Agent{}, List: true, Query: agentQuery},
		app.ListHandler(m.listAgents))
	r.Post("/workspaces/:id/agents/tokens", app.Require(ObjAgent, authz.Write, ws),
		app.Doc{Summary: "Create an agent and its single-use registration token (shown once, with the install command)", Body: createTokenRequest{}, Response: RegistrationToken{}, Status: http.StatusCreated},
		m.createToken)
	r.Get("/workspaces/:id/agents/registration-policy", app.Require(ObjRegistrationPolicy, authz.Read, ws),
		app.Doc{Summary: "Get the workspace's registration ACL (hostname globs, peer IP addresses/CIDRs, token label matches)", Response: RegistrationPolicy{}},
		m.getPolicy)
	r.Put("/workspaces/:id/agents/registration-policy", app.Require(ObjRegistrationPolicy, authz.Write, ws),
		app.Doc{Summary: "Replace the workspace's registration ACL: no patterns allows every registration, a deny match always refuses, allow patterns restrict per kind (hostname, peer address, labels); a denied registration burns its token", Body: RegistrationPolicy{}, Response: RegistrationPolicy{}},
		m.putPolicy)
	r.Get("/agents/:id", app.Require(ObjAgent, authz.Read, agent),
		app.Doc{Summary: "Get an agent with its health and configuration state", Response: AgentDetail{}},
		m.getAgent)
	r.Patch("/agents/:id", app.Require(ObjAgent, authz.Write, agent),
		app.Doc{Summary: "Rename or relabel an agent, or set its auto-restart policy; label and policy changes reach the agent at once", Body: updateAgentRequest{}, Response: AgentDetail{}},
		m.updateAgent)
	r.Delete("/agents/:id", app.Require(ObjAgent, authz.Delete, agent),
		app.Doc{Summary: "Delete an agent: its certificate is refused and its stream dropped at once", Status: http.StatusNoContent},
		m.deleteAgent)
	r.Post("/agents/:id/tokens", app.Require(ObjAgent, authz.Write, agent),
		app.Doc{Summary: "Issue a new registration token for an existing agent (reinstall); its unused tokens are revoked", Body: newTokenRequest{}, Response: RegistrationToken{}, Status: http.StatusCreated},
		m.newToken)
	r.Delete("/agents/:id/tokens", app.Require(ObjAgent, authz.Write, agent),
		app.Doc{Summary: "Revoke an agent's unused registration tokens", Status: http.StatusNoContent},
		m.revokeTokens)
}

func (m *Module) bindCommands(r *app.Router) {
	agent := ScopeAgent(m.db, "id")
	r.Post("/agents/:id/reload", app.Require(ObjCommand, authz.Write, agent),
		app.Doc{Summary: "Reload nginx on an online agent and wait up to 15 seconds for the result (409 when the agent is offline)", Response: ReloadResult{}},
		m.reload)
	r.Post("/agents/:id/commands", app.Require(ObjCommand, authz.Write, agent),
		app.Doc{Summary: "Send a command (reload, restart, stop, get_status, validate_config) to an online agent; the result comes later", Body: createCommandRequest{}, Response: Command{}, Status: http.StatusAccepted},
		m.createCommand)
	r.Get("/agents/:id/commands", app.Require(ObjCommand, authz.Read, agent),
		app.Doc{Summary: "List an agent's commands, newest first", Response: Command{}, List: true, Query: pageQuery},
		m.listCommands)
	r.Get("/agents/:id/commands/:command_id", app.Require(ObjCommand, authz.Read, agent),
		app.Doc{Summary: "Get a command and its result", Response: Command{}},
		m.getCommand)
}

func (m *Module) listAgents(c *fiber.Ctx, page app.Page) ([]Agent, int64, error) {
	return m.svc.List(app.Ctx(c), app.ScopeOf(c).WorkspaceID, ListAgentsParams{
		Page: page, State: c.Query("state"), LabelSelector: c.Query("label_selector"), Q: strings.TrimSpace(c.Query("q")),
	})
}

func (m *Module) createToken(c *fiber.Ctx) error {
	var req createTokenRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	tok, err := m.svc.CreateToken(app.Ctx(c), CreateTokenParams{
		WorkspaceID: app.ScopeOf(c).WorkspaceID, Name: req.Name, Labels: req.Labels, ExpiresInHours: req.ExpiresInHours,
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(m.svc.tokenAt(tok, m.svc.onboard.endpointsFor(c)))
}

func (m *Module) getPolicy(c *fiber.Ctx) error {
	p, err := m.svc.RegistrationPolicy(app.Ctx(c), app.ScopeOf(c).WorkspaceID)
	if err != nil {
		return err
	}
	return c.JSON(p)
}

func (m *Module) putPolicy(c *fiber.Ctx) error {
	var req RegistrationPolicy
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	p, err := m.svc.SetRegistrationPolicy(app.Ctx(c), app.ScopeOf(c).WorkspaceID, req)
	if err != nil {
		return err
	}
	return c.JSON(p)
}

func (m *Module) agentID(c *fiber.Ctx) (uuid.UUID, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return uuid.Nil, ErrAgentNotFound
	}
	return id, nil
}

func (m *Module) getAgent(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	a, err := m.svc.Get(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(a)
}

func (m *Module) updateAgent(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	var req updateAgentRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	a, err := m.svc.Update(app.Ctx(c), id, UpdateAgentParams(req))
	if err != nil {
		return err
	}
	return c.JSON(a)
}

func (m *Module) deleteAgent(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	if err := m.svc.Delete(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) newToken(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	var req newTokenRequest
	if len(c.Body()) > 0 {
		if err := app.Bind(c, &req); err != nil {
			return err
		}
	}
	tok, err := m.svc.NewToken(app.Ctx(c), id, req.ExpiresInHours)
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(m.svc.tokenAt(tok, m.svc.onboard.endpointsFor(c)))
}

func (m *Module) revokeTokens(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	if _, err := m.svc.RevokeTokens(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) reload(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	res, err := m.svc.Reload(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(res)
}

func (m *Module) createCommand(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	var req createCommandRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	cmd, err := m.svc.CreateCommand(app.Ctx(c), CreateCommandParams{
		AgentID: id, Command: req.Command,
		Params: CommandParams{Graceful: req.Graceful, Force: req.Force, TimeoutSeconds: req.TimeoutSeconds},
	})
	if err != nil {
		return err
	}
	return c.Status(http.StatusAccepted).JSON(cmd)
}

func (m *Module) listCommands(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	items, total, err := m.svc.ListCommands(app.Ctx(c), id, page)
	if err != nil {
		return err
	}
	return c.JSON(app.NewList(items, page, total))
}

func (m *Module) getCommand(c *fiber.Ctx) error {
	id, err := m.agentID(c)
	if err != nil {
		return err
	}
	cid, err := app.ParamUUID(c, "command_id")
	if err != nil {
		return ErrCommandNotFound
	}
	cmd, err := m.svc.GetCommand(app.Ctx(c), id, cid)
	if err != nil {
		return err
	}
	return c.JSON(cmd)
}
