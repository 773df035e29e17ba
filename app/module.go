package app

import (
	"context"
	"database/sql"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/app/events"
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

// Deps is what every module's New(d, opts) and NewService(d, opts) receive.
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
	// Jobs inserts River jobs, also inside a GORM transaction (InsertTx with SQLTx).
	Jobs *river.Client[*sql.Tx]
	// Secrets are the master's keys.
	Secrets Secrets
	// Metrics registers Prometheus collectors served on /metrics.
	Metrics prometheus.Registerer
	// Logger is never nil (app.New discards when given none).
	Logger *slog.Logger
	// Clock is the master's time; app.New sets time.Now, tests replace it to
	// move time. Never nil.
	Clock Clock
	// Events publishes live events (inside the transaction of the change) to
	// every replica's WebSocket and SSE subscribers. Tests may set a recorder.
	Events Publisher
	// Pages decides which buttons and forms the admin pages offer, as the
	// route guard decides (see Pages).
	Pages *Pages
	// Replicas is this process's entry in the replicas registry (its ID
	// names the replica) and the registry's reader.
	Replicas *Replicas
	// Invalidator keeps the replica's caches (NewCache) consistent with the
	// database on every replica. Nil: caches never serve an entry.
	Invalidator *Invalidator
}

// Clock returns the current time.
type Clock func() time.Time

// Publisher hands an event to the live-event hub. Publish is called inside the
// transaction tx that records the change (the event is delivered only if tx
// commits); a nil tx publishes at once. An error rolls the change back.
type Publisher interface {
	Publish(ctx context.Context, tx *gorm.DB, ev Event) error
}

// Event is something that happened, for the live event streams (see
// events.Event: modules build it as app.Event and publish it through
// Deps.Events).
type Event = events.Event

var _ Publisher = (*events.Hub)(nil)

// Runner is an optional capability of a Module: a background loop. Run starts
// Run for every module implementing it, under the server context, and waits
// for every Run to return, in reverse module order, before closing the pool.
// Run returns when ctx ends; context.Canceled is not an error.
type Runner interface {
	Run(ctx context.Context) error
}
