package vhosts

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

var (
	pageQuery   = []string{"page", "per_page"}
	searchQuery = []string{"page", "per_page", "q"}
)

// rollbackRequest is the body of POST /v1/workspaces/:id/config/rollback.
type rollbackRequest struct {
	Version int64 `json:"version" doc:"the configuration version to restore"`
}

// mergePatch applies a PATCH body to cur: every top-level field the body names
// replaces cur's (null clears it), and the result is decoded strictly, so an
// unknown field or a wrong type is a 422 naming it.
func mergePatch[T any](cur T, body []byte) (T, error) {
	var zero T
	trimmed := bytes.TrimSpace(body)
	var patch map[string]json.RawMessage
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &patch) != nil {
		// DecodeJSON reports what is wrong with the body.
		var probe map[string]any
		if err := app.DecodeJSON(body, &probe); err != nil {
			return zero, err
		}
		return zero, app.Invalid("body", app.FieldInvalidFormat, "request body must be a JSON object")
	}
	if len(patch) == 0 {
		return zero, app.Invalid("body", app.FieldRequired, "at least one field is required")
	}
	base, err := json.Marshal(cur)
	if err != nil {
		return zero, err
	}
	merged := map[string]json.RawMessage{}
	if err := json.Unmarshal(base, &merged); err != nil {
		return zero, err
	}
	for k, v := range patch {
		merged[k] = v
	}
	out, err := json.Marshal(merged)
	if err != nil {
		return zero, err
	}
	var res T
	if err := app.DecodeJSON(out, &res); err != nil {
		return zero, err
	}
	return res, nil
}

// wantsText reports whether the client asked for text/plain rather than JSON.
func wantsText(c *fiber.Ctx) bool {
	return c.Accepts(fiber.MIMEApplicationJSON, fiber.MIMETextPlain) == fiber.MIMETextPlain
}

// ---- Virtual hosts ----

// virtualHostsDoc documents the grammars every virtual host field follows.
const virtualHostsDoc = "Fields follow strict grammars (422 names the JSON path of each bad field). " +
	"Header values may use only these variables: $args $host $http_host $proxy_add_x_forwarded_for $remote_addr " +
	"$request_id $request_uri $scheme $server_name $server_port; rewrite replacements also $1-$9. " +
	"custom_directives allows: access_log (off), charset, client_body_buffer_size, client_body_timeout, " +
	"client_header_timeout, etag, expires, gzip, gzip_comp_level, gzip_min_length, gzip_types, gzip_vary, " +
	"keepalive_timeout, proxy_buffer_size, proxy_buffering, proxy_buffers, proxy_busy_buffers_size, " +
	"proxy_http_version, proxy_intercept_errors, proxy_next_upstream_tries, proxy_request_buffering, " +
	"send_timeout, sendfile, server_tokens, tcp_nopush"

func (m *Module) bindVirtualHosts(r *app.Router) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	vh := ScopeVirtualHost(m.db, "id")
	r.Get("/workspaces/:id/virtual-hosts", app.Require(ObjVirtualHost, authz.Read, ws),
		app.Doc{Summary: "List a workspace's virtual hosts; q matches a part of the name or the server names (ignoring case); per_page is capped at 100", Response: VirtualHost{}, List: true, Query: searchQuery},
		app.ListHandler(m.listVirtualHosts))
	r.Post("/workspaces/:id/virtual-hosts", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "Create a virtual host. " + virtualHostsDoc, Body: VirtualHostInput{}, Response: VirtualHost{}, Status: http.StatusCreated, ConfigVersion: true},
		m.createVirtualHost)
	r.Get("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Read, vh),
		app.Doc{Summary: "Get a virtual host", Response: VirtualHost{}},
		m.getVirtualHost)
	r.Patch("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Write, vh),
		app.Doc{Summary: "Update a virtual host: each top-level field sent replaces the current one (null clears it). " + virtualHostsDoc, Body: VirtualHostInput{}, Response: VirtualHost{}, ConfigVersion: true},
		m.updateVirtualHost)
	r.Delete("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Delete, vh),
		app.Doc{Summary: "Delete a virtual host", Status: http.StatusNoContent, ConfigVersion: true},
		m.deleteVirtualHost)
	r.Get("/virtual-hosts/:id/preview", app.Require(ObjVirtualHost, authz.Read, vh),
		app.Doc{Summary: "The nginx configuration rendered for a virtual host (http.conf, with the upstreams it uses); text/plain with Accept: text/plain", Response: Preview{}},
		m.previewVirtualHost)
}

func (m *Module) listVirtualHosts(c *fiber.Ctx, page app.Page) ([]VirtualHost, int64, error) {
	return m.svc.SearchVirtualHosts(app.Ctx(c), app.ScopeOf(c).WorkspaceID, ListFilter{Q: strings.TrimSpace(c.Query("q"))}, page)
}

func (m *Module) createVirtualHost(c *fiber.Ctx) error {
	var in VirtualHostInput
	if err := app.Bind(c, &in); err != nil {
		return err
	}
	vh, err := m.svc.CreateVirtualHost(app.Ctx(c), app.ScopeOf(c).WorkspaceID, in)
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(vh)
}

func (m *Module) getVirtualHost(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrVirtualHostNotFound
	}
	vh, err := m.svc.GetVirtualHost(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(vh)
}

func (m *Module) updateVirtualHost(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrVirtualHostNotFound
	}
	body := c.Body()
	vh, err := m.svc.UpdateVirtualHost(app.Ctx(c), id, func(in *VirtualHostInput) error {
		merged, err := mergePatch(*in, body)
		*in = merged
		return err
	})
	if err != nil {
		return err
	}
	return c.JSON(vh)
}

func (m *Module) deleteVirtualHost(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrVirtualHostNotFound
	}
	if err := m.svc.DeleteVirtualHost(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) previewVirtualHost(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrVirtualHostNotFound
	}
	p, err := m.svc.PreviewVirtualHost(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return sendPreview(c, p)
}

func sendPreview(c *fiber.Ctx, p Preview) error {
	if wantsText(c) {
		var b strings.Builder
		for _, content := range p.Files {
			b.WriteString(content)
		}
		c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
		return c.SendString(b.String())
	}
	return c.JSON(p)
}

// ---- Streams ----

func (m *Module) bindStreams(r *app.Router) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	st := ScopeStream(m.db, "id")
	r.Get("/workspaces/:id/streams", app.Require(ObjStream, authz.Read, ws),
		app.Doc{Summary: "List a workspace's TCP/UDP streams; q matches a part of the name or the listen port; per_page is capped at 100", Response: Stream{}, List: true, Query: searchQuery},
		app.ListHandler(m.listStreams))
	r.Post("/workspaces/:id/streams", app.Require(ObjStream, authz.Write, ws),
		app.Doc{Summary: "Create a TCP/UDP stream", Body: StreamInput{}, Response: Stream{}, Status: http.StatusCreated, ConfigVersion: true},
		m.createStream)
	r.Get("/streams/:id", app.Require(ObjStream, authz.Read, st),
		app.Doc{Summary: "Get a stream", Response: Stream{}},
		m.getStream)
	r.Patch("/streams/:id", app.Require(ObjStream, authz.Write, st),
		app.Doc{Summary: "Update a stream: each top-level field sent replaces the current one (null clears it)", Body: StreamInput{}, Response: Stream{}, ConfigVersion: true},
		m.updateStream)
	r.Delete("/streams/:id", app.Require(ObjStream, authz.Delete, st),
		app.Doc{Summary: "Delete a stream", Status: http.StatusNoContent, ConfigVersion: true},
		m.deleteStream)
	r.Get("/streams/:id/preview", app.Require(ObjStream, authz.Read, st),
		app.Doc{Summary: "The nginx configuration rendered for a stream (stream.conf, with its upstream); text/plain with Accept: text/plain", Response: Preview{}},
		m.previewStream)
}

func (m *Module) listStreams(c *fiber.Ctx, page app.Page) ([]Stream, int64, error) {
	return m.svc.SearchStreams(app.Ctx(c), app.ScopeOf(c).WorkspaceID, ListFilter{Q: strings.TrimSpace(c.Query("q"))}, page)
}

func (m *Module) createStream(c *fiber.Ctx) error {
	var in StreamInput
	if err := app.Bind(c, &in); err != nil {
		return err
	}
	st, err := m.svc.CreateStream(app.Ctx(c), app.ScopeOf(c).WorkspaceID, in)
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(st)
}

func (m *Module) getStream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrStreamNotFound
	}
	st, err := m.svc.GetStream(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(st)
}

func (m *Module) updateStream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrStreamNotFound
	}
	body := c.Body()
	st, err := m.svc.UpdateStream(app.Ctx(c), id, func(in *StreamInput) error {
		merged, err := mergePatch(*in, body)
		*in = merged
		return err
	})
	if err != nil {
		return err
	}
	return c.JSON(st)
}

func (m *Module) deleteStream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrStreamNotFound
	}
	if err := m.svc.DeleteStream(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}

func (m *Module) previewStream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrStreamNotFound
	}
	p, err := m.svc.PreviewStream(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return sendPreview(c, p)
}

// ---- Configuration versions ----

func (m *Module) bindConfig(r *app.Router) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	r.Get("/workspaces/:id/config/versions", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "List a workspace's configuration versions, newest first; per_page is capped at 100", Response: VersionSummary{}, List: true, Query: pageQuery},
		app.ListHandler(m.listVersions))
	r.Get("/workspaces/:id/config/versions/:version", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "Get a configuration version (an integer) with its snapshot, rendered nginx files and rollout: agents lists what each registered agent made of it (status pending, applied, failed, rolled_back or superseded, with nginx's error text)", Response: Version{}},
		m.getVersion)
	r.Get("/workspaces/:id/config/versions/:version/diff", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "Unified diff of the rendered nginx files of a version against another (against, default the previous version; 0 is the empty configuration); text/plain with Accept: text/plain", Response: Diff{}, Query: []string{"against"}},
		m.diffVersions)
	r.Post("/workspaces/:id/config/rollback", app.Require(ObjConfig, authz.Write, ws),
		app.Doc{Summary: "Restore the upstreams, virtual hosts and streams of an earlier version as a new version (certificates are not restored; 409 if one it uses is gone)", Body: rollbackRequest{}, Response: VersionSummary{}, Status: http.StatusCreated, ConfigVersion: true},
		m.rollback)
}

// paramVersion reads the :version path parameter: a positive integer, or 404.
func paramVersion(c *fiber.Ctx) (int64, error) {
	s := c.Params("version")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != s {
		return 0, ErrVersionNotFound
	}
	return n, nil
}

func (m *Module) listVersions(c *fiber.Ctx, page app.Page) ([]VersionSummary, int64, error) {
	return m.svc.ListVersions(app.Ctx(c), app.ScopeOf(c).WorkspaceID, page)
}

func (m *Module) getVersion(c *fiber.Ctx) error {
	v, err := paramVersion(c)
	if err != nil {
		return err
	}
	out, err := m.svc.GetVersion(app.Ctx(c), app.ScopeOf(c).WorkspaceID, v)
	if err != nil {
		return err
	}
	return c.JSON(out)
}

func (m *Module) diffVersions(c *fiber.Ctx) error {
	v, err := paramVersion(c)
	if err != nil {
		return err
	}
	against := v - 1
	if s := c.Query("against"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return app.Invalid("against", app.FieldInvalidValue, "must be a version number (0 for the empty configuration)")
		}
		against = n
	}
	d, err := m.svc.DiffVersions(app.Ctx(c), app.ScopeOf(c).WorkspaceID, v, against)
	if err != nil {
		return err
	}
	if wantsText(c) {
		c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
		return c.SendString(d.Diff)
	}
	return c.JSON(d)
}

func (m *Module) rollback(c *fiber.Ctx) error {
	var req rollbackRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	out, err := m.svc.Rollback(app.Ctx(c), app.ScopeOf(c).WorkspaceID, req.Version)
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(out)
}
