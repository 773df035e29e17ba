package metrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// Stream traffic counters:
//
//	GET  /v1/streams/:id/metrics?from&to&interval&agent_id
//	POST /v1/streams/:id/reset-counters
//
// A stream's sessions are rolled up as a virtual host's requests, under the
// stream's id (Rollup): sessions, bytes received from clients (in) and sent
// to them (out), nginx's stream $status classes and the session time
// histogram. The counters of GET are those rollups over the range.
//
// Resetting the counters records the moment of the reset in
// stream_counter_resets (one row per stream, replaced by the next reset);
// the rollups are not touched, so the workspace's and agents' traffic keep
// the stream's sessions. From then on, GET counts from the reset: a range
// starting before it starts at it, and since the rollups count whole
// minutes (whole hours for ranges older than metrics.retention_minute), the
// minute of the reset itself is not counted — the counters read zero right
// after a reset and count the sessions of the following minutes. A range
// that ends before the reset counts nothing.
//
// Both routes resolve the stream through the vhosts module's scope (404 for
// a malformed id or a stream of no workspace) and are guarded by the vhosts
// module's policy of streams: reading the counters is reading the stream
// (vhosts.stream read, every member), resetting them is editing it
// (vhosts.stream write, operator and above).

// StreamParamNames are the parameters of the stream metrics route.
var StreamParamNames = []string{"from", "to", "interval", "agent_id"}

// StreamMetrics are a stream's traffic counters over a range.
type StreamMetrics struct {
	StreamID uuid.UUID `json:"stream_id"`
	// From and To are the range counted: From is the query's from, or the
	// reset when that is later.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// CountersResetAt is the stream's last counter reset; null when its
	// counters were never reset.
	CountersResetAt *time.Time `json:"counters_reset_at"`
	// Sessions counts the TCP connections or UDP sessions nginx logged.
	Sessions int64 `json:"sessions"`
	// Bandwidth is bytes received from clients (in) and sent to them (out).
	Bandwidth Bandwidth `json:"bandwidth"`
	// StatusCodes counts sessions by nginx's stream $status class (200
	// success, 400 bad request, 403 forbidden, 500 internal error, 502 bad
	// gateway, 503 unavailable).
	StatusCodes StatusCodes `json:"status_codes"`
	// SessionTimeMs are session duration percentiles in milliseconds.
	SessionTimeMs Latency `json:"session_time_ms"`
	// Series has one point per interval, as the workspace metrics'; absent
	// without ?interval=.
	Series []StreamPoint `json:"series,omitempty"`
}

// StreamPoint is one interval of a stream's series.
type StreamPoint struct {
	Timestamp time.Time `json:"timestamp"`
	Sessions  int64     `json:"sessions"`
	InBytes   int64     `json:"in_bytes"`
	OutBytes  int64     `json:"out_bytes"`
}

// StreamReset answers a counter reset.
type StreamReset struct {
	StreamID        uuid.UUID `json:"stream_id"`
	CountersResetAt time.Time `json:"counters_reset_at"`
}

// StreamResetAt returns the last counter reset of a stream, nil when there
// was none.
func (s *Service) StreamResetAt(ctx context.Context, streamID uuid.UUID) (*time.Time, error) {
	var at time.Time
	err := s.pool.QueryRow(ctx, "SELECT reset_at FROM stream_counter_resets WHERE stream_id = $1", streamID).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read counter reset of stream %s: %w", streamID, err)
	}
	at = at.UTC()
	return &at, nil
}

// StreamTraffic returns the counters of stream q.VirtualHostID in
// q.WorkspaceID over q's range, counted from the stream's last reset.
func (s *Service) StreamTraffic(ctx context.Context, q Query) (StreamMetrics, error) {
	out := StreamMetrics{StreamID: q.VirtualHostID}
	reset, err := s.StreamResetAt(ctx, q.VirtualHostID)
	if err != nil {
		return out, err
	}
	out.CountersResetAt = reset
	if reset != nil && reset.After(q.From) {
		q.From = *reset
	}
	out.From, out.To = q.From, q.To
	if !q.From.Before(q.To) {
		if q.Interval > 0 {
			out.Series = []StreamPoint{}
		}
		return out, nil
	}
	q.Host = ""
	sum, err := s.Traffic(ctx, q)
	if err != nil {
		return out, err
	}
	out.Sessions, out.Bandwidth, out.StatusCodes, out.SessionTimeMs = sum.RequestsTotal, sum.Bandwidth, sum.StatusCodes, sum.LatencyMs
	if sum.Series != nil {
		out.Series = make([]StreamPoint, 0, len(sum.Series))
		for _, p := range sum.Series {
			out.Series = append(out.Series, StreamPoint{Timestamp: p.Timestamp, Sessions: p.RequestsTotal, InBytes: p.InBytes, OutBytes: p.OutBytes})
		}
	}
	return out, nil
}

// ResetStreamCounters records now as the last counter reset of stream
// streamID in workspace ws, with an audit entry (stream.reset_counters), in
// one transaction.
func (m *Module) ResetStreamCounters(ctx context.Context, scope app.Scope, streamID uuid.UUID) (StreamReset, error) {
	at := m.svc.now().UTC()
	// Microseconds: what timestamptz keeps, so the answer equals what GET reads.
	at = at.Truncate(time.Microsecond)
	res := StreamReset{StreamID: streamID, CountersResetAt: at}
	err := m.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var before []time.Time
		if err := tx.Raw("SELECT reset_at FROM stream_counter_resets WHERE stream_id = ? FOR UPDATE", streamID).Scan(&before).Error; err != nil {
			return fmt.Errorf("read counter reset of stream %s: %w", streamID, err)
		}
		if err := tx.Exec(`INSERT INTO stream_counter_resets (stream_id, workspace_id, reset_at) VALUES (?, ?, ?)
			ON CONFLICT (stream_id) DO UPDATE SET reset_at = EXCLUDED.reset_at, workspace_id = EXCLUDED.workspace_id`,
			streamID, scope.WorkspaceID, at).Error; err != nil {
			return fmt.Errorf("reset counters of stream %s: %w", streamID, err)
		}
		var prev any
		if len(before) > 0 {
			prev = StreamReset{StreamID: streamID, CountersResetAt: before[0].UTC()}
		}
		return app.Audit(ctx, tx, app.AuditParams{OrgID: scope.OrgID, WorkspaceID: scope.WorkspaceID,
			Action: "stream.reset_counters", ObjectType: "stream", ObjectID: streamID.String(), Before: prev, After: res})
	})
	if err != nil {
		return StreamReset{}, err
	}
	return res, nil
}

// bindStreams mounts the stream counter routes.
func (m *Module) bindStreams(r app.Routers) {
	st := vhosts.ScopeStream(m.db, "id")
	r.API.Get("/streams/:id/metrics", app.Require(vhosts.ObjStream, authz.Read, st),
		app.Doc{Summary: "A stream's traffic counters over a range (from, to), counted from its last counter reset: sessions, bytes in and out, status classes, session time percentiles; with interval (1m, 5m, 1h, 1d) a series",
			Response: StreamMetrics{}, Query: StreamParamNames},
		func(c *fiber.Ctx) error {
			q, err := m.streamQuery(c)
			if err != nil {
				return err
			}
			out, err := m.svc.StreamTraffic(app.Ctx(c), q)
			if err != nil {
				return err
			}
			return c.JSON(out)
		})
	r.API.Post("/streams/:id/reset-counters", app.Require(vhosts.ObjStream, authz.Write, st),
		app.Doc{Summary: "Reset a stream's traffic counters: its metrics count from now on (the workspace's traffic keeps its sessions)",
			Response: StreamReset{}},
		func(c *fiber.Ctx) error {
			id, err := app.ParamUUID(c, "id")
			if err != nil {
				return err
			}
			res, err := m.ResetStreamCounters(app.Ctx(c), app.ScopeOf(c), id)
			if err != nil {
				return err
			}
			return c.JSON(res)
		})
}

// streamQuery reads a stream route's parameters: the stream of :id and
// StreamParamNames.
func (m *Module) streamQuery(c *fiber.Ctx) (Query, error) {
	q, err := ParseQuery(func(n string) string {
		switch n {
		case "virtual_host_id", "host":
			return ""
		}
		return c.Query(n)
	}, m.svc.now())
	if err != nil {
		return Query{}, err
	}
	q.WorkspaceID = app.ScopeOf(c).WorkspaceID
	if q.VirtualHostID, err = app.ParamUUID(c, "id"); err != nil {
		return Query{}, err
	}
	return q, nil
}
