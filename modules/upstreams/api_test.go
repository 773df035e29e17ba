package upstreams

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestAPI_Upstreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("CreatesWithSeedShape", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		raw := b.as(t, "operator", http.MethodPost, b.upstreamsPath(), seedBody(), http.StatusCreated, nil)
		var got map[string]any
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		wantTop := []string{"algorithm", "created_at", "health_check", "id", "keepalive_connections", "name", "servers", "updated_at", "workspace_id"}
		if k := keys(got); !reflect.DeepEqual(k, wantTop) {
			t.Fatalf("fields %v, want %v", k, wantTop)
		}
		if got["workspace_id"] != b.ws.String() || got["name"] != "web-backend" || got["algorithm"] != "least_connections" {
			t.Errorf("got %s", raw)
		}
		if got["keepalive_connections"] != float64(0) {
			t.Errorf("keepalive_connections = %v, want 0", got["keepalive_connections"])
		}
		servers := got["servers"].([]any)
		if len(servers) != 3 {
			t.Fatalf("servers %v", servers)
		}
		wantServer := []string{"address", "backup", "down", "fail_timeout", "max_fails", "weight"}
		for i, s := range servers {
			if k := keys(s.(map[string]any)); !reflect.DeepEqual(k, wantServer) {
				t.Fatalf("servers[%d] fields %v, want %v", i, k, wantServer)
			}
		}
		first := servers[0].(map[string]any)
		want := map[string]any{"address": "10.0.1.30:8080", "weight": float64(2), "backup": false, "down": false, "max_fails": float64(1), "fail_timeout": float64(10)}
		if !reflect.DeepEqual(first, want) {
			t.Errorf("servers[0] = %v, want %v (defaults max_fails 1, fail_timeout 10)", first, want)
		}
		if servers[2].(map[string]any)["backup"] != true {
			t.Errorf("servers[2].backup not kept: %v", servers[2])
		}
		hc := got["health_check"].(map[string]any)
		wantHC := map[string]any{"enabled": true, "path": "/health", "interval": float64(10), "timeout": float64(5), "healthy_threshold": float64(2), "unhealthy_threshold": float64(3)}
		if !reflect.DeepEqual(hc, wantHC) {
			t.Errorf("health_check = %v, want %v", hc, wantHC)
		}
		for _, f := range []string{"created_at", "updated_at"} {
			if s, _ := got[f].(string); !strings.HasSuffix(s, "Z") || len(s) != len("2026-02-01T10:00:00Z") {
				t.Errorf("%s = %v, want RFC 3339 UTC seconds", f, got[f])
			}
		}
	})

	t.Run("AppliesDefaults", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, map[string]any{"name": "min", "servers": []any{map[string]any{"address": "backend.internal:80"}}})
		if u.Algorithm != RoundRobin || u.KeepaliveConnections != 0 {
			t.Errorf("algorithm %q keepalive %d", u.Algorithm, u.KeepaliveConnections)
		}
		if want := (Server{Address: "backend.internal:80", Weight: 1, MaxFails: 1, FailTimeout: 10}); u.Servers[0] != want {
			t.Errorf("server %+v, want %+v", u.Servers[0], want)
		}
		if u.HealthCheck != DefaultHealthCheck() {
			t.Errorf("health check %+v, want %+v", u.HealthCheck, DefaultHealthCheck())
		}
		short := b.create(t, map[string]any{"name": "short", "servers": []any{map[string]any{"address": "[2001:db8::1]:8080"}},
			"health_check": map[string]any{"interval": 2}})
		if short.HealthCheck.Timeout != 2 {
			t.Errorf("timeout %d with interval 2, want the default lowered to 2", short.HealthCheck.Timeout)
		}
	})

	t.Run("ListsGetsUpdatesAndDeletes", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		second := b.create(t, map[string]any{"name": "api-backend", "servers": []any{map[string]any{"address": "10.0.1.20:8080", "max_fails": 3, "fail_timeout": 30}}})

		// Sorted by name: api-backend, then web-backend.
		var list app.List[Upstream]
		b.as(t, "viewer", http.MethodGet, b.upstreamsPath()+"?per_page=1", nil, http.StatusOK, &list)
		if list.Meta.Total != 2 || list.Meta.PerPage != 1 || len(list.Data) != 1 || list.Data[0].ID != second.ID ||
			list.Data[0].Servers[0].MaxFails != 3 || list.Data[0].Servers[0].FailTimeout != 30 {
			t.Fatalf("list page 1 = %+v", list)
		}
		b.as(t, "viewer", http.MethodGet, b.upstreamsPath()+"?page=2&per_page=1", nil, http.StatusOK, &list)
		if len(list.Data) != 1 || list.Data[0].ID != u.ID {
			t.Fatalf("list page 2 = %+v", list)
		}

		var got Upstream
		b.as(t, "viewer", http.MethodGet, "/v1/upstreams/"+u.ID.String(), nil, http.StatusOK, &got)
		if !reflect.DeepEqual(got, u) {
			t.Fatalf("get = %+v, want %+v", got, u)
		}

		// A PATCH with servers replaces the whole list (docs/API.md).
		patch := map[string]any{"servers": []any{map[string]any{"address": "10.0.1.30:8080", "weight": 3, "backup": false}}}
		var upd Upstream
		b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+u.ID.String(), patch, http.StatusOK, &upd)
		if len(upd.Servers) != 1 || upd.Servers[0].Weight != 3 || upd.Name != u.Name || upd.Algorithm != u.Algorithm || upd.HealthCheck != u.HealthCheck {
			t.Fatalf("patched = %+v", upd)
		}
		// health_check changes only the fields given.
		b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+u.ID.String(),
			map[string]any{"health_check": map[string]any{"enabled": false}, "keepalive_connections": 32, "name": "web"}, http.StatusOK, &upd)
		wantHC := u.HealthCheck
		wantHC.Enabled = false
		if upd.HealthCheck != wantHC || upd.KeepaliveConnections != 32 || upd.Name != "web" || len(upd.Servers) != 1 {
			t.Fatalf("patched = %+v", upd)
		}
		b.as(t, "viewer", http.MethodGet, "/v1/upstreams/"+u.ID.String(), nil, http.StatusOK, &got)
		if !reflect.DeepEqual(got, upd) {
			t.Fatalf("get after patch = %+v, want %+v", got, upd)
		}

		b.as(t, "operator", http.MethodDelete, "/v1/upstreams/"+u.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "viewer", http.MethodGet, "/v1/upstreams/"+u.ID.String(), nil, http.StatusNotFound, nil)
		b.as(t, "operator", http.MethodDelete, "/v1/upstreams/"+u.ID.String(), nil, http.StatusNotFound, nil)
		if n := b.count(t); n != 1 {
			t.Fatalf("%d upstreams left, want 1", n)
		}
	})

	t.Run("RejectsEmptyPatch", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		raw := b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+u.ID.String(), map[string]any{}, http.StatusUnprocessableEntity, nil)
		if d := decodeError(t, raw).Error.Details; len(d) != 1 || d[0].Field != "body" {
			t.Fatalf("details %+v", d)
		}
	})

	t.Run("RejectsDuplicateName", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		other := b.create(t, map[string]any{"name": "other", "servers": []any{map[string]any{"address": "10.0.0.9:80"}}})
		for _, name := range []string{"web-backend", "WEB-Backend", " web-backend "} {
			body := seedBody()
			body["name"] = name
			raw := b.as(t, "operator", http.MethodPost, b.upstreamsPath(), body, http.StatusConflict, nil)
			if e := decodeError(t, raw).Error; e.Code != app.CodeConflict || !strings.Contains(e.Message, "already exists") {
				t.Errorf("create %q: error %+v", name, e)
			}
		}
		raw := b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+other.ID.String(), map[string]any{"name": "Web-Backend"}, http.StatusConflict, nil)
		if decodeError(t, raw).Error.Code != app.CodeConflict {
			t.Errorf("rename: %s", raw)
		}
		if n := b.count(t); n != 2 {
			t.Fatalf("%d upstreams, want 2", n)
		}
		// The same name in another workspace is fine.
		b2 := e.setup(t)
		b2.create(t, seedBody())
		// Renaming to its own name in another case is fine.
		b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+u.ID.String(), map[string]any{"name": "Web-Backend"}, http.StatusOK, nil)
	})

	t.Run("RefusesToDeleteUpstreamInUse", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		vh, st := uuid.New(), uuid.New()
		users := []string{fmt.Sprintf("virtual host %q (%s)", "api", vh), fmt.Sprintf("stream %q (%s)", "db", st)}
		b.hooks.setUsers(u.ID, users...)
		raw := b.as(t, "operator", http.MethodDelete, "/v1/upstreams/"+u.ID.String(), nil, http.StatusConflict, nil)
		got := decodeError(t, raw).Error
		want := "Upstream is used by " + strings.Join(users, ", ")
		if got.Code != app.CodeConflict || got.Message != want {
			t.Fatalf("error %+v, want message %q", got, want)
		}
		if n := b.count(t); n != 1 {
			t.Fatalf("%d upstreams, want 1", n)
		}
		if c := b.hooks.changesOf(b.ws); len(c) != 1 {
			t.Fatalf("changes %+v, want only the create", c)
		}
		b.hooks.setUsers(u.ID)
		b.as(t, "operator", http.MethodDelete, "/v1/upstreams/"+u.ID.String(), nil, http.StatusNoContent, nil)
	})

	t.Run("EnforcesRoles", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		path := "/v1/upstreams/" + u.ID.String()
		b.as(t, "viewer", http.MethodGet, b.upstreamsPath(), nil, http.StatusOK, nil)
		b.as(t, "viewer", http.MethodGet, path, nil, http.StatusOK, nil)
		body := seedBody()
		body["name"] = "viewer-made"
		b.as(t, "viewer", http.MethodPost, b.upstreamsPath(), body, http.StatusForbidden, nil)
		b.as(t, "viewer", http.MethodPatch, path, map[string]any{"name": "x"}, http.StatusForbidden, nil)
		b.as(t, "viewer", http.MethodDelete, path, nil, http.StatusForbidden, nil)
		b.call(t, "", http.MethodGet, path, nil, http.StatusUnauthorized, nil)
		b.call(t, "", http.MethodPost, b.upstreamsPath(), body, http.StatusUnauthorized, nil)
		b.as(t, "owner", http.MethodPatch, path, map[string]any{"name": "owned"}, http.StatusOK, nil)
		var got Upstream
		b.as(t, "viewer", http.MethodGet, path, nil, http.StatusOK, &got)
		if got.Name != "owned" || b.count(t) != 1 {
			t.Fatalf("after forbidden writes: %+v, %d upstreams", got, b.count(t))
		}
	})

	t.Run("HidesUpstreamsFromOtherOrganizations", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		path := "/v1/upstreams/" + u.ID.String()
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, path, nil},
			{http.MethodPatch, path, map[string]any{"name": "mine"}},
			{http.MethodDelete, path, nil},
			{http.MethodGet, b.upstreamsPath(), nil},
			{http.MethodPost, b.upstreamsPath(), seedBody()},
			{http.MethodGet, "/v1/upstreams/" + uuid.NewString(), nil},
			{http.MethodGet, "/v1/upstreams/not-a-uuid", nil},
		} {
			raw := b.as(t, "outsider", c.method, c.path, c.body, http.StatusNotFound, nil)
			if decodeError(t, raw).Error.Code != app.CodeNotFound {
				t.Errorf("%s %s: %s", c.method, c.path, raw)
			}
		}
		if n := b.count(t); n != 1 {
			t.Fatalf("%d upstreams, want 1", n)
		}
	})

	t.Run("RecordsEachChangeOnceInItsTransaction", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		path := "/v1/upstreams/" + u.ID.String()
		b.as(t, "operator", http.MethodPatch, path, map[string]any{"keepalive_connections": 16}, http.StatusOK, nil)
		// A PATCH that changes nothing records nothing.
		b.as(t, "operator", http.MethodPatch, path, map[string]any{"keepalive_connections": 16}, http.StatusOK, nil)
		b.as(t, "operator", http.MethodDelete, path, nil, http.StatusNoContent, nil)
		want := []change{
			{Summary: `upstream "web-backend" created`, Visible: 1},
			{Summary: `upstream "web-backend" updated`, Visible: 1},
			{Summary: `upstream "web-backend" deleted`, Visible: 0},
		}
		if got := b.hooks.changesOf(b.ws); !reflect.DeepEqual(got, want) {
			t.Fatalf("changes %+v, want %+v", got, want)
		}
	})

	t.Run("RollsBackWhenRecordingTheChangeFails", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		path := "/v1/upstreams/" + u.ID.String()
		auditBefore := len(b.audit(t))
		b.hooks.failFor(b.ws, errHookFailed)

		body := seedBody()
		body["name"] = "second"
		raw := b.as(t, "operator", http.MethodPost, b.upstreamsPath(), body, http.StatusInternalServerError, nil)
		if strings.Contains(string(raw), errHookFailed.Error()) {
			t.Errorf("internal error leaked: %s", raw)
		}
		b.as(t, "operator", http.MethodPatch, path, map[string]any{"name": "renamed", "keepalive_connections": 8}, http.StatusInternalServerError, nil)
		b.as(t, "operator", http.MethodDelete, path, nil, http.StatusInternalServerError, nil)

		var got Upstream
		b.as(t, "viewer", http.MethodGet, path, nil, http.StatusOK, &got)
		if !reflect.DeepEqual(got, u) {
			t.Fatalf("after failed changes: %+v, want %+v", got, u)
		}
		if n := b.count(t); n != 1 {
			t.Fatalf("%d upstreams, want 1", n)
		}
		if n := len(b.audit(t)); n != auditBefore {
			t.Fatalf("%d audit rows, want %d", n, auditBefore)
		}
		if n := len(b.hooks.changesOf(b.ws)); n != 4 {
			t.Fatalf("%d change calls, want 4 (create, then three failed)", n)
		}
	})

	t.Run("WritesAuditRows", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		path := "/v1/upstreams/" + u.ID.String()
		b.as(t, "operator", http.MethodPatch, path, map[string]any{"name": "renamed"}, http.StatusOK, nil)
		b.as(t, "operator", http.MethodDelete, path, nil, http.StatusNoContent, nil)
		rows := b.audit(t)
		if len(rows) != 3 {
			t.Fatalf("%d audit rows, want 3", len(rows))
		}
		for i, action := range []string{"upstream.create", "upstream.update", "upstream.delete"} {
			r := rows[i]
			if r.Action != action || r.ObjectID != u.ID.String() || r.OrganizationID == nil || *r.OrganizationID != b.orgID ||
				r.ActorUserID == nil || *r.ActorUserID != b.users["operator"].ID || r.RequestID == "" {
				t.Errorf("row %d = %+v", i, r)
			}
		}
		var after Upstream
		if err := json.Unmarshal(rows[0].After, &after); err != nil || after.Name != "web-backend" || len(after.Servers) != 3 || rows[0].Before != nil {
			t.Errorf("create row: before %s after %s (%v)", rows[0].Before, rows[0].After, err)
		}
		var before Upstream
		if err := json.Unmarshal(rows[1].Before, &before); err != nil || before.Name != "web-backend" {
			t.Errorf("update row before: %s (%v)", rows[1].Before, err)
		}
		if err := json.Unmarshal(rows[1].After, &after); err != nil || after.Name != "renamed" {
			t.Errorf("update row after: %s (%v)", rows[1].After, err)
		}
		if rows[2].Before == nil || rows[2].After != nil {
			t.Errorf("delete row: before %s after %s", rows[2].Before, rows[2].After)
		}
	})

	t.Run("DocumentsEveryRoute", func(t *testing.T) {
		t.Parallel()
		var n int
		for _, r := range e.app.Routes() {
			if r.Module != "upstreams" || r.Kind != app.KindAPI {
				continue
			}
			n++
			if r.Doc.Summary == "" || !r.Access.IsPermission() {
				t.Errorf("%s %s: summary %q, permission %v", r.Method, r.Path, r.Doc.Summary, r.Access.IsPermission())
			}
			if (r.Method == http.MethodPost || r.Method == http.MethodPatch) && r.Doc.Body == nil {
				t.Errorf("%s %s has no body type", r.Method, r.Path)
			}
			if r.Method != http.MethodDelete && r.Doc.Response == nil {
				t.Errorf("%s %s has no response type", r.Method, r.Path)
			}
		}
		if n != 5 {
			t.Fatalf("%d upstreams routes, want 5", n)
		}
		var doc map[string]any
		e.call(t, "", http.MethodGet, "/v1/openapi.json", nil, http.StatusOK, &doc)
		paths := doc["paths"].(map[string]any)
		for _, p := range []string{"/workspaces/{id}/upstreams", "/upstreams/{id}"} {
			if paths[p] == nil {
				t.Errorf("OpenAPI lacks %s", p)
			}
		}
	})
}

// TestAPI_RejectsBadInput sends one bad field at a time and expects a 422 that
// names the field's JSON path, with nothing stored and nothing recorded.
func TestAPI_RejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	server := func(i int, field string, value any) func(map[string]any) {
		return func(b map[string]any) { b["servers"].([]any)[i].(map[string]any)[field] = value }
	}
	top := func(field string, value any) func(map[string]any) {
		return func(b map[string]any) { b[field] = value }
	}
	health := func(field string, value any) func(map[string]any) {
		return func(b map[string]any) { b["health_check"].(map[string]any)[field] = value }
	}
	cases := []struct {
		name  string
		edit  func(map[string]any)
		field string
	}{
		{"AddressWithoutPort", server(1, "address", "10.0.0.1"), "servers[1].address"},
		{"PortOutOfRange", server(1, "address", "10.0.0.1:99999"), "servers[1].address"},
		{"PortZero", server(1, "address", "10.0.0.1:0"), "servers[1].address"},
		{"HostWithSpace", server(1, "address", "bad host:80"), "servers[1].address"},
		{"IPv6WithoutPort", server(1, "address", "[::1]"), "servers[1].address"},
		{"IPv6WithoutBrackets", server(1, "address", "2001:db8::1:80"), "servers[1].address"},
		{"Semicolon", server(1, "address", "a;b:80"), "servers[1].address"},
		{"Variable", server(1, "address", "$host:80"), "servers[1].address"},
		{"TrailingDirective", server(1, "address", "example.com:80;include"), "servers[1].address"},
		{"Braces", server(1, "address", "a}b:80"), "servers[1].address"},
		{"Newline", server(1, "address", "a\nserver b:80"), "servers[1].address"},
		{"UnixSocket", server(1, "address", "unix:/var/run/app.sock"), "servers[1].address"},
		{"Scheme", server(1, "address", "http://10.0.0.1:80"), "servers[1].address"},
		{"BadIPv4", server(1, "address", "10.0.0.256:80"), "servers[1].address"},
		{"EmptyAddress", server(1, "address", ""), "servers[1].address"},
		{"DuplicateAddress", server(1, "address", "10.0.1.30:8080"), "servers[1].address"},
		{"WeightZero", server(1, "weight", 0), "servers[1].weight"},
		{"WeightTooLarge", server(1, "weight", 1001), "servers[1].weight"},
		{"MaxFailsNegative", server(1, "max_fails", -1), "servers[1].max_fails"},
		{"FailTimeoutTooLarge", server(1, "fail_timeout", 3601), "servers[1].fail_timeout"},
		{"AlgorithmRandom", top("algorithm", "random"), "algorithm"},
		{"BackupWithIPHash", top("algorithm", "ip_hash"), "servers[2].backup"},
		{"NoServers", top("servers", []any{}), "servers"},
		{"OnlyBackups", top("servers", []any{map[string]any{"address": "a.example:80", "backup": true}}), "servers"},
		{"KeepaliveNegative", top("keepalive_connections", -1), "keepalive_connections"},
		{"KeepaliveTooLarge", top("keepalive_connections", 10001), "keepalive_connections"},
		{"EmptyName", top("name", "  "), "name"},
		{"LongName", top("name", strings.Repeat("n", 101)), "name"},
		{"NameWithControl", top("name", "web\tbackend"), "name"},
		{"UnknownField", top("colour", "blue"), "colour"},
		{"WrongType", top("keepalive_connections", "many"), "keepalive_connections"},
		{"PathWithoutSlash", health("path", "no-slash"), "health_check.path"},
		{"PathWithSpace", health("path", "/he alth"), "health_check.path"},
		{"PathWithVariable", health("path", "/$uri"), "health_check.path"},
		{"PathWithSemicolon", health("path", "/x;return"), "health_check.path"},
		{"PathTooLong", health("path", "/"+strings.Repeat("a", 1024)), "health_check.path"},
		{"IntervalZero", health("interval", 0), "health_check.interval"},
		{"TimeoutAboveInterval", health("timeout", 11), "health_check.timeout"},
		{"TimeoutTooLarge", health("timeout", 301), "health_check.timeout"},
		{"HealthyThresholdZero", health("healthy_threshold", 0), "health_check.healthy_threshold"},
		{"UnhealthyThresholdTooLarge", health("unhealthy_threshold", 101), "health_check.unhealthy_threshold"},
	}
	for _, c := range cases {
		t.Run("Create"+c.name, func(t *testing.T) {
			t.Parallel()
			b := e.setup(t)
			body := seedBody()
			c.edit(body)
			raw := b.as(t, "operator", http.MethodPost, b.upstreamsPath(), body, http.StatusUnprocessableEntity, nil)
			got := decodeError(t, raw).Error
			if got.Code != app.CodeValidation || len(got.Details) == 0 || got.Details[0].Field != c.field {
				t.Fatalf("error %+v, want first detail at %s", got, c.field)
			}
			if n := b.count(t); n != 0 {
				t.Fatalf("%d upstreams stored", n)
			}
			if n := len(b.audit(t)); n != 0 || len(b.hooks.changesOf(b.ws)) != 0 {
				t.Fatalf("%d audit rows, %d changes recorded", n, len(b.hooks.changesOf(b.ws)))
			}
		})
	}
	for _, c := range cases {
		t.Run("Update"+c.name, func(t *testing.T) {
			t.Parallel()
			b := e.setup(t)
			u := b.create(t, seedBody())
			body := seedBody()
			c.edit(body)
			patch := map[string]any{}
			// Send only the part of the body the case changed.
			for k, v := range body {
				if k == "name" && v == "web-backend" {
					continue
				}
				if k == "algorithm" && v == "least_connections" {
					continue
				}
				patch[k] = v
			}
			raw := b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+u.ID.String(), patch, http.StatusUnprocessableEntity, nil)
			got := decodeError(t, raw).Error
			if got.Code != app.CodeValidation || len(got.Details) == 0 || got.Details[0].Field != c.field {
				t.Fatalf("error %+v, want first detail at %s", got, c.field)
			}
			var after Upstream
			b.as(t, "viewer", http.MethodGet, "/v1/upstreams/"+u.ID.String(), nil, http.StatusOK, &after)
			if !reflect.DeepEqual(after, u) {
				t.Fatalf("upstream changed: %+v, want %+v", after, u)
			}
			if n := len(b.audit(t)); n != 1 || len(b.hooks.changesOf(b.ws)) != 1 {
				t.Fatalf("%d audit rows, %d changes recorded; want only the create's", n, len(b.hooks.changesOf(b.ws)))
			}
		})
	}

	t.Run("UpdateAlgorithmIPHashWithExistingBackup", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := b.create(t, seedBody())
		raw := b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+u.ID.String(), map[string]any{"algorithm": "ip_hash"}, http.StatusUnprocessableEntity, nil)
		if d := decodeError(t, raw).Error.Details; len(d) != 1 || d[0].Field != "algorithm" || !strings.Contains(d[0].Message, "servers[2]") {
			t.Fatalf("details %+v", d)
		}
	})

	t.Run("ReportsEveryBadField", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		body := seedBody()
		server(0, "address", "nope")(body)
		server(2, "weight", 0)(body)
		health("path", "x")(body)
		raw := b.as(t, "operator", http.MethodPost, b.upstreamsPath(), body, http.StatusUnprocessableEntity, nil)
		var fields []string
		for _, d := range decodeError(t, raw).Error.Details {
			fields = append(fields, d.Field)
		}
		if want := []string{"servers[0].address", "servers[2].weight", "health_check.path"}; !reflect.DeepEqual(fields, want) {
			t.Fatalf("fields %v, want %v", fields, want)
		}
	})
}
