// Package certs holds a workspace's TLS certificates: uploaded chains with their
// private keys today, ACME issuance (lego) in a later step.
//
// The life of an uploaded certificate:
//
//  1. POST /v1/workspaces/:id/certificates carries the chain (leaf first, then
//     each issuer) and the private key as PEM. pem.go checks everything before
//     anything is stored: only CERTIFICATE blocks in the chain, one RSA (2048
//     bits or more), ECDSA (P-256, P-384) or Ed25519 key, the key belongs to the
//     leaf, each certificate is signed by the next, and the leaf is valid now
//     (a few minutes of clock skew allowed). Domain, names, validity, issuer,
//     serial and fingerprint are read from the leaf.
//  2. One transaction stores the row with the key sealed by the master's
//     encryption key (AES-256-GCM, app.Secrets), calls ChangeFunc (the vhosts
//     module bumps the workspace's config version) and writes the audit row.
//  3. Other modules read certificates through the exported service methods:
//     Exists and ListAll to validate and offer references, Material to push the
//     decrypted chain and key to agents (ToProto builds the message).
//  4. The status follows the leaf's validity: active, expiring when less than
//     ExpiringWindow is left (ACME certificates: from their renewal time),
//     expired after NotAfter. Responses show the status
//     at the time of the request; RefreshStatuses stores it (for a periodic job).
//  5. DELETE refuses (409) while UsageFunc reports virtual hosts or streams that
//     use the certificate; otherwise it deletes the row in one transaction with
//     ChangeFunc and the audit row.
//
// The private key never leaves the service except through Material: the model
// handed to handlers and the audit log (Certificate) has no field for it, error
// messages never quote it, and nothing logs it.
//
// The ACME request ({"domain","provider","auto_renew"}) is answered with a
// 422 on provider until issuance exists; the table already has what it needs
// (provider, pending/failed statuses, auto_renew, error).
package certs

import (
	"context"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// ChangeFunc is called inside the transaction of every change to a workspace's
// certificates, after the rows are written. The vhosts module's implementation
// bumps the workspace's config version, stores its snapshot and notifies the
// agents' hub. An error rolls the change back.
type ChangeFunc func(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, summary string) error

// UsageFunc returns human-readable descriptions of the objects that use a
// certificate (`virtual host "api" (<uuid>)`), empty when none does. It is read
// in the deleting transaction, after the certificate's row is locked.
type UsageFunc func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error)

// Options connect the module to the rest of the master: the functions it
// gets from higher modules (main.go fills them). Nil functions do nothing (a
// module tested alone).
type Options struct {
	// ChangeFunc is vhosts.(*Service).ConfigChanged.
	ChangeFunc ChangeFunc
	// UsageFunc lists the virtual hosts and streams using a certificate.
	UsageFunc UsageFunc
	// PresentFunc answers HTTP-01 challenges through the agents (agents module).
	PresentFunc PresentFunc
	// ServedFunc tells whether a plain-HTTP virtual host serves a name (vhosts module).
	ServedFunc ServedFunc
}

// Module is the certs module.
type Module struct {
	d   app.Deps
	svc *Service
}

var _ app.Module = (*Module)(nil)

// New builds the module. The error is always nil: the module loads nothing
// when it is built.
func New(d app.Deps, opts Options) (*Module, error) {
	return &Module{d: d, svc: NewService(d, opts)}, nil
}

// Service returns the module's service (for other modules and the admin pages).
func (m *Module) Service() *Service { return m.svc }

// Name is "certs".
func (m *Module) Name() string { return "certs" }

// Policies returns the role matrix documented in policies.go.
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers issuance, renewal and the periodic scan (jobs.go).
func (m *Module) Jobs(w *river.Workers) []*river.PeriodicJob { return registerJobs(w, m.svc) }

// GRPC registers nothing: certificates reach agents inside ConfigUpdate.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts the JSON API (api.go) and the admin pages (ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindCertificates(r.API)
	m.mountUI(r.UI)
}
