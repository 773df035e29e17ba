package logs

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestAPI_LiveSocketAuth walks the socket's authentication rules: nothing is
// sent before the first message, and every bad first message, bad token or
// agent out of the caller's reach is answered with an error and a close.
func TestAPI_LiveSocketAuth(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)

	t.Run("NothingBeforeAuth", func(t *testing.T) {
		c := dialLogs(t, r, w.agent.String())
		w.ingest(t, r, w.agent, []*agentv1.AccessLogEntry{accessEntry(200, "/before")}, nil)
		if m, err := c.read(700 * time.Millisecond); err == nil {
			t.Fatalf("received %+v before authenticating", m)
		}
	})

	cases := []struct {
		name, agent, first, message string
	}{
		{"NotJSON", w.agent.String(), "hello", msgBadFirstMessage},
		{"WrongType", w.agent.String(), `{"type":"subscribe","token":"x"}`, msgBadFirstMessage},
		{"NoToken", w.agent.String(), `{"type":"auth"}`, msgBadFirstMessage},
		{"BadToken", w.agent.String(), `{"type":"auth","token":"not-a-token"}`, msgBadToken},
		{"BadAPIKey", w.agent.String(), `{"type":"auth","token":"nxm_0000000000000000000000000000000000000000"}`, msgBadToken},
		{"OtherOrganization", w.agent.String(), authMsg(w.tokens["outsider"]), msgNotFound},
		{"KeyOfOtherWorkspace", w.agent.String(), authMsg(w.keyOtherWS), msgNotFound},
		{"UnknownAgent", uuid.NewString(), authMsg(w.tokens[authz.RoleViewer]), msgNotFound},
		{"MalformedAgentID", "nope", authMsg(w.tokens[authz.RoleViewer]), msgNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialLogs(t, r, tc.agent)
			c.send(tc.first)
			if m := c.expect("error"); m.Message != tc.message {
				t.Fatalf("error %q, want %q", m.Message, tc.message)
			}
			c.expectClosed(websocket.ClosePolicyViolation)
		})
	}

	for name, token := range map[string]string{"Viewer": w.tokens[authz.RoleViewer], "Owner": w.tokens[authz.RoleOwner], "APIKey": w.key} {
		t.Run("Accepts"+name, func(t *testing.T) {
			c := dialLogs(t, r, w.agent.String())
			c.auth(token)
			if m := c.expect("auth_success"); m.AgentID != w.agent.String() {
				t.Fatalf("auth_success %+v", m)
			}
			c.send(`{"type":"ping"}`)
			c.expect("pong")
			c.send(`{"type":"subscribe"}`)
			c.expect("error")
			c.expectClosed(websocket.ClosePolicyViolation)
		})
	}

	t.Run("PlainGETIs426", func(t *testing.T) {
		resp, err := http.Get(r.base + "/v1/ws/logs/" + w.agent.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("status %d, want 426", resp.StatusCode)
		}
	})
}

func authMsg(token string) string {
	b, _ := json.Marshal(map[string]string{"type": "auth", "token": token})
	return string(b)
}

// TestAPI_LiveSocketLinesArrive ingests access and error batches and reads
// them from the socket, with only the agent's own lines.
func TestAPI_LiveSocketLinesArrive(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	c := dialLogs(t, r, w.agent.String())
	c.auth(w.tokens[authz.RoleViewer])
	c.expect("auth_success")

	w.ingest(t, r, w.other, []*agentv1.AccessLogEntry{accessEntry(200, "/other-agent")}, nil)
	w.ingest(t, r, w.agent, []*agentv1.AccessLogEntry{accessEntry(500, "/api/error"), accessEntry(200, "/ok")}, nil)
	w.ingest(t, r, w.agent, nil, []*agentv1.LogEntry{errorEntry("error", "connect() failed (111: Connection refused)")})

	m := c.expect("log")
	d := m.Data
	if d["level"] != "INFO" || d["source"] != SourceAccess || d["uri"] != "/api/error" || d["status"] != float64(500) ||
		d["host"] != "api.example.com" || d["agent_id"] != w.agent.String() || d["response_time_ms"] != 150.5 || d["timestamp"] == "" {
		t.Fatalf("first line %v", d)
	}
	msg, _ := d["message"].(string)
	if !strings.HasPrefix(msg, "192.168.1.100 - - [") || !strings.Contains(msg, `] "GET /api/error HTTP/1.1" 500 123 "-" "curl/8.5"`) {
		t.Fatalf("message %q, want nginx's combined format", msg)
	}
	if d := c.expect("log").Data; d["uri"] != "/ok" {
		t.Fatalf("second line %v", d)
	}
	if d := c.expect("log").Data; d["level"] != "ERROR" || d["source"] != SourceError || d["message"] != "connect() failed (111: Connection refused)" {
		t.Fatalf("error line %v", d)
	}
}

// TestAPI_LiveSocketAcrossReplicas reads on one replica the lines another
// replica stores.
func TestAPI_LiveSocketAcrossReplicas(t *testing.T) {
	cfg := apptest.Config(t)
	a, b := newReplica(t, cfg), newReplica(t, cfg)
	w := newWorld(t, a)
	if a.mod.lv.wanted(w.ws) {
		t.Fatal("nobody tails yet, but replica A would build live lines")
	}
	c := dialLogs(t, b, w.agent.String())
	c.auth(w.tokens[authz.RoleViewer])
	c.expect("auth_success")
	// B announces its tail; A builds and sends lines once it has heard.
	deadline := time.Now().Add(5 * time.Second)
	for !a.mod.lv.wanted(w.ws) {
		if time.Now().After(deadline) {
			t.Fatal("replica A never heard of B's tail")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a.mod.lv.wanted(uuid.New()) {
		t.Fatal("A would build lines for a workspace nobody tails")
	}
	w.ingest(t, a, w.agent, []*agentv1.AccessLogEntry{accessEntry(404, "/from-replica-a")}, nil)
	if d := c.expect("log").Data; d["uri"] != "/from-replica-a" || d["status"] != float64(404) || d["level"] != "INFO" {
		t.Fatalf("line from the other replica %v", d)
	}
}

// TestAPI_LiveSocketClosesWhenCredentialGoes closes a socket whose API key is
// revoked, and one whose user leaves the organization.
func TestAPI_LiveSocketClosesWhenCredentialGoes(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	ctx := context.Background()

	t.Run("RevokedKey", func(t *testing.T) {
		c := dialLogs(t, r, w.agent.String())
		c.auth(w.key)
		c.expect("auth_success")
		if err := r.orgs.RevokeAPIKey(ctx, w.org, w.keyID); err != nil {
			t.Fatal(err)
		}
		if m := c.expect("error"); m.Message != msgRevoked {
			t.Fatalf("error %q", m.Message)
		}
		c.expectClosed(websocket.ClosePolicyViolation)
	})
	t.Run("RemovedMember", func(t *testing.T) {
		c := dialLogs(t, r, w.agent.String())
		c.auth(w.tokens[authz.RoleViewer])
		c.expect("auth_success")
		if err := r.a.Deps.DB.Exec("DELETE FROM memberships WHERE organization_id = ? AND user_id = ?", w.org, w.users[authz.RoleViewer].ID).Error; err != nil {
			t.Fatal(err)
		}
		c.expect("error")
		c.expectClosed(websocket.ClosePolicyViolation)
	})
}

// TestAPI_TailSSE reads the agent and workspace SSE tails.
func TestAPI_TailSSE(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	bearer := func(token string, accept bool) http.Header {
		h := http.Header{"Authorization": {"Bearer " + token}}
		if accept {
			h.Set("Accept", "text/event-stream")
		}
		return h
	}

	t.Run("RefusedWithoutAccept", func(t *testing.T) {
		_, resp := openSSE(t, r.base+"/v1/agents/"+w.agent.String()+"/logs/stream", bearer(w.tokens[authz.RoleViewer], false))
		if resp.StatusCode != http.StatusNotAcceptable {
			t.Fatalf("status %d, want 406", resp.StatusCode)
		}
	})
	t.Run("OtherOrganizationIs404", func(t *testing.T) {
		_, resp := openSSE(t, r.base+"/v1/agents/"+w.agent.String()+"/logs/stream", bearer(w.tokens["outsider"], true))
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
	})
	t.Run("Agent", func(t *testing.T) {
		events, resp := openSSE(t, r.base+"/v1/agents/"+w.agent.String()+"/logs/stream", bearer(w.tokens[authz.RoleViewer], true))
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		nextSSE(t, events, "initial")
		w.ingest(t, r, w.other, []*agentv1.AccessLogEntry{accessEntry(200, "/other")}, nil)
		w.ingest(t, r, w.agent, nil, []*agentv1.LogEntry{errorEntry("warn", "upstream response is buffered")})
		var m wsMessage
		if err := json.Unmarshal([]byte(nextSSE(t, events, "log").data), &m); err != nil {
			t.Fatal(err)
		}
		if m.Type != "log" || m.Data["level"] != "WARN" || m.Data["message"] != "upstream response is buffered" {
			t.Fatalf("event %+v", m)
		}
	})
	t.Run("WorkspaceFiltered", func(t *testing.T) {
		events, _ := openSSE(t, r.base+"/v1/workspaces/"+w.ws.String()+"/logs/stream?status_class=5xx&source=access", bearer(w.key, true))
		nextSSE(t, events, "initial")
		w.ingest(t, r, w.other, []*agentv1.AccessLogEntry{accessEntry(200, "/fine"), accessEntry(503, "/down")}, nil)
		w.ingest(t, r, w.agent, nil, []*agentv1.LogEntry{errorEntry("error", "skipped")})
		w.ingest(t, r, w.agent, []*agentv1.AccessLogEntry{accessEntry(502, "/bad-gateway")}, nil)
		for _, want := range []string{"/down", "/bad-gateway"} {
			var m wsMessage
			if err := json.Unmarshal([]byte(nextSSE(t, events, "log").data), &m); err != nil {
				t.Fatal(err)
			}
			if m.Data["uri"] != want {
				t.Fatalf("line %v, want %s", m.Data, want)
			}
		}
	})
	t.Run("BadFilterIs422", func(t *testing.T) {
		_, resp := openSSE(t, r.base+"/v1/workspaces/"+w.ws.String()+"/logs/stream?source=all", bearer(w.key, true))
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("status %d, want 422", resp.StatusCode)
		}
	})
	t.Run("RevokedKeyEnds", func(t *testing.T) {
		key, err := r.orgs.CreateAPIKey(context.Background(), orgsKey(w))
		if err != nil {
			t.Fatal(err)
		}
		events, _ := openSSE(t, r.base+"/v1/workspaces/"+w.ws.String()+"/logs/stream", bearer(key.Key, true))
		nextSSE(t, events, "initial")
		if err := r.orgs.RevokeAPIKey(context.Background(), w.org, key.ID); err != nil {
			t.Fatal(err)
		}
		nextSSE(t, events, "unauthorized")
	})
}

// TestAPI_ExportNDJSON streams every matching entry as NDJSON.
func TestAPI_ExportNDJSON(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	var batch []*agentv1.AccessLogEntry
	for i := 0; i < 1500; i++ {
		st := uint32(200)
		if i%3 == 0 {
			st = 500
		}
		e := accessEntry(st, "/n")
		e.TimestampMs -= int64(i)
		batch = append(batch, e)
	}
	w.ingest(t, r, w.agent, batch, nil)
	w.ingest(t, r, w.agentOtherWS, []*agentv1.AccessLogEntry{accessEntry(500, "/elsewhere")}, nil)

	cases := []struct {
		name, query string
		status      int
		lines       int
	}{
		{"Everything", "format=ndjson", 200, 1500},
		{"LimitDoesNotApply", "format=ndjson&limit=10", 200, 1500},
		{"Filtered", "format=ndjson&status_code=500", 200, 500},
		{"BadFormat", "format=csv", 422, 0},
		{"BadFilter", "format=ndjson&status_code=abc", 422, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, r.base+"/v1/workspaces/"+w.ws.String()+"/access-logs?"+tc.query, nil)
			req.Header.Set("Authorization", "Bearer "+w.tokens[authz.RoleViewer])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
				t.Fatalf("Content-Type %q", ct)
			}
			sc := bufio.NewScanner(resp.Body)
			n := 0
			var prev time.Time
			for sc.Scan() {
				var e struct {
					ID        uuid.UUID `json:"id"`
					Timestamp time.Time `json:"timestamp"`
					Status    int       `json:"status"`
					URI       string    `json:"uri"`
				}
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.ID == uuid.Nil {
					t.Fatalf("line %d %q: %v", n, sc.Text(), err)
				}
				if e.URI != "/n" || (strings.Contains(tc.query, "status_code") && e.Status != 500) {
					t.Fatalf("line %d: %+v", n, e)
				}
				if n > 0 && e.Timestamp.After(prev) {
					t.Fatalf("line %d not newest first", n)
				}
				prev = e.Timestamp
				n++
			}
			if n != tc.lines {
				t.Fatalf("%d lines, want %d", n, tc.lines)
			}
		})
	}
}

// TestUI_LogsPage renders the admin's Logs page with its filters, table,
// live tail and error log, and reads the page's live tail.
func TestUI_LogsPage(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	w.ingest(t, r, w.agent, []*agentv1.AccessLogEntry{accessEntry(500, "/api/error"), accessEntry(200, "/api/fine")}, nil)
	w.ingest(t, r, w.agent, nil, []*agentv1.LogEntry{errorEntry("error", "open() failed (2: No such file)")})
	cookie, _, err := r.auth.CreateWebSession(context.Background(), w.users[authz.RoleViewer].ID, "127.0.0.1", "test")
	if err != nil {
		t.Fatal(err)
	}
	get := func(t *testing.T, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, r.base+path, nil)
		req.AddCookie(&http.Cookie{Name: "nxmesh_session", Value: cookie})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		return resp.StatusCode, b.String()
	}
	page := "/workspaces/" + w.ws.String() + "/logs"
	cases := []struct {
		name, query string
		status      int
		want, not   []string
	}{
		{"All", "", 200,
			[]string{"<title>Logs", `href="` + page + `"`, "/api/error", "/api/fine", `sse-connect="` + page + `/stream"`, "Choose an agent above", "edge-1"},
			[]string{"open() failed"}},
		{"StatusClass", "?status=5xx", 200, []string{"/api/error", `sse-connect="` + page + `/stream?status=5xx"`}, []string{"/api/fine"}},
		{"AgentErrorLog", "?agent_id=" + w.agent.String(), 200, []string{"open() failed (2: No such file)", "/api/error"}, []string{"Choose an agent above"}},
		{"OtherWorkspaceAgent", "?agent_id=" + w.agentOtherWS.String(), 422, []string{"is not an agent of this workspace"}, []string{"/api/error"}},
		{"BadStatus", "?status=abc", 422, []string{"Must be a status code such as 404"}, nil},
		{"Window", "?from=2020-01-01T00:00&to=2020-01-02T00:00", 200, []string{"No access-log entries match"}, []string{"/api/error"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(t, page+tc.query)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			for _, s := range tc.want {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(body, s) {
					t.Errorf("page shows %q", s)
				}
			}
		})
	}

	t.Run("Paginates", func(t *testing.T) {
		var batch []*agentv1.AccessLogEntry
		for i := 0; i < uiPageSize+5; i++ {
			e := accessEntry(404, "/page")
			e.TimestampMs -= int64(i + 1000)
			batch = append(batch, e)
		}
		w.ingest(t, r, w.other, batch, nil)
		_, body := get(t, page+"?status=404")
		if n := strings.Count(body, `class="access-entry"`); n != uiPageSize {
			t.Fatalf("%d rows on the first page, want %d", n, uiPageSize)
		}
		i := strings.Index(body, `rel="next"`)
		j := strings.LastIndex(body[:i], `href="`)
		if i < 0 || j < 0 {
			t.Fatal("no link to older entries")
		}
		href := strings.ReplaceAll(body[j+len(`href="`):strings.Index(body[j+6:], `"`)+j+6], "&amp;", "&")
		u, err := url.Parse(href)
		if err != nil {
			t.Fatal(err)
		}
		_, older := get(t, u.RequestURI())
		if n := strings.Count(older, `class="access-entry"`); n != 5 {
			t.Fatalf("%d rows on the second page, want 5", n)
		}
	})

	t.Run("LiveTail", func(t *testing.T) {
		h := http.Header{"Accept": {"text/event-stream"}, "Cookie": {"nxmesh_session=" + cookie}}
		events, resp := openSSE(t, r.base+page+"/stream?status=5xx", h)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		nextSSE(t, events, "initial")
		w.ingest(t, r, w.agent, []*agentv1.AccessLogEntry{accessEntry(200, "/quiet"), accessEntry(504, "/live<b>")}, nil)
		ev := nextSSE(t, events, "log")
		if !strings.HasPrefix(ev.data, `<tr class="live-line">`) || !strings.Contains(ev.data, "INFO") ||
			!strings.Contains(ev.data, "/live&lt;b&gt;") || strings.Contains(ev.data, "/quiet") {
			t.Fatalf("row %q", ev.data)
		}
	})
}

func orgsKey(w *world) orgs.CreateAPIKeyParams {
	return orgs.CreateAPIKeyParams{OrgID: w.org, WorkspaceID: w.ws, Name: "tail", Role: authz.RoleViewer, CreatedBy: w.users[authz.RoleOwner].ID}
}

// TestAPI_LiveShutdown ends the socket (close 1001) and the SSE tail
// (event: shutdown) when the module stops.
func TestAPI_LiveShutdown(t *testing.T) {
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	c := dialLogs(t, r, w.agent.String())
	c.auth(w.tokens[authz.RoleViewer])
	c.expect("auth_success")
	events, _ := openSSE(t, r.base+"/v1/agents/"+w.agent.String()+"/logs/stream",
		http.Header{"Authorization": {"Bearer " + w.key}, "Accept": {"text/event-stream"}})
	nextSSE(t, events, "initial")
	r.stop()
	if m := c.expect("error"); m.Message != msgUnavailable {
		t.Fatalf("error %q", m.Message)
	}
	c.expectClosed(websocket.CloseGoingAway)
	nextSSE(t, events, "shutdown")
	// A socket opened now is told at once.
	c2 := dialLogs(t, r, w.agent.String())
	c2.auth(w.tokens[authz.RoleViewer])
	if m := c2.expect("error"); m.Message != msgUnavailable {
		t.Fatalf("error %q", m.Message)
	}
	c2.expectClosed(websocket.CloseGoingAway)
}
