package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
)

// edgeBodyLimit is http.body_limit in these tests.
const edgeBodyLimit = 64 << 10

// edgeModule mounts a JSON echo route, a route that takes no body, an admin
// page and a page posting a form.
type edgeModule struct{}

type echoItem struct {
	Name string `json:"name"`
}

type echoBody struct {
	Name  string     `json:"name"`
	Items []echoItem `json:"items"`
}

func (edgeModule) Name() string                             { return "edge" }
func (edgeModule) Policies() []authz.Policy                 { return nil }
func (edgeModule) Jobs(*river.Workers) []*river.PeriodicJob { return nil }
func (edgeModule) GRPC(grpc.ServiceRegistrar)               {}
func (edgeModule) Routes(r app.Routers) {
	r.API.Post("/edge/echo", app.Public(), app.Doc{Summary: "echo"}, func(c *fiber.Ctx) error {
		var b echoBody
		if err := app.Bind(c, &b); err != nil {
			return err
		}
		return c.JSON(b)
	})
	r.API.Post("/edge/ping", app.Public(), app.Doc{Summary: "ping"}, func(c *fiber.Ctx) error {
		return c.SendStatus(http.StatusNoContent)
	})
	r.UI.Get("/edge/page", app.Public(), app.Doc{Summary: "page"}, func(c *fiber.Ctx) error {
		c.Type("html", "utf-8")
		return c.SendString(`<!DOCTYPE html><html><head><script src="/static/x.js"></script></head><body>page</body></html>`)
	})
	r.UI.Post("/edge/form", app.Public(), app.Doc{Summary: "form"}, func(c *fiber.Ctx) error {
		return c.SendString("got " + c.FormValue("name"))
	})
}

// setupEdge returns a mounted master with a 64 KiB body limit.
func setupEdge(t *testing.T) *app.App {
	t.Helper()
	a := apptest.NewApp(t, func(cfg *app.Config) { cfg.HTTP.BodyLimit = edgeBodyLimit })
	err := a.Mount(context.Background(), []app.Module{edgeModule{}}, app.Wiring{
		AuthenticateAPI: func(*fiber.Ctx) (*app.Principal, error) { return nil, nil },
		AuthenticateUI:  func(*fiber.Ctx) (*app.Principal, error) { return nil, nil },
		Static:          fstest.MapFS{"x.js": {Data: []byte("1")}},
		Version:         "test",
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	return a
}

type envelope struct {
	Error struct {
		Code      string           `json:"code"`
		Message   string           `json:"message"`
		RequestID string           `json:"request_id"`
		Details   []app.FieldError `json:"details"`
	} `json:"error"`
}

// checkEnvelope asserts resp is status with the error envelope of code and a
// request id equal to its X-Request-ID, and returns the envelope.
func checkEnvelope(t *testing.T, resp *http.Response, body []byte, status int, code string) envelope {
	t.Helper()
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("status %d, body %q is not the error envelope: %v", resp.StatusCode, body, err)
	}
	if resp.StatusCode != status || env.Error.Code != code {
		t.Fatalf("status %d code %q, want %d %q; body %s", resp.StatusCode, env.Error.Code, status, code, body)
	}
	if id := resp.Header.Get("X-Request-ID"); id == "" || id != env.Error.RequestID {
		t.Fatalf("X-Request-ID %q, envelope request_id %q: want the same, non-empty", id, env.Error.RequestID)
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Fatalf("X-Content-Type-Options %q", got)
	}
	return env
}

func TestHTTP_JSONBodies(t *testing.T) {
	t.Parallel()
	a := setupEdge(t)
	cases := []struct {
		name        string
		path        string
		contentType string
		header      [2]string
		body        string
		status      int
		code        string
		fields      []string
	}{
		{"AcceptsApplicationJSON", "/v1/edge/echo", "application/json", [2]string{}, `{"name":"a"}`, 200, "", nil},
		{"AcceptsUTF8Charset", "/v1/edge/echo", "application/json; charset=UTF-8", [2]string{}, `{"name":"a"}`, 200, "", nil},
		{"AcceptsStructuredSyntaxSuffix", "/v1/edge/echo", "application/merge-patch+json", [2]string{}, `{"name":"a"}`, 200, "", nil},
		{"RefusesTextPlain", "/v1/edge/echo", "text/plain", [2]string{}, `{"name":"a"}`, 415, app.CodeUnsupportedMediaType, nil},
		{"RefusesFormEncoded", "/v1/edge/echo", "application/x-www-form-urlencoded", [2]string{}, `name=a`, 415, app.CodeUnsupportedMediaType, nil},
		{"RefusesMissingContentType", "/v1/edge/echo", "", [2]string{}, `{"name":"a"}`, 415, app.CodeUnsupportedMediaType, nil},
		{"RefusesOtherCharset", "/v1/edge/echo", "application/json; charset=latin1", [2]string{}, `{"name":"a"}`, 415, app.CodeUnsupportedMediaType, nil},
		{"RefusesMalformedContentType", "/v1/edge/echo", "application/json; charset", [2]string{}, `{"name":"a"}`, 415, app.CodeUnsupportedMediaType, nil},
		{"RefusesContentEncoding", "/v1/edge/echo", "application/json", [2]string{"Content-Encoding", "gzip"}, `{"name":"a"}`, 415, app.CodeUnsupportedMediaType, nil},
		{"RefusesBodyOnRouteThatReadsNone", "/v1/edge/ping", "text/plain", [2]string{}, `x`, 415, app.CodeUnsupportedMediaType, nil},
		{"NoBodyNeedsNoContentType", "/v1/edge/ping", "", [2]string{}, ``, 204, "", nil},
		{"NamesInvalidUTF8", "/v1/edge/echo", "application/json", [2]string{}, "{\"items\":[{\"name\":\"a\"},{\"name\":\"\xff\"}]}", 422, app.CodeValidation, []string{"items[1].name"}},
		{"NamesLoneSurrogate", "/v1/edge/echo", "application/json", [2]string{}, `{"name":"\ud800"}`, 422, app.CodeValidation, []string{"name"}},
		{"NamesDuplicateKey", "/v1/edge/echo", "application/json", [2]string{}, `{"items":[{"name":"a","name":"b"}]}`, 422, app.CodeValidation, []string{"items[0].name"}},
		{"NamesUnknownField", "/v1/edge/echo", "application/json", [2]string{}, `{"items":[{"nam":"a"}]}`, 422, app.CodeValidation, []string{"items[0].nam"}},
		{"AdminFormsAreNotConcerned", "/edge/form", "application/x-www-form-urlencoded", [2]string{}, `name=b`, 200, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.header[0] != "" {
				req.Header.Set(tc.header[0], tc.header[1])
			}
			resp := apptest.Do(t, a, req)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if tc.code == "" {
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
				}
				return
			}
			env := checkEnvelope(t, resp, body, tc.status, tc.code)
			var fields []string
			for _, d := range env.Error.Details {
				fields = append(fields, d.Field)
			}
			if fmt.Sprint(fields) != fmt.Sprint(tc.fields) && tc.fields != nil {
				t.Fatalf("details %+v, want fields %v", env.Error.Details, tc.fields)
			}
		})
	}
}

func TestHTTP_SecurityHeaders(t *testing.T) {
	t.Parallel()
	a := setupEdge(t)
	get := func(t *testing.T, path string) (*http.Response, []byte) {
		resp := apptest.Do(t, a, httptest.NewRequest(http.MethodGet, path, nil))
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	directives := func(policy string) map[string]string {
		out := map[string]string{}
		for _, d := range strings.Split(policy, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			out[name] = value
		}
		return out
	}

	t.Run("AdminPageMayNotBeFramedAndRunsOnlyOwnScripts", func(t *testing.T) {
		t.Parallel()
		resp, _ := get(t, "/edge/page")
		csp := resp.Header.Get("Content-Security-Policy")
		d := directives(csp)
		if d["frame-ancestors"] != "'none'" || d["script-src"] != "'self'" || d["style-src"] != "'self'" || d["object-src"] != "'none'" {
			t.Fatalf("Content-Security-Policy %q", csp)
		}
		if strings.Contains(csp, "unsafe-") {
			t.Fatalf("Content-Security-Policy %q allows unsafe sources", csp)
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("%s %q, want %q", h, got, want)
			}
		}
	})

	t.Run("EveryResponseIsNosniff", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/static/x.js", "/v1/nope", "/healthz", "/v1/openapi.json"} {
			if resp, _ := get(t, path); resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: X-Content-Type-Options %q", path, resp.Header.Get("X-Content-Type-Options"))
			}
		}
	})

	t.Run("APIReferenceRunsUnderTheAdminPolicy", func(t *testing.T) {
		t.Parallel()
		resp, body := get(t, "/docs")
		if got := resp.Header.Get("Content-Security-Policy"); got != app.ContentSecurityPolicy {
			t.Fatalf("/docs Content-Security-Policy %q, want the admin's %q", got, app.ContentSecurityPolicy)
		}
		page := string(body)
		if strings.Contains(page, "<style") || strings.Contains(page, " style=") {
			t.Fatalf("/docs has inline style:\n%s", page)
		}
		scripts := regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1)
		if len(scripts) == 0 {
			t.Fatalf("/docs loads no script:\n%s", page)
		}
		for _, tag := range scripts {
			if !strings.Contains(tag, ` src="/static/`) {
				t.Errorf("/docs script %s is not a /static file", tag)
			}
		}
		if strings.Contains(page, "<script>") {
			t.Errorf("/docs has an inline script")
		}
	})
}

// countingReader is a body of n bytes of JSON-ish filler that counts what the
// client read of it; it hides its length so the client sends it chunked.
type countingReader struct {
	left int
	read atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	for i := range p[:n] {
		p[i] = ' '
	}
	r.left -= n
	r.read.Add(int64(n))
	return n, nil
}

func TestHTTP_EdgeLimits(t *testing.T) {
	t.Parallel()
	a := setupEdge(t)
	base := apptest.Serve(t, a)
	// Four times the socket buffers of loopback, so a server that closes
	// without reading leaves the client writing into a reset connection.
	const oversized = 4 << 20

	send := func(t *testing.T, client *http.Client, req *http.Request) (*http.Response, []byte) {
		t.Helper()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read answer: %v", err)
		}
		return resp, body
	}
	newClient := func() *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 10 * time.Second}}
	}

	// Whether a client that keeps writing loses the answer to a reset is a
	// race; each case tries several times.
	const attempts = 5

	t.Run("DeclaredOversizedBodyIs413", func(t *testing.T) {
		t.Parallel()
		for i := range attempts {
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/edge/echo", bytes.NewReader(bytes.Repeat([]byte(" "), oversized)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Request-ID", fmt.Sprintf("big-body-%d", i))
			resp, body := send(t, newClient(), req)
			if env := checkEnvelope(t, resp, body, http.StatusRequestEntityTooLarge, app.CodePayloadTooLarge); env.Error.RequestID != fmt.Sprintf("big-body-%d", i) {
				t.Fatalf("request_id %q, want the client's", env.Error.RequestID)
			}
		}
	})

	t.Run("DeclaredOversizedBodyWithExpectContinueIsRefusedBeforeItIsSent", func(t *testing.T) {
		t.Parallel()
		for range attempts {
			body := &countingReader{left: oversized}
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/edge/echo", body)
			req.ContentLength = oversized
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Expect", "100-continue")
			start := time.Now()
			resp, raw := send(t, newClient(), req)
			checkEnvelope(t, resp, raw, http.StatusRequestEntityTooLarge, app.CodePayloadTooLarge)
			if n := body.read.Load(); n != 0 {
				t.Fatalf("client sent %d bytes of a body the server should not have invited", n)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("answer took %v: the client waited for 100 Continue", elapsed)
			}
		}
	})

	t.Run("ChunkedOversizedBodyIs413", func(t *testing.T) {
		t.Parallel()
		for _, expect := range []string{"", "100-continue"} {
			for range attempts {
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/edge/echo", &countingReader{left: oversized})
				req.Header.Set("Content-Type", "application/json")
				if expect != "" {
					req.Header.Set("Expect", expect)
				}
				if req.ContentLength != 0 || req.TransferEncoding != nil {
					t.Fatalf("body is not sent chunked")
				}
				resp, body := send(t, newClient(), req)
				checkEnvelope(t, resp, body, http.StatusRequestEntityTooLarge, app.CodePayloadTooLarge)
			}
		}
	})

	t.Run("BodyWithinLimitIsServed", func(t *testing.T) {
		t.Parallel()
		payload := `{"name":"` + strings.Repeat("x", edgeBodyLimit-100) + `"}`
		for _, expect := range []bool{false, true} {
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/edge/echo", strings.NewReader(payload))
			req.Header.Set("Content-Type", "application/json")
			if expect {
				req.Header.Set("Expect", "100-continue")
			}
			resp, body := send(t, newClient(), req)
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"name":"xxx`)) {
				t.Fatalf("expect %v: status %d: %.200s", expect, resp.StatusCode, body)
			}
		}
	})

	t.Run("LongRequestLineIs414", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int{9 << 10, 64 << 10} {
			req, _ := http.NewRequest(http.MethodGet, base+"/v1/edge/echo?q="+strings.Repeat("a", n), nil)
			resp, body := send(t, newClient(), req)
			checkEnvelope(t, resp, body, http.StatusRequestURITooLong, app.CodeURITooLong)
		}
	})

	t.Run("LargeHeadersAre431", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/edge/echo?q=short", nil)
		for i := range 10 {
			req.Header.Set(fmt.Sprintf("X-Filler-%d", i), strings.Repeat("b", 1<<10))
		}
		resp, body := send(t, newClient(), req)
		checkEnvelope(t, resp, body, http.StatusRequestHeaderFieldsTooLarge, app.CodeHeadersTooLarge)
	})

	t.Run("RequestLineThatFitsIsRouted", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/nope?q="+strings.Repeat("a", 4<<10), nil)
		resp, body := send(t, newClient(), req)
		checkEnvelope(t, resp, body, http.StatusNotFound, app.CodeNotFound)
	})
}
