package apptest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

// Client sends JSON requests to a mounted master (a.Mount) as one credential.
// The zero Token sends anonymous requests.
type Client struct {
	app *app.App
	// Token is sent as "Authorization: Bearer <Token>" (an access token or an
	// API key) when not empty.
	Token string
}

// NewClient returns an anonymous client of a.
func NewClient(a *app.App) *Client { return &Client{app: a} }

// As returns a copy of c that authenticates with token.
func (c *Client) As(token string) *Client { return &Client{app: c.app, Token: token} }

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
			t.Fatalf("encode %s %s body: %v", method, path, err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp := Do(t, c.app, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
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

// Fields returns the fields the envelope's details name.
func (r Response) Fields(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, d := range r.Envelope(t).Error.Details {
		out = append(out, d.Field)
	}
	return out
}
