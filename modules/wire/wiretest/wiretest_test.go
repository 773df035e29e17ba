package wiretest_test

import (
	"net/http"
	"testing"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/wire/wiretest"
)

func TestMain(m *testing.M) { apptest.Main(m) }

func TestAPI_MasterServesEveryModuleToEachRole(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start func(testing.TB, ...wiretest.Option) *wiretest.Master
	}{
		{"InProcess", wiretest.New},
		{"Started", wiretest.Start},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := tc.start(t)
			m.Client.Do(t, http.MethodGet, "/v1/users/me", nil).Expect(t, http.StatusUnauthorized, "UNAUTHORIZED")

			root, rc := m.Superadmin(t)
			var me struct {
				ID           string `json:"id"`
				IsSuperadmin bool   `json:"is_superadmin"`
			}
			rc.Call(t, http.MethodGet, "/v1/users/me", nil, http.StatusOK, &me)
			if me.ID != root.ID.String() || !me.IsSuperadmin {
				t.Fatalf("me = %+v, want superadmin %s", me, root.ID)
			}

			team := m.Team(t)
			path := "/v1/workspaces/" + team.Workspace.ID.String() + "/upstreams"
			for _, role := range wiretest.Roles {
				team.Clients[role].Call(t, http.MethodGet, path, nil, http.StatusOK, nil)
			}
			body := map[string]any{"name": "api", "servers": []map[string]any{{"address": "127.0.0.1:8081"}}}
			r := team.Clients[authz.RoleViewer].Do(t, http.MethodPost, path, body)
			r.Expect(t, http.StatusForbidden, "")
			if e := r.Error(t); e.Code == "" || e.Message == "" {
				t.Fatalf("error envelope %+v has no code or message", e)
			}
			team.Clients[authz.RoleOperator].Call(t, http.MethodPost, path, body, http.StatusCreated, nil)
			if e := team.Clients[authz.RoleOperator].Do(t, http.MethodPost, path, map[string]any{"name": ""}).Error(t); len(e.Fields) == 0 {
				t.Fatalf("invalid upstream: error %+v names no field", e)
			}
		})
	}
}
