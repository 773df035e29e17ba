package app

// The live-event routes. The hub itself (publishing, LISTEN, fan-out, the
// WebSocket and SSE protocols) is package events; here the plumbing mounts
// its two routes behind the guard, parses their query filters in the API's
// validation style, and gives the hub an eventViewer per caller: who may see
// which event, from the caller's Principal and roles.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	fiberws "github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/app/events"
)

const (
	roleCacheTTL   = 30 * time.Second
	roleLookupWait = 5 * time.Second

	codeUpgradeRequired = "UPGRADE_REQUIRED"
	codeNotAcceptable   = "NOT_ACCEPTABLE"

	localEventsFilter = "nxmesh.events_filter"
)

// mountEvents registers the WebSocket and SSE routes of hub and starts it for
// the lifetime of ctx. The SSE route also accepts the admin session cookie.
func mountEvents(ctx context.Context, hub *events.Hub, r Routers, w *Wiring, g *guard, logger *slog.Logger) {
	upgrade := hub.WebSocket(func(c *fiberws.Conn) (*events.Filter, events.Viewer) {
		p, _ := c.Locals(localPrincipal).(*Principal)
		f, _ := c.Locals(localEventsFilter).(*events.Filter)
		if p == nil {
			return f, nil
		}
		return f, newEventViewer(g, p, logger)
	})
	r.API.Get("/events", Authenticated(), Doc{
		Summary: "Live events over WebSocket: connect with ?token=, send subscribe/unsubscribe messages",
		Tag:     "events",
		Query:   []string{"token", "events", "workspace_id"},
		Stream:  StreamWebSocket,
	}, func(c *fiber.Ctx) error {
		if !fiberws.IsWebSocketUpgrade(c) {
			return &HTTPError{Status: http.StatusUpgradeRequired, Code: codeUpgradeRequired, Message: "Connect with a WebSocket client"}
		}
		f, err := eventsFilterFromQuery(c)
		if err != nil {
			return err
		}
		c.Locals(localEventsFilter, f)
		return upgrade(c)
	})

	stream := *r.API
	sg := &guard{w: withSessionFallback(w), authz: g.authz, limiter: g.limiter, logger: g.logger}
	stream.guard = sg.handlers
	stream.Get("/events/stream", Authenticated(), Doc{
		Summary: "Live events as Server-Sent Events (initial, create, update, delete, log, shutdown, and each event's type); send Accept: text/event-stream",
		Tag:     "events",
		Query:   []string{"token", "events", "workspace_id"},
		Stream:  StreamSSE,
	}, func(c *fiber.Ctx) error {
		if !strings.Contains(c.Get(fiber.HeaderAccept), "text/event-stream") {
			return &HTTPError{Status: http.StatusNotAcceptable, Code: codeNotAcceptable, Message: "Send Accept: text/event-stream"}
		}
		f, err := eventsFilterFromQuery(c)
		if err != nil {
			return err
		}
		err = hub.ServeStream(c, f, newEventViewer(g, Caller(c), logger))
		if errors.Is(err, events.ErrStopped) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	})
	hub.Start(ctx)
}

// withSessionFallback authenticates with the admin session cookie when the
// request carries no API credential.
func withSessionFallback(w *Wiring) *Wiring {
	cp := *w
	api, ui := w.AuthenticateAPI, w.AuthenticateUI
	cp.AuthenticateAPI = func(c *fiber.Ctx) (*Principal, error) {
		p, err := api(c)
		if p != nil || err != nil || ui == nil {
			return p, err
		}
		return ui(c)
	}
	return &cp
}

// eventsFilterFromQuery reads ?events=a.*,b.* and ?workspace_id=.
func eventsFilterFromQuery(c *fiber.Ctx) (*events.Filter, error) {
	var v Validator
	var patterns []string
	explicit := false
	if raw := strings.TrimSpace(c.Query("events")); raw != "" {
		patterns = splitList(raw)
		explicit = true
		v.Check(len(patterns) <= events.MaxPatterns, "events", FieldInvalidValue, fmt.Sprintf("at most %d patterns", events.MaxPatterns))
		for _, p := range patterns {
			v.Check(events.CheckPattern(p) == nil, "events", FieldInvalidFormat, "must be comma-separated glob patterns such as agent.*")
		}
	}
	var workspaceID uuid.UUID
	if raw := strings.TrimSpace(c.Query("workspace_id")); raw != "" {
		id, err := uuid.Parse(raw)
		v.Check(err == nil, "workspace_id", FieldInvalidFormat, "must be a UUID")
		workspaceID = id
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	if !explicit {
		return events.DefaultFilter(workspaceID), nil
	}
	return events.NewFilter(patterns, workspaceID), nil
}

// eventViewer decides which events one authenticated caller may see (the
// hub's events.Viewer): a superadmin user sees every event; anyone else, the
// events of the organizations and workspaces where the guard finds a role
// for them, when that role may read the event's Object. Roles are cached for
// roleCacheTTL per connection.
type eventViewer struct {
	g      *guard
	p      *Principal
	logger *slog.Logger
	roles  map[Scope]cachedRole
}

type cachedRole struct {
	role  string
	until time.Time
}

var _ events.Viewer = (*eventViewer)(nil)

func newEventViewer(g *guard, p *Principal, logger *slog.Logger) *eventViewer {
	return &eventViewer{g: g, p: p, logger: logger, roles: map[Scope]cachedRole{}}
}

// Confined returns the scope of the caller's API key, if any.
func (v *eventViewer) Confined() (orgID, workspaceID uuid.UUID, ok bool) {
	if k := v.p.APIKey; k != nil {
		return k.OrgID, k.WorkspaceID, true
	}
	return uuid.Nil, uuid.Nil, false
}

// StillValid authenticates the caller's credential again (see
// Principal.RecheckFunc) and reports whether it still is valid. A failed
// lookup (the database unreachable) keeps the stream; the next check decides.
func (v *eventViewer) StillValid(ctx context.Context) bool {
	if v.p.RecheckFunc == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, roleLookupWait)
	defer cancel()
	p, err := v.p.RecheckFunc(ctx)
	switch {
	case errors.Is(err, ErrUnauthorized):
		return false
	case err != nil:
		v.logger.Warn("events: recheck subscriber credential", "error", err, "credential", v.p.Credential())
		return true
	case p == nil:
		return false
	}
	if p.Superadmin != v.p.Superadmin {
		clear(v.roles)
	}
	v.p = p
	return true
}

// MayRead reports whether the caller may see ev.
func (v *eventViewer) MayRead(ctx context.Context, ev *events.Event) bool {
	if v.p.APIKey == nil && v.p.Superadmin {
		return true
	}
	if ev.OrgID == uuid.Nil {
		return false
	}
	scope := Scope{OrgID: ev.OrgID, WorkspaceID: ev.WorkspaceID}
	now := time.Now()
	c, ok := v.roles[scope]
	if !ok || now.After(c.until) {
		lctx, cancel := context.WithTimeout(ctx, roleLookupWait)
		role, err := v.g.roleIn(lctx, v.p, scope)
		cancel()
		if errors.Is(err, ErrForbidden) {
			// The scope refuses this session (an organization's sign-in
			// policy): it sees nothing there, like a non-member.
			role, err = "", nil
		}
		if err != nil {
			v.logger.Warn("events: resolve subscriber role", "error", err, "org_id", scope.OrgID)
			return false
		}
		c = cachedRole{role: role, until: now.Add(roleCacheTTL)}
		v.roles[scope] = c
	}
	if !authz.ValidRole(c.role) {
		return false
	}
	if ev.Object == "" {
		return true
	}
	ok, err := v.g.authz.Allowed(c.role, ev.OrgID.String(), ev.Object, authz.Read)
	if err != nil {
		v.logger.Warn("events: check read permission", "error", err, "object", ev.Object)
		return false
	}
	return ok
}
