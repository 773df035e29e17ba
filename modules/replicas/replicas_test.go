package replicas_test

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/wire/wiretest"
)

func TestMain(m *testing.M) { apptest.Main(m) }

type list struct {
	Data []app.Replica `json:"data"`
}

// byID returns the replicas of l by id.
func (l list) byID() map[string]app.Replica {
	out := map[string]app.Replica{}
	for _, r := range l.Data {
		out[r.ID] = r
	}
	return out
}

// eventually polls cond every 100 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func riverLeader(t *testing.T, m *wiretest.Master) string {
	t.Helper()
	var id string
	err := m.App.Deps.Pool.QueryRow(context.Background(), `SELECT coalesce((SELECT leader_id FROM river_leader WHERE expires_at > now() LIMIT 1), '')`).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAPI_ReplicasTwoWithLeaderAndFailover(t *testing.T) {
	a := wiretest.Start(t)
	b := wiretest.Start(t, wiretest.WithConfig(func(c *app.Config) { c.Database.URL = a.App.Deps.Config.Database.URL }))
	ids := map[string]*wiretest.Master{a.App.Deps.Replicas.ID(): a, b.App.Deps.Replicas.ID(): b}

	rootUser, root := a.Superadmin(t)
	team := a.Team(t)

	t.Run("Authorization", func(t *testing.T) {
		a.Client.Do(t, http.MethodGet, "/v1/replicas", nil).Expect(t, http.StatusUnauthorized, "UNAUTHORIZED")
		team.Clients[authz.RoleOwner].Do(t, http.MethodGet, "/v1/replicas", nil).Expect(t, http.StatusForbidden, "FORBIDDEN")
		root.Call(t, http.MethodGet, "/v1/replicas", nil, http.StatusOK, nil)
	})

	// Both replicas are listed up, by either replica, and the one River
	// elected is flagged leader.
	var leader string
	eventually(t, 30*time.Second, "two replicas up with one leader", func() (bool, string) {
		var l list
		root.Call(t, http.MethodGet, "/v1/replicas", nil, http.StatusOK, &l)
		got := l.byID()
		leaders := 0
		for id := range ids {
			r, ok := got[id]
			if !ok || r.State != app.ReplicaUp {
				return false, "replicas " + strings.Join(keys(got), ", ")
			}
			if r.Leader {
				leaders++
				leader = id
			}
		}
		rl := riverLeader(t, a)
		return leaders == 1 && rl == leader, "river leader " + rl + ", flagged " + leader
	})
	var l list
	root.Call(t, http.MethodGet, "/v1/replicas", nil, http.StatusOK, &l)
	for id, m := range ids {
		r := l.byID()[id]
		if r.Version != wiretest.Version || r.Hostname == "" || r.StartedAt.IsZero() || r.LastSeenAt.Before(r.StartedAt) {
			t.Errorf("replica %s = %+v", id, r)
		}
		if "http://"+r.HTTPAddr != m.URL || r.GRPCAddr != m.GRPCAddr {
			t.Errorf("replica %s addresses http %q grpc %q, want %s and %s", id, r.HTTPAddr, r.GRPCAddr, m.URL, m.GRPCAddr)
		}
		if r.ConnectedAgents != 0 {
			t.Errorf("replica %s has %d agents, want 0", id, r.ConnectedAgents)
		}
	}

	t.Run("AdminPage", func(t *testing.T) {
		body := adminPage(t, a.URL, root, "/replicas")
		for id := range ids {
			if !strings.Contains(body, html.EscapeString(id)) {
				t.Errorf("the page does not list %s", id)
			}
		}
		if strings.Count(body, ">leader<") != 1 || !strings.Contains(body, ">follower<") {
			t.Errorf("the page does not mark one leader and one follower: %s", body)
		}
	})

	// The leader stops: it reads as down at once, and the other replica
	// takes over the periodic work within 30 s.
	survivor := b
	if leader == b.App.Deps.Replicas.ID() {
		survivor = a
	}
	ids[leader].Stop()
	sroot := survivor.Login(t, rootUser.Email, wiretest.Password)
	eventually(t, 30*time.Second, "the survivor becomes leader", func() (bool, string) {
		var l list
		sroot.Call(t, http.MethodGet, "/v1/replicas", nil, http.StatusOK, &l)
		got := l.byID()
		old, next := got[leader], got[survivor.App.Deps.Replicas.ID()]
		rl := riverLeader(t, survivor)
		return old.State == app.ReplicaDown && !old.Leader && next.State == app.ReplicaUp && next.Leader && rl == next.ID,
			"stopped " + old.State + ", river leader " + rl
	})

	// A replica that stops refreshing its row (it died) reads as down after 30 s.
	if _, err := survivor.App.Deps.Pool.Exec(context.Background(),
		`INSERT INTO replicas (id, hostname, started_at, last_seen_at) VALUES ('dead/1/00', 'dead', now() - interval '5 minutes', now() - interval '31 seconds')`); err != nil {
		t.Fatal(err)
	}
	var after list
	sroot.Call(t, http.MethodGet, "/v1/replicas", nil, http.StatusOK, &after)
	if r := after.byID()["dead/1/00"]; r.State != app.ReplicaDown {
		t.Errorf("unrefreshed replica = %+v, want down", r)
	}

	// A replica whose row is gone (deleted, or its registration failed)
	// registers again at its next heartbeat.
	sid := survivor.App.Deps.Replicas.ID()
	if _, err := survivor.App.Deps.Pool.Exec(context.Background(), `DELETE FROM replicas WHERE id = $1`, sid); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*app.ReplicaHeartbeat, "the survivor registers again", func() (bool, string) {
		var l list
		sroot.Call(t, http.MethodGet, "/v1/replicas", nil, http.StatusOK, &l)
		r, ok := l.byID()[sid]
		return ok && r.State == app.ReplicaUp && r.HTTPAddr != "", "listed " + strings.Join(keys(l.byID()), ", ")
	})
}

func keys(m map[string]app.Replica) []string {
	var out []string
	for k, r := range m {
		out = append(out, k+"="+r.State)
	}
	return out
}

// rootEmail reads the superadmin's e-mail address through /v1/users/me.
func rootEmail(t *testing.T, c *apptest.Client) string {
	var me struct {
		Email string `json:"email"`
	}
	c.Call(t, http.MethodGet, "/v1/users/me", nil, http.StatusOK, &me)
	return me.Email
}

var csrfInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// adminPage signs in through /login as the superadmin behind c and returns
// the body of the admin page at path.
func adminPage(t *testing.T, base string, c *apptest.Client, path string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	get := func(p string) (int, string) {
		resp, err := hc.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, login := get("/login")
	tok := csrfInput.FindStringSubmatch(login)
	if tok == nil {
		t.Fatalf("no _csrf on the sign-in page: %.2000s", login)
	}
	resp, err := hc.PostForm(base+"/login", url.Values{"email": {rootEmail(t, c)}, "password": {wiretest.Password}, "_csrf": {html.UnescapeString(tok[1])}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	status, body := get(path)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %.2000s", path, status, body)
	}
	return body
}
