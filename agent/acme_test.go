package main

import (
	"slices"
	"testing"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestACMETargets(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		vhs  []*agentv1.VirtualHost
		want []acmeTarget
	}{
		{"None", nil, nil},
		{"PlainDefaultPort", []*agentv1.VirtualHost{{ServerName: "a.test b.test"}}, []acmeTarget{{80, "a.test"}}},
		{"TLSOnlyIsNotPlain", []*agentv1.VirtualHost{{ServerName: "a.test", SslEnabled: true}}, nil},
		{"RedirectServerOn80", []*agentv1.VirtualHost{{ServerName: "a.test", SslEnabled: true, RedirectHttps: true}}, []acmeTarget{{80, "a.test"}}},
		{"HTTPPortOfTLSHost", []*agentv1.VirtualHost{{ServerName: "a.test", SslEnabled: true, HttpPort: 8080}}, []acmeTarget{{8080, "a.test"}}},
		{"RedirectOnHTTPPort", []*agentv1.VirtualHost{{ServerName: "a.test", SslEnabled: true, RedirectHttps: true, HttpPort: 8081}}, []acmeTarget{{8081, "a.test"}}},
		{"OnePerPort", []*agentv1.VirtualHost{{ServerName: "a.test", ListenPort: 8080}, {ServerName: "b.test", ListenPort: 8080}, {ServerName: "c.test"}},
			[]acmeTarget{{8080, "a.test"}, {80, "c.test"}}},
		{"Wildcards", []*agentv1.VirtualHost{{ServerName: "~^x www.* *.a.test", ListenPort: 81}, {ServerName: ".b.test", ListenPort: 82}, {ServerName: "~only", ListenPort: 83}},
			[]acmeTarget{{81, "nxmesh-acme-check.a.test"}, {82, "b.test"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := acmeTargets(&agentv1.ConfigUpdate{VirtualHosts: c.vhs})
			if !slices.Equal(got, c.want) {
				t.Errorf("acmeTargets = %v, want %v", got, c.want)
			}
		})
	}
}
