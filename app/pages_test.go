package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/views/layout"
)

// pagesModule answers, on a read route, whether its page would offer a write.
type pagesModule struct{ pages *app.Pages }

func (pagesModule) Name() string { return "pagesprobe" }
func (pagesModule) Policies() []authz.Policy {
	return append(authz.AtLeast(authz.RoleViewer, "pagesprobe.thing", authz.Read),
		authz.AtLeast(authz.RoleAdmin, "pagesprobe.thing", authz.Write)...)
}
func (pagesModule) Jobs(*river.Workers) []*river.PeriodicJob { return nil }
func (pagesModule) GRPC(grpc.ServiceRegistrar)               {}
func (m pagesModule) Routes(r app.Routers) {
	scope := func(c *fiber.Ctx) (app.Scope, error) {
		id, err := uuid.Parse(c.Params("org"))
		return app.Scope{OrgID: id}, err
	}
	r.API.Get("/pagesprobe/:org", app.Require("pagesprobe.thing", authz.Read, scope), app.Doc{Summary: "probe"}, func(c *fiber.Ctx) error {
		return c.SendString(strconv.FormatBool(m.pages.Allowed(c, "pagesprobe.thing", authz.Write)))
	})
}

func TestPages_Allowed(t *testing.T) {
	a := apptest.NewApp(t, nil)
	users := map[string]uuid.UUID{}
	roles := map[uuid.UUID]string{}
	for _, r := range authz.Roles {
		users[r] = uuid.New()
		roles[users[r]] = r
	}
	err := a.Mount(context.Background(), []app.Module{pagesModule{pages: a.Deps.Pages}}, app.Wiring{
		AuthenticateAPI: func(c *fiber.Ctx) (*app.Principal, error) {
			return &app.Principal{UserID: users[c.Get("X-Role")], Superadmin: c.Get("X-Role") == "super"}, nil
		},
		AuthenticateUI: func(*fiber.Ctx) (*app.Principal, error) { return nil, nil },
		Role: func(_ context.Context, user uuid.UUID, _ app.Scope) (string, error) {
			return roles[user], nil
		},
		Version: "test",
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	for _, tc := range []struct{ role, want string }{
		{authz.RoleViewer, "false"}, {authz.RoleOperator, "false"},
		{authz.RoleAdmin, "true"}, {authz.RoleOwner, "true"}, {"super", "true"},
	} {
		req := httptest.NewRequest("GET", "/v1/pagesprobe/"+uuid.NewString(), nil)
		req.Header.Set("X-Role", tc.role)
		resp := apptest.Do(t, a, req)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != tc.want {
			t.Errorf("%s: page offers write = %q, want %s", tc.role, body, tc.want)
		}
	}
}

// shellModule answers, on a workspace route, with the shell Pages draws.
type shellModule struct{ pages *app.Pages }

func (shellModule) Name() string { return "shellprobe" }
func (shellModule) Policies() []authz.Policy {
	return authz.AtLeast(authz.RoleViewer, "shellprobe.thing", authz.Read)
}
func (shellModule) Jobs(*river.Workers) []*river.PeriodicJob { return nil }
func (shellModule) GRPC(grpc.ServiceRegistrar)               {}
func (m shellModule) Routes(r app.Routers) {
	scope := func(c *fiber.Ctx) (app.Scope, error) {
		org, err := uuid.Parse(c.Params("org"))
		if err != nil {
			return app.Scope{}, err
		}
		ws, err := uuid.Parse(c.Params("ws"))
		return app.Scope{OrgID: org, WorkspaceID: ws}, err
	}
	r.API.Get("/shellprobe/:org/:ws", app.Require("shellprobe.thing", authz.Read, scope), app.Doc{Summary: "probe"}, func(c *fiber.Ctx) error {
		s, err := m.pages.Shell(c, "Things", "things")
		if err != nil {
			return err
		}
		return c.JSON(s)
	})
}

func TestPages_Shell(t *testing.T) {
	org, ws := uuid.New(), uuid.New()
	nav := func(c *fiber.Ctx, title string, orgID, wsID uuid.UUID, section string) (layout.Shell, error) {
		return layout.Shell{Title: title, User: app.Caller(c).Email, Nav: layout.Nav{
			Org:       &layout.Link{Href: "/orgs/" + orgID.String()},
			Workspace: &layout.Link{Href: "/workspaces/" + wsID.String()},
			Sections:  []layout.Link{{Label: section, Active: true}},
		}}, nil
	}
	for _, tc := range []struct {
		name string
		nav  app.NavFunc
		want layout.Shell
	}{
		{"NavigationOfTheRouteScope", nav, layout.Shell{Title: "Things", User: "a@example.test", Nav: layout.Nav{
			Org:       &layout.Link{Href: "/orgs/" + org.String()},
			Workspace: &layout.Link{Href: "/workspaces/" + ws.String()},
			Sections:  []layout.Link{{Label: "things", Active: true}},
		}}},
		{"WithoutNavigationTitleAndUserOnly", nil, layout.Shell{Title: "Things", User: "a@example.test", CSRF: "token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := apptest.NewApp(t, nil)
			user := uuid.New()
			err := a.Mount(context.Background(), []app.Module{shellModule{pages: a.Deps.Pages}}, app.Wiring{
				AuthenticateAPI: func(*fiber.Ctx) (*app.Principal, error) {
					return &app.Principal{UserID: user, Email: "a@example.test", CSRFToken: "token"}, nil
				},
				AuthenticateUI: func(*fiber.Ctx) (*app.Principal, error) { return nil, nil },
				Role: func(context.Context, uuid.UUID, app.Scope) (string, error) {
					return authz.RoleViewer, nil
				},
				Nav:     tc.nav,
				Version: "test",
			})
			if err != nil {
				t.Fatalf("mount: %v", err)
			}
			resp := apptest.Do(t, a, httptest.NewRequest("GET", "/v1/shellprobe/"+org.String()+"/"+ws.String(), nil))
			defer resp.Body.Close()
			var got layout.Shell
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("status %d: %v", resp.StatusCode, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("shell = %+v, want %+v", got, tc.want)
			}
		})
	}
}
