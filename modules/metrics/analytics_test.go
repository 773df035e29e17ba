package metrics

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestAPI_AnalyticsTops ingests known entries through the logs ingest and
// reads the tops over ranges and filters.
func TestAPI_AnalyticsTops(t *testing.T) {
	b := setup(t)
	vh, stream := uuid.New(), uuid.New()
	at := func(sec int) time.Time { return b.base.Add(time.Duration(sec) * time.Second) }
	var entries []*agentv1.AccessLogEntry
	add := func(n int, e func(i int) *agentv1.AccessLogEntry) {
		for i := 0; i < n; i++ {
			entries = append(entries, e(i))
		}
	}
	// api.example.com: 5 requests (4 to /users with queries, 1 to /health),
	// www.example.com: 3 (one with the host in upper case), a stream's 2
	// sessions; clients 10.0.0.1 ×4, 10.0.0.2 ×3, 10.0.0.3 ×3.
	add(4, func(i int) *agentv1.AccessLogEntry {
		return request(at(10+i), "api.example.com", "/users?page="+string(rune('1'+i)), 200, "10.0.0.1", "curl/8.5", vh)
	})
	add(1, func(int) *agentv1.AccessLogEntry {
		return request(at(20), "api.example.com", "/health", 503, "10.0.0.2", "", vh)
	})
	add(2, func(i int) *agentv1.AccessLogEntry {
		return request(at(30+i), "www.example.com", "/", 404, "10.0.0.2", "Mozilla/5.0", uuid.Nil)
	})
	add(1, func(int) *agentv1.AccessLogEntry {
		return request(at(40), "WWW.Example.com.", "/", 200, "10.0.0.3", "Mozilla/5.0", uuid.Nil)
	})
	add(2, func(int) *agentv1.AccessLogEntry { return session(at(50), stream, 200, 10, 20, 1000, "10.0.0.3") })
	b.ingest(t, b.online, "tops-1", entries...)
	// Outside the range below, and of the other agent.
	b.ingest(t, b.online, "tops-2", request(b.base.Add(2*time.Hour), "late.example.com", "/late", 200, "10.9.9.9", "late", uuid.Nil))
	b.ingest(t, b.offline, "tops-3", request(at(60), "other.example.com", "/other", 500, "10.0.0.9", "other", uuid.Nil))

	path := "/v1/workspaces/" + b.ws.String() + "/analytics"
	rng := map[string]string{"from": rfc(b.base), "to": rfc(b.base.Add(time.Hour))}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range rng {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	tv := func(pairs ...any) []TopValue {
		out := []TopValue{}
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, TopValue{Value: pairs[i].(string), Count: int64(pairs[i+1].(int))})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		params map[string]string
		want   Analytics
	}{
		{"every entry of the range", with(nil), Analytics{
			RequestsTotal:   11,
			Hosts:           tv("api.example.com", 5, "www.example.com", 2, "WWW.Example.com.", 1, "other.example.com", 1),
			Paths:           tv("/users", 4, "/", 3, "/health", 1, "/other", 1),
			StatusCodes:     tv("200", 7, "404", 2, "500", 1, "503", 1),
			ClientAddresses: tv("10.0.0.1", 4, "10.0.0.2", 3, "10.0.0.3", 3, "10.0.0.9", 1),
			UserAgents:      tv("curl/8.5", 4, "Mozilla/5.0", 3, "other", 1),
		}},
		{"limit", with(map[string]string{"limit": "1"}), Analytics{
			RequestsTotal: 11, Hosts: tv("api.example.com", 5), Paths: tv("/users", 4), StatusCodes: tv("200", 7),
			ClientAddresses: tv("10.0.0.1", 4), UserAgents: tv("curl/8.5", 4),
		}},
		{"one agent", with(map[string]string{"agent_id": b.offline.String()}), Analytics{
			RequestsTotal: 1, Hosts: tv("other.example.com", 1), Paths: tv("/other", 1), StatusCodes: tv("500", 1),
			ClientAddresses: tv("10.0.0.9", 1), UserAgents: tv("other", 1),
		}},
		{"a host, as the rollups name it", with(map[string]string{"host": "www.EXAMPLE.com"}), Analytics{
			RequestsTotal: 3, Hosts: tv("www.example.com", 2, "WWW.Example.com.", 1), Paths: tv("/", 3), StatusCodes: tv("404", 2, "200", 1),
			ClientAddresses: tv("10.0.0.2", 2, "10.0.0.3", 1), UserAgents: tv("Mozilla/5.0", 3),
		}},
		{"a virtual host", with(map[string]string{"virtual_host_id": vh.String()}), Analytics{
			RequestsTotal: 5, Hosts: tv("api.example.com", 5), Paths: tv("/users", 4, "/health", 1), StatusCodes: tv("200", 4, "503", 1),
			ClientAddresses: tv("10.0.0.1", 4, "10.0.0.2", 1), UserAgents: tv("curl/8.5", 4),
		}},
		{"a stream: sessions have no host, path nor user agent", with(map[string]string{"virtual_host_id": stream.String()}), Analytics{
			RequestsTotal: 2, Hosts: tv(), Paths: tv(), StatusCodes: tv("200", 2), ClientAddresses: tv("10.0.0.3", 2), UserAgents: tv(),
		}},
		{"a range without entries", map[string]string{"from": rfc(b.base.Add(-time.Hour)), "to": rfc(b.base)}, Analytics{
			Hosts: tv(), Paths: tv(), StatusCodes: tv(), ClientAddresses: tv(), UserAgents: tv(),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Analytics
			b.get(t, path, tc.params, &got)
			got.From, got.To = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("analytics\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// The range bounds are the query's.
	var got Analytics
	b.get(t, path, rng, &got)
	if !got.From.Equal(b.base) || !got.To.Equal(b.base.Add(time.Hour)) {
		t.Fatalf("from %s to %s", got.From, got.To)
	}
}

// TestAPI_AnalyticsBadInput answers 422 naming the parameter, and 404/403
// outside the caller's workspaces.
func TestAPI_AnalyticsBadInput(t *testing.T) {
	b := setup(t)
	path := "/v1/workspaces/" + b.ws.String() + "/analytics"
	now := time.Now().UTC()
	for _, tc := range []struct {
		name   string
		params map[string]string
		field  string
	}{
		{"from not a time", map[string]string{"from": "yesterday"}, "from"},
		{"to not a time", map[string]string{"to": "2026-13-01T00:00:00Z"}, "to"},
		{"from after to", map[string]string{"from": rfc(now), "to": rfc(now.Add(-time.Hour))}, "from"},
		{"range too long", map[string]string{"from": rfc(now.Add(-32 * 24 * time.Hour)), "to": rfc(now)}, "from"},
		{"limit zero", map[string]string{"limit": "0"}, "limit"},
		{"limit too large", map[string]string{"limit": "101"}, "limit"},
		{"limit not a number", map[string]string{"limit": "ten"}, "limit"},
		{"agent_id not a UUID", map[string]string{"agent_id": "edge-1"}, "agent_id"},
		{"virtual_host_id not a UUID", map[string]string{"virtual_host_id": "www"}, "virtual_host_id"},
		{"host not a host name", map[string]string{"host": strings.Repeat("a", 254)}, "host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := url.Values{}
			for k, x := range tc.params {
				v.Set(k, x)
			}
			r := b.client.Do(t, http.MethodGet, path+"?"+v.Encode(), nil)
			if r.Status != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", r.Status, r.Body)
			}
			env := r.Envelope(t)
			if len(env.Error.Details) == 0 || env.Error.Details[0].Field != tc.field {
				t.Fatalf("details %+v, want field %s", env.Error.Details, tc.field)
			}
		})
	}
	// Every bad parameter is named at once.
	r := b.client.Do(t, http.MethodGet, path+"?from=x&limit=0&agent_id=y", nil)
	if got := r.Envelope(t).Error.Details; len(got) != 3 {
		t.Fatalf("details %+v, want from, agent_id and limit", got)
	}
	if r := b.client.Do(t, http.MethodGet, "/v1/workspaces/"+uuid.NewString()+"/analytics", nil); r.Status != http.StatusNotFound {
		t.Fatalf("unknown workspace: status %d", r.Status)
	}
}
