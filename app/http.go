package app

import (
	"context"
	"crypto/subtle"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
)

// Wiring connects the plumbing to the modules that know identities and roles.
// main.go fills it from the auth and orgs modules.
type Wiring struct {
	// AuthenticateAPI returns the caller of an API request (Authorization: Bearer
	// or X-API-Key), nil when no credential was presented, or an error wrapping
	// ErrUnauthorized for a bad one.
	AuthenticateAPI func(c *fiber.Ctx) (*Principal, error)
	// AuthenticateUI returns the caller of an admin request from its session
	// cookie, nil when there is none.
	AuthenticateUI func(c *fiber.Ctx) (*Principal, error)
	// AuthenticateToken returns the caller of a bearer value (an access token
	// or an API key) that arrived without a request header: the first
	// message of a first-message WebSocket (Router.Socket). An error wraps
	// ErrUnauthorized for a bad one. Without it such sockets refuse everyone.
	AuthenticateToken func(ctx context.Context, token string) (*Principal, error)
	// Role returns a user's role in scope, "" when the user is not a member.
	// ctx carries the caller (PrincipalFrom); an error wrapping ErrForbidden
	// refuses the caller's session in that scope.
	Role func(ctx context.Context, userID uuid.UUID, s Scope) (string, error)
	// Nav builds the navigation around every admin page (Pages.Shell); the
	// module that knows organizations and workspaces provides it.
	Nav NavFunc
	// ErrorPage renders an admin error page.
	ErrorPage func(c *fiber.Ctx, status int, message string) error
	// Static is served under /static/.
	Static fs.FS
	// Version is shown in the OpenAPI document and recorded in the
	// replicas registry, with Commit.
	Version string
	// Commit is the source revision the master was built from.
	Commit string
	// ConnectedAgentsFunc counts the agent streams this replica holds, for
	// the replicas registry; nil counts none.
	ConnectedAgentsFunc func() int
	// GRPCServerOptions configure the agents' gRPC server (transport
	// credentials, keepalive); the agents module provides them.
	GRPCServerOptions []grpc.ServerOption
}

const (
	localPrincipal  = "nxmesh.principal"
	localScope      = "nxmesh.scope"
	localRole       = "nxmesh.role"
	localKind       = "nxmesh.kind"
	localRequestID  = "nxmesh.request_id"
	localGrant      = "nxmesh.grant"
	localScopeCache = "nxmesh.scope_cache"
)

// Caller returns the authenticated caller of c (nil on public routes).
func Caller(c *fiber.Ctx) *Principal {
	p, _ := c.Locals(localPrincipal).(*Principal)
	return p
}

// ScopeOf returns the scope resolved for a Require route.
func ScopeOf(c *fiber.Ctx) Scope {
	s, _ := c.Locals(localScope).(Scope)
	return s
}

// RoleOf returns the caller's role in the scope of a Require route.
func RoleOf(c *fiber.Ctx) string {
	r, _ := c.Locals(localRole).(string)
	return r
}

// RequestID returns the request's id.
func RequestID(c *fiber.Ctx) string {
	id, _ := c.Locals(localRequestID).(string)
	return id
}

// Ctx returns the request's context.Context (principal and request info included).
func Ctx(c *fiber.Ctx) context.Context { return c.UserContext() }

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxmesh_http_requests_total", Help: "HTTP requests by method, route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nxmesh_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// maxRequestHead is the most a request line and its headers may take: the
// read buffer of the HTTP server. A longer head is refused with 414 when the
// request line alone does not fit, 431 otherwise.
const maxRequestHead = 8 << 10

// Security headers of every response. The admin's pages load their scripts
// and styles from /static only (no inline script or style, htmx with eval
// off), Pico CSS draws its icons from data: URIs, and no page may be framed.
const (
	// ContentSecurityPolicy is sent with every response, the API
	// reference at /docs included.
	ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	referrerPolicy = "same-origin"
)

// setSecurityHeaders adds the headers every response carries.
func setSecurityHeaders(c *fiber.Ctx) {
	h := &c.Response().Header
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderReferrerPolicy, referrerPolicy)
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set(fiber.HeaderContentSecurityPolicy, ContentSecurityPolicy)
}

// ensureRequestID gives c its request id (the client's valid X-Request-ID or
// a new UUID) unless it has one, and echoes it in X-Request-ID.
func ensureRequestID(c *fiber.Ctx) string {
	if id := RequestID(c); id != "" {
		return id
	}
	id := strings.Clone(c.Get(fiber.HeaderXRequestID))
	if !requestIDPattern.MatchString(id) {
		id = uuid.NewString()
	}
	c.Locals(localRequestID, id)
	c.Set(fiber.HeaderXRequestID, id)
	return id
}

// newFiber builds the Fiber app with the request-id, logging, metrics and
// recovery middleware and the error handler that writes the API's error envelope (docs/API.md).
//
// Requests the HTTP server refuses before routing (see edgeErrorHandler) get
// the same envelope, request id and security headers. A body declared (by
// Content-Length) over http.body_limit is refused before it is read, also
// when the client sent Expect: 100-continue (the server then does not invite
// the body); Serve's connections read and discard what such a client still
// sends, so that it can read the answer.
func newFiber(cfg Config, logger *slog.Logger, metrics *httpMetrics, w *Wiring) *fiber.App {
	fc := fiber.Config{
		DisableStartupMessage: true,
		BodyLimit:             cfg.HTTP.BodyLimit,
		ReadBufferSize:        maxRequestHead,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          60 * time.Second,
		IdleTimeout:           120 * time.Second,
		ErrorHandler:          errorHandler(logger, w),
		CaseSensitive:         true,
	}
	if proxies := splitList(cfg.HTTP.TrustedProxies); len(proxies) > 0 {
		fc.EnableTrustedProxyCheck = true
		fc.TrustedProxies = proxies
		fc.ProxyHeader = fiber.HeaderXForwardedFor
	}
	f := fiber.New(fc)
	srv := f.Server()
	limit := f.Config().BodyLimit
	srv.HeaderReceived = func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		if h.ContentLength() > limit {
			// Without Expect the server answers 413 at once instead of
			// 100 Continue, and the client does not send the body.
			h.Del(fiber.HeaderExpect)
		}
		return fasthttp.RequestConfig{}
	}
	srv.ErrorHandler = edgeErrorHandler(f, logger)
	f.Use(func(c *fiber.Ctx) (err error) {
		start := time.Now()
		setSecurityHeaders(c)
		id := ensureRequestID(c)
		c.SetUserContext(WithRequestInfo(c.UserContext(), RequestInfo{ID: id, IP: strings.Clone(c.IP())}))
		defer func() {
			if r := recover(); r != nil {
				logger.ErrorContext(c.UserContext(), "panic", "panic", r, "path", c.Path())
				err = errors.New("panic")
			}
			if err != nil {
				if herr := c.App().ErrorHandler(c, err); herr != nil {
					_ = c.SendStatus(http.StatusInternalServerError)
				}
			}
			status := c.Response().StatusCode()
			// Fiber's strings alias reused buffers: copy what outlives the request.
			method, route := strings.Clone(c.Method()), strings.Clone(c.Route().Path)
			if status == http.StatusNotFound && route == "/" {
				route = "unmatched"
			}
			metrics.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			metrics.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
			logger.LogAttrs(c.UserContext(), slog.LevelInfo, "http request",
				slog.String("method", c.Method()), slog.String("path", c.Path()),
				slog.Int("status", status), slog.Duration("duration", time.Since(start)),
				slog.String("ip", c.IP()))
			err = nil
		}()
		return c.Next()
	})
	return f
}

// edgeErrorHandler answers requests the HTTP server refuses before routing,
// in place of Fiber's: a body over the limit (413), a request line longer
// than maxRequestHead (414), a longer head (431) — in these three the
// connection drains what the client still sends — a timeout (408) and a malformed request.
func edgeErrorHandler(f *fiber.App, logger *slog.Logger) func(*fasthttp.RequestCtx, error) {
	return func(fctx *fasthttp.RequestCtx, err error) {
		ec, _ := fctx.Conn().(*edgeConn)
		var status int
		var opErr *net.OpError
		switch {
		case errors.As(err, new(*fasthttp.ErrSmallBuffer)):
			status = http.StatusRequestHeaderFieldsTooLarge
			if ec != nil && ec.lineLongerThan(maxRequestHead) {
				status = http.StatusRequestURITooLong
			}
			// The client may still be sending the rest of its head: drain
			// it, so the answer is read rather than reset.
			if ec != nil {
				ec.drainOnClose()
			}
		case errors.Is(err, fasthttp.ErrBodyTooLarge):
			status = http.StatusRequestEntityTooLarge
			if ec != nil {
				ec.drainOnClose()
			}
		case errors.As(err, &opErr) && opErr.Timeout(), strings.Contains(err.Error(), "timeout"):
			status = http.StatusRequestTimeout
		case errors.Is(err, fasthttp.ErrGetOnly):
			status = http.StatusMethodNotAllowed
		default:
			status = http.StatusBadRequest
		}
		c := f.AcquireCtx(fctx)
		defer f.ReleaseCtx(c)
		if herr := f.ErrorHandler(c, fiber.NewError(status, http.StatusText(status))); herr != nil {
			_ = c.SendStatus(http.StatusInternalServerError)
		}
		logger.LogAttrs(context.Background(), slog.LevelInfo, "http request refused",
			slog.Int("status", status), slog.String("request_id", RequestID(c)),
			slog.String("ip", fctx.RemoteIP().String()), slog.String("error", err.Error()))
	}
}

// errorHandler writes every failure as the error envelope of docs/API.md (JSON API) or an
// error page (admin), and logs 5xx once.
func errorHandler(logger *slog.Logger, w *Wiring) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var pe publicError
		var fe *fiber.Error
		if errors.As(err, &fe) {
			pe = fiberError(fe)
		} else {
			pe = classify(err)
		}
		if pe.Status >= 500 {
			logger.ErrorContext(c.UserContext(), "request failed", "error", err, "path", c.Path())
		}
		if pe.RetryAfter > 0 {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(pe.RetryAfter))
		}
		setSecurityHeaders(c)
		id := ensureRequestID(c)
		if kind, _ := c.Locals(localKind).(RouterKind); kind == KindUI && w != nil && w.ErrorPage != nil {
			c.Status(pe.Status)
			return w.ErrorPage(c, pe.Status, pe.Message)
		}
		body := fiber.Map{"code": pe.Code, "message": pe.Message, "request_id": id}
		if len(pe.Details) > 0 {
			body["details"] = pe.Details
		}
		return c.Status(pe.Status).JSON(fiber.Map{"error": body})
	}
}

func fiberError(fe *fiber.Error) publicError {
	switch fe.Code {
	case http.StatusNotFound:
		return publicError{Status: fe.Code, Code: CodeNotFound, Message: "Resource not found"}
	case http.StatusMethodNotAllowed:
		return publicError{Status: fe.Code, Code: CodeMethodNotAllowed, Message: "Method not allowed"}
	case http.StatusRequestEntityTooLarge:
		return publicError{Status: fe.Code, Code: CodePayloadTooLarge, Message: "Request body too large"}
	case http.StatusRequestURITooLong:
		return publicError{Status: fe.Code, Code: CodeURITooLong, Message: "Request line too long"}
	case http.StatusRequestHeaderFieldsTooLarge:
		return publicError{Status: fe.Code, Code: CodeHeadersTooLarge, Message: "Request headers too large"}
	case http.StatusUnprocessableEntity, http.StatusBadRequest:
		return publicError{Status: http.StatusUnprocessableEntity, Code: CodeValidation, Message: "Request validation failed"}
	case http.StatusUnauthorized:
		return publicError{Status: fe.Code, Code: CodeUnauthorized, Message: "Authentication required"}
	case http.StatusForbidden:
		return publicError{Status: fe.Code, Code: CodeForbidden, Message: "Insufficient permissions"}
	case http.StatusTooManyRequests:
		return publicError{Status: fe.Code, Code: CodeRateLimited, Message: "Too many requests", RetryAfter: 60}
	case http.StatusServiceUnavailable:
		return publicError{Status: fe.Code, Code: CodeServiceUnavailable, Message: "Service temporarily unavailable"}
	}
	if fe.Code >= 500 {
		return publicError{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "Internal server error"}
	}
	return publicError{Status: fe.Code, Code: CodeValidation, Message: fe.Message}
}

// guard builds the handler chain that enforces a route's Access.
type guard struct {
	w     *Wiring
	authz interface {
		Allowed(role, domain, object, action string) (bool, error)
	}
	limiter *rateLimiter
	logger  *slog.Logger
	// scopes caches what ScopeRow and ScopeOrgRow resolve for the tables
	// whose changes are announced (see scopeTags).
	scopes *Cache[Scope]
}

func (g *guard) handlers(kind RouterKind, a Access) []fiber.Handler {
	mark := func(c *fiber.Ctx) error {
		c.Locals(localKind, kind)
		if g.scopes != nil {
			c.Locals(localScopeCache, g.scopes)
		}
		return c.Next()
	}
	hs := []fiber.Handler{mark}
	if a.kind != accessPublic {
		hs = append(hs, g.authenticate(kind))
		if kind == KindUI {
			hs = append(hs, csrf)
		}
		if a.kind == accessPermission {
			hs = append(hs, g.authorize(a))
		}
	}
	if kind == KindAPI {
		hs = append(hs, jsonBody)
	}
	return hs
}

func (g *guard) authenticate(kind RouterKind) fiber.Handler {
	return func(c *fiber.Ctx) error {
		var p *Principal
		var err error
		if kind == KindUI {
			p, err = g.w.AuthenticateUI(c)
		} else {
			p, err = g.w.AuthenticateAPI(c)
		}
		if err != nil && !errors.Is(err, ErrUnauthorized) {
			return err
		}
		if p == nil || err != nil {
			if kind == KindUI {
				if c.Get("HX-Request") == "true" {
					c.Set("HX-Redirect", "/login")
					return c.SendStatus(http.StatusUnauthorized)
				}
				return c.Redirect("/login?next="+url.QueryEscape(c.OriginalURL()), http.StatusSeeOther)
			}
			if err != nil {
				return err
			}
			return ErrUnauthorized
		}
		if retry := g.limiter.take(p.Credential(), time.Now()); retry > 0 {
			return RateLimited(retry)
		}
		c.Locals(localPrincipal, p)
		c.SetUserContext(WithPrincipal(c.UserContext(), p))
		return c.Next()
	}
}

// csrf requires unsafe admin requests to echo the session's CSRF token in the
// X-CSRF-Token header (htmx) or the _csrf form field (plain forms).
func csrf(c *fiber.Ctx) error {
	switch c.Method() {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return c.Next()
	}
	p := Caller(c)
	sent := c.Get("X-CSRF-Token")
	if sent == "" {
		sent = c.FormValue("_csrf")
	}
	if p == nil || p.CSRFToken == "" || subtle.ConstantTimeCompare([]byte(sent), []byte(p.CSRFToken)) != 1 {
		return &HTTPError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "Invalid or missing CSRF token; reload the page"}
	}
	return c.Next()
}

// authorize resolves the scope of the addressed object and checks the caller's
// role in it. Callers outside the scope get 404 so ids of other organizations
// are not disclosed.
func (g *guard) authorize(a Access) fiber.Handler {
	return func(c *fiber.Ctx) error {
		p := Caller(c)
		scope, err := a.Scope(c)
		if err != nil {
			return err
		}
		role, err := g.roleIn(c.UserContext(), p, scope)
		if err != nil {
			return err
		}
		if role == "" {
			return ErrNotFound
		}
		ok, err := g.authz.Allowed(role, scope.OrgID.String(), a.Object, a.Action)
		if err != nil {
			return err
		}
		if !ok {
			return ErrForbidden
		}
		c.Locals(localScope, scope)
		c.Locals(localRole, role)
		c.Locals(localGrant, &Grant{g: g, p: p, scope: scope, object: a.Object, action: a.Action})
		return c.Next()
	}
}

// allowed resolves p's role in s and checks permission action on object
// there. It returns the role; "" when p has none in s (also when s refuses
// p's session, ErrForbidden from Wiring.Role), and ok false when the role
// lacks the permission.
func (g *guard) allowed(ctx context.Context, p *Principal, s Scope, object, action string) (role string, ok bool, err error) {
	role, err = g.roleIn(ctx, p, s)
	if errors.Is(err, ErrForbidden) {
		return "", false, nil
	}
	if err != nil || role == "" {
		return "", false, err
	}
	ok, err = g.authz.Allowed(role, s.OrgID.String(), object, action)
	if err != nil {
		return role, false, err
	}
	return role, ok, nil
}

func (g *guard) roleIn(ctx context.Context, p *Principal, s Scope) (string, error) {
	if k := p.APIKey; k != nil {
		if k.OrgID != s.OrgID || (k.WorkspaceID != uuid.Nil && k.WorkspaceID != s.WorkspaceID) {
			return "", nil
		}
		return k.Role, nil
	}
	if p.Superadmin {
		return "owner", nil
	}
	// The caller travels with ctx so Role can apply the organization's sign-in
	// policy (require_email_code) to its session, also for the events hub.
	return g.w.Role(WithPrincipal(ctx, p), p.UserID, s)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
