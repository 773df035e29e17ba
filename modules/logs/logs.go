// Package logs is the master's side of the logs: it stores the access-log
// and error-log batches agents send on their streams (ingest.go, COPY into
// daily partitions, exactly once per batch), serves them
// (GET /v1/workspaces/:id/access-logs, GET /v1/agents/:id/error-logs),
// keeps them for logs.retention or a workspace's shorter retention
// (partitions.go, jobs.go) and tails them live (live.go): the WebSocket
// GET /v1/ws/logs/:agent_id (socket.go), the SSE tails and the NDJSON export
// (stream.go), and the admin's Logs page of a workspace (ui.go).
//
// # Wiring (main.go)
//
//	logsMod, err := logs.New(d, logs.Options{RollupFunc: metricsMod.Rollup})
//	agents.Options{LogsFunc: logsMod.Ingest}
//	// app.Run runs logsMod.Run (ingest workers and the live tail) until shutdown
package logs

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// Options configure the module. The logs module uses no other module's
// service: batches arrive through the agents module's LogsFunc (Ingest).
type Options struct {
	// Ingest sizes the ingest queue and its batches (zero: defaults).
	Ingest IngestConfig
	// RollupFunc, when set, is called for every access-log batch inside the
	// transaction that stores it, after its batch id was recorded (so never
	// for a redelivery); an error rolls the batch back and refuses it. The
	// metrics module counts its traffic rollups here.
	RollupFunc RollupFunc
}

// RollupFunc sees an access-log batch in the transaction tx that stores it;
// now is the time the batch's entries without a timestamp are stored with.
type RollupFunc func(ctx context.Context, tx pgx.Tx, b agents.LogBatch, now time.Time) error

// Module is the logs module.
type Module struct {
	db     *gorm.DB
	svc    *Service
	in     *ingester
	lv     *live
	logger *slog.Logger
	pages  *app.Pages
	// recheck is how often a live socket or stream authenticates its caller
	// again (liveRecheck; tests shorten it).
	recheck time.Duration
	// exports bounds the NDJSON exports running at once (each holds a
	// database connection).
	exports chan struct{}

	runMu  sync.Mutex
	runCtx context.Context
}

var _ app.Module = (*Module)(nil)

// New builds the module. The error is always nil: the module loads nothing
// when it is built.
func New(d app.Deps, opts Options) (*Module, error) {
	svc := NewService(d, opts)
	lv := newLive(d.Pool, d.Logger, d.Metrics)
	in := newIngester(svc, opts.Ingest, d.Metrics, lv)
	in.rollup = opts.RollupFunc
	return &Module{db: d.DB, svc: svc, lv: lv, in: in,
		logger: d.Logger, pages: d.Pages, recheck: liveRecheck,
		exports: make(chan struct{}, maxExports)}, nil
}

// Service returns the module's service.
func (m *Module) Service() *Service { return m.svc }

// Ingest is the agents module's LogsFunc: it queues b and returns at once.
func (m *Module) Ingest(_ context.Context, b agents.LogBatch) { _ = m.in.submit(b) }

// Run stores queued batches and runs the live tail until ctx ends.
func (m *Module) Run(ctx context.Context) error {
	m.runMu.Lock()
	m.runCtx = ctx
	m.runMu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.in.run(ctx) }()
	go func() { defer wg.Done(); m.lv.run(ctx) }()
	wg.Wait()
	return ctx.Err()
}

// Name is "logs".
func (m *Module) Name() string { return "logs" }

// Policies returns the role matrix of policies.go.
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers logs.partitions and logs.retention.
func (m *Module) Jobs(w *river.Workers) []*river.PeriodicJob { return registerJobs(w, m.svc) }

// GRPC registers nothing: batches arrive through the agents module's stream.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts the JSON API (here, stream.go), the live-log WebSocket
// (socket.go) and the admin's Logs page (ui.go).
func (m *Module) Routes(r app.Routers) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	ag := agents.ScopeAgent(m.db, "id")
	r.API.Get("/workspaces/:id/access-logs", app.Require(ObjLog, authz.Read, ws),
		app.Doc{Summary: "Query a workspace's access logs, newest first (keyset pagination with cursor); " +
			"format=ndjson streams every matching entry, one JSON object a line", Response: Entry{}, Query: append(slices.Clip(QueryParamNames), "format")},
		func(c *fiber.Ctx) error {
			q, err := ParseQuery(func(n string) string { return c.Query(n) }, m.svc.now())
			if err != nil {
				return err
			}
			q.WorkspaceID = app.ScopeOf(c).WorkspaceID
			switch c.Query("format") {
			case "", "json":
			case "ndjson":
				return m.exportNDJSON(c, q)
			default:
				return app.Invalid("format", app.FieldInvalidValue, `must be "json" or "ndjson"`)
			}
			page, err := m.svc.AccessLogs(app.Ctx(c), q)
			if err != nil {
				return err
			}
			return c.JSON(page)
		})
	r.API.Get("/agents/:id/error-logs", app.Require(ObjLog, authz.Read, ag),
		app.Doc{Summary: "List an agent's nginx error-log lines, newest first", Response: ErrorLine{}, Query: []string{"from", "to", "level", "limit"}},
		func(c *fiber.Ctx) error {
			q, err := ParseErrorQuery(func(n string) string { return c.Query(n) }, m.svc.now())
			if err != nil {
				return err
			}
			q.AgentID, err = app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			page, err := m.svc.ErrorLogs(app.Ctx(c), q)
			if err != nil {
				return err
			}
			return c.JSON(page)
		})
	r.API.Get("/workspaces/:id/logs/stream", app.Require(ObjLog, authz.Read, ws),
		app.Doc{Summary: "Live access-log and error-log lines of a workspace as Server-Sent Events (event: log); " +
			"the access-log filters apply to access lines, source=access|error selects one kind; send Accept: text/event-stream",
			Query: append(slices.Clip(tailParamNames), "source"), Stream: app.StreamSSE},
		func(c *fiber.Ctx) error {
			f, err := parseLiveFilter(func(n string) string { return c.Query(n) }, m.svc.now())
			if err != nil {
				return err
			}
			return m.serveTail(c, f, liveMessage)
		})
	r.API.Get("/agents/:id/logs/stream", app.Require(ObjLog, authz.Read, ag),
		app.Doc{Summary: "Live access-log and error-log lines of an agent as Server-Sent Events (event: log), the WebSocket's data; send Accept: text/event-stream", Stream: app.StreamSSE},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			return m.serveTail(c, LiveFilter{AgentID: id}, liveMessage)
		})
	mountSocket(m, r.API)
	m.mountUI(r.UI)
	r.API.Get("/workspaces/:id/logs/settings", app.Require(ObjSettings, authz.Read, ws),
		app.Doc{Summary: "A workspace's log retention", Response: Settings{}},
		func(c *fiber.Ctx) error {
			s, err := m.svc.Settings(app.Ctx(c), app.ScopeOf(c).WorkspaceID)
			if err != nil {
				return err
			}
			return c.JSON(s)
		})
	r.API.Put("/workspaces/:id/logs/settings", app.Require(ObjSettings, authz.Write, ws),
		app.Doc{Summary: "Set a workspace's log retention (retention_days, at most logs.retention)", Body: SettingsParams{}, Response: Settings{}},
		func(c *fiber.Ctx) error {
			var p SettingsParams
			if err := app.Bind(c, &p); err != nil {
				return err
			}
			s, err := m.svc.SetSettings(app.Ctx(c), app.ScopeOf(c).WorkspaceID, p)
			if err != nil {
				return err
			}
			return c.JSON(s)
		})
}

// baseContext is Run's context (exports end with it), or Background before
// Run.
func (m *Module) baseContext() context.Context {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.runCtx == nil {
		return context.Background()
	}
	return m.runCtx
}
