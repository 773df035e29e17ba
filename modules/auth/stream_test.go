package auth

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
)

// streamEndWait bounds how long a live stream may outlive its credential: the
// hub rechecks every 5 seconds.
const streamEndWait = 15 * time.Second

// liveStream is an open /v1/events WebSocket or /v1/events/stream response.
type liveStream struct {
	name string
	// events receives the type of each event or message.
	events chan string
	// ended is closed when the stream ends; how says how.
	ended chan struct{}
	how   string
}

func newLiveStream(name string) *liveStream {
	return &liveStream{name: name, events: make(chan string, 64), ended: make(chan struct{})}
}

// openWebSocket connects to /v1/events with ?token= and waits for the
// greeting.
func openWebSocket(t *testing.T, base, token string) *liveStream {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/events?token=" + url.QueryEscape(token)
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /v1/events: %v (status %d)", err, status)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetReadDeadline(time.Now().Add(streamEndWait))
	if _, msg, err := conn.ReadMessage(); err != nil || !strings.Contains(string(msg), `"type":"subscribed"`) {
		t.Fatalf("greeting %s, %v", msg, err)
	}
	s := newLiveStream("WebSocket")
	go func() {
		defer close(s.ended)
		var last string
		for {
			_ = conn.SetReadDeadline(time.Now().Add(2 * streamEndWait))
			_, msg, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					s.how = last + " then close " + ce.Text
					if ce.Code != websocket.ClosePolicyViolation {
						s.how = "unexpected close: " + err.Error()
					}
				} else {
					s.how = "unexpected end: " + err.Error()
				}
				return
			}
			var m struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(msg, &m)
			last = m.Type
			select {
			case s.events <- m.Type:
			default:
			}
		}
	}()
	return s
}

// openEventStream requests /v1/events/stream with the given headers (name,
// value pairs) and waits for the initial frame.
func openEventStream(t *testing.T, base, query string, headers ...string) *liveStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*streamEndWait)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events/stream?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/events/stream: status %d", resp.StatusCode)
	}
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q, %v", line, err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "event: initial\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
	s := newLiveStream("event stream")
	go func() {
		defer close(s.ended)
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				s.how = "unexpected end: " + err.Error()
				if last == "event: unauthorized\n" {
					s.how = "unauthorized then end"
				}
				return
			}
			if strings.HasPrefix(line, "event: ") {
				last = line
				select {
				case s.events <- strings.TrimSpace(strings.TrimPrefix(line, "event: ")):
				default:
				}
			}
		}
	}()
	return s
}

// expectEnd fails unless every stream ends, with the "unauthorized" message,
// within streamEndWait.
func expectEnd(t *testing.T, streams ...*liveStream) {
	t.Helper()
	deadline := time.After(streamEndWait)
	for _, s := range streams {
		select {
		case <-s.ended:
			if !strings.Contains(s.how, "unauthorized") || strings.HasPrefix(s.how, "unexpected") {
				t.Errorf("%s ended as %q, want an unauthorized message and a close", s.name, s.how)
			}
		case <-deadline:
			t.Fatalf("%s still open %v after the credential ended", s.name, streamEndWait)
		}
	}
}

func TestAPI_LiveStreamsEndWithTheCredential(t *testing.T) {
	t.Parallel()

	t.Run("RevokedAPIKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		base := apptest.Serve(t, b.app)
		u := b.createUser(t, "alice@example.com", false)
		org := b.createOrg(t, false)
		b.addMember(t, org, u.ID, authz.RoleAdmin) // a key acts only while its creator is a member
		key, secret, err := b.svc.CreateAPIKey(b.ctx, CreateAPIKeyParams{OrgID: org, Name: "ci", Role: authz.RoleViewer, CreatedBy: u.ID})
		if err != nil {
			t.Fatal(err)
		}
		streams := []*liveStream{openWebSocket(t, base, secret), openEventStream(t, base, "", "X-API-Key", secret)}
		if err := b.svc.RevokeAPIKey(b.ctx, org, key.ID); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, streams...)
	})

	t.Run("RotatedAPIKey", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		base := apptest.Serve(t, b.app)
		u := b.createUser(t, "alice@example.com", false)
		org := b.createOrg(t, false)
		b.addMember(t, org, u.ID, authz.RoleAdmin) // a key acts only while its creator is a member
		key, secret, err := b.svc.CreateAPIKey(b.ctx, CreateAPIKeyParams{OrgID: org, Name: "ci", Role: authz.RoleViewer, CreatedBy: u.ID})
		if err != nil {
			t.Fatal(err)
		}
		streams := []*liveStream{openWebSocket(t, base, secret), openEventStream(t, base, "token="+url.QueryEscape(secret))}
		if _, _, err := b.svc.RotateAPIKey(b.ctx, org, key.ID); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, streams...)
	})

	t.Run("LoggedOutAccessToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		base := apptest.Serve(t, b.app)
		b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		streams := []*liveStream{openWebSocket(t, base, pair.AccessToken), openEventStream(t, base, "", bearer(pair.AccessToken)...)}
		b.do(t, "POST", "/v1/auth/logout", nil, bearer(pair.AccessToken)...).expect(t, http.StatusNoContent, "")
		expectEnd(t, streams...)
	})

	t.Run("LoggedOutAdminSession", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		base := apptest.Serve(t, b.app)
		u := b.createUser(t, "alice@example.com", false)
		token, _, err := b.svc.CreateWebSession(b.ctx, u.ID, "192.0.2.1", "browser")
		if err != nil {
			t.Fatal(err)
		}
		stream := openEventStream(t, base, "", "Cookie", SessionCookie+"="+token)
		if err := b.svc.RevokeWebSession(b.ctx, token); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, stream)
	})

	t.Run("DisabledSuperadmin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		base := apptest.Serve(t, b.app)
		u := b.createUser(t, "root@example.com", true)
		b.createUser(t, "root2@example.com", true) // the last superadmin cannot be disabled
		pair := b.login(t, "root@example.com")
		web, _, err := b.svc.CreateWebSession(b.ctx, u.ID, "192.0.2.1", "browser")
		if err != nil {
			t.Fatal(err)
		}
		streams := []*liveStream{
			openWebSocket(t, base, pair.AccessToken),
			openEventStream(t, base, "", bearer(pair.AccessToken)...),
			openEventStream(t, base, "", "Cookie", SessionCookie+"="+web),
		}
		if err := b.svc.SetUserDisabled(b.ctx, u.ID, true); err != nil {
			t.Fatal(err)
		}
		expectEnd(t, streams...)
	})

	t.Run("ExpiredAccessToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(cfg *app.Config) { cfg.Auth.AccessTokenTTL = 10 * time.Minute })
		base := apptest.Serve(t, b.app)
		b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		streams := []*liveStream{openWebSocket(t, base, pair.AccessToken), openEventStream(t, base, "token="+pair.AccessToken)}
		b.clock.Advance(10*time.Minute + time.Second)
		expectEnd(t, streams...)
	})

	t.Run("ValidCredentialKeepsStreaming", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		base := apptest.Serve(t, b.app)
		b.createUser(t, "root@example.com", true)
		pair := b.login(t, "root@example.com")
		streams := []*liveStream{openWebSocket(t, base, pair.AccessToken), openEventStream(t, base, "", bearer(pair.AccessToken)...)}
		// After more than one recheck the streams still deliver.
		<-time.After(6 * time.Second)
		if err := b.app.Deps.Events.Publish(b.ctx, nil, app.Event{Type: "probe.tick", OrgID: uuid.New()}); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			select {
			case typ := <-s.events:
				if typ != "probe.tick" && typ != "update" {
					t.Fatalf("%s received %q, want probe.tick", s.name, typ)
				}
			case <-s.ended:
				t.Fatalf("%s of a valid credential ended: %s", s.name, s.how)
			case <-time.After(streamEndWait):
				t.Fatalf("%s delivered nothing", s.name)
			}
		}
	})
}
