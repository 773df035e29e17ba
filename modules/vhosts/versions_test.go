package vhosts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestAPI_ConfigVersions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("OneVersionPerChange", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		// setup: upstream created (1), certificate uploaded (2).
		steps := []func(){
			func() { b.createVHost(t, plainHost("a", "a.example.com")) },
			func() {
				b.as(t, "operator", http.MethodPost, b.streamsPath(), map[string]any{"name": "s", "listen_port": 9000, "upstream_id": b.upstream.ID}, http.StatusCreated, nil)
			},
			func() { b.createUpstream(t, "second", "10.9.9.9:80") },
		}
		for i, step := range steps {
			step()
			if v := b.version(t); v != int64(3+i) {
				t.Fatalf("after step %d: version %d, want %d", i, v, 3+i)
			}
		}
		// Rejected changes record nothing.
		b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), plainHost("a", "dup.example.com"), "")         // name taken
		b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), plainHost("b", "a.example.com"), "")           // port
		b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), map[string]any{"name": "c"}, "")               // invalid
		b.do(t, b.tokens["operator"], http.MethodDelete, "/v1/upstreams/"+b.upstream.ID.String(), nil, "")            // in use
		b.do(t, b.tokens["viewer"], http.MethodPost, b.vhostsPath(), plainHost("v", "v.example.com"), "")             // forbidden
		b.do(t, b.tokens["operator"], http.MethodPost, b.configPath()+"/rollback", map[string]any{"version": 99}, "") // no such version
		if v := b.version(t); v != 5 {
			t.Fatalf("rejected changes moved the version to %d", v)
		}
		if got := len(b.summaries(t)); got != 5 {
			t.Fatalf("%d versions stored, want 5", got)
		}
	})

	t.Run("ConcurrentChangesGetConsecutiveVersions", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		const n = 12
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if i%3 == 0 {
					_, err = b.ups.Create(b.ctx, upstreams.CreateParams{WorkspaceID: b.ws, Name: fmt.Sprintf("u%d", i),
						Servers: []upstreams.ServerInput{{Address: "10.1.1.1:80"}}})
				} else {
					_, err = b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
						Name: fmt.Sprintf("h%d", i), ServerName: fmt.Sprintf("h%d.example.com", i),
						Locations: []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
					})
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent change: %v", err)
			}
		}
		// summaries fails unless versions run 1, 2, 3, ... without gaps.
		if got := len(b.summaries(t)); got != 2+n || b.version(t) != 2+n {
			t.Fatalf("%d versions (current %d), want %d", got, b.version(t), 2+n)
		}
	})

	t.Run("RefusesConfigurationThatDoesNotRender", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		vh := b.createVHost(t, plainHost("h", "h.example.com"))
		before := b.version(t)
		// A reference to an upstream that does not exist (as a deleted
		// upstream would leave behind) makes the workspace unrenderable.
		bad := fmt.Sprintf(`[{"path": "/", "match": "prefix", "upstream_id": "%s"}]`, uuid.New())
		err := b.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Exec("UPDATE virtual_hosts SET locations = ?::jsonb WHERE id = ?", bad, vh.ID).Error; err != nil {
				return err
			}
			return b.svc.ConfigChanged(b.ctx, tx, b.ws, "broken")
		})
		if !errors.Is(err, ErrNotRenderable) || !errors.Is(err, app.ErrInvalid) {
			t.Fatalf("ConfigChanged on an unrenderable workspace: %v, want ErrNotRenderable", err)
		}
		if b.version(t) != before {
			t.Fatal("an unrenderable configuration was recorded")
		}
	})

	t.Run("NotifiesOnCommit", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, e.app.Deps.Config.Database.URL)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
			t.Fatalf("listen: %v", err)
		}
		// A rejected change sends nothing; the next notification is the create.
		b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), map[string]any{"name": "bad"}, "")
		vh := b.createVHost(t, plainHost("n", "n.example.com"))
		want := b.version(t)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				t.Fatalf("wait for notification of version %d: %v", want, err)
			}
			var got Notification
			if err := json.Unmarshal([]byte(n.Payload), &got); err != nil {
				t.Fatalf("payload %q: %v", n.Payload, err)
			}
			if got.WorkspaceID != b.ws {
				continue // another subtest's workspace
			}
			if got.Version != want {
				t.Fatalf("notification %+v, want version %d (created %s)", got, want, vh.ID)
			}
			break
		}
	})

	t.Run("ListGetDiff", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		vh := b.createVHost(t, plainHost("site", "site.example.com"))
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+vh.ID.String(), map[string]any{"server_name": "site.example.org"}, http.StatusOK, nil)
		latest := b.version(t) // 4

		var list app.List[VersionSummary]
		b.as(t, "viewer", http.MethodGet, b.configPath()+"/versions?per_page=2", nil, http.StatusOK, &list)
		if list.Meta.Total != latest || len(list.Data) != 2 || list.Data[0].Version != latest || list.Data[1].Version != latest-1 {
			t.Fatalf("list = %+v", list)
		}
		if list.Data[0].Actor.UserID == nil || *list.Data[0].Actor.UserID != e.users["operator"].ID ||
			list.Data[0].Actor.Email != "operator@example.test" || list.Data[0].Summary != `virtual host "site" updated` {
			t.Fatalf("newest = %+v", list.Data[0])
		}

		var got Version
		b.as(t, "viewer", http.MethodGet, fmt.Sprintf("%s/versions/%d", b.configPath(), latest), nil, http.StatusOK, &got)
		if got.Version != latest || len(got.Snapshot.VirtualHosts) != 1 || len(got.Snapshot.Upstreams) != 1 ||
			len(got.Snapshot.Certificates) != 1 || got.Snapshot.Certificates[0].ID != b.cert.ID {
			t.Fatalf("version = %+v", got)
		}
		if !strings.Contains(got.Files[render.HTTPConf], "server_name site.example.org;") {
			t.Fatalf("http.conf of version %d:\n%s", latest, got.Files[render.HTTPConf])
		}
		for name := range got.Files {
			if strings.HasPrefix(name, "certs/") {
				t.Fatalf("version files include certificate material %s", name)
			}
		}

		var d Diff
		b.as(t, "viewer", http.MethodGet, fmt.Sprintf("%s/versions/%d/diff", b.configPath(), latest), nil, http.StatusOK, &d)
		if d.Against != latest-1 || !strings.Contains(d.Diff, "--- a/http.conf\n+++ b/http.conf\n") ||
			!strings.Contains(d.Diff, "\n-    server_name site.example.com;\n") || !strings.Contains(d.Diff, "\n+    server_name site.example.org;\n") {
			t.Fatalf("diff:\n%s", d.Diff)
		}
		status, text := b.do(t, b.tokens["viewer"], http.MethodGet, fmt.Sprintf("%s/versions/%d/diff?against=0", b.configPath(), latest), nil, "text/plain")
		if status != http.StatusOK || !strings.Contains(string(text), "+    server_name site.example.org;") || strings.Contains(string(text), "site.example.com") {
			t.Fatalf("text diff against 0: %d\n%s", status, text)
		}
		// The certificate upload (2) changed no rendered file.
		b.as(t, "viewer", http.MethodGet, b.configPath()+"/versions/2/diff", nil, http.StatusOK, &d)
		if d.Diff != "" {
			t.Fatalf("diff of version 2 = %q, want empty", d.Diff)
		}
		b.as(t, "viewer", http.MethodGet, b.configPath()+"/versions/99", nil, http.StatusNotFound, nil)
		b.as(t, "viewer", http.MethodGet, b.configPath()+"/versions/x", nil, http.StatusNotFound, nil)
		b.as(t, "viewer", http.MethodGet, b.configPath()+"/versions/1/diff?against=99", nil, http.StatusUnprocessableEntity, nil)
		b.as(t, "outsider", http.MethodGet, b.configPath()+"/versions", nil, http.StatusNotFound, nil)
	})

	t.Run("RollbackRendersTheSameBytes", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		www := b.createCert(t, "www.example.com")
		cache := b.createUpstream(t, "cache", "10.0.5.1:6379")
		withAuth := plainHost("admin", "admin.example.com")
		withAuth["access_list"] = map[string]any{"realm": "Admins", "allow": []any{"10.0.0.0/8"},
			"basic_auth_users": []any{map[string]any{"username": "alice", "password": "first-password"}}}
		admin := b.createVHost(t, withAuth)
		api := b.createVHost(t, map[string]any{
			"name": "api", "server_name": "api.example.com", "ssl_enabled": true, "ssl_certificate_id": b.cert.ID,
			"http2_enabled": true, "redirect_https": true,
			"locations": []any{map[string]any{"path": "/", "upstream_id": b.upstream.ID, "websocket": true}},
		})
		b.createVHost(t, map[string]any{
			"name": "www", "server_name": "www.example.com", "ssl_enabled": true, "ssl_certificate_id": www.ID,
			"locations": []any{map[string]any{"path": "/", "root": "/var/www/site", "index": "index.html"}},
		})
		b.createStream(t, map[string]any{"name": "redis", "listen_port": 6379, "upstream_id": cache.ID})
		target := b.version(t)
		want, err := b.svc.renderedVersion(b.ctx, b.ws, target)
		if err != nil {
			t.Fatal(err)
		}

		// Change everything a rollback restores.
		b.as(t, "operator", http.MethodPatch, "/v1/upstreams/"+b.upstream.ID.String(), map[string]any{
			"servers": []any{map[string]any{"address": "10.0.9.9:8080"}},
		}, http.StatusOK, nil)
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+admin.ID.String(), map[string]any{
			"name": "www", "access_list": map[string]any{"basic_auth_users": []any{map[string]any{"username": "alice", "password": "second-password"}}},
		}, http.StatusConflict, nil) // name taken by the www host
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+admin.ID.String(), map[string]any{
			"name": "admin2", "access_list": map[string]any{"basic_auth_users": []any{map[string]any{"username": "alice", "password": "second-password"}}},
		}, http.StatusOK, nil)
		b.as(t, "operator", http.MethodDelete, "/v1/virtual-hosts/"+api.ID.String(), nil, http.StatusNoContent, nil)
		b.createStream(t, map[string]any{"name": "extra", "listen_port": 7000, "upstream_id": b.upstream.ID})
		b.createUpstream(t, "later", "10.0.7.7:80")
		changed, err := b.svc.renderedVersion(b.ctx, b.ws, b.version(t))
		if err != nil {
			t.Fatal(err)
		}
		if filesEqual(want, changed) {
			t.Fatal("the changes did not change the rendered configuration")
		}

		b.as(t, "viewer", http.MethodPost, b.configPath()+"/rollback", map[string]any{"version": target}, http.StatusForbidden, nil)
		var res VersionSummary
		b.as(t, "operator", http.MethodPost, b.configPath()+"/rollback", map[string]any{"version": target}, http.StatusCreated, &res)
		if res.Version != b.version(t) || res.Summary != fmt.Sprintf("rollback to version %d", target) {
			t.Fatalf("rollback = %+v (current %d)", res, b.version(t))
		}
		got, err := b.svc.renderedVersion(b.ctx, b.ws, res.Version)
		if err != nil {
			t.Fatal(err)
		}
		if !filesEqual(want, got) {
			for _, name := range slices.Sorted(maps.Keys(want)) {
				if !bytes.Equal(want[name], got[name]) {
					t.Errorf("%s differs:\nwant:\n%s\ngot:\n%s", name, want[name], got[name])
				}
			}
			t.Fatalf("rendered configuration after rollback differs from version %d", target)
		}
		// The objects themselves are back, ids included.
		restored, err := b.svc.GetVirtualHost(b.ctx, api.ID)
		if err != nil || restored.Name != "api" {
			t.Fatalf("deleted host not restored: %+v, %v", restored, err)
		}
		var n int64
		b.db.Model(&Stream{}).Where("workspace_id = ?", b.ws).Count(&n)
		if n != 1 {
			t.Fatalf("%d streams after rollback, want 1", n)
		}
		var audit []app.AuditEntry
		b.db.Where("workspace_id = ? AND action = ?", b.ws, "config.rollback").Find(&audit)
		if len(audit) != 1 {
			t.Fatalf("%d rollback audit rows, want 1", len(audit))
		}
	})

	t.Run("RollbackNeedsItsCertificates", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		gone := b.createCert(t, "gone.example.com")
		vh := b.createVHost(t, map[string]any{
			"name": "tls", "server_name": "gone.example.com", "ssl_enabled": true, "ssl_certificate_id": gone.ID,
			"locations": []any{map[string]any{"path": "/", "proxy_pass": "http://127.0.0.1:8080"}},
		})
		target := b.version(t)
		b.as(t, "operator", http.MethodDelete, "/v1/virtual-hosts/"+vh.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "operator", http.MethodDelete, "/v1/certificates/"+gone.ID.String(), nil, http.StatusNoContent, nil)
		before := b.version(t)
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.configPath()+"/rollback", map[string]any{"version": target}, "")
		if status != http.StatusConflict || !strings.Contains(string(raw), gone.ID.String()) || !strings.Contains(string(raw), "gone.example.com") {
			t.Fatalf("rollback without its certificate: status %d, want 409 naming it; body %s", status, raw)
		}
		if b.version(t) != before {
			t.Fatal("a refused rollback recorded a version")
		}
		if _, err := b.svc.GetVirtualHost(b.ctx, vh.ID); err == nil {
			t.Fatal("a refused rollback restored a virtual host")
		}
	})

	t.Run("PreviewIsTheRendererOutput", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		unused := b.createUpstream(t, "unused", "10.0.8.8:80")
		vh := b.createVHost(t, map[string]any{
			"name": "api", "server_name": "api.example.com", "ssl_enabled": true, "ssl_certificate_id": b.cert.ID,
			"access_list": map[string]any{"basic_auth_users": []any{map[string]any{"username": "ops", "password": "preview-password"}}},
			"locations": []any{
				map[string]any{"path": "/api", "upstream_id": b.upstream.ID,
					"custom_headers": []any{map[string]any{"name": "X-Request-ID", "value": "$request_id"}}},
				map[string]any{"path": "/health", "match": "exact", "proxy_pass": "http://localhost:8080/health"},
			},
		})
		var row vhostRow
		if err := b.db.Take(&row, "id = ?", vh.ID).Error; err != nil {
			t.Fatal(err)
		}
		stored, hashes := row.virtualHost()
		u := &agentv1.ConfigUpdate{
			VirtualHosts: []*agentv1.VirtualHost{VirtualHostToProto(stored, hashes)},
			Upstreams:    []*agentv1.Upstream{upstreams.ToProto(b.upstream), upstreams.ToProto(unused)},
			Certificates: map[string]*agentv1.Certificate{b.cert.ID.String(): {Id: b.cert.ID.String()}},
		}
		files, err := renderForPeople(u)
		if err != nil {
			t.Fatal(err)
		}
		want := string(files[render.HTTPConf])
		if !strings.Contains(want, "location = /health {") || !strings.Contains(want, "upstream u_") || strings.Contains(want, strings.ReplaceAll(unused.ID.String(), "-", "_")) {
			t.Fatalf("unexpected reference rendering:\n%s", want)
		}

		var p Preview
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+vh.ID.String()+"/preview", nil, http.StatusOK, &p)
		if len(p.Files) != 1 || p.Files[render.HTTPConf] != want {
			t.Fatalf("preview:\n%s\nwant:\n%s", p.Files[render.HTTPConf], want)
		}
		status, text := b.do(t, b.tokens["viewer"], http.MethodGet, "/v1/virtual-hosts/"+vh.ID.String()+"/preview", nil, "text/plain")
		if status != http.StatusOK || string(text) != want {
			t.Fatalf("text preview: %d\n%s", status, text)
		}

		st := b.createStream(t, map[string]any{"name": "tls", "listen_port": 8443, "upstream_id": b.upstream.ID,
			"ssl_enabled": true, "ssl_certificate_id": b.cert.ID, "bandwidth_limit": "512k"})
		files, err = renderForPeople(&agentv1.ConfigUpdate{
			Streams:      []*agentv1.Stream{StreamToProto(st)},
			Upstreams:    []*agentv1.Upstream{upstreams.ToProto(b.upstream)},
			Certificates: map[string]*agentv1.Certificate{b.cert.ID.String(): {Id: b.cert.ID.String()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		status, text = b.do(t, b.tokens["viewer"], http.MethodGet, "/v1/streams/"+st.ID.String()+"/preview", nil, "text/plain")
		if status != http.StatusOK || string(text) != string(files[render.StreamConf]) || !strings.Contains(string(text), "proxy_download_rate 512k;") {
			t.Fatalf("stream preview: %d\n%s\nwant:\n%s", status, text, files[render.StreamConf])
		}
		b.as(t, "outsider", http.MethodGet, "/v1/streams/"+st.ID.String()+"/preview", nil, http.StatusNotFound, nil)
	})

	t.Run("DesiredConfigFollowsTargets", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		agent := uuid.New()
		b.createVHost(t, plainHost("all", "all.example.com"))
		prod := plainHost("prod", "prod.example.com")
		prod["target_agents"] = map[string]any{"type": "selector", "label_selector": "env=production"}
		b.createVHost(t, prod)
		mine := plainHost("mine", "mine.example.com")
		mine["target_agents"] = map[string]any{"type": "agents", "agent_ids": []any{agent}}
		b.createVHost(t, mine)
		u, err := b.svc.DesiredConfig(b.ctx, b.ws, b.version(t), func(t TargetAgents) bool {
			return t.Matches(agent, map[string]string{"env": "staging"})
		})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, vh := range u.GetVirtualHosts() {
			names = append(names, vh.GetName())
		}
		if strings.Join(names, ",") != "all,mine" || u.GetVersion() != b.version(t) || len(u.GetCertificates()) != 0 {
			t.Fatalf("desired config: hosts %v, version %d, certificates %d", names, u.GetVersion(), len(u.GetCertificates()))
		}
	})
}

func filesEqual(a, b render.Files) bool {
	return maps.EqualFunc(a, b, func(x, y []byte) bool { return bytes.Equal(x, y) })
}
