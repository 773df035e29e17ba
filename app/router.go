package app

import (
	"net/http"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"
)

// RouterKind tells how a router's routes authenticate and fail.
type RouterKind int

// Router kinds.
const (
	// KindAPI routes live under /v1, authenticate with a bearer token or API key and
	// fail with the JSON error envelope of docs/API.md.
	KindAPI RouterKind = iota
	// KindPublic routes (health, metrics, docs, static files) sit at the root.
	KindPublic
	// KindUI routes are the HTMX admin: cookie session, CSRF on unsafe methods,
	// HTML errors, and a redirect to /login when the session is missing.
	KindUI
)

type accessKind int

const (
	accessPublic accessKind = iota + 1
	accessAuthenticated
	accessPermission
)

// Access is a route's requirement. Every route is mounted with one: Public,
// Authenticated or Require. There is no default.
type Access struct {
	kind   accessKind
	Object string
	Action string
	Scope  ScopeFunc
}

// ScopeFunc finds the organization (and workspace) of the object a request
// addresses. It returns an error wrapping ErrNotFound when the object does not exist.
type ScopeFunc func(c *fiber.Ctx) (Scope, error)

// Public marks a route that needs no credential.
func Public() Access { return Access{kind: accessPublic} }

// Authenticated marks a route that any signed-in caller may use; the handler
// limits what it returns to what the caller may see.
func Authenticated() Access { return Access{kind: accessAuthenticated} }

// Require marks a route that needs permission action on object within the scope
// that scope resolves. Callers outside the scope's organization get 404.
func Require(object, action string, scope ScopeFunc) Access {
	return Access{kind: accessPermission, Object: object, Action: action, Scope: scope}
}

// IsPublic reports whether the route needs no credential.
func (a Access) IsPublic() bool { return a.kind == accessPublic }

// IsPermission reports whether the route checks a permission in a scope.
func (a Access) IsPermission() bool { return a.kind == accessPermission }

// Doc describes a route for the OpenAPI document.
type Doc struct {
	Summary string
	// Tag groups the operation; defaults to the module name.
	Tag string
	// Body is a value of the request body type, or nil.
	Body any
	// Response is a value of the response type (the element type for lists), or nil.
	Response any
	// List wraps Response in the paginated {data, meta} envelope.
	List bool
	// Status is the success status; 200 when zero.
	Status int
	// Query names the query parameters the route reads.
	Query []string
	// Stream is how a streaming or non-JSON route answers: StreamSSE,
	// StreamWebSocket or StreamText; empty for a plain JSON response.
	Stream string
	// ConfigVersion: a successful answer carries HeaderConfigVersion, the
	// workspace configuration version the write created (absent when it
	// changed nothing).
	ConfigVersion bool
}

// Streaming kinds of Doc.Stream.
const (
	// StreamSSE answers with Server-Sent Events (text/event-stream).
	StreamSSE = "sse"
	// StreamWebSocket upgrades the connection to a WebSocket.
	StreamWebSocket = "websocket"
	// StreamText answers with plain text (e.g. the Prometheus exposition
	// format), not JSON.
	StreamText = "text"
)

// Route is one registered route.
type Route struct {
	Kind   RouterKind
	Method string
	// Path is the full Fiber path (/v1/organizations/:id).
	Path   string
	Access Access
	Doc    Doc
	Module string
}

// OpenAPIPath returns Path with Fiber parameters in OpenAPI form (/v1/organizations/{id}).
func (r Route) OpenAPIPath() string {
	parts := strings.Split(r.Path, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, ":") {
			parts[i] = "{" + strings.TrimSuffix(strings.TrimPrefix(p, ":"), "?") + "}"
		}
	}
	return strings.Join(parts, "/")
}

// Routes is the registry of every route mounted through a Router.
type Routes struct {
	mu     sync.Mutex
	routes []Route
}

// All returns a copy of the registered routes.
func (rs *Routes) All() []Route {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]Route(nil), rs.routes...)
}

func (rs *Routes) add(r Route) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.routes = append(rs.routes, r)
}

// Router mounts routes with their access requirement and documentation.
type Router struct {
	kind   RouterKind
	prefix string
	module string
	fr     fiber.Router
	reg    *Routes
	guard  func(kind RouterKind, a Access) []fiber.Handler
	// sockets authenticates the first messages of Socket routes.
	sockets *socketGuard
}

// Routers are the three route groups a module may mount on.
type Routers struct {
	// API is mounted at /v1.
	API *Router
	// Public is mounted at the root, unauthenticated or authenticated per route.
	Public *Router
	// UI is the HTMX admin, mounted at the root.
	UI *Router
}

// Get mounts a GET route.
func (r *Router) Get(path string, a Access, d Doc, h fiber.Handler) {
	r.Handle(http.MethodGet, path, a, d, h)
}

// Post mounts a POST route.
func (r *Router) Post(path string, a Access, d Doc, h fiber.Handler) {
	r.Handle(http.MethodPost, path, a, d, h)
}

// Put mounts a PUT route.
func (r *Router) Put(path string, a Access, d Doc, h fiber.Handler) {
	r.Handle(http.MethodPut, path, a, d, h)
}

// Patch mounts a PATCH route.
func (r *Router) Patch(path string, a Access, d Doc, h fiber.Handler) {
	r.Handle(http.MethodPatch, path, a, d, h)
}

// Delete mounts a DELETE route.
func (r *Router) Delete(path string, a Access, d Doc, h fiber.Handler) {
	r.Handle(http.MethodDelete, path, a, d, h)
}

// Handle mounts h for method and path behind the guard for a.
func (r *Router) Handle(method, path string, a Access, d Doc, h fiber.Handler) {
	if a.kind == 0 {
		panic("app: route " + method + " " + r.prefix + path + " mounted without an Access requirement")
	}
	if a.kind == accessPermission && (a.Scope == nil || a.Object == "" || a.Action == "") {
		panic("app: route " + method + " " + r.prefix + path + " requires a permission without object, action or scope")
	}
	if d.Tag == "" {
		d.Tag = r.module
	}
	if d.ConfigVersion {
		h = trackConfigVersion(h)
	}
	handlers := append(r.guard(r.kind, a), h)
	r.fr.Add(method, path, handlers...)
	r.reg.add(Route{Kind: r.kind, Method: method, Path: r.prefix + path, Access: a, Doc: d, Module: r.module})
}

// ForModule returns routers that tag their routes with module's name.
func (rs Routers) ForModule(module string) Routers {
	cp := func(r *Router) *Router {
		if r == nil {
			return nil
		}
		c := *r
		c.module = module
		return &c
	}
	return Routers{API: cp(rs.API), Public: cp(rs.Public), UI: cp(rs.UI)}
}
