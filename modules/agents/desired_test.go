package agents

import (
	"testing"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestService_Checksum(t *testing.T) {
	t.Parallel()
	update := func() *agentv1.ConfigUpdate {
		return &agentv1.ConfigUpdate{
			ConfigId: "v3-abc", Version: 3, Checksum: "stale",
			VirtualHosts: []*agentv1.VirtualHost{{Id: "1", Name: "shop", ServerName: "shop.example.com", ListenPort: 80}},
			Certificates: map[string]*agentv1.Certificate{
				"b": {Id: "b", CertificatePem: "B"}, "a": {Id: "a", CertificatePem: "A"}, "c": {Id: "c"},
			},
			AgentPolicy: &agentv1.AgentPolicy{AutoRestart: true},
		}
	}
	base := Checksum(update())
	if len(base) != 64 {
		t.Fatalf("checksum %q is not hex SHA-256", base)
	}
	for range 20 {
		if Checksum(update()) != base {
			t.Fatalf("checksum depends on map order")
		}
	}
	u := update()
	u.ConfigId, u.Version, u.Checksum = "other", 9, base
	if Checksum(u) != base {
		t.Fatalf("checksum depends on config_id, version or checksum")
	}
	if u.ConfigId != "other" || u.Checksum != base {
		t.Fatalf("Checksum modified its argument")
	}
	for name, change := range map[string]func(*agentv1.ConfigUpdate){
		"ServerName":  func(u *agentv1.ConfigUpdate) { u.VirtualHosts[0].ServerName = "www.example.com" },
		"Certificate": func(u *agentv1.ConfigUpdate) { u.Certificates["a"].PrivateKeyPem = "K" },
		"Policy":      func(u *agentv1.ConfigUpdate) { u.AgentPolicy.AutoRestart = false },
		"Stream":      func(u *agentv1.ConfigUpdate) { u.Streams = []*agentv1.Stream{{Id: "s"}} },
	} {
		u := update()
		change(u)
		if Checksum(u) == base {
			t.Fatalf("changing %s kept the checksum", name)
		}
	}
}
