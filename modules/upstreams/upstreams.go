// Package upstreams manages the upstreams of a workspace: named groups of
// backend servers (address, weight, backup, down, max_fails, fail_timeout)
// with a load-balancing algorithm, keepalive connections and an active health
// check, which virtual hosts and streams proxy to (the upstream objects of the REST API).
//
// The life of a change:
//
//  1. The API handler (api.go) decodes the request strictly and calls the
//     service.
//  2. The service (service.go) applies defaults and validates every field
//     against its grammar (validate.go) before anything is written: server
//     addresses are host:port with an IPv4, bracketed IPv6 or RFC 1123 host,
//     the health check path is a URL path without "$" or ";", names are
//     printable. A bad field is a 422 naming its JSON path
//     (servers[1].address); nothing a user types can add an nginx directive,
//     block, include or variable.
//  3. In one transaction it writes the row, calls Options.ChangeFunc (the
//     vhosts module records a new configuration version of the workspace and
//     notifies the agents) and writes the audit row. A failure of any step
//     rolls back all of them.
//
// Deleting an upstream asks Options.UsageFunc for the virtual hosts and
// streams that use it and refuses (409) while there are any. The vhosts module
// checks references with Service.Exists, which locks the upstream's row
// against deletion until its transaction ends.
//
// Upstream is at once the GORM model, the API's JSON and the element of the
// configuration snapshots (Service.ListAll, Service.ReplaceAll), so a snapshot
// stores exactly what the API returns. ToProto converts it for ConfigUpdate.
//
// Servers are stored as a jsonb array in the upstream's row: they are an
// ordered list that is always read and replaced as a whole. Names are unique
// per workspace ignoring case.
package upstreams

import (
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// Module is the upstreams module.
type Module struct {
	db    *gorm.DB
	svc   *Service
	pages *app.Pages
}

var _ app.Module = (*Module)(nil)

// New builds the module. opts carries the functions of the vhosts module that
// record configuration changes and report an upstream's users.
func New(d app.Deps, opts Options) (*Module, error) {
	return &Module{db: d.DB, svc: NewService(d, opts), pages: d.Pages}, nil
}

// Service returns the module's service (for the vhosts module and the admin
// pages).
func (m *Module) Service() *Service { return m.svc }

// Name is "upstreams".
func (m *Module) Name() string { return "upstreams" }

// Policies returns the role matrix documented in policies.go.
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers nothing: the module has no background work.
func (m *Module) Jobs(*river.Workers) []*river.PeriodicJob { return nil }

// GRPC registers nothing.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts the JSON API (api.go) and the admin pages (ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindUpstreams(r.API)
	m.mountUI(r.UI)
}
