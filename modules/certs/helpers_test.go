package certs_test

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const testPassword = "correct horse battery"

// bundle is one top-level test's master: a fresh database with the auth, orgs
// and certs modules mounted, an organization "acme" with a workspace and an
// owner, operator and viewer, another organization with its own owner
// ("outsider"), recorded change hooks, and every log line kept.
type bundle struct {
	app    *app.App
	svc    *certs.Service
	mod    *certs.Module
	orgs   *orgs.Service
	hooks  *hooks
	pki    *pki
	logs   *syncBuffer
	tokens map[string]string
	orgID  uuid.UUID
	// ws belongs to acme; otherWS to the outsider's organization; failWS to
	// acme, and ChangeFunc fails for it.
	ws, otherWS, failWS uuid.UUID

	// top is the top-level test, whose cleanups run after every subtest.
	top       *testing.T
	serveOnce sync.Once
	baseURL   string

	secretsMu sync.Mutex
	// secrets are fragments of every private key the test used; no response,
	// log line or audit row may contain one.
	secrets []string
}

// hooks stand in for the vhosts module's ChangeFunc and UsageFunc.
type hooks struct {
	mu      sync.Mutex
	changes []change
	inUse   map[uuid.UUID][]string
	failFor uuid.UUID
}

// change is one ChangeFunc call, with the number of the workspace's
// certificates its transaction saw.
type change struct {
	workspaceID uuid.UUID
	summary     string
	visible     int64
}

// change locks the workspace's row as the vhosts module's ChangeFunc does, and
// records the call.
func (h *hooks) change(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, summary string) error {
	if err := tx.WithContext(ctx).Exec("SELECT 1 FROM workspaces WHERE id = ? FOR UPDATE", workspaceID).Error; err != nil {
		return err
	}
	var n int64
	if err := tx.WithContext(ctx).Table("certificates").Where("workspace_id = ?", workspaceID).Count(&n).Error; err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if workspaceID == h.failFor {
		return errors.New("store config snapshot: simulated failure")
	}
	h.changes = append(h.changes, change{workspaceID: workspaceID, summary: summary, visible: n})
	return nil
}

func (h *hooks) usage(_ context.Context, _ *gorm.DB, id uuid.UUID) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inUse[id], nil
}

func (h *hooks) setInUse(id uuid.UUID, users []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inUse[id] = users
}

// changesOf returns the ChangeFunc calls for a workspace.
func (h *hooks) changesOf(workspaceID uuid.UUID) []change {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []change
	for _, c := range h.changes {
		if c.workspaceID == workspaceID {
			out = append(out, c)
		}
	}
	return out
}

// syncBuffer collects the log while the test runs.
type syncBuffer = apptest.SyncBuffer

// setup builds a bundle. Its cleanup checks that no log line and no audit row
// holds key material.
func setup(t *testing.T) *bundle { return setupWith(t, nil, nil) }

// setupWith is setup with the configuration and the module's options adjusted.
func setupWith(t *testing.T, mutate func(*app.Config), opts func(*certs.Options)) *bundle {
	t.Helper()
	ctx := context.Background()
	logs := &syncBuffer{}
	cfg := apptest.Config(t)
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })

	h := &hooks{inUse: map[uuid.UUID][]string{}}
	base := orgstest.New(t, a)
	authMod, orgsMod := base.Auth, base.Orgs
	o := certs.Options{ChangeFunc: h.change, UsageFunc: h.usage,
		// A fleet that cannot answer challenges (there is no fleet in these
		// tests); the Pebble tests replace it with an HTTP server of their own.
		PresentFunc: func(context.Context, uuid.UUID, string, string, string) (func(context.Context) error, error) {
			return nil, errors.New("no agent answers in this test")
		}}
	if opts != nil {
		opts(&o)
	}
	certsMod, err := certs.New(a.Deps, o)
	if err != nil {
		t.Fatalf("certs.New: %v", err)
	}
	base.Mount(t, certsMod)
	b := &bundle{mod: certsMod, top: t, pki: testPKI(t), app: a, svc: certsMod.Service(), orgs: orgsMod.Service(), hooks: h, logs: logs, tokens: map[string]string{}}

	users := map[string]auth.User{}
	for _, name := range []string{"owner", "operator", "viewer", "outsider"} {
		u, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: name + "@example.test", Password: testPassword, Name: name})
		if err != nil {
			t.Fatalf("create user %s: %v", name, err)
		}
		users[name] = u
	}
	org, err := b.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Acme", Slug: "acme", OwnerID: users["owner"].ID})
	if err != nil {
		t.Fatalf("create organization: %v", err)
	}
	b.orgID = org.ID
	for _, role := range []string{"operator", "viewer"} {
		if _, err := b.orgs.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: role + "@example.test", Role: role}); err != nil {
			t.Fatalf("add %s: %v", role, err)
		}
	}
	b.ws = b.newWorkspace(t)
	b.failWS = b.newWorkspace(t)
	h.failFor = b.failWS
	other, err := b.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Other", Slug: "other", OwnerID: users["outsider"].ID})
	if err != nil {
		t.Fatalf("create other organization: %v", err)
	}
	otherWS, err := b.orgs.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: other.ID, Name: "Theirs", Slug: "theirs"})
	if err != nil {
		t.Fatalf("create other workspace: %v", err)
	}
	b.otherWS = otherWS.ID

	for name := range users {
		b.tokens[name] = b.login(t, name+"@example.test")
	}
	t.Cleanup(func() { b.checkNoKeyMaterialStored(t) })
	return b
}

// newWorkspace creates a workspace in acme.
func (b *bundle) newWorkspace(t *testing.T) uuid.UUID {
	t.Helper()
	slug := "ws-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	ws, err := b.orgs.CreateWorkspace(context.Background(), orgs.CreateWorkspaceParams{OrgID: b.orgID, Name: slug, Slug: slug})
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	return ws.ID
}

func (b *bundle) login(t *testing.T, email string) string {
	t.Helper()
	status, body := b.do(t, http.MethodPost, "/v1/auth/login", "", map[string]string{"email": email, "password": testPassword})
	if status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, status, body)
	}
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &pair); err != nil || pair.AccessToken == "" {
		t.Fatalf("login %s: %s", email, body)
	}
	return pair.AccessToken
}

// serve starts the HTTP app on a loopback port, once, for the requests
// app.Test cannot make (bodies over the limit), and returns its base URL. It
// stops when the top-level test ends.
func (b *bundle) serve(t *testing.T) string {
	t.Helper()
	b.serveOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = b.app.Fiber().Listener(ln)
		}()
		b.top.Cleanup(func() {
			if err := b.app.Fiber().ShutdownWithTimeout(5 * time.Second); err != nil {
				t.Errorf("shut down HTTP: %v", err)
			}
			<-done
		})
		b.baseURL = "http://" + ln.Addr().String()
	})
	if b.baseURL == "" {
		t.Fatal("HTTP server not started")
	}
	return b.baseURL
}

// keyPEM encodes key as PKCS#8 and remembers it as a secret.
func (b *bundle) keyPEM(t *testing.T, key crypto.Signer) string {
	t.Helper()
	return b.secret(keyPEM(t, key))
}

// secret remembers a private key PEM so checks look for it; it returns s.
func (b *bundle) secret(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	b.secretsMu.Lock()
	defer b.secretsMu.Unlock()
	for _, l := range lines {
		if !strings.HasPrefix(l, "-----") && len(l) >= 40 {
			b.secrets = append(b.secrets, l)
		}
	}
	return s
}

// leaksKey reports what in data looks like key material, "" when nothing.
func (b *bundle) leaksKey(data string) string {
	if strings.Contains(data, "PRIVATE KEY") {
		return "PRIVATE KEY"
	}
	b.secretsMu.Lock()
	defer b.secretsMu.Unlock()
	for _, s := range b.secrets {
		if strings.Contains(data, s) {
			return "a line of a private key"
		}
	}
	return ""
}

// do sends a request as the user whose token is given ("" for none) and returns
// the status and body. body is JSON-encoded unless it is a string. Every
// response is checked for key material.
func (b *bundle) do(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	r := apptest.NewClient(b.app).As(token).Do(t, method, path, body)
	if leak := b.leaksKey(string(r.Body)); leak != "" {
		t.Errorf("%s %s: response contains %s: %s", method, path, leak, r.Body)
	}
	return r.Status, r.Body
}

// as sends a request as a role of the bundle.
func (b *bundle) as(t *testing.T, role, method, path string, body any) (int, []byte) {
	t.Helper()
	return b.do(t, method, path, b.tokens[role], body)
}

// upload posts a certificate as the operator and expects 201.
func (b *bundle) upload(t *testing.T, ws uuid.UUID, chain, key string) certJSON {
	t.Helper()
	status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
		map[string]any{"certificate_pem": chain, "private_key_pem": key})
	if status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, body)
	}
	var c certJSON
	mustDecode(t, body, &c)
	return c
}

// certJSON is the API's certificate object.
type certJSON struct {
	ID                string   `json:"id"`
	WorkspaceID       string   `json:"workspace_id"`
	Name              string   `json:"name"`
	Domain            string   `json:"domain"`
	SAN               []string `json:"san"`
	IsWildcard        bool     `json:"is_wildcard"`
	Provider          string   `json:"provider"`
	Status            string   `json:"status"`
	IssuedAt          string   `json:"issued_at"`
	ExpiresAt         string   `json:"expires_at"`
	AutoRenew         bool     `json:"auto_renew"`
	Issuer            string   `json:"issuer"`
	Serial            string   `json:"serial"`
	FingerprintSHA256 string   `json:"fingerprint_sha256"`
	Error             string   `json:"error"`
	CreatedAt         string   `json:"created_at"`
	UpdatedAt         string   `json:"updated_at"`
}

// errorJSON is the error envelope.
type errorJSON struct {
	Error struct {
		Code    string           `json:"code"`
		Message string           `json:"message"`
		Details []app.FieldError `json:"details"`
	} `json:"error"`
}

func mustDecode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}

// countAudit counts the certificate audit rows of a workspace.
func (b *bundle) countAudit(t *testing.T, ws uuid.UUID) int64 {
	t.Helper()
	return b.countRows(t, "audit_log", "workspace_id = ? AND object_type = ?", ws, "certificate")
}

// countRows counts rows of table matching where.
func (b *bundle) countRows(t *testing.T, table, where string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := b.app.Deps.DB.Table(table).Where(where, args...).Count(&n).Error; err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// checkNoKeyMaterialStored fails the test when a log line or an audit row holds
// key material.
func (b *bundle) checkNoKeyMaterialStored(t *testing.T) {
	t.Helper()
	if leak := b.leaksKey(b.logs.String()); leak != "" {
		t.Errorf("the log contains %s", leak)
	}
	var rows []struct {
		Action string
		Before string
		After  string
	}
	if err := b.app.Deps.DB.Raw(`SELECT action, coalesce(before::text, '') AS before, coalesce(after::text, '') AS after FROM audit_log`).Scan(&rows).Error; err != nil {
		t.Errorf("read audit log: %v", err)
		return
	}
	for _, r := range rows {
		if leak := b.leaksKey(r.Before + r.After); leak != "" {
			t.Errorf("audit row %s contains %s", r.Action, leak)
		}
		if strings.Contains(r.Before+r.After, "certificate_pem") || strings.Contains(r.Before+r.After, "private_key") {
			t.Errorf("audit row %s holds PEM fields: %s %s", r.Action, r.Before, r.After)
		}
	}
}
