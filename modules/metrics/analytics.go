package metrics

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// Analytics: the tops of a workspace's access logs over a range.
//
//	GET /v1/workspaces/:id/analytics?from&to&virtual_host_id&host&agent_id&limit
//
// The tops are counted from access_logs, not from the rollups (which keep
// no paths, clients or user agents), so they reach back as far as the logs
// module keeps entries (logs.retention, or the workspace's shorter
// retention); a range older than that counts nothing. One statement reads
// the range once: the time range on ts lets PostgreSQL prune the daily
// partitions of access_logs (at execution, as the bounds are parameters) and
// walk access_logs_workspace_ts (workspace_id, ts) in each; GROUPING SETS
// count the five dimensions and the total in that single pass, and a window
// keeps the limit most frequent values of each. The cost is proportional to
// the entries of the range: MaxAnalyticsRange bounds it.

// Limits of an analytics query.
const (
	// DefaultAnalyticsLimit is how many values each top has without ?limit=.
	DefaultAnalyticsLimit = 10
	// MaxAnalyticsLimit is the largest ?limit=.
	MaxAnalyticsLimit = 100
	// MaxAnalyticsRange is the longest range (to - from) of one query.
	MaxAnalyticsRange = 31 * 24 * time.Hour
)

// AnalyticsParamNames are the parameters of the analytics route.
var AnalyticsParamNames = []string{"from", "to", "agent_id", "virtual_host_id", "host", "limit"}

// AnalyticsQuery selects the access-log entries the tops count.
type AnalyticsQuery struct {
	// Query holds the workspace, the range (from inclusive, to exclusive,
	// on the entries' own times) and the agent, virtual host (or stream)
	// and host filters; its Interval is unused.
	Query
	// Limit is the number of values of each top, 1 to MaxAnalyticsLimit.
	Limit int
}

// ParseAnalyticsQuery reads the parameters of ParseQuery but interval, and
// limit (1 to MaxAnalyticsLimit, default DefaultAnalyticsLimit). The range
// may not exceed MaxAnalyticsRange. Bad values are a *app.ValidationError
// naming each parameter.
func ParseAnalyticsQuery(get func(name string) string, now time.Time) (AnalyticsQuery, error) {
	var v app.Validator
	aq := AnalyticsQuery{Limit: DefaultAnalyticsLimit}
	q, err := ParseQuery(func(n string) string {
		if n == "interval" {
			return ""
		}
		return get(n)
	}, now)
	if err := v.Merge("", err); err != nil {
		return AnalyticsQuery{}, err
	}
	if err == nil {
		aq.Query = q
		v.Check(q.To.Sub(q.From) <= MaxAnalyticsRange, "from", app.FieldInvalidValue,
			fmt.Sprintf("must be at most %d days before to", int(MaxAnalyticsRange/(24*time.Hour))))
	}
	if s := strings.TrimSpace(get("limit")); s != "" {
		n, err := strconv.Atoi(s)
		if v.Check(err == nil && n >= 1 && n <= MaxAnalyticsLimit, "limit", app.FieldInvalidValue,
			fmt.Sprintf("must be a whole number from 1 to %d", MaxAnalyticsLimit)) {
			aq.Limit = n
		}
	}
	if err := v.Err(); err != nil {
		return AnalyticsQuery{}, err
	}
	return aq, nil
}

// Analytics are the tops of a range: each the most frequent values, most
// frequent first (equal counts by value, byte order), at most the query's
// limit.
type Analytics struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// RequestsTotal counts every entry of the range (requests and stream
	// sessions) the filters keep.
	RequestsTotal int64 `json:"requests_total"`
	// Hosts are the Host headers of HTTP requests.
	Hosts []TopValue `json:"hosts"`
	// Paths are request URIs without their query string.
	Paths []TopValue `json:"paths"`
	// StatusCodes are the statuses ("200", "404"; a stream's "200", "502").
	StatusCodes []TopValue `json:"status_codes"`
	// ClientAddresses are the clients' addresses (nginx's $remote_addr).
	ClientAddresses []TopValue `json:"client_addresses"`
	// UserAgents are User-Agent headers.
	UserAgents []TopValue `json:"user_agents"`
}

// TopValue is one value of a top and the entries that had it. Empty values
// (a stream session's path, a request without User-Agent) are not listed.
type TopValue struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// analyticsDimsCols are the columns of the tops, in the order of the
// GROUPING SETS (and of Analytics' fields). grouping() numbers a row by the
// columns it does not group on, the first column the highest bit: the row
// of column i has every bit set but bit (4 - i); the total has all five.
var analyticsDimsCols = []string{"host", "path", "status", "remote_addr", "user_agent"}

const groupingTotal = 1<<5 - 1

// Analytics counts the tops of aq (see the package's Analytics section).
func (s *Service) Analytics(ctx context.Context, aq AnalyticsQuery) (Analytics, error) {
	conds := []string{"workspace_id = $1", "ts >= $2", "ts < $3"}
	args := []any{aq.WorkspaceID, aq.From, aq.To, aq.Limit}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if aq.AgentID != uuid.Nil {
		add("agent_id = ?", aq.AgentID)
	}
	if aq.VirtualHostID != uuid.Nil {
		// A virtual host's requests, or a stream's sessions.
		add("(virtual_host_id = ? OR stream_id = ?::uuid::text)", aq.VirtualHostID)
	}
	if aq.Host != "" {
		// Rollups key host names lower case without a trailing dot; the
		// entries keep the header as sent.
		add("rtrim(lower(host), '.') = ?", aq.Host)
	}
	cols := strings.Join(analyticsDimsCols, ", ")
	sets := make([]string, 0, len(analyticsDimsCols)+1)
	for _, c := range analyticsDimsCols {
		sets = append(sets, "("+c+")")
	}
	sets = append(sets, "()")
	q := `SELECT g, v, n FROM (
			SELECT g, v, n, row_number() OVER (PARTITION BY g ORDER BY n DESC, v COLLATE "C") AS rn FROM (
				SELECT grouping(` + cols + `) AS g, coalesce(host, path, status::text, remote_addr, user_agent) AS v, count(*) AS n
				FROM (
					SELECT host, split_part(uri, '?', 1) AS path, status, remote_addr, user_agent
					FROM access_logs WHERE ` + strings.Join(conds, " AND ") + `
				) e
				GROUP BY GROUPING SETS (` + strings.Join(sets, ", ") + `)
			) c WHERE v <> '' OR g = ` + strconv.Itoa(groupingTotal) + `
		) t WHERE rn <= $4 ORDER BY g DESC, rn`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return Analytics{}, fmt.Errorf("query analytics of workspace %s: %w", aq.WorkspaceID, err)
	}
	defer rows.Close()
	out := Analytics{From: aq.From, To: aq.To, Hosts: []TopValue{}, Paths: []TopValue{}, StatusCodes: []TopValue{},
		ClientAddresses: []TopValue{}, UserAgents: []TopValue{}}
	tops := map[int]*[]TopValue{}
	for i, dst := range []*[]TopValue{&out.Hosts, &out.Paths, &out.StatusCodes, &out.ClientAddresses, &out.UserAgents} {
		tops[groupingTotal&^(1<<(len(analyticsDimsCols)-1-i))] = dst
	}
	for rows.Next() {
		var g int
		var v *string
		var n int64
		if err := rows.Scan(&g, &v, &n); err != nil {
			return Analytics{}, fmt.Errorf("read analytics of workspace %s: %w", aq.WorkspaceID, err)
		}
		if g == groupingTotal {
			out.RequestsTotal = n
			continue
		}
		if dst := tops[g]; dst != nil && v != nil {
			*dst = append(*dst, TopValue{Value: *v, Count: n})
		}
	}
	if err := rows.Err(); err != nil {
		return Analytics{}, fmt.Errorf("query analytics of workspace %s: %w", aq.WorkspaceID, err)
	}
	return out, nil
}

// bindAnalytics mounts GET /v1/workspaces/:id/analytics.
func (m *Module) bindAnalytics(r app.Routers) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	r.API.Get("/workspaces/:id/analytics", app.Require(ObjMetrics, authz.Read, ws),
		app.Doc{Summary: "The tops of a workspace's access logs over a range (from, to): hosts, paths, status codes, client addresses and user agents with their counts (limit per top, default 10, at most 100)",
			Response: Analytics{}, Query: AnalyticsParamNames},
		func(c *fiber.Ctx) error {
			aq, err := ParseAnalyticsQuery(func(n string) string { return c.Query(n) }, m.svc.now())
			if err != nil {
				return err
			}
			aq.WorkspaceID = app.ScopeOf(c).WorkspaceID
			out, err := m.svc.Analytics(app.Ctx(c), aq)
			if err != nil {
				return err
			}
			return c.JSON(out)
		})
}
