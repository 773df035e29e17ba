package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPI_ValidDocument loads the served /v1/openapi.json with kin-openapi
// and fails on any error its validator reports, and when an operation lacks a
// response schema, or a body-taking operation lacks a request schema.
func TestOpenAPI_ValidDocument(t *testing.T) {
	m := newMaster(t)
	status, body := m.do(t, http.MethodGet, "/v1/openapi.json", "", nil)
	if status != http.StatusOK {
		t.Fatalf("openapi.json: %d", status)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(body)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || op.Summary == "" {
				t.Errorf("%s %s: no operationId or summary", method, path)
			}
			success := 0
			for code, r := range op.Responses.Map() {
				if code[0] != '1' && code[0] != '2' {
					continue
				}
				success++
				if code == "204" || code[0] == '1' {
					continue
				}
				if len(r.Value.Content) == 0 {
					t.Errorf("%s %s: response %s has no schema", method, path, code)
				}
				for mt, media := range r.Value.Content {
					if media.Schema == nil {
						t.Errorf("%s %s: response %s %s has no schema", method, path, code, mt)
					}
				}
			}
			if success != 1 {
				t.Errorf("%s %s: %d success responses, want 1", method, path, success)
			}
			if op.RequestBody != nil {
				media := op.RequestBody.Value.Content.Get("application/json")
				if media == nil || media.Schema == nil {
					t.Errorf("%s %s: request body without a JSON schema", method, path)
				}
			}
		}
	}
	for _, name := range []string{"bearerAuth", "apiKey"} {
		if doc.Components.SecuritySchemes[name] == nil {
			t.Errorf("security scheme %s missing", name)
		}
	}
	// The main calls carry examples, and each validated against its schema above.
	for _, c := range []struct {
		method, path  string
		request, resp bool
	}{
		{http.MethodPost, "/auth/login", true, true},
		{http.MethodGet, "/organizations", false, true},
		{http.MethodPost, "/workspaces/{id}/virtual-hosts", true, false},
		{http.MethodPost, "/workspaces/{id}/certificates", true, false},
	} {
		op := doc.Paths.Find(c.path).GetOperation(c.method)
		if op == nil {
			t.Errorf("%s %s missing", c.method, c.path)
			continue
		}
		if c.request && (op.RequestBody == nil || op.RequestBody.Value.Content.Get("application/json").Example == nil) {
			t.Errorf("%s %s: no request example", c.method, c.path)
		}
		if c.resp {
			var found bool
			for code, r := range op.Responses.Map() {
				if code[0] == '2' && r.Value.Content.Get("application/json") != nil && r.Value.Content.Get("application/json").Example != nil {
					found = true
				}
			}
			if !found {
				t.Errorf("%s %s: no response example", c.method, c.path)
			}
		}
	}
}

// clientSpec is the copy of /v1/openapi.json the test client in e2e/apiclient
// is generated from.
const clientSpec = "e2e/apiclient/openapi.json"

// TestOpenAPI_ClientSpecIsCurrent fails when the committed copy of the
// document the test client is generated from differs from the served one.
// With NXMESH_WRITE_OPENAPI=1 it writes the copy instead (go tool task
// generate does, then regenerates the client).
func TestOpenAPI_ClientSpecIsCurrent(t *testing.T) {
	m := newMaster(t)
	status, body := m.do(t, http.MethodGet, "/v1/openapi.json", "", nil)
	if status != http.StatusOK {
		t.Fatalf("openapi.json: %d", status)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, body, "", "  "); err != nil {
		t.Fatal(err)
	}
	indented.WriteByte('\n')
	if os.Getenv("NXMESH_WRITE_OPENAPI") == "1" {
		if err := os.WriteFile(clientSpec, indented.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	committed, err := os.ReadFile(clientSpec)
	if err != nil {
		t.Fatalf("%v (run: go tool task generate)", err)
	}
	if !bytes.Equal(committed, indented.Bytes()) {
		t.Fatalf("%s differs from the served /v1/openapi.json (run: go tool task generate)", clientSpec)
	}
}
