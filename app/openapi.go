package app

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
)

// OpenAPI builds the OpenAPI 3.1 document of every /v1 route in routes.
func OpenAPI(routes []Route, version string) map[string]any {
	g := &schemaGen{components: map[string]any{}, names: map[reflect.Type]string{}}
	paths := map[string]map[string]any{}
	for _, r := range routes {
		if r.Kind != KindAPI {
			continue
		}
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
	g.components["ListMeta"] = g.schema(reflect.TypeOf(ListMeta{}))
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "NxMesh API",
			"version":     version,
			"description": "Control plane for fleets of nginx servers. Lists take page and per_page (per_page is capped at 100). Errors use one envelope; ids are UUIDs (a malformed id in a path is a 404); timestamps are RFC 3339 UTC.",
		},
		"servers": []any{map[string]any{"url": "/v1"}},
		"paths":   stripPrefix(paths),
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"bearerAuth": map[string]any{"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key"},
				"apiKey":     map[string]any{"type": "apiKey", "in": "header", "name": "X-API-Key"},
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
		op["requestBody"] = map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(r.Doc.Body))}},
		}
	}
	status := r.Doc.Status
	if status == 0 {
		status = http.StatusOK
	}
	resp := map[string]any{"description": http.StatusText(status)}
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
		resp["content"] = map[string]any{"application/json": map[string]any{"schema": s}}
	}
	errRef := map[string]any{"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	withDesc := func(d string) map[string]any {
		m := map[string]any{"description": d}
		for k, v := range errRef {
			m[k] = v
		}
		return m
	}
	responses := map[string]any{strconv.Itoa(status): resp, "default": withDesc("Error (seed envelope)")}
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
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
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

const docsHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>NxMesh API reference</title>
<style>
body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#1f2328}
h1{margin-bottom:.2rem}.op{border:1px solid #d0d7de;border-radius:6px;margin:.5rem 0}
summary{padding:.5rem .75rem;cursor:pointer;display:flex;gap:.75rem;align-items:center}
.m{font-weight:700;font-family:monospace;min-width:4.5rem}.GET{color:#0969da}.POST{color:#1a7f37}.PATCH{color:#9a6700}.PUT{color:#9a6700}.DELETE{color:#cf222e}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}pre{background:#f6f8fa;padding:.75rem;overflow:auto;margin:0 .75rem .75rem}
.tag{margin-top:2rem;border-bottom:1px solid #d0d7de}.auth{color:#57606a;font-size:.85rem;margin-left:auto}
</style></head><body>
<h1>NxMesh API reference</h1>
<p>Version {{.Version}}. Machine-readable document: <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI 3.1).
Authenticate with <code>Authorization: Bearer &lt;access token or API key&gt;</code> or <code>X-API-Key</code>.
Lists take <code>page</code> and <code>per_page</code> (capped at 100).</p>
{{range .Tags}}<h2 class="tag">{{.Name}}</h2>
{{range .Ops}}<details class="op"><summary><span class="m {{.Method}}">{{.Method}}</span><code>{{.Path}}</code><span>{{.Summary}}</span><span class="auth">{{.Access}}</span></summary>
<pre>{{.JSON}}</pre></details>
{{end}}{{end}}
</body></html>`

var docsPage = template.Must(template.New("docs").Parse(docsHTML))

// docsPolicy is ContentSecurityPolicy allowing the reference page's inline
// style by its hash.
var docsPolicy = func() string {
	_, rest, _ := strings.Cut(docsHTML, "<style>")
	style, _, _ := strings.Cut(rest, "</style>")
	sum := sha256.Sum256([]byte(style))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	return strings.Replace(ContentSecurityPolicy, "style-src 'self'", "style-src 'self' "+hash, 1)
}()

type docsOp struct {
	Method, Path, Summary, Access, JSON string
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
				b, _ := json.MarshalIndent(o, "", "  ")
				access := "authenticated"
				if sec, ok := o["security"].([]any); ok && len(sec) == 0 {
					access = "public"
				}
				tag := o["tags"].([]string)[0]
				byTag[tag] = append(byTag[tag], docsOp{Method: strings.ToUpper(method), Path: "/v1" + path, Summary: o["summary"].(string), Access: access, JSON: string(b)})
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
		c.Set(fiber.HeaderContentSecurityPolicy, docsPolicy)
		return docsPage.Execute(c.Response().BodyWriter(), map[string]any{"Version": version, "Tags": tags})
	}
}
