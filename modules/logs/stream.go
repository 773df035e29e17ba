package logs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
)

// The SSE tails and the NDJSON export.
//
// GET /v1/agents/:id/logs/stream and GET /v1/workspaces/:id/logs/stream
// (Accept: text/event-stream) send the live lines of an agent, or of a
// workspace with the access-log filters of the query endpoint and
// ?source=access|error, as
//
//	event: log
//	data: {"type":"log","data":{…the WebSocket's data…}}
//
// The admin's Logs page opens the same tail at /workspaces/:id/logs/stream,
// whose data are table rows for htmx's SSE extension. A comment line is sent
// every sseKeepAlive; the caller's credential and role are checked every
// liveRecheck ("event: unauthorized" then the end); on shutdown
// "event: shutdown" then the end.
//
// GET /v1/workspaces/:id/access-logs?format=ndjson streams every entry of
// the query's window and filters (newest first; limit does not apply), one
// JSON object a line, read from PostgreSQL row by row. A failure after the
// first line ends the stream with a line {"error":{…}}.

const (
	sseKeepAlive = 20 * time.Second
	// exportTimeout bounds one NDJSON export.
	exportTimeout = 30 * time.Minute
	// maxExports is how many NDJSON exports one replica runs at once.
	maxExports = 4
)

// ErrTooManyExports: the replica already runs maxExports exports.
var ErrTooManyExports = fmt.Errorf("%w: too many access-log exports running; retry later", app.ErrUnavailable)

// Sources a tail may select (?source=).
var sourceValues = []string{"", SourceAccess, SourceError}

// parseLiveFilter reads a tail's ?source= and the access-log filters.
func parseLiveFilter(get Params, now time.Time) (LiveFilter, error) {
	var f LiveFilter
	q, err := ParseQuery(func(n string) string {
		switch n {
		case "from", "to", "limit", "cursor":
			return ""
		}
		return get(n)
	}, now)
	var v app.Validator
	if err := v.Merge("", err); err != nil {
		return f, err
	}
	src := strings.ToLower(strings.TrimSpace(get("source")))
	if !v.Check(contains(sourceValues, src), "source", app.FieldInvalidValue, `must be "access", "error" or empty for both`) {
		return f, v.Err()
	}
	f.Filter = q.Filter
	f.AgentID = q.AgentID
	f.AccessOnly, f.ErrorsOnly = src == SourceAccess, src == SourceError
	return f, nil
}

// sseFrame writes one server-sent event; data may span lines.
func sseFrame(w *bufio.Writer, event string, data []byte) {
	w.WriteString("event: ")
	w.WriteString(event)
	w.WriteString("\n")
	for _, line := range strings.Split(string(data), "\n") {
		w.WriteString("data: ")
		w.WriteString(strings.TrimSuffix(line, "\r"))
		w.WriteString("\n")
	}
	w.WriteString("\n")
}

// serveTail answers c with the SSE tail of the lines f selects, each
// encoded by render, for as long as the caller stays allowed to read logs
// in c's scope.
func (m *Module) serveTail(c *fiber.Ctx, f LiveFilter, render func(Line) []byte) error {
	if !strings.Contains(c.Get(fiber.HeaderAccept), "text/event-stream") {
		return &app.HTTPError{Status: http.StatusNotAcceptable, Code: "NOT_ACCEPTABLE", Message: "Send Accept: text/event-stream"}
	}
	f.WorkspaceID = app.ScopeOf(c).WorkspaceID
	grant := app.GrantOf(c)
	sub := m.lv.Subscribe(f)
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set(fiber.HeaderConnection, "keep-alive")
	c.Set("X-Accel-Buffering", "no")
	conn := c.Context().Conn()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer sub.Close()
		m.tail(w, conn, sub, grant, render)
	})
	return nil
}

func (m *Module) tail(w *bufio.Writer, conn net.Conn, sub *Subscription, grant *app.Grant, render func(Line) []byte) {
	flush := func() bool {
		if conn != nil {
			_ = conn.SetWriteDeadline(time.Now().Add(2 * sseKeepAlive))
		}
		return w.Flush() == nil
	}
	w.WriteString("retry: 3000\n")
	sseFrame(w, "initial", []byte(`{"type":"initial"}`))
	if !flush() {
		return
	}
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	recheck := time.NewTicker(m.recheck)
	defer recheck.Stop()
	for {
		select {
		case l := <-sub.C:
			sseFrame(w, "log", render(l))
			// Lines that arrived together go out in one write.
			for more := true; more; {
				select {
				case l := <-sub.C:
					sseFrame(w, "log", render(l))
				default:
					more = false
				}
			}
			if !flush() {
				return
			}
		case <-keep.C:
			w.WriteString(": keepalive\n\n")
			if !flush() {
				return
			}
		case <-recheck.C:
			if !grant.StillAllowed(context.Background()) {
				b, _ := json.Marshal(map[string]string{"type": "unauthorized", "message": msgRevoked})
				sseFrame(w, "unauthorized", b)
				flush()
				return
			}
		case <-sub.Done():
			sseFrame(w, "shutdown", []byte(`{"type":"shutdown"}`))
			flush()
			return
		}
	}
}

// exportNDJSON answers c with every entry of q, one JSON object a line.
func (m *Module) exportNDJSON(c *fiber.Ctx, q Query) error {
	select {
	case m.exports <- struct{}{}:
	default:
		return ErrTooManyExports
	}
	c.Set(fiber.HeaderContentType, "application/x-ndjson")
	c.Set(fiber.HeaderCacheControl, "no-store")
	logger := m.logger
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer func() { <-m.exports }()
		ctx, cancel := context.WithTimeout(m.baseContext(), exportTimeout)
		defer cancel()
		enc := json.NewEncoder(w)
		err := m.svc.ExportAccessLogs(ctx, q, func(e *Entry) error {
			// An encode error is the client's connection failing (the buffer
			// flushes as it fills): the export stops.
			return enc.Encode(e)
		})
		if err != nil {
			logger.Warn("logs: export access logs", "workspace_id", q.WorkspaceID, "error", err)
			_ = enc.Encode(map[string]any{"error": map[string]string{"code": app.CodeInternal, "message": "export interrupted; retry"}})
		}
		_ = w.Flush()
	})
	return nil
}

// tailParamNames are the access-log filters a tail reads.
var tailParamNames = []string{"status_code", "status_class", "host", "method", "uri_prefix", "agent_id", "virtual_host_id", "remote_addr"}
