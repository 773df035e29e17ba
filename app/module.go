package app

import (
	"database/sql"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app/authz"
)

// Module is one feature of the master. main.go lists the modules explicitly; every
// module implements every method, and an empty method says "nothing here".
type Module interface {
	// Name is the Casbin object prefix, the job kind prefix and the log attribute
	// ("vhosts").
	Name() string
	// Policies declares what each role may do on this module's objects.
	Policies() []authz.Policy
	// Jobs registers River workers and returns periodic jobs.
	Jobs(w *river.Workers) []*river.PeriodicJob
	// GRPC registers gRPC services.
	GRPC(s grpc.ServiceRegistrar)
	// Routes mounts HTTP routes, each with an explicit Access requirement.
	Routes(r Routers)
}

// Deps is what every module's New receives.
type Deps struct {
	Config Config
	// DB is GORM over the shared pool. PrepareStmt stays off so River's
	// database/sql driver can share its transactions.
	DB *gorm.DB
	// SQL is database/sql over the shared pool.
	SQL *sql.DB
	// Pool is the shared pgx pool.
	Pool *pgxpool.Pool
	// Authz decides permissions.
	Authz *authz.Enforcer
	// Jobs inserts River jobs, also inside a GORM transaction (see InsertJobTx).
	Jobs *river.Client[*sql.Tx]
	// Secrets are the master's keys.
	Secrets Secrets
	// Metrics registers Prometheus collectors served on /metrics.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	// Events publishes live events (inside the transaction of the change) to
	// every replica's WebSocket and SSE subscribers.
	Events *Events
	// Pages decides which buttons and forms the admin pages offer, as the
	// route guard decides (see Pages).
	Pages *Pages
}
