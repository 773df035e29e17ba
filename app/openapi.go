package app

import (
	"encoding/json"
	"html/template"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/static"
)

// OpenAPI builds the OpenAPI 3.1 document of every /v1 route in routes.
func OpenAPI(routes []Route, version string) map[string]any {
	g := &schemaGen{components: map[string]any{}, names: map[reflect.Type]string{}}
	paths := map[string]map[string]any{}
	tagSet := map[string]bool{}
	for _, r := range routes {
		if r.Kind != KindAPI {
			continue
		}
		tagSet[r.Doc.Tag] = true
		p := r.OpenAPIPath()
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		paths[p][strings.ToLower(r.Method)] = g.operation(r)
	}
	g.components["Error"] = map[string]any{
		"type":     "object",
		"required": []string{"error"},
		"properties": map[string]any{"error": map[string]any{
			"type":     "object",
			"required": []string{"code", "message", "request_id"},
			"properties": map[string]any{
				"code":       map[string]any{"type": "string", "enum": []string{CodeUnauthorized, CodeForbidden, CodeNotFound, CodeMethodNotAllowed, CodeValidation, CodeConflict, CodePayloadTooLarge, CodeRateLimited, CodeInternal, CodeServiceUnavailable}},
				"message":    map[string]any{"type": "string"},
				"request_id": map[string]any{"type": "string"},
				"details": map[string]any{"type": "array", "items": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"field":   map[string]any{"type": "string", "description": "JSON path of the bad value"},
						"message": map[string]any{"type": "string"},
						"code":    map[string]any{"type": "string"},
					},
				}},
			},
		}},
	}
	tags := make([]any, 0, len(tagSet))
	for _, name := range slices.Sorted(maps.Keys(tagSet)) {
		tags = append(tags, map[string]any{"name": name})
	}
	// structRef registers ListMeta under its own name; keep only the reference.
	g.schema(reflect.TypeOf(ListMeta{}))
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "NxMesh API",
			"version":     version,
			"description": "Control plane for fleets of nginx servers. Lists take page and per_page (per_page is capped at 100). Errors use one envelope; ids are UUIDs (a malformed id in a path is a 404); timestamps are RFC 3339 UTC.",
		},
		"servers": []any{map[string]any{"url": "/v1"}},
		"tags":    tags,
		"paths":   stripPrefix(paths),
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"bearerAuth": map[string]any{
					"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key",
					"description": "Authorization: Bearer with the access_token of POST /auth/login (or /auth/login/verify, /auth/refresh), or an organization API key.",
				},
				"apiKey": map[string]any{
					"type": "apiKey", "in": "header", "name": "X-API-Key",
					"description": "An organization API key (POST /organizations/{id}/api-keys) in the X-API-Key header.",
				},
			},
		},
		"security": []any{map[string]any{"bearerAuth": []string{}}, map[string]any{"apiKey": []string{}}},
	}
}

func stripPrefix(paths map[string]map[string]any) map[string]any {
	out := map[string]any{}
	for p, ops := range paths {
		out[strings.TrimPrefix(p, "/v1")] = ops
	}
	return out
}

type schemaGen struct {
	components map[string]any
	names      map[reflect.Type]string
}

func (g *schemaGen) operation(r Route) map[string]any {
	op := map[string]any{
		"summary":     r.Doc.Summary,
		"tags":        []string{r.Doc.Tag},
		"operationId": operationID(r),
	}
	var params []any
	for _, seg := range strings.Split(r.Path, "/") {
		if strings.HasPrefix(seg, ":") {
			name := strings.TrimSuffix(strings.TrimPrefix(seg, ":"), "?")
			schema := map[string]any{"type": "string", "format": "uuid"}
			if name == "version" {
				schema = map[string]any{"type": "integer", "minimum": 1}
			}
			params = append(params, map[string]any{"name": name, "in": "path", "required": true, "schema": schema})
		}
	}
	query := r.Doc.Query
	if r.Doc.List {
		query = append([]string{"page", "per_page"}, query...)
	}
	seen := map[string]bool{}
	for _, q := range query {
		if seen[q] {
			continue
		}
		seen[q] = true
		s := map[string]any{"type": "string"}
		if q == "page" || q == "per_page" {
			s = map[string]any{"type": "integer", "minimum": 1}
		}
		params = append(params, map[string]any{"name": q, "in": "query", "required": false, "schema": s})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if r.Doc.Body != nil {
		media := map[string]any{"schema": g.schema(reflect.TypeOf(r.Doc.Body))}
		if ex := operationExamples[r.Method+" "+r.Path]; ex.Request != nil {
			media["example"] = ex.Request
		}
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": media}}
	}
	status := r.Doc.Status
	if status == 0 {
		status = http.StatusOK
	}
	ex := operationExamples[r.Method+" "+r.Path]
	resp := map[string]any{"description": http.StatusText(status)}
	switch r.Doc.Stream {
	case StreamSSE:
		resp["content"] = map[string]any{"text/event-stream": map[string]any{
			"schema": map[string]any{"type": "string", "description": "Server-Sent Events: event and data lines, data being JSON"},
		}}
	case StreamWebSocket:
		status = http.StatusSwitchingProtocols
		resp = map[string]any{"description": "Switching Protocols: the connection is a WebSocket from here on"}
	case StreamText:
		resp["content"] = map[string]any{"text/plain": map[string]any{
			"schema": map[string]any{"type": "string"},
		}}
	}
	if r.Doc.ConfigVersion {
		resp["headers"] = map[string]any{HeaderConfigVersion: map[string]any{
			"description": "the workspace configuration version this write created; absent when it changed nothing. " +
				"Follow its rollout with GET /v1/workspaces/{id}/config/versions/{version} (agents)",
			"schema": map[string]any{"type": "integer", "minimum": 1},
		}}
	}
	if r.Doc.Response != nil {
		s := g.schema(reflect.TypeOf(r.Doc.Response))
		if r.Doc.List {
			s = map[string]any{
				"type":       "object",
				"required":   []string{"data", "meta"},
				"properties": map[string]any{"data": map[string]any{"type": "array", "items": s}, "meta": map[string]any{"$ref": "#/components/schemas/ListMeta"}},
			}
		}
		if r.Doc.ConfigVersion && !r.Doc.List {
			s = map[string]any{"allOf": []any{s, map[string]any{
				"type": "object",
				"properties": map[string]any{FieldConfigVersion: map[string]any{
					"type": "integer", "minimum": 1,
					"description": "the workspace configuration version this write created (as " + HeaderConfigVersion + "); absent when it changed nothing",
				}},
			}}}
		}
		media := map[string]any{"schema": s}
		if ex.Response != nil {
			media["example"] = ex.Response
		}
		resp["content"] = map[string]any{"application/json": media}
	}
	errRef := map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	withDesc := func(d string) map[string]any {
		m := map[string]any{"description": d}
		for k, v := range errRef {
			m[k] = v
		}
		return m
	}
	responses := map[string]any{strconv.Itoa(status): resp, "default": withDesc("Error (the error envelope, docs/API.md)")}
	if r.Doc.Stream == StreamWebSocket {
		responses["426"] = withDesc("Upgrade Required: the request is not a WebSocket handshake")
	}
	if r.Doc.Stream == StreamSSE {
		responses["406"] = withDesc("Not Acceptable: send Accept: text/event-stream")
	}
	if !r.Access.IsPublic() {
		responses["401"] = withDesc("Authentication required")
		responses["429"] = withDesc("Rate limited; see Retry-After")
	} else {
		op["security"] = []any{}
	}
	if r.Access.IsPermission() {
		responses["403"] = withDesc("Insufficient permissions")
		responses["404"] = withDesc("Not found, or not visible to the caller")
	}
	if r.Doc.Body != nil {
		responses["422"] = withDesc("Validation failed; details name each field")
	}
	op["responses"] = responses
	return op
}

func operationID(r Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.Method))
	for _, seg := range strings.Split(strings.TrimPrefix(r.Path, "/v1/"), "/") {
		if seg == "" {
			continue
		}
		if strings.HasPrefix(seg, ":") {
			seg = "by-" + strings.TrimPrefix(seg, ":")
		}
		for _, part := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '_' }) {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

var (
	timeType     = reflect.TypeOf(time.Time{})
	appTimeType  = reflect.TypeOf(Time{})
	uuidType     = reflect.TypeOf(uuid.UUID{})
	rawJSONType  = reflect.TypeOf(json.RawMessage{})
	durationType = reflect.TypeOf(time.Duration(0))
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	nullable := false
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
		nullable = true
	}
	s := g.schemaOf(t)
	if nullable {
		if typ, ok := s["type"].(string); ok {
			s = copyMap(s)
			s["type"] = []string{typ, "null"}
		} else if ref, ok := s["$ref"]; ok {
			s = map[string]any{"oneOf": []any{map[string]any{"$ref": ref}, map[string]any{"type": "null"}}}
		}
	}
	return s
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (g *schemaGen) schemaOf(t reflect.Type) map[string]any {
	switch {
	case t == timeType || t == appTimeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == uuidType:
		return map[string]any{"type": "string", "format": "uuid"}
	case t == rawJSONType || t.Name() == "JSON":
		return map[string]any{}
	case t == durationType:
		return map[string]any{"type": "integer"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		return g.structRef(t)
	}
	return map[string]any{}
}

func (g *schemaGen) structRef(t reflect.Type) map[string]any {
	if t.Name() == "" {
		return g.structSchema(t)
	}
	name, ok := g.names[t]
	if !ok {
		name = componentName(t)
		for taken := true; taken; {
			taken = false
			for other, n := range g.names {
				if n == name && other != t {
					name = pkgName(t) + name
					taken = true
				}
			}
		}
		g.names[t] = name
		g.components[name] = map[string]any{} // placeholder for recursion
		g.components[name] = g.structSchema(t)
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

func componentName(t reflect.Type) string {
	n := t.Name()
	if i := strings.IndexByte(n, '['); i >= 0 {
		n = n[:i]
	}
	return strings.ToUpper(n[:1]) + n[1:]
}

func pkgName(t reflect.Type) string {
	p := t.PkgPath()
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "X"
	}
	return strings.ToUpper(p[:1]) + p[1:]
}

func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			// encoding/json promotes the fields of an embedded struct
			// without a name, exported or not.
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			s := g.schema(f.Type)
			if d := f.Tag.Get("doc"); d != "" {
				s = copyMap(s)
				s["description"] = d
			}
			props[name] = s
			if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer {
				required = append(required, name)
			}
		}
	}
	walk(t)
	out := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		sort.Strings(required)
		out["required"] = required
	}
	return out
}

// docsHTML is the API reference page: the vendored Swagger UI started by
// static/docs.js on /v1/openapi.json. It carries no inline script or style, so
// it is served under the admin's ContentSecurityPolicy unchanged. Readers
// without JavaScript get the list of operations.
const docsHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>NxMesh API reference</title>
<link rel="stylesheet" href="{{.SwaggerUICSS}}">
<link rel="stylesheet" href="{{.DocsCSS}}">
</head><body>
<a class="skip-link" href="#swagger-ui">Skip to content</a>
<header class="docs-header"><h1>NxMesh API reference</h1>
<p>Version {{.Version}} · <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI 3.1) · <a href="/">Admin</a></p>
<p>Authorize with an access token from <code>POST /v1/auth/login</code> or an API key, then try any call.</p></header>
<main id="swagger-ui" class="docs-main" tabindex="-1" data-spec-url="/v1/openapi.json">
<noscript><div class="docs-fallback">
<p>The interactive reference needs JavaScript; the operations are listed here and described in <a href="/v1/openapi.json">/v1/openapi.json</a>.
Authenticate with <code>Authorization: Bearer &lt;access token or API key&gt;</code> or <code>X-API-Key</code>.
Lists take <code>page</code> and <code>per_page</code> (capped at 100).</p>
{{range .Tags}}<h2>{{.Name}}</h2><ul>
{{range .Ops}}<li><code>{{.Method}} {{.Path}}</code> {{.Summary}} ({{.Access}})</li>
{{end}}</ul>{{end}}
</div></noscript>
</main>
<script src="{{.SwaggerUI}}"></script>
<script src="{{.DocsJS}}"></script>
</body></html>`

var docsPage = template.Must(template.New("docs").Parse(docsHTML))

type docsOp struct {
	Method, Path, Summary, Access string
}

type docsTag struct {
	Name string
	Ops  []docsOp
}

func (a *App) openapiHandler(version string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		return c.JSON(OpenAPI(a.routes.All(), version))
	}
}

func (a *App) docsHandler(version string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		doc := OpenAPI(a.routes.All(), version)
		paths := doc["paths"].(map[string]any)
		byTag := map[string][]docsOp{}
		for path, ops := range paths {
			for method, op := range ops.(map[string]any) {
				o := op.(map[string]any)
				access := "authenticated"
				if sec, ok := o["security"].([]any); ok && len(sec) == 0 {
					access = "public"
				}
				tag := o["tags"].([]string)[0]
				byTag[tag] = append(byTag[tag], docsOp{Method: strings.ToUpper(method), Path: "/v1" + path, Summary: o["summary"].(string), Access: access})
			}
		}
		var tags []docsTag
		for name, ops := range byTag {
			sort.Slice(ops, func(i, j int) bool {
				if ops[i].Path != ops[j].Path {
					return ops[i].Path < ops[j].Path
				}
				return ops[i].Method < ops[j].Method
			})
			tags = append(tags, docsTag{Name: name, Ops: ops})
		}
		sort.Slice(tags, func(i, j int) bool { return tags[i].Name < tags[j].Name })
		c.Type("html", "utf-8")
		return docsPage.Execute(c.Response().BodyWriter(), map[string]any{
			"Version": version, "Tags": tags,
			"SwaggerUI": static.SwaggerUI, "SwaggerUICSS": static.SwaggerUICSS, "DocsJS": static.DocsJS, "DocsCSS": static.DocsCSS,
		})
	}
}

// operationExample is the request and response example of one operation.
type operationExample struct {
	Request, Response any
}

// operationExamples are the examples of the main calls, keyed by "METHOD
// /v1/path" as routes are registered. The document's validation checks each
// against its schema, and the tests fail when a key names no route.
var operationExamples = map[string]operationExample{
	"POST /v1/auth/login": {
		Request: map[string]any{"email": "admin@example.com", "password": "correct horse battery staple"},
		Response: map[string]any{
			"access_token":  "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIzZjJiIn0.c2lnbmF0dXJl",
			"refresh_token": "rt_6f1d3c0f5e1b4c7a9b2e8d4f0a6c1e3b",
			"token_type":    "Bearer",
			"expires_in":    3600,
		},
	},
	"GET /v1/organizations": {
		Response: map[string]any{
			"data": []any{map[string]any{
				"id":                 "5b0c8f0e-3c59-4a55-9b87-1f4b7bb0d6a1",
				"name":               "Acme",
				"slug":               "acme",
				"require_email_code": false,
				"created_at":         "2026-01-15T09:30:00Z",
				"updated_at":         "2026-01-15T09:30:00Z",
			}},
			"meta": map[string]any{"page": 1, "per_page": 20, "total": 1},
		},
	},
	"POST /v1/workspaces/:id/virtual-hosts": {
		Request: map[string]any{
			"name":                 "shop",
			"server_name":          "shop.example.com www.shop.example.com",
			"ssl_enabled":          false,
			"ssl_certificate_id":   "",
			"http2_enabled":        false,
			"redirect_https":       false,
			"default_server":       false,
			"redirect_to":          "",
			"redirect_code":        301,
			"client_max_body_size": "10m",
			"custom_directives":    map[string]any{},
			"locations": []any{map[string]any{
				"path": "/", "match": "prefix", "proxy_pass": "http://10.0.0.12:8080",
				"websocket": false, "custom_headers": []any{}, "rewrite_rules": []any{},
			}},
		},
	},
	"POST /v1/workspaces/:id/certificates": {
		Request: map[string]any{
			"domain":     "shop.example.com",
			"san":        []any{"www.shop.example.com"},
			"provider":   "letsencrypt",
			"challenge":  "http-01",
			"auto_renew": true,
		},
	},
}
