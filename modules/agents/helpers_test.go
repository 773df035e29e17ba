package agents

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/a-h/templ"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const (
	testPassword = "correct horse battery staple"
	// wait bounds every wait for something the master does.
	wait = 15 * time.Second
)

// env is one master shared by the subtests of a top-level test: auth, orgs,
// upstreams, certs, vhosts and agents mounted on a fresh database and wired
// the way main.go wires them, the agents' gRPC service served over TLS on
// 127.0.0.1, the hub running, and five signed-in users. Subtests get their own
// organization and workspace from env.setup, so they run in parallel.
type env struct {
	app    *app.App
	db     *gorm.DB
	mod    *Module
	svc    *Service
	vh     *vhosts.Service
	ups    *upstreams.Service
	certs  *certs.Service
	orgs   *orgs.Service
	addr   string
	events *recorder
	obs    *observer
	base   *orgstest.Base
	users  map[string]auth.User
	// tokens are access tokens of "owner", "admin", "operator", "viewer"
	// (members of every organization setup creates) and "outsider" (owner
	// of another one).
	tokens map[string]string
}

func newEnv(t *testing.T, configure ...func(*app.Config)) *env {
	t.Helper()
	a := apptest.NewApp(t, func(cfg *app.Config) {
		cfg.Auth.RateLimitPerMinute = 1_000_000
		cfg.GRPC.TLSHosts = "agents.test.internal, 10.9.8.7"
		cfg.GRPC.PublicAddr = "master.test.internal:9443"
		for _, c := range configure {
			c(cfg)
		}
	})
	var e *env
	base := orgstest.New(t, a, func(o *orgs.Options) {
		o.OverviewFunc = func(ctx context.Context, ws uuid.UUID) (templ.Component, error) {
			return e.mod.Overview(ctx, ws)
		}
	})
	var vh *vhosts.Module
	upsMod, err := upstreams.New(a.Deps, upstreams.Options{
		ChangeFunc: func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, summary string) error {
			return vh.Service().ConfigChanged(ctx, tx, ws, summary)
		},
		UsageFunc: func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error) {
			return vh.Service().UpstreamUsers(ctx, tx, id)
		},
		HealthFunc: func(ctx context.Context, ws, id uuid.UUID) ([]upstreams.ServerHealth, error) {
			return e.svc.UpstreamHealth(ctx, ws, id)
		},
	})
	if err != nil {
		t.Fatalf("upstreams.New: %v", err)
	}
	certsMod, err := certs.New(a.Deps, certs.Options{
		ChangeFunc: func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, summary string) error {
			return vh.Service().ConfigChanged(ctx, tx, ws, summary)
		},
		UsageFunc: func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error) {
			return vh.Service().CertificateUsers(ctx, tx, id)
		},
	})
	var known vhosts.KnownAgentsFunc = func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
		return e.svc.InWorkspace(ctx, tx, ws, ids)
	}
	if err != nil {
		t.Fatalf("certs.New: %v", err)
	}
	listAgents := func(ctx context.Context, ws uuid.UUID) ([]vhosts.TargetAgent, error) {
		return e.svc.TargetAgents(ctx, ws)
	}
	vh, err = vhosts.New(a.Deps, vhosts.Options{Upstreams: upsMod.Service(), Certs: certsMod.Service(), KnownAgentsFunc: known,
		RolloutFunc: func(ctx context.Context, ws uuid.UUID, v int64) ([]vhosts.AgentRollout, error) {
			return e.svc.Rollout(ctx, ws, v)
		}, AgentsFunc: listAgents})
	if err != nil {
		t.Fatalf("vhosts.New: %v", err)
	}
	e = &env{
		app: a, db: a.Deps.DB, vh: vh.Service(), ups: upsMod.Service(), certs: certsMod.Service(),
		orgs: base.Orgs.Service(), events: &recorder{}, obs: newObserver(),
		base: base, users: map[string]auth.User{}, tokens: map[string]string{},
	}
	mod, addr := e.replica(t, "replica-a")
	e.mod, e.svc, e.addr = mod, mod.Service(), addr
	ctx := context.Background()
	base.Mount(t, upsMod, certsMod, vh, mod)
	for _, role := range []string{"owner", "admin", "operator", "viewer", "outsider"} {
		e.users[role], e.tokens[role] = base.SignIn(t, role+"@example.test", testPassword, role)
	}
	if _, err := e.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Elsewhere", Slug: "elsewhere", OwnerID: e.users["outsider"].ID}); err != nil {
		t.Fatalf("create outsider organization: %v", err)
	}
	return e
}

// replica builds an agents module on the env's database (another master
// replica when the env already has one), serves its AgentService over TLS on
// 127.0.0.1 and runs its hub until the test ends. configure, if any, adjust
// the replica's copy of the configuration.
func (e *env) replica(t *testing.T, name string, configure ...func(*app.Config)) (*Module, string) {
	t.Helper()
	deps := e.app.Deps
	deps.Events = e.events
	for _, c := range configure {
		c(&deps.Config)
	}
	mod, err := New(deps, Options{VHosts: e.vh, Certs: e.certs, ReplicaID: name})
	if err != nil {
		t.Fatalf("agents.New: %v", err)
	}
	mod.svc.reloadTimeout = wait
	mod.hub.observe = e.obs.observe
	gs := grpc.NewServer(mod.GRPCServerOptions()...)
	mod.GRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = mod.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
		gs.Stop()
		<-served
	})
	select {
	case <-mod.hub.Ready():
	case <-time.After(wait):
		t.Fatalf("hub of %s does not listen", name)
	}
	return mod, lis.Addr().String()
}

// ---- Events and hub observations ----

// recorder collects published events: the app.Publisher of the env's
// agents modules.
type recorder struct {
	mu     sync.Mutex
	events []app.Event
	subs   []chan struct{}
}

func (r *recorder) Publish(_ context.Context, _ *gorm.DB, ev app.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	for _, s := range r.subs {
		select {
		case s <- struct{}{}:
		default:
		}
	}
	return nil
}

// await returns the first event of type typ about agentID that match
// accepts (nil: any), waiting for it.
func (r *recorder) await(t *testing.T, typ string, agentID uuid.UUID, match func(app.Event) bool) app.Event {
	t.Helper()
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.subs = slices.DeleteFunc(r.subs, func(c chan struct{}) bool { return c == ch })
		r.mu.Unlock()
	}()
	timeout := time.After(wait)
	for {
		r.mu.Lock()
		for _, ev := range r.events {
			if ev.Type == typ && ev.Data["agent_id"] == agentID.String() && (match == nil || match(ev)) {
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no %s event for agent %s", typ, agentID)
		}
	}
}

// observer fans the hub's observations out to the tests waiting for them.
type observer struct {
	mu   sync.Mutex
	subs map[uuid.UUID][]chan string
}

func newObserver() *observer { return &observer{subs: map[uuid.UUID][]chan string{}} }

func (o *observer) observe(kind string, agentID uuid.UUID) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ch := range o.subs[agentID] {
		select {
		case ch <- kind:
		default:
		}
	}
}

// watch returns a channel receiving the hub's observations about agentID.
func (o *observer) watch(t *testing.T, agentID uuid.UUID) <-chan string {
	ch := make(chan string, 256)
	o.mu.Lock()
	o.subs[agentID] = append(o.subs[agentID], ch)
	o.mu.Unlock()
	t.Cleanup(func() {
		o.mu.Lock()
		o.subs[agentID] = slices.DeleteFunc(o.subs[agentID], func(c chan string) bool { return c == ch })
		o.mu.Unlock()
	})
	return ch
}

// awaitKind waits for an observation of kind on ch.
func awaitKind(t *testing.T, ch <-chan string, kind string) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case k := <-ch:
			if k == kind {
				return
			}
		case <-timeout:
			t.Fatalf("hub never reported %q", kind)
		}
	}
}

// ---- Fixtures ----

// bundle is one subtest's fixture: a fresh organization (owner, admin,
// operator and viewer members) with one workspace.
type bundle struct {
	*env
	ctx   context.Context
	orgID uuid.UUID
	ws    uuid.UUID
}

func (e *env) setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	org, ws := e.base.Org(t, e.users["owner"], e.users, authz.RoleAdmin, authz.RoleOperator, authz.RoleViewer)
	return &bundle{env: e, ctx: ctx, orgID: org.ID, ws: ws.ID}
}

// token creates an agent and its registration token through the API as the
// admin.
func (b *bundle) token(t *testing.T, name string, labels map[string]string) RegistrationToken {
	t.Helper()
	var tok struct {
		Token          string    `json:"token"`
		AgentID        uuid.UUID `json:"agent_id"`
		InstallCommand string    `json:"install_command"`
	}
	b.as(t, "admin", http.MethodPost, b.agentsPath()+"/tokens", map[string]any{"name": name, "labels": labels}, http.StatusCreated, &tok)
	return RegistrationToken{Token: tok.Token, AgentID: tok.AgentID, InstallCommand: tok.InstallCommand}
}

// online registers a new agent with labels on the env's replica and returns
// it with its open session, after its first configuration arrived.
func (b *bundle) online(t *testing.T, name string, labels map[string]string) (*agentClient, *session, *agentv1.ConfigUpdate) {
	t.Helper()
	tok := b.token(t, name, labels)
	a := newAgentClient(t, b.addr, b.svc.CA())
	s, resp := a.register(t, tok.Token, name+".internal")
	if !resp.GetSuccess() {
		t.Fatalf("register %s: %s", name, resp.GetErrorMessage())
	}
	return a, s, s.config(t)
}

func (b *bundle) agentsPath() string { return fmt.Sprintf("/v1/workspaces/%s/agents", b.ws) }

func agentPath(id uuid.UUID) string { return "/v1/agents/" + id.String() }

// row reads an agent's row.
func (b *bundle) row(t *testing.T, id uuid.UUID) agentRow {
	t.Helper()
	var r agentRow
	if err := b.db.Take(&r, "id = ?", id).Error; err != nil {
		t.Fatalf("read agent %s: %v", id, err)
	}
	return r
}

// upstream creates an upstream in the bundle's workspace.
func (b *bundle) upstream(t *testing.T, name string) upstreams.Upstream {
	t.Helper()
	u, err := b.ups.Create(b.ctx, upstreams.CreateParams{WorkspaceID: b.ws, Name: name, Servers: []upstreams.ServerInput{{Address: "10.0.1.20:8080"}}})
	if err != nil {
		t.Fatalf("create upstream %s: %v", name, err)
	}
	return u
}

// vhost creates a virtual host through the vhosts service: a proxy to
// upstream (or to a fixed address when upstream is uuid.Nil) targeting
// target.
func (b *bundle) vhost(t *testing.T, name string, upstream uuid.UUID, target vhosts.TargetAgents) vhosts.VirtualHost {
	t.Helper()
	loc := vhosts.Location{Path: "/", ProxyPass: "http://10.0.0.1:8080"}
	if upstream != uuid.Nil {
		loc = vhosts.Location{Path: "/", UpstreamID: upstream.String()}
	}
	v, err := b.vh.CreateVirtualHost(b.ctx, b.ws, vhosts.VirtualHostInput{
		Name: name, ServerName: name + ".example.com", Locations: []vhosts.Location{loc}, TargetAgents: &target,
	})
	if err != nil {
		t.Fatalf("create virtual host %s: %v", name, err)
	}
	return v
}

// ---- HTTP ----

// do sends a JSON request as the user whose token is tok ("" for none) and
// returns the status and body.
func (e *env) do(t *testing.T, tok, method, path string, body any) (int, []byte) {
	t.Helper()
	r := apptest.NewClient(e.app).As(tok).Do(t, method, path, body)
	return r.Status, r.Body
}

// call is do that fails the test unless the status is want, and decodes the
// body into out (when non-nil).
func (e *env) call(t *testing.T, tok, method, path string, body any, want int, out any) []byte {
	t.Helper()
	return apptest.NewClient(e.app).As(tok).Call(t, method, path, body, want, out).Body
}

// as calls the API as role.
func (b *bundle) as(t *testing.T, role, method, path string, body any, want int, out any) []byte {
	t.Helper()
	return b.call(t, b.tokens[role], method, path, body, want, out)
}

// errorOf decodes an error envelope.
func errorOf(t *testing.T, raw []byte) (code, message string, fields []string) {
	t.Helper()
	e := apptest.Response{Body: raw}.Error(t)
	return e.Code, e.Message, e.Fields
}

// keys returns the sorted keys of a JSON object.
func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func expectKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := keys(m); !slices.Equal(got, want) {
		t.Fatalf("%s keys %v, want %v", what, got, want)
	}
}

// ---- A minimal agent ----

// agentClient is a minimal agent: a fresh ECDSA P-256 key, the CA it trusts,
// and after registration its client certificate.
type agentClient struct {
	t    *testing.T
	addr string
	pool *x509.CertPool
	key  *ecdsa.PrivateKey
	cert *tls.Certificate
	id   uuid.UUID
}

func newAgentClient(t *testing.T, addr string, ca *CA) *agentClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate agent key: %v", err)
	}
	return &agentClient{t: t, addr: addr, pool: ca.Pool(), key: key}
}

// csr is a PEM CSR for the agent's key.
func (a *agentClient) csr(t *testing.T) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent"}}, a.key)
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// session is one open Stream of a test agent.
type session struct {
	stream agentv1.AgentService_StreamClient
	cancel context.CancelFunc
	in     chan *agentv1.MasterMessage
	done   chan struct{}
	err    error // set before done is closed
}

// open dials the master (with the agent's certificate when withCert) and
// opens a Stream.
func (a *agentClient) open(t *testing.T, withCert bool) *session {
	t.Helper()
	cfg := &tls.Config{RootCAs: a.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if withCert && a.cert != nil {
		cfg.Certificates = []tls.Certificate{*a.cert}
	}
	cc, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatalf("dial %s: %v", a.addr, err)
	}
	return startSession(t, cc, nil)
}

// startSession opens a Stream on cc (with outgoing metadata md, if any) and
// reads the master's messages into the session until the test ends.
func startSession(t *testing.T, cc *grpc.ClientConn, md metadata.MD) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sctx := ctx
	if md != nil {
		sctx = metadata.NewOutgoingContext(ctx, md)
	}
	stream, err := agentv1.NewAgentServiceClient(cc).Stream(sctx)
	if err != nil {
		cancel()
		cc.Close()
		t.Fatalf("open stream: %v", err)
	}
	s := &session{stream: stream, cancel: cancel, in: make(chan *agentv1.MasterMessage, 256), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				s.err = err
				return
			}
			select {
			case s.in <- m:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
		cc.Close()
	})
	return s
}

// hello is a registration request without a token.
func (a *agentClient) hello(hostname string) *agentv1.RegistrationRequest {
	return &agentv1.RegistrationRequest{
		Hostname: hostname, IpAddress: "10.0.1.10", Version: "0.1.0", Capabilities: []string{"http2", "websocket"},
		Labels: map[string]string{"ignored": "yes"}, DeploymentMode: agentv1.DeploymentMode_DOCKER_SIDECAR,
	}
}

// register opens a stream and registers with token; on success the agent
// keeps its identity.
func (a *agentClient) register(t *testing.T, token, hostname string) (*session, *agentv1.RegistrationResponse) {
	t.Helper()
	req := a.hello(hostname)
	req.Token, req.CsrPem, req.Name = token, a.csr(t), hostname
	s := a.open(t, false)
	resp := s.handshake(t, req)
	if resp.GetSuccess() {
		block, _ := pem.Decode([]byte(resp.GetClientCertificatePem()))
		if block == nil {
			t.Fatalf("registration response without client certificate")
		}
		a.cert = &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: a.key}
		a.id = uuid.MustParse(resp.GetAgentId())
	}
	return s, resp
}

// connect opens a stream with the agent's certificate and says hello.
func (a *agentClient) connect(t *testing.T) (*session, *agentv1.RegistrationResponse) {
	t.Helper()
	s := a.open(t, true)
	return s, s.handshake(t, a.hello("reconnected.internal"))
}

func (s *session) handshake(t *testing.T, req *agentv1.RegistrationRequest) *agentv1.RegistrationResponse {
	t.Helper()
	s.send(t, &agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_Registration{Registration: req}})
	m := s.next(t)
	resp := m.GetRegistrationResponse()
	if resp == nil {
		t.Fatalf("first answer is %T, want a registration response", m.GetPayload())
	}
	return resp
}

func (s *session) send(t *testing.T, m *agentv1.AgentMessage) {
	t.Helper()
	if err := s.stream.Send(m); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// next returns the next message from the master.
func (s *session) next(t *testing.T) *agentv1.MasterMessage {
	t.Helper()
	select {
	case m := <-s.in:
		return m
	case <-s.done:
		select {
		case m := <-s.in:
			return m
		default:
		}
		t.Fatalf("stream ended: %v", s.err)
	case <-time.After(wait):
		t.Fatalf("no message from the master")
	}
	return nil
}

// config returns the next message, which must be a ConfigUpdate.
func (s *session) config(t *testing.T) *agentv1.ConfigUpdate {
	t.Helper()
	m := s.next(t)
	u := m.GetConfigUpdate()
	if u == nil {
		t.Fatalf("got %T, want a configuration update", m.GetPayload())
	}
	return u
}

// command returns the next message, which must be a Command.
func (s *session) command(t *testing.T) *agentv1.Command {
	t.Helper()
	m := s.next(t)
	c := m.GetCommand()
	if c == nil {
		t.Fatalf("got %T, want a command", m.GetPayload())
	}
	return c
}

// ended waits for the master to end the stream and returns its status.
func (s *session) ended(t *testing.T) *status.Status {
	t.Helper()
	select {
	case <-s.done:
		return status.Convert(s.err)
	case <-time.After(wait):
		t.Fatalf("the master did not end the stream")
	}
	return nil
}

// health sends a health report.
func (s *session) health(t *testing.T, rep *agentv1.HealthReport) {
	t.Helper()
	s.send(t, &agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_Health{Health: rep}})
}

// status sends a configuration status.
func (s *session) status(t *testing.T, u *agentv1.ConfigUpdate, st agentv1.ConfigApplyStatus, msg string) {
	t.Helper()
	s.send(t, &agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_ConfigStatus{ConfigStatus: &agentv1.ConfigStatus{
		ConfigId: u.GetConfigId(), Version: u.GetVersion(), Status: st, ErrorMessage: msg, AppliedAt: time.Now().Unix(),
	}}})
}

// names lists the names of an update's virtual hosts.
func names(u *agentv1.ConfigUpdate) []string {
	var out []string
	for _, v := range u.GetVirtualHosts() {
		out = append(out, v.GetName())
	}
	slices.Sort(out)
	return out
}
