// Package agents is the master's side of the fleet: the agents of each
// workspace, their registration, the gRPC AgentService they keep a stream
// open to, and the hub that pushes each agent its configuration.
//
// # Registration and identity
//
//  1. An admin creates a registration token (POST
//     /v1/workspaces/:id/agents/tokens with a name and labels): a pending agent
//     row and a single-use token "nxmesh_agent_<random>" (stored as SHA-256,
//     1 to 720 hours) are created, and the response carries the install
//     command with the master's address and the CA fingerprint.
//  2. The agent opens Stream over server-authenticated TLS (it pins the CA by
//     fingerprint) and sends a RegistrationRequest with the token and a CSR
//     for its fresh ECDSA P-256 key. The master checks the token (unknown,
//     revoked, used or expired tokens are refused with that reason) and the
//     workspace's registration ACL (RegistrationPolicy: hostname globs on the
//     claimed hostname, IPs/CIDRs on the connection's peer address, key=glob
//     on the token's labels; deny wins; empty allows all). A denial burns the
//     token and records why on the agent (registration_error), in the audit
//     log and the log. The master signs a client certificate (CN = agent id,
//     URI SAN urn:nxmesh:agent:<id>, one year) from the master's CA (ca.go)
//     and records its serial on the agent. A client that follows the
//     contract's proto and sends no CSR gets a key generated for it, sent
//     once in client_private_key_pem with the certificate and never stored.
//     The agent keeps the ip_address it reports; the master records the peer
//     address it saw beside it (peer_address).
//  3. Later connections use mutual TLS with that certificate and an empty
//     token; the serial must match the agent's row, so deleting an agent (or
//     registering it again) revokes its certificate at once. A hello that
//     carries a CSR renews the certificate.
//
// Labels are the admins' (token, PATCH): labels an agent reports are ignored,
// as they decide which configuration (and which private keys) it receives.
//
// # Configuration
//
// The hub (hub.go, one per replica) LISTENs on the vhosts module's
// "nxmesh_config" channel and this module's "nxmesh_agents" channel, and
// pushes each connected agent the ConfigUpdate computed by DesiredConfig
// (desired.go) whenever its content checksum changes. An agent's
// desired_version is the workspace version of the last push it needed: a
// change that does not touch an agent's objects leaves it as it was. Statuses
// update applied_version, apply_status and apply_error and publish
// config.applied; unanswered or failed pushes are retried with backoff.
// Messages are bounded by grpc.max_message_bytes and by what each agent says
// it accepts, and gzip-compressed for agents that accept gzip; an update that
// cannot be delivered (too large, or its send failed) makes apply_status
// failed with the reason in apply_error (delivery.go).
//
// # Rollouts and the workspace overview
//
// Every push, answer and undeliverable update is also recorded per version
// (agent_config_results, rollout.go): Service.Rollout is what each agent made
// of a version, which the vhosts module shows under
// GET /v1/workspaces/{id}/config/versions/{version} (its RolloutFunc). The
// admin's rollout panel (ui_rollout.go, a fragment the page a change lands on
// loads) shows it live over the event stream. Module.Overview draws the
// workspace overview's panels for the orgs module (its OverviewFunc): this
// module is the highest that sees agents, versions and certificates.
//
// # State
//
// pending until the first registration; online while its stream is up and
// health reports arrive; degraded when nginx is not running, the last apply
// failed, or alerts are active; offline when the stream closes or after three
// missed heartbeats (the hub closes silent streams; the River job
// agents.mark_offline covers replicas that died).
//
// # Wiring (main.go)
//
//	agentsMod, err := agents.New(d, agents.Options{VHosts: vhostsMod.Service(), Certs: certsMod.Service(), LogsFunc: ...})
//	vhosts.Options.RolloutFunc = agentsMod.Service().Rollout   // closures: built later
//	orgs.Options.OverviewFunc  = agentsMod.Overview
//	wiring.GRPCServerOptions = agentsMod.GRPCServerOptions()
//	// app.Run runs agentsMod.Run (the hub: LISTEN and reconcile) until shutdown
package agents

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Options connect the module to the rest of the master. Events
// (agent.connected, agent.disconnected, config.applied, health.alert,
// upstream.health) go to app.Deps.Events.
type Options struct {
	// VHosts computes the workspaces' configurations (vhosts module).
	VHosts *vhosts.Service
	// Certs supplies certificate material (certs module).
	Certs *certs.Service
	// LogsFunc receives the access-log and error-log batches agents send on
	// their streams (the logs module's ingest); nil refuses them
	// (success=false), so agents keep them spooled.
	LogsFunc LogsFunc
	// MetricsFunc receives the metrics batches agents send (the metrics
	// module's store); nil accepts and drops them.
	MetricsFunc MetricsFunc
	// ReplicaID names this process in agents.connected_replica; empty means
	// "<hostname>/<pid>/<random>" (New fills it).
	ReplicaID string
	// CA is the agents' certificate authority; nil: New loads (or on first
	// start creates) it from grpc.ca_cert_file/ca_key_file or
	// data_dir/agents-ca/. NewService needs it set.
	CA *CA
}

// Module is the agents module.
type Module struct {
	db    *gorm.DB
	svc   *Service
	hub   *Hub
	pages *app.Pages
}

var (
	_ app.Module = (*Module)(nil)
	_ app.Runner = (*Module)(nil)
)

// New builds the module: it loads (or on first start creates) the agents' CA
// from grpc.ca_cert_file/ca_key_file or data_dir/agents-ca/ unless opts.CA
// is set, and names this replica unless opts.ReplicaID is set.
func New(d app.Deps, opts Options) (*Module, error) {
	if opts.CA == nil {
		var hosts []string
		for _, h := range strings.Split(d.Config.GRPC.TLSHosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
		ca, err := LoadCA(CAFiles{
			Dir: filepath.Join(d.Config.DataDir, "agents-ca"), CertFile: d.Config.GRPC.CACertFile, KeyFile: d.Config.GRPC.CAKeyFile,
		}, hosts)
		if err != nil {
			return nil, err
		}
		opts.CA = ca
	}
	if opts.ReplicaID == "" {
		id, err := defaultReplicaID()
		if err != nil {
			return nil, err
		}
		opts.ReplicaID = id
	}
	svc := NewService(d, opts)
	return &Module{db: d.DB, svc: svc, hub: svc.hub, pages: d.Pages}, nil
}

func defaultReplicaID() (string, error) {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate replica id: %w", err)
	}
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b)), nil
}

// Service returns the module's service (for the admin pages and main.go).
func (m *Module) Service() *Service { return m.svc }

// Hub returns this replica's hub.
func (m *Module) Hub() *Hub { return m.hub }

// GRPCServerOptions are the options the master's gRPC server must be created
// with (app.Wiring.GRPCServerOptions): TLS with the agents' CA (client
// certificates verified when given), the keepalive policy agents expect,
// messages of up to grpc.max_message_bytes both ways, and gzip for agents that
// accept it (delivery.go).
func (m *Module) GRPCServerOptions() []grpc.ServerOption {
	return append(serverOptions(m.svc.ca), deliveryServerOptions(m.svc.maxMessageBytes)...)
}

// CAFingerprint is the agents' CA fingerprint ("sha256:<hex>").
func (m *Module) CAFingerprint() string { return m.svc.ca.Fingerprint() }

// Run runs this replica's hub until ctx ends (LISTEN/NOTIFY and the
// reconcile ticker), then closes its agent streams. It makes the module an
// app.Runner: app.Run starts it under the server context.
func (m *Module) Run(ctx context.Context) error { return m.hub.Run(ctx) }

// Name is "agents".
func (m *Module) Name() string { return "agents" }

// Policies returns the role matrix documented in policies.go.
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers agents.mark_offline (jobs.go).
func (m *Module) Jobs(w *river.Workers) []*river.PeriodicJob { return registerJobs(w, m.svc) }

// GRPC registers the AgentService.
func (m *Module) GRPC(s grpc.ServiceRegistrar) {
	agentv1.RegisterAgentServiceServer(s, &grpcServer{svc: m.svc, hub: m.hub})
}

// Routes mounts the JSON API (api.go) and the admin pages (ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindAgents(r.API)
	m.bindCommands(r.API)
	m.mountUI(r.UI)
	m.mountRolloutUI(r.UI)
	m.mountDownloads(r.Public)
}
