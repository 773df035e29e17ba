package app_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/nxmesh/nxmesh/app"
)

type embeddedFields struct {
	Hidden string `json:"hidden,omitempty"`
}

type widgetInput struct {
	Name  string  `json:"name"`
	Note  *string `json:"note"`
	Extra string  `json:"extra,omitempty"`
	embeddedFields
}

type widget struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// TestOpenAPI_ValidForEveryRouteShape builds the document of routes of every
// shape (list, body, stream, WebSocket, public) and validates it with
// kin-openapi, then checks what each shape documents.
func TestOpenAPI_ValidForEveryRouteShape(t *testing.T) {
	routes := []app.Route{
		{Kind: app.KindAPI, Method: "GET", Path: "/v1/widgets", Access: app.Authenticated(), Module: "widgets",
			Doc: app.Doc{Summary: "List widgets", Tag: "widgets", Response: widget{}, List: true}},
		{Kind: app.KindAPI, Method: "POST", Path: "/v1/widgets", Access: app.Authenticated(), Module: "widgets",
			Doc: app.Doc{Summary: "Create a widget", Tag: "widgets", Body: widgetInput{}, Response: widget{}, Status: 201}},
		{Kind: app.KindAPI, Method: "GET", Path: "/v1/widgets/:id/stream", Access: app.Authenticated(), Module: "widgets",
			Doc: app.Doc{Summary: "Widget events", Tag: "widgets", Stream: app.StreamSSE}},
		{Kind: app.KindAPI, Method: "GET", Path: "/v1/ws/widgets", Access: app.Public(), Module: "widgets",
			Doc: app.Doc{Summary: "Widget socket", Tag: "widgets", Stream: app.StreamWebSocket}},
		{Kind: app.KindUI, Method: "GET", Path: "/widgets", Access: app.Public(), Module: "widgets",
			Doc: app.Doc{Summary: "Widgets page"}},
	}
	raw, err := json.Marshal(app.OpenAPI(routes, "test"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate: %v\n%s", err, raw)
	}
	if doc.Paths.Find("/widgets/{id}/stream") == nil || doc.Paths.Len() != 3 {
		t.Fatalf("paths %v, want the three /v1 paths without the prefix", doc.Paths.InMatchingOrder())
	}

	tests := []struct {
		name  string
		check func() bool
	}{
		{"list meta is a schema, not a reference to itself", func() bool {
			s := doc.Components.Schemas["ListMeta"]
			return s != nil && s.Ref == "" && s.Value.Properties["total"] != nil
		}},
		{"list wraps the element in data and meta", func() bool {
			s := doc.Paths.Find("/widgets").Get.Responses.Status(200).Value.Content.Get("application/json").Schema.Value
			return s.Properties["data"] != nil && s.Properties["meta"].Ref == "#/components/schemas/ListMeta"
		}},
		{"body schema has the fields of an unexported embedded struct", func() bool {
			s := doc.Components.Schemas["WidgetInput"]
			return s != nil && s.Value.Properties["hidden"] != nil && s.Value.Properties["name"] != nil
		}},
		{"required are the fields without omitempty nor pointer", func() bool {
			r := doc.Components.Schemas["WidgetInput"].Value.Required
			return len(r) == 1 && r[0] == "name"
		}},
		{"pointer fields are nullable", func() bool {
			return doc.Components.Schemas["WidgetInput"].Value.Properties["note"].Value.Type.Includes("null")
		}},
		{"create answers its status with 422 for bad bodies", func() bool {
			r := doc.Paths.Find("/widgets").Post.Responses
			return r.Status(201) != nil && r.Status(422) != nil && r.Status(401) != nil
		}},
		{"server-sent events are text/event-stream", func() bool {
			r := doc.Paths.Find("/widgets/{id}/stream").Get.Responses
			return r.Status(200).Value.Content.Get("text/event-stream") != nil && r.Status(406) != nil
		}},
		{"a WebSocket answers 101 and 426, with no security on a public route", func() bool {
			op := doc.Paths.Find("/ws/widgets").Get
			return op.Responses.Status(101) != nil && op.Responses.Status(426) != nil && op.Security != nil && len(*op.Security) == 0
		}},
		{"bearer and API key schemes", func() bool {
			b, k := doc.Components.SecuritySchemes["bearerAuth"], doc.Components.SecuritySchemes["apiKey"]
			return b != nil && b.Value.Scheme == "bearer" && k != nil && k.Value.In == "header" && k.Value.Name == "X-API-Key"
		}},
		{"tags are listed", func() bool { return len(doc.Tags) == 1 && doc.Tags[0].Name == "widgets" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.check() {
				t.Errorf("not so in:\n%s", raw)
			}
		})
	}
}
