// Package replicas shows the master's replicas: every master process
// registers itself in the replicas table (app.Replicas, which runs with
// app.Run), and this module lists them, with their state and the one River
// elected leader, on GET /v1/replicas and the /replicas admin page. Both are
// for superadmins only: the replicas serve every organization.
package replicas

import (
	"context"

	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// ListFunc lists the registered replicas.
type ListFunc func(ctx context.Context) ([]app.Replica, error)

// Module is the replicas module.
type Module struct {
	list  ListFunc
	pages *app.Pages
}

var _ app.Module = (*Module)(nil)

// New builds the module over d.Replicas.
func New(d app.Deps) (*Module, error) {
	m := &Module{pages: d.Pages}
	if d.Replicas != nil {
		m.list = d.Replicas.List
	} else {
		m.list = func(context.Context) ([]app.Replica, error) { return nil, nil }
	}
	return m, nil
}

// Name is "replicas".
func (m *Module) Name() string { return "replicas" }

// Policies is empty: only superadmins see the replicas, which the handlers check.
func (m *Module) Policies() []authz.Policy { return nil }

// Jobs registers nothing: each replica refreshes its own row (app.Run).
func (m *Module) Jobs(*river.Workers) []*river.PeriodicJob { return nil }

// GRPC registers nothing.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts GET /v1/replicas and the /replicas admin page.
func (m *Module) Routes(r app.Routers) {
	r.API.Get("/replicas", app.Authenticated(), app.Doc{
		Summary: "List the master's replicas with their state and the leader (superadmin)", Response: ReplicaList{},
	}, m.apiList)
	r.UI.Get("/replicas", app.Authenticated(), app.Doc{Summary: "Replicas page (superadmin)"}, m.uiList)
}
