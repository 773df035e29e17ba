package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

// Client sends JSON requests to a master as one credential: in process to a
// mounted one (NewClient, after a.Mount), or over HTTP to a served one
// (NewHTTPClient). The zero Token sends anonymous requests. A bearer
// credential needs no CSRF token.
type Client struct {
	app  *app.App
	base string
	// HTTP sends the requests of an HTTP client (nil: http.DefaultClient).
	HTTP *http.Client
	// Token is sent as "Authorization: Bearer <Token>" (an access token or an
	// API key) when not empty.
	Token string
}

// NewClient returns an anonymous client of a, which serves the requests in
// process.
func NewClient(a *app.App) *Client { return &Client{app: a} }

// NewHTTPClient returns an anonymous client of the master served at baseURL
// (http://host:port).
func NewHTTPClient(baseURL string) *Client { return &Client{base: strings.TrimSuffix(baseURL, "/")} }

// As returns a copy of c that authenticates with token (an access token or an
// API key).
func (c *Client) As(token string) *Client {
	return &Client{app: c.app, base: c.base, HTTP: c.HTTP, Token: token}
}

// Response is an answer read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrorEnvelope is the error body every failure carries.
type ErrorEnvelope struct {
	Error struct {
		Code      string           `json:"code"`
		Message   string           `json:"message"`
		RequestID string           `json:"request_id"`
		Details   []app.FieldError `json:"details"`
	} `json:"error"`
}

// Do sends a request. body is JSON-encoded unless it is a string or []byte
// (sent as they are); a request with a body is sent as application/json.
// headers are name, value pairs.
func (c *Client) Do(t testing.TB, method, path string, body any, headers ...string) Response {
	t.Helper()
	r, err := c.Try(context.Background(), method, path, body, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// Try is Do that returns what keeps the request from being answered instead
// of failing the test: for a master that may be restarting, or for requests
// sent off the test's goroutine.
func (c *Client) Try(ctx context.Context, method, path string, body any, headers ...string) (Response, error) {
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			return Response{}, fmt.Errorf("encode body: %w", err)
		}
		rd = bytes.NewReader(raw)
	}
	var req *http.Request
	if c.base != "" {
		var err error
		if req, err = http.NewRequestWithContext(ctx, method, c.base+path, rd); err != nil {
			return Response{}, err
		}
	} else {
		req = httptest.NewRequestWithContext(ctx, method, path, rd)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	var resp *http.Response
	var err error
	if c.base != "" {
		hc := c.HTTP
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err = hc.Do(req)
	} else {
		resp, err = c.app.Fiber().Test(req, -1)
	}
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("read answer: %w", err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, nil
}

// Call sends a request, fails the test unless the status is want, and decodes
// the body into out (when out is not nil).
func (c *Client) Call(t testing.TB, method, path string, body any, want int, out any) Response {
	t.Helper()
	r := c.Do(t, method, path, body)
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.Status, want, r.Body)
	}
	if out != nil {
		r.Decode(t, out)
	}
	return r
}

// Decode unmarshals the body into v.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Envelope decodes the error envelope.
func (r Response) Envelope(t testing.TB) ErrorEnvelope {
	t.Helper()
	var e ErrorEnvelope
	r.Decode(t, &e)
	return e
}

// Expect fails the test unless the status is status and, when code is not
// empty, the envelope's code is code.
func (r Response) Expect(t testing.TB, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	if code != "" {
		if got := r.Envelope(t).Error.Code; got != code {
			t.Fatalf("error code %q, want %q; body %s", got, code, r.Body)
		}
	}
}

// APIError is an error envelope's code, message and the fields its details
// name.
type APIError struct {
	Code    string
	Message string
	Fields  []string
}

// Error decodes the error envelope into its code, message and fields.
func (r Response) Error(t testing.TB) APIError {
	t.Helper()
	e := r.Envelope(t)
	out := APIError{Code: e.Error.Code, Message: e.Error.Message}
	for _, d := range e.Error.Details {
		out.Fields = append(out.Fields, d.Field)
	}
	return out
}

// Fields returns the fields the envelope's details name.
func (r Response) Fields(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, d := range r.Envelope(t).Error.Details {
		out = append(out, d.Field)
	}
	return out
}
