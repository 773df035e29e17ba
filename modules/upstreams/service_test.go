package upstreams

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func mustCreate(t *testing.T, b *bundle, name string, addrs ...string) Upstream {
	t.Helper()
	var ss []ServerInput
	for _, a := range addrs {
		ss = append(ss, ServerInput{Address: a})
	}
	u, err := b.svc.Create(b.ctx, CreateParams{WorkspaceID: b.ws, Name: name, Servers: ss})
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return u
}

func TestService_Upstreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("ChangeFuncFailureRollsBackCreate", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.hooks.failFor(b.ws, errHookFailed)
		_, err := b.svc.Create(b.ctx, CreateParams{WorkspaceID: b.ws, Name: "x", Servers: []ServerInput{{Address: "10.0.0.1:80"}}})
		if !errors.Is(err, errHookFailed) {
			t.Fatalf("err = %v, want the hook's error", err)
		}
		if n := b.count(t); n != 0 || len(b.audit(t)) != 0 {
			t.Fatalf("%d upstreams, %d audit rows after failed create", n, len(b.audit(t)))
		}
		if c := b.hooks.changesOf(b.ws); len(c) != 1 || c[0].Visible != 1 {
			t.Fatalf("changes %+v: want one call that saw the new row", c)
		}
	})

	t.Run("CreateInUnknownWorkspaceIsNotFound", func(t *testing.T) {
		t.Parallel()
		_, err := e.svc.Create(context.Background(), CreateParams{WorkspaceID: uuid.New(), Name: "x", Servers: []ServerInput{{Address: "10.0.0.1:80"}}})
		if !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("err = %v, want not found", err)
		}
	})

	t.Run("ExistsOnlyInItsWorkspace", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		other := e.setup(t)
		u := mustCreate(t, b, "api", "10.0.0.1:80")
		for _, c := range []struct {
			ws, id uuid.UUID
			want   bool
		}{{b.ws, u.ID, true}, {other.ws, u.ID, false}, {b.ws, uuid.New(), false}} {
			got, err := e.svc.Exists(b.ctx, nil, c.ws, c.id)
			if err != nil || got != c.want {
				t.Errorf("Exists(%s, %s) = %v, %v; want %v", c.ws, c.id, got, err, c.want)
			}
		}
		err := e.db.Transaction(func(tx *gorm.DB) error {
			ok, err := e.svc.Exists(b.ctx, tx, b.ws, u.ID)
			if err != nil || !ok {
				t.Errorf("Exists in tx = %v, %v", ok, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ExistsLocksAgainstDelete", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := mustCreate(t, b, "api", "10.0.0.1:80")
		tx := e.db.Begin()
		defer tx.Rollback()
		if ok, err := e.svc.Exists(b.ctx, tx, b.ws, u.ID); err != nil || !ok {
			t.Fatalf("Exists = %v, %v", ok, err)
		}
		// A delete must wait for the transaction that checked the reference.
		err := e.db.Transaction(func(d *gorm.DB) error {
			if err := d.Exec("SET LOCAL lock_timeout = '100ms'").Error; err != nil {
				return err
			}
			return d.Delete(&Upstream{}, "id = ?", u.ID).Error
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
			t.Fatalf("delete: %v, want a lock timeout (it must wait for the Exists lock)", err)
		}
		// An update does not conflict with it.
		err = e.db.Transaction(func(d *gorm.DB) error {
			if err := d.Exec("SET LOCAL lock_timeout = '2s'").Error; err != nil {
				return err
			}
			return d.Model(&Upstream{}).Where("id = ?", u.ID).Update("keepalive_connections", 4).Error
		})
		if err != nil {
			t.Fatalf("update blocked by Exists: %v", err)
		}
	})

	t.Run("ListAllReturnsWorkspaceUpstreamsInOrder", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		if all, err := e.svc.ListAll(b.ctx, nil, b.ws); err != nil || all == nil || len(all) != 0 {
			t.Fatalf("empty ListAll = %#v, %v; want an empty non-nil slice", all, err)
		}
		a := mustCreate(t, b, "a", "10.0.0.1:80")
		c := mustCreate(t, b, "c", "10.0.0.2:80")
		mustCreate(t, e.setup(t), "elsewhere", "10.0.0.3:80")
		all, err := e.svc.ListAll(b.ctx, e.db, b.ws)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(all, []Upstream{a, c}) {
			t.Fatalf("ListAll = %+v", all)
		}
	})

	t.Run("ReplaceAllRestoresSnapshot", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a := mustCreate(t, b, "a", "10.0.0.1:80")
		c := mustCreate(t, b, "c", "10.0.0.2:80")
		gone := mustCreate(t, b, "e", "10.0.0.5:80")
		snap, err := e.svc.ListAll(b.ctx, nil, b.ws)
		if err != nil {
			t.Fatal(err)
		}
		// The snapshot is stored as JSON: what the API returns.
		raw, err := json.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}

		// Change everything afterwards: swap the names of a and c (so that
		// restoring one name collides with the other row until both are
		// written), change a's servers, delete e, add d.
		if _, err := e.svc.Update(b.ctx, c.ID, UpdateParams{Name: ptr("tmp")}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Update(b.ctx, a.ID, UpdateParams{Name: ptr("c"), Servers: []ServerInput{{Address: "[::1]:81"}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Update(b.ctx, c.ID, UpdateParams{Name: ptr("a")}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Delete(b.ctx, gone.ID); err != nil {
			t.Fatal(err)
		}
		d := mustCreate(t, b, "d", "10.0.0.4:80")
		changesBefore := len(b.hooks.changesOf(b.ws))
		auditBefore := len(b.audit(t))

		var restored []Upstream
		if err := json.Unmarshal(raw, &restored); err != nil {
			t.Fatal(err)
		}
		err = e.db.Transaction(func(tx *gorm.DB) error { return e.svc.ReplaceAll(b.ctx, tx, b.ws, restored) })
		if err != nil {
			t.Fatalf("ReplaceAll: %v", err)
		}
		all, err := e.svc.ListAll(b.ctx, nil, b.ws)
		if err != nil {
			t.Fatal(err)
		}
		// Equal to the decoded snapshot, ids and timestamps included.
		if !reflect.DeepEqual(all, restored) {
			t.Fatalf("after ReplaceAll:\n%+v\nwant\n%+v", all, restored)
		}
		if _, err := e.svc.Get(b.ctx, d.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("d still there: %v", err)
		}
		if len(b.hooks.changesOf(b.ws)) != changesBefore || len(b.audit(t)) != auditBefore {
			t.Fatal("ReplaceAll recorded a change or audit row; its caller does")
		}
		// A nil tx runs in a transaction of its own; an empty list empties the workspace.
		if err := e.svc.ReplaceAll(b.ctx, nil, b.ws, nil); err != nil {
			t.Fatal(err)
		}
		if n := b.count(t); n != 0 {
			t.Fatalf("%d upstreams after ReplaceAll(nil)", n)
		}
	})

	t.Run("ReplaceAllRefusesBadSnapshots", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		other := e.setup(t)
		mine := mustCreate(t, b, "mine", "10.0.0.1:80")
		foreign := mustCreate(t, other, "foreign", "10.0.0.1:80")
		bad := mine
		bad.Servers = []Server{{Address: "x;y:80", Weight: 1}}
		dupName := mine
		dupName.ID = uuid.New()
		dupName.Name = "MINE"
		foreign.WorkspaceID = uuid.Nil
		for name, c := range map[string]struct {
			ups  []Upstream
			want error
		}{
			"InvalidField":       {[]Upstream{bad}, app.ErrInvalid},
			"DuplicateName":      {[]Upstream{mine, dupName}, app.ErrInvalid},
			"OtherWorkspacesRow": {[]Upstream{foreign}, app.ErrConflict},
		} {
			err := e.svc.ReplaceAll(b.ctx, nil, b.ws, c.ups)
			if !errors.Is(err, c.want) {
				t.Errorf("%s: err = %v, want %v", name, err, c.want)
			}
		}
		var ve *app.ValidationError
		if err := e.svc.ReplaceAll(b.ctx, nil, b.ws, []Upstream{bad}); !errors.As(err, &ve) || ve.Fields[0].Field != "upstreams[0].servers[0].address" {
			t.Errorf("err = %v, want upstreams[0].servers[0].address", err)
		}
		if got, err := e.svc.Get(b.ctx, mine.ID); err != nil || !reflect.DeepEqual(got, mine) {
			t.Errorf("mine changed: %+v, %v", got, err)
		}
		if got, err := e.svc.Get(b.ctx, foreign.ID); err != nil || got.WorkspaceID != other.ws {
			t.Errorf("foreign changed: %+v, %v", got, err)
		}
	})

	t.Run("DeleteInUseReturnsUsers", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		u := mustCreate(t, b, "api", "10.0.0.1:80")
		b.hooks.setUsers(u.ID, `virtual host "api" (x)`)
		err := e.svc.Delete(b.ctx, u.ID)
		var inUse *app.InUseError
		if !errors.As(err, &inUse) || !errors.Is(err, app.ErrConflict) || len(inUse.Users) != 1 {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestService_ToProto(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("aa0e8400-e29b-41d4-a716-446655440006")
	u := Upstream{
		ID: id, WorkspaceID: uuid.New(), Name: "api-backend", Algorithm: IPHash,
		Servers: []Server{
			{Address: "10.0.1.20:8080", Weight: 2, MaxFails: 3, FailTimeout: 30},
			{Address: "[2001:db8::1]:8080", Weight: 1, Down: true, MaxFails: 0, FailTimeout: 0},
		},
		KeepaliveConnections: 16,
		HealthCheck:          HealthCheck{Enabled: true, Path: "/health", Interval: 10, Timeout: 5, HealthyThreshold: 2, UnhealthyThreshold: 3},
	}
	want := &agentv1.Upstream{
		Id: id.String(), Name: "api-backend", Algorithm: agentv1.LoadBalanceAlgorithm_IP_HASH,
		Servers: []*agentv1.UpstreamServer{
			{Address: "10.0.1.20:8080", Weight: 2, MaxFails: 3, FailTimeoutSeconds: 30},
			{Address: "[2001:db8::1]:8080", Weight: 1, Down: true},
		},
		KeepaliveConnections: 16,
		HealthCheck:          &agentv1.HealthCheckConfig{Enabled: true, Path: "/health", IntervalSeconds: 10, TimeoutSeconds: 5, HealthyThreshold: 2, UnhealthyThreshold: 3},
	}
	if got := ToProto(u); !proto.Equal(got, want) {
		t.Fatalf("ToProto = %v, want %v", got, want)
	}
	for alg, want := range map[Algorithm]agentv1.LoadBalanceAlgorithm{
		RoundRobin:         agentv1.LoadBalanceAlgorithm_ROUND_ROBIN,
		LeastConnections:   agentv1.LoadBalanceAlgorithm_LEAST_CONNECTIONS,
		IPHash:             agentv1.LoadBalanceAlgorithm_IP_HASH,
		WeightedRoundRobin: agentv1.LoadBalanceAlgorithm_WEIGHTED_ROUND_ROBIN,
	} {
		u.Algorithm = alg
		if got := ToProto(u).Algorithm; got != want {
			t.Errorf("%s → %v, want %v", alg, got, want)
		}
	}
}

func TestService_AddressKey(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"10.0.1.20:8080":        "10.0.1.20:8080",
		"[2001:db8::1]:8080":    "[2001:db8::1]:8080",
		"[2001:DB8:0::1]:8080":  "[2001:db8::1]:8080",
		"[::ffff:10.0.0.1]:80":  "[::ffff:10.0.0.1]:80",
		"backend.internal:80":   "backend.internal:80",
		"Backend.Example.COM:1": "backend.example.com:1",
		"localhost:65535":       "localhost:65535",
		"a-b.c1:443":            "a-b.c1:443",
	}
	for in, want := range good {
		if got, err := addressKey(in); err != nil || got != want {
			t.Errorf("addressKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "10.0.0.1", "10.0.0.1:", "10.0.0.1:99999", "10.0.0.1:0", "10.0.0.1:080", "10.0.0.1:+80", "10.0.0.1:8o",
		"bad host:80", "[::1]", "[::1]80", "[::1", "::1:80", "[fe80::1%eth0]:80", "[10.0.0.1]:80", "a;b:80", "$host:80",
		"example.com:80;include", "-a.example:80", "a-.example:80", "a..b:80", "a.example.:80", "a_b:80",
		"10.0.0:80", "256.0.0.1:80", "010.0.0.1:80", "unix:/tmp/s", "http://a:80", "a/b:80", "a{b}:80", "a'b:80", `a"b:80`,
		"a#b:80", "é.example:80", ":80", "a\x00b:80", string(make([]byte, 300)) + ":80", "a.example:80:80",
	}
	for _, in := range bad {
		if got, err := addressKey(in); err == nil {
			t.Errorf("addressKey(%q) = %q, want an error", in, got)
		}
	}
	long := ""
	for len(long) < 254 {
		long += "abcdefghi."
	}
	if _, err := addressKey(long + "x:80"); err == nil {
		t.Errorf("accepted a %d-character host", len(long)+1)
	}
}

func TestService_CheckHealthPath(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/", "/health", "/healthz?full=1&x=y", "/a/b-c_d.e~f", "/%20x", "/@:!*'(),+="} {
		if err := checkHealthPath(p); err != nil {
			t.Errorf("checkHealthPath(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "health", "/a b", "/a\tb", "/$host", "/a;b", "/a{b}", "/a#b", "/%2", "/%zz", `/a"b`, "/é", "/a\\b"} {
		if err := checkHealthPath(p); err == nil {
			t.Errorf("checkHealthPath(%q) accepted", p)
		}
	}
}

// FuzzAddressKey checks that every accepted server address is made of
// host:port characters only and is written to nginx as one plain argument.
func FuzzAddressKey(f *testing.F) {
	for _, s := range []string{"10.0.0.1:80", "[2001:db8::1]:8080", "backend.internal:80", "a;b:80", "$host:80",
		"example.com:80;include", "[::1]", "a b:80", "a\n:80", "x{}:1", "[::1]:80 backup", "#a:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if _, err := addressKey(addr); err != nil {
			return
		}
		for i := 0; i < len(addr); i++ {
			c := addr[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-:[]", c) >= 0) {
				t.Fatalf("accepted %q with byte %q", addr, c)
			}
		}
		if err := render.ValidateArg(addr); err != nil {
			t.Fatalf("accepted %q, which nginx would not read back: %v", addr, err)
		}
	})
}

// FuzzHealthPath checks that no accepted health check path holds a character
// that could end an nginx argument or directive or start a variable.
func FuzzHealthPath(f *testing.F) {
	for _, s := range []string{"/", "/health", "/a?b=c", "/$uri", "/a;b", "/a b", "/%41", "/{x}", "/#", "no-slash"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkHealthPath(p) != nil {
			return
		}
		if p[0] != '/' || len(p) > MaxHealthPathLength || strings.ContainsAny(p, " \t\r\n\x00;${}#\"\\") {
			t.Fatalf("accepted %q", p)
		}
		if err := render.ValidateArg(p); err != nil {
			t.Fatalf("accepted %q, which nginx would not read back: %v", p, err)
		}
	})
}

// TestService_ToProtoRenders checks that what the API accepts converts into an
// upstream the renderer turns into nginx configuration.
func TestService_ToProtoRenders(t *testing.T) {
	t.Parallel()
	u := Upstream{
		ID: uuid.New(), Name: "web-backend", Algorithm: LeastConnections,
		Servers: []Server{
			{Address: "10.0.1.30:8080", Weight: 2, MaxFails: 1, FailTimeout: 10},
			{Address: "[2001:db8::1]:8080", Weight: 1, MaxFails: 3, FailTimeout: 30, Down: true},
			{Address: "backend.internal:80", Weight: 1, Backup: true},
		},
		KeepaliveConnections: 16,
		HealthCheck:          DefaultHealthCheck(),
	}
	if err := validateUpstream(u, upstreamPaths{serversGiven: true}); err != nil {
		t.Fatalf("fixture invalid: %v", err)
	}
	up := ToProto(u)
	files, err := render.Render(&agentv1.ConfigUpdate{
		Version:   1,
		Upstreams: []*agentv1.Upstream{up},
		VirtualHosts: []*agentv1.VirtualHost{{
			Id: uuid.NewString(), Name: "api", ServerName: "api.example.com", ListenPort: 80,
			Locations: []*agentv1.Location{{Path: "/", UpstreamId: up.GetId()}},
		}},
	}, render.Options{ConfDir: "/etc/nginx/nxmesh"})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	conf := string(files["http.conf"])
	for _, want := range []string{"least_conn", "10.0.1.30:8080", "[2001:db8::1]:8080", "backend.internal:80", "backup", "down", "keepalive 16"} {
		if !strings.Contains(conf, want) {
			t.Errorf("http.conf lacks %q:\n%s", want, conf)
		}
	}
}
