package app_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
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
