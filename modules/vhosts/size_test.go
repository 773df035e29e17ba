package vhosts

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/upstreams"
)

// paddedValue is a header value of about n bytes of text that compresses the
// way configuration text does (words, numbers, punctuation), different for
// each seed.
func paddedValue(seed string, n int) string {
	words := []string{"max-age=31536000", "includeSubDomains", "preload", "default-src", "'self'", "https:", "img-src", "data:", "script-src", "nonce"}
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s-%s-%d; ", words[i%len(words)], seed, i*7919%100003)
	}
	return b.String()[:n]
}

// paddedLocations are n locations with headers custom headers of valueLen
// bytes each: about n*headers*valueLen bytes of configuration.
func paddedLocations(seed string, n, headers, valueLen int) []any {
	locs := make([]any, n)
	for i := range locs {
		hs := make([]any, headers)
		for j := range hs {
			hs[j] = map[string]any{"name": fmt.Sprintf("X-Pad-%d", j), "value": paddedValue(fmt.Sprintf("%s%d.%d", seed, i, j), valueLen)}
		}
		locs[i] = map[string]any{"path": fmt.Sprintf("/p%d", i), "proxy_pass": "http://10.0.0.1:8080", "custom_headers": hs}
	}
	return locs
}

// typedLocations is paddedLocations for the service's input.
func typedLocations(seed string, n, headers, valueLen int) []Location {
	locs := make([]Location, n)
	for i := range locs {
		hs := make([]Header, headers)
		for j := range hs {
			hs[j] = Header{Name: fmt.Sprintf("X-Pad-%d", j), Value: paddedValue(fmt.Sprintf("%s%d.%d", seed, i, j), valueLen)}
		}
		locs[i] = Location{Path: fmt.Sprintf("/p%d", i), ProxyPass: "http://10.0.0.1:8080", CustomHeaders: hs}
	}
	return locs
}

func TestAPI_ConfigChangedUpdateSize(t *testing.T) {
	t.Parallel()
	const limit = 256 << 10
	e := newEnv(t, func(cfg *app.Config) { cfg.GRPC.MaxMessageBytes = limit })

	// expectTooBig fails unless raw is a 422 at "body" whose message states
	// the limit and names want as the largest part.
	expectTooBig := func(t *testing.T, status int, raw []byte, want string) {
		t.Helper()
		var body apiError
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("decode error body: %v", err)
		}
		d := body.Error.Details
		if status != http.StatusUnprocessableEntity || len(d) != 1 || d[0].Field != "body" || d[0].Code != app.FieldTooLong {
			t.Fatalf("status %d, details %.500v; want a 422 with one TOO_LONG detail at body", status, d)
		}
		for _, s := range []string{"the workspace's configuration for agents would be ", "over the limit of 0.25 MiB (grpc.max_message_bytes)", want} {
			if !strings.Contains(d[0].Message, s) {
				t.Errorf("message %q does not contain %q", d[0].Message, s)
			}
		}
	}
	vhostCount := func(t *testing.T, b *bundle) int64 {
		t.Helper()
		var n int64
		if err := b.db.Model(&vhostRow{}).Where("workspace_id = ?", b.ws).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("RefusesCreateOverTheLimitAndStoresNothing", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		before := b.version(t)
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), map[string]any{
			"name": "huge", "server_name": "huge.example.com", "locations": paddedLocations("h", 2, 40, 4000),
		}, "")
		expectTooBig(t, status, raw, `largest part is virtual host "huge"`)
		if v := b.version(t); v != before {
			t.Errorf("config version %d after a refused change, want %d", v, before)
		}
		if n := vhostCount(t, b); n != 0 {
			t.Errorf("%d virtual hosts stored after a refused create", n)
		}
	})

	t.Run("RefusesPatchOverTheLimitAndKeepsTheHost", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		v := b.createVHost(t, map[string]any{
			"name": "site", "server_name": "site.example.com", "locations": paddedLocations("s", 1, 25, 4000),
		})
		before := b.version(t)
		path := "/v1/virtual-hosts/" + v.ID.String()
		status, raw := b.do(t, b.tokens["operator"], http.MethodPatch, path, map[string]any{
			"locations": paddedLocations("t", 2, 40, 4000),
		}, "")
		expectTooBig(t, status, raw, `virtual host "site"`)
		if got := b.version(t); got != before {
			t.Errorf("config version %d after a refused change, want %d", got, before)
		}
		var after VirtualHost
		b.as(t, "viewer", http.MethodGet, path, nil, http.StatusOK, &after)
		if len(after.Locations) != 1 || after.Locations[0].Path != "/p0" {
			t.Errorf("the refused PATCH changed the host: %d locations", len(after.Locations))
		}
	})

	t.Run("RefusesUpstreamChangeOverTheLimit", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.createVHost(t, map[string]any{
			"name": "api", "server_name": "api.example.com",
			"locations": append(paddedLocations("u", 1, 10, 4000), map[string]any{"path": "/", "upstream_id": b.upstream.ID}),
		})
		before := b.version(t)
		servers := make([]any, upstreams.MaxServers)
		for i := range servers {
			// A 239-character host name: four 59-character labels.
			label := fmt.Sprintf("s%058d", i)
			servers[i] = map[string]any{"address": fmt.Sprintf("%s.%s.%s.%s:8080", label, label, label, label)}
		}
		status, raw := b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/upstreams/"+b.upstream.ID.String(),
			map[string]any{"servers": servers}, "")
		expectTooBig(t, status, raw, `largest part is upstream "api-backend"`)
		if got := b.version(t); got != before {
			t.Errorf("config version %d after a refused change, want %d", got, before)
		}
		u, err := b.ups.Get(b.ctx, b.upstream.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(u.Servers) != 2 {
			t.Errorf("the refused PATCH left %d servers, want the 2 it had", len(u.Servers))
		}
	})

	t.Run("AcceptsChangesUnderTheLimit", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		before := b.version(t)
		b.createVHost(t, map[string]any{
			"name": "big", "server_name": "big.example.com", "locations": paddedLocations("b", 2, 25, 4000),
		})
		if got := b.version(t); got != before+1 {
			t.Errorf("config version %d, want %d", got, before+1)
		}
	})

	t.Run("LetsAnOversizedWorkspaceShrinkButNotGrow", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a := b.createVHost(t, map[string]any{"name": "a", "server_name": "a.example.com", "locations": paddedLocations("a", 1, 25, 4000)})
		c := b.createVHost(t, map[string]any{"name": "c", "server_name": "c.example.com", "locations": paddedLocations("c", 1, 25, 4000)})
		// The limit is lowered below what the workspace already has.
		low := NewService(b.app.Deps, Options{Upstreams: b.ups, Certs: b.certs})
		low.maxUpdateBytes = 64 << 10

		_, err := low.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
			Name: "more", ServerName: "more.example.com", Locations: []Location{{Path: "/", ProxyPass: "http://10.0.0.1:8080"}},
		})
		var ve *app.ValidationError
		if !errors.As(err, &ve) || ve.Fields[0].Field != "body" {
			t.Fatalf("growing an oversized workspace: %v, want a validation error at body", err)
		}
		if err := low.DeleteVirtualHost(b.ctx, c.ID); err != nil {
			t.Fatalf("delete from an oversized workspace: %v", err)
		}
		if _, err := low.UpdateVirtualHost(b.ctx, a.ID, func(in *VirtualHostInput) error {
			in.Locations = typedLocations("a", 1, 20, 4000)
			return nil
		}); err != nil {
			t.Fatalf("shrink a host of an oversized workspace: %v", err)
		}
	})
}
