package certs

import (
	"net/http"
	"testing"
)

// TestService_DNSProvidersBuild builds every supported DNS provider from a complete
// set of its credentials, as the issuance job does, without touching the
// process environment: a provider whose config the master fills wrongly
// fails here rather than in a user's first dns-01 order. The providers'
// APIs are external services and are not called; httpreq and rfc2136 are
// exercised against real servers in the ACME lifecycle tests.
func TestService_DNSProvidersBuild(t *testing.T) {
	t.Parallel()
	creds := map[string]map[string]string{
		"cloudflare":   {"CLOUDFLARE_DNS_API_TOKEN": "token"},
		"digitalocean": {"DO_AUTH_TOKEN": "token"},
		"gandiv5":      {"GANDIV5_PERSONAL_ACCESS_TOKEN": "token"},
		"godaddy":      {"GODADDY_API_KEY": "key", "GODADDY_API_SECRET": "secret"},
		"hetzner":      {"HETZNER_API_KEY": "key"},
		"httpreq":      {"HTTPREQ_ENDPOINT": "https://dns-api.example.com"},
		"ovh":          {"OVH_ENDPOINT": "ovh-eu", "OVH_APPLICATION_KEY": "ak", "OVH_APPLICATION_SECRET": "as", "OVH_CONSUMER_KEY": "ck"},
		"rfc2136":      {"RFC2136_NAMESERVER": "127.0.0.1:53"},
		"route53":      {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"},
	}
	for _, name := range dnsProviderNames() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, ok := creds[name]
			if !ok {
				t.Fatalf("no test credentials for DNS provider %s", name)
			}
			if field, msg := checkDNSCredentials(name, c); field != "" {
				t.Fatalf("credentials refused: %s %s", field, msg)
			}
			p, err := dnsProviders[name].build(c, http.DefaultClient)
			if err != nil || p == nil {
				t.Fatalf("build %s: %v", name, err)
			}
		})
	}
	if len(creds) != len(dnsProviderNames()) {
		t.Errorf("test credentials for %d providers, master supports %d", len(creds), len(dnsProviderNames()))
	}
}
