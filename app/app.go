// Package app is the master's plumbing: configuration, the database pool and
// migrations, the Fiber, gRPC and River lifecycles, the module contract, the
// route guard, the error envelope, pagination and validation helpers. It never
// imports a module. Three subsystems have their own packages, which never
// import app: authz (Casbin), embedpg (the embedded PostgreSQL) and events
// (the live-event hub, whose routes app mounts).
//
// The lifecycle of a master process:
//
//  1. LoadConfig reads config.yaml and NXMESH_* overrides.
//  2. New creates data_dir, loads or generates secrets, starts the embedded
//     PostgreSQL (package embedpg) when database.url is empty, opens the shared
//     pool, applies River's and the application's migrations, builds the Casbin
//     enforcer and the live-event hub (package events), and starts the
//     Invalidator that keeps the replica's caches (Cache) consistent.
//  3. main.go constructs each module with app.Deps and lists them.
//  4. Run syncs the modules' policies, registers their River workers and periodic
//     jobs, mounts their routes and gRPC services, and starts River, gRPC and HTTP.
//  5. Run starts Run(ctx) of every module implementing Runner (a background
//     loop such as the agents hub), in module order, under the server context.
//  6. On context cancellation (SIGTERM), or when a Runner fails, Run cancels
//     the Runners' context, stops accepting requests, lets in-flight requests
//     finish within http.shutdown_timeout, stops gRPC and River gracefully,
//     waits for each Runner to return (in reverse module order), closes the
//     pool and finally stops the embedded PostgreSQL.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/app/embedpg"
	"github.com/nxmesh/nxmesh/app/events"
)

type pgxTx = pgx.Tx

// App is a running master's plumbing.
type App struct {
	Deps Deps

	cfg      Config
	logger   *slog.Logger
	db       *Database
	embedded *embedpg.Server
	migrator *Migrator
	registry *prometheus.Registry
	// memoryReturns counts returns of memory after bursts (returnMemory).
	memoryReturns prometheus.Counter
	routes        *Routes
	fiber         *fiber.App
	events        *events.Hub
	replicas      *Replicas
	limiter       *rateLimiter
	inval         *Invalidator
	scopes        *Cache[Scope]
}

// New prepares the plumbing (step 2 of the lifecycle): it runs cfg.Validate
// first. Close it when Run is not
// called.
//
// On error New has already released whatever it had acquired (the pool, the
// embedded PostgreSQL and its data_dir lock) and returns a nil *App.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*App, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, logger: logger, routes: &Routes{}}
	if err := a.prepare(ctx); err != nil {
		a.Close(context.Background())
		return nil, err
	}
	return a, nil
}

// prepare does New's work on a; on error a holds what was acquired so far, for
// Close.
func (a *App) prepare(ctx context.Context) error {
	cfg, logger := a.cfg, a.logger
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data_dir: %w", err)
	}
	secrets, err := LoadSecrets(cfg)
	if err != nil {
		return err
	}
	if err := a.openDatabase(ctx); err != nil {
		return err
	}
	if err := a.migrator.Up(ctx); err != nil {
		return err
	}
	enforcer, err := authz.New(a.db.Gorm)
	if err != nil {
		return err
	}
	if a.replicas, err = newReplicas(a.db.Pool, logger); err != nil {
		return err
	}
	jobs, err := river.NewClient(riverdatabasesql.New(a.db.SQL), &river.Config{ID: a.replicas.ID() + "/insert", Logger: logger})
	if err != nil {
		return fmt.Errorf("river insert client: %w", err)
	}
	a.registry = prometheus.NewRegistry()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.memoryReturns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nxmesh_memory_returns_total",
		Help: "Times the master returned free memory to the system after a burst of work.",
	})
	a.registry.MustRegister(a.memoryReturns)
	a.Deps = Deps{
		Config:  cfg,
		DB:      a.db.Gorm,
		SQL:     a.db.SQL,
		Pool:    a.db.Pool,
		Authz:   enforcer,
		Jobs:    jobs,
		Secrets: secrets,
		Metrics: a.registry,
		Logger:  logger,
		Clock:   time.Now,
		Pages:   NewPages(enforcer, logger),

		Replicas: a.replicas,
	}
	a.limiter = newRateLimiter(cfg.Auth.RateLimitPerMinute, time.Minute, a.db.Pool, logger)
	a.events = events.New(a.db.Pool, logger, a.registry)
	a.Deps.Events = a.events
	a.inval = NewInvalidator(a.db.Pool, logger)
	a.Deps.Invalidator = a.inval
	a.scopes = NewCache[Scope](a.inval, 0)
	a.inval.Start()
	return nil
}

// OpenForMigrations connects (starting the embedded PostgreSQL if needed) without
// applying migrations, for `nxmesh migrate`.
//
// On error it has released what it acquired and returns a nil *App.
func OpenForMigrations(ctx context.Context, cfg Config, logger *slog.Logger) (*App, *Migrator, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &App{cfg: cfg, logger: logger, routes: &Routes{}}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data_dir: %w", err)
	}
	if err := a.openDatabase(ctx); err != nil {
		a.Close(context.Background())
		return nil, nil, err
	}
	return a, a.migrator, nil
}

func (a *App) openDatabase(ctx context.Context) error {
	url := a.cfg.Database.URL
	if url == "" {
		pg, err := embedpg.Start(ctx, a.cfg.DataDir, a.logger)
		if err != nil {
			return err // says "embedded postgres: …"
		}
		a.embedded = pg
		url = pg.URL()
	}
	db, err := OpenDatabase(ctx, url, a.cfg.Database.MaxConns)
	if err != nil {
		return err
	}
	a.db = db
	m, err := NewMigrator(db, a.logger)
	if err != nil {
		return err
	}
	a.migrator = m
	return nil
}

// Close releases the database and stops the embedded PostgreSQL. It releases
// whatever a holds, so it is safe on a partly prepared App, on a nil *App and when
// called again.
func (a *App) Close(ctx context.Context) {
	if a == nil {
		return
	}
	if a.events != nil {
		a.events.Stop()
		a.events = nil
	}
	if a.limiter != nil {
		a.limiter.stop()
		a.limiter = nil
	}
	if a.inval != nil {
		a.inval.Stop()
		a.inval = nil
	}
	if a.db != nil {
		a.db.Close()
		a.db = nil
	}
	if a.embedded != nil {
		if err := a.embedded.Stop(ctx); err != nil {
			a.logger.Error("stop embedded postgres", "error", err)
		}
		a.embedded = nil
	}
}

// Invalidator returns this replica's cache invalidation listener (Deps.Invalidator).
func (a *App) Invalidator() *Invalidator { return a.inval }

// Events returns this replica's live-event hub (Deps.Events publishes to it).
func (a *App) Events() *events.Hub { return a.events }

// Routes returns every route mounted by Mount.
func (a *App) Routes() []Route { return a.routes.All() }

// Fiber returns the HTTP app built by Mount (for tests: app.Fiber().Test).
func (a *App) Fiber() *fiber.App { return a.fiber }

// Mount builds the HTTP app: operational endpoints and every module's routes,
// each behind the guard for its Access. Run calls it; tests may call it alone.
func (a *App) Mount(ctx context.Context, mods []Module, w Wiring) error {
	var policies []authz.Policy
	for _, m := range mods {
		policies = append(policies, m.Policies()...)
	}
	if err := a.Deps.Authz.Sync(ctx, policies); err != nil {
		return err
	}
	a.Deps.Pages.nav = w.Nav
	metrics := newHTTPMetrics(a.registry)
	a.fiber = newFiber(a.cfg, a.logger, metrics, &w)
	g := &guard{w: &w, authz: a.Deps.Authz, limiter: a.limiter, logger: a.logger, scopes: a.scopes}
	sockets := newSocketGuard(g, a.cfg.Auth)
	root := Routers{
		API:    &Router{kind: KindAPI, prefix: "/v1", fr: a.fiber.Group("/v1"), reg: a.routes, guard: g.handlers, sockets: sockets},
		Public: &Router{kind: KindPublic, fr: a.fiber, reg: a.routes, guard: g.handlers, sockets: sockets},
		UI:     &Router{kind: KindUI, fr: a.fiber, reg: a.routes, guard: g.handlers, sockets: sockets},
	}
	ops := root.ForModule("app")
	ops.Public.Get("/healthz", Public(), Doc{Summary: "Process is up"}, func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	ops.Public.Get("/readyz", Public(), Doc{Summary: "Database reachable and migrations current"}, a.readyz)
	ops.Public.Get("/metrics", Public(), Doc{Summary: "Prometheus metrics of the master"},
		adaptor.HTTPHandler(promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{})))
	ops.Public.Get("/docs", Public(), Doc{Summary: "Browsable API reference"}, a.docsHandler(w.Version))
	ops.API.Get("/openapi.json", Public(), Doc{Summary: "OpenAPI 3.1 document of this API", Response: map[string]any{}}, a.openapiHandler(w.Version))
	if w.Static != nil {
		assets := http.FS(w.Static)
		ops.Public.Get("/static/*", Public(), Doc{Summary: "Static assets of the admin"}, func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderCacheControl, "public, max-age=3600")
			return filesystem.SendFile(c, assets, c.Params("*"))
		})
	}
	mountEvents(ctx, a.events, root.ForModule("events"), &w, g, a.logger)
	for _, m := range mods {
		m.Routes(root.ForModule(m.Name()))
	}
	return nil
}

func (a *App) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 3*time.Second)
	defer cancel()
	if err := a.db.Pool.Ping(ctx); err != nil {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "unavailable", "database": "unreachable"})
	}
	ok, err := a.migrator.Current(ctx)
	if err != nil || !ok {
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "unavailable", "database": "ok", "migrations": "pending"})
	}
	return c.JSON(fiber.Map{"status": "ok", "database": "ok", "migrations": "current"})
}

// Run mounts the modules and serves until ctx is cancelled (steps 4 to 6).
func (a *App) Run(ctx context.Context, mods []Module, w Wiring) error {
	defer a.Close(context.Background())
	if err := a.Mount(ctx, mods, w); err != nil {
		return err
	}

	workers := river.NewWorkers()
	var periodic []*river.PeriodicJob
	for _, m := range mods {
		periodic = append(periodic, m.Jobs(workers)...)
	}
	// The River client id is the replica id, so river_leader.leader_id
	// names the replica running the periodic jobs (Replicas.List).
	worker, err := river.NewClient(riverpgxv5.New(a.db.Pool), &river.Config{
		ID:           a.replicas.ID(),
		Queues:       map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 10}},
		Workers:      workers,
		PeriodicJobs: periodic,
		Logger:       a.logger,
	})
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}
	if err := worker.Start(ctx); err != nil {
		return fmt.Errorf("start river: %w", err)
	}

	gs := grpc.NewServer(w.GRPCServerOptions...)
	for _, m := range mods {
		m.GRPC(gs)
	}
	errc := make(chan error, 2)
	start := replicaStart{Version: w.Version, Commit: w.Commit}
	if len(gs.GetServiceInfo()) > 0 {
		lis, err := net.Listen("tcp", a.cfg.GRPC.Addr)
		if err != nil {
			return fmt.Errorf("listen grpc %s: %w", a.cfg.GRPC.Addr, err)
		}
		a.logger.Info("grpc listening", "addr", lis.Addr().String())
		start.GRPCAddr = lis.Addr().String()
		go func() { errc <- gs.Serve(lis) }()
	}

	lis, err := net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", a.cfg.HTTP.Addr, err)
	}
	a.logger.Info("http listening", "addr", lis.Addr().String())
	start.HTTPAddr = lis.Addr().String()
	go func() { errc <- a.Serve(lis) }()

	if w.ConnectedAgentsFunc != nil {
		start.ConnectedAgents = w.ConnectedAgentsFunc()
	}
	if err := a.replicas.register(ctx, start); err != nil {
		a.logger.Error("replica registry", "error", err)
	}
	beatCtx, stopBeat := context.WithCancel(ctx)
	beat := make(chan struct{})
	go func() { defer close(beat); a.replicas.run(beatCtx, start, w.ConnectedAgentsFunc) }()
	defer func() {
		stopBeat()
		<-beat
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.replicas.stop(ctx); err != nil {
			a.logger.Error("replica registry", "error", err)
		}
	}()

	memCtx, stopMem := context.WithCancel(ctx)
	memDone := make(chan struct{})
	go func() { defer close(memDone); returnMemory(memCtx, a.logger, a.memoryReturns) }()
	defer func() { stopMem(); <-memDone }()

	runCtx, stopRunners := context.WithCancel(ctx)
	defer stopRunners()
	runners := startRunners(runCtx, mods)
	defer runners.wait(a.logger) // before the deferred Close closes the pool

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	case runErr = <-runners.failed:
	}
	a.logger.Info("shutting down")
	stopRunners() // like the server context: a Runner's streams end with it
	shutCtx, cancel := context.WithTimeout(context.Background(), a.cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := a.fiber.ShutdownWithContext(shutCtx); err != nil {
		a.logger.Error("http shutdown", "error", err)
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		gs.Stop()
	}
	if err := worker.Stop(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		a.logger.Error("river shutdown", "error", err)
	}
	runners.wait(a.logger)
	return runErr
}

// runners are the started Run loops of the modules implementing Runner.
type runners struct {
	names  []string
	done   []chan error
	failed chan error
	waited bool
}

// startRunners starts Run of every module implementing Runner under ctx. The
// first Run that returns an error other than ctx's end is sent on failed.
func startRunners(ctx context.Context, mods []Module) *runners {
	rs := &runners{failed: make(chan error, len(mods))}
	for _, m := range mods {
		r, ok := m.(Runner)
		if !ok {
			continue
		}
		done := make(chan error, 1)
		rs.names = append(rs.names, m.Name())
		rs.done = append(rs.done, done)
		name := m.Name()
		go func() {
			err := r.Run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%s: run: %w", name, err)
				rs.failed <- err
			} else {
				err = nil
			}
			done <- err
		}()
	}
	return rs
}

// wait waits for every Runner to return, in reverse start order (a higher
// module stops before the ones it uses); it logs the errors. Calling it again
// does nothing.
func (rs *runners) wait(logger *slog.Logger) {
	if rs.waited {
		return
	}
	rs.waited = true
	for i := len(rs.done) - 1; i >= 0; i-- {
		if err := <-rs.done[i]; err != nil {
			logger.Error("module run", "module", rs.names[i], "error", err)
		}
	}
}

// SQLTx returns the *sql.Tx under a GORM transaction, for River's InsertTx.
func SQLTx(tx *gorm.DB) (*sql.Tx, error) {
	t, ok := tx.Statement.ConnPool.(*sql.Tx)
	if !ok {
		return nil, errors.New("not inside a transaction")
	}
	return t, nil
}
