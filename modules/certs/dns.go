package certs

// DNS-01 providers, built from a request's dns_credentials (the provider's lego
// environment variable names → values) through each provider's config struct:
// nothing is set in the process environment. Endpoints named there are dialled
// only by the issuance job, never to link-local or metadata addresses.

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/cloudflare"
	"github.com/go-acme/lego/v4/providers/dns/digitalocean"
	"github.com/go-acme/lego/v4/providers/dns/gandiv5"
	"github.com/go-acme/lego/v4/providers/dns/godaddy"
	"github.com/go-acme/lego/v4/providers/dns/hetzner"
	"github.com/go-acme/lego/v4/providers/dns/httpreq"
	"github.com/go-acme/lego/v4/providers/dns/ovh"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
	"github.com/go-acme/lego/v4/providers/dns/route53"
)

// dnsProviderSpec is what a DNS provider accepts.
type dnsProviderSpec struct {
	required, optional []string
	// build makes the provider; hc is the client for its API (guardedHTTPClient).
	build func(creds map[string]string, hc *http.Client) (challenge.Provider, error)
}

const dnsPropagationTimeout = 2 * time.Minute

var dnsProviders = map[string]dnsProviderSpec{
	"httpreq": {
		required: []string{httpreq.EnvEndpoint},
		optional: []string{httpreq.EnvMode, httpreq.EnvUsername, httpreq.EnvPassword},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			u, err := url.Parse(c[httpreq.EnvEndpoint])
			if err != nil {
				return nil, err
			}
			return httpreq.NewDNSProviderConfig(&httpreq.Config{Endpoint: u, Mode: c[httpreq.EnvMode], Username: c[httpreq.EnvUsername],
				Password: c[httpreq.EnvPassword], PropagationTimeout: dnsPropagationTimeout, PollingInterval: 2 * time.Second, HTTPClient: hc})
		},
	},
	"rfc2136": {
		required: []string{rfc2136.EnvNameserver},
		optional: []string{rfc2136.EnvTSIGKey, rfc2136.EnvTSIGSecret, rfc2136.EnvTSIGAlgorithm, rfc2136.EnvTTL},
		build: func(c map[string]string, _ *http.Client) (challenge.Provider, error) {
			ttl := 120
			if s := c[rfc2136.EnvTTL]; s != "" {
				n, err := strconv.Atoi(s)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", rfc2136.EnvTTL, err)
				}
				ttl = n
			}
			alg := c[rfc2136.EnvTSIGAlgorithm]
			if alg == "" {
				alg = "hmac-sha256."
			}
			return rfc2136.NewDNSProviderConfig(&rfc2136.Config{Nameserver: c[rfc2136.EnvNameserver], TSIGKey: c[rfc2136.EnvTSIGKey],
				TSIGSecret: c[rfc2136.EnvTSIGSecret], TSIGAlgorithm: alg, TTL: ttl, PropagationTimeout: dnsPropagationTimeout,
				PollingInterval: 2 * time.Second, DNSTimeout: 10 * time.Second, SequenceInterval: time.Minute})
		},
	},
	"cloudflare": {
		optional: []string{cloudflare.EnvDNSAPIToken, cloudflare.EnvZoneAPIToken, cloudflare.EnvEmail, cloudflare.EnvAPIKey},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			return cloudflare.NewDNSProviderConfig(&cloudflare.Config{AuthToken: c[cloudflare.EnvDNSAPIToken], ZoneToken: c[cloudflare.EnvZoneAPIToken],
				AuthEmail: c[cloudflare.EnvEmail], AuthKey: c[cloudflare.EnvAPIKey], TTL: 120, PropagationTimeout: dnsPropagationTimeout,
				PollingInterval: 2 * time.Second, HTTPClient: hc})
		},
	},
	"route53": {
		required: []string{route53.EnvAccessKeyID, route53.EnvSecretAccessKey},
		optional: []string{route53.EnvRegion, route53.EnvHostedZoneID, route53.EnvAssumeRoleArn, route53.EnvExternalID, route53.EnvPrivateZone},
		build: func(c map[string]string, _ *http.Client) (challenge.Provider, error) {
			region := c[route53.EnvRegion]
			if region == "" {
				region = "us-east-1"
			}
			return route53.NewDNSProviderConfig(&route53.Config{AccessKeyID: c[route53.EnvAccessKeyID], SecretAccessKey: c[route53.EnvSecretAccessKey],
				Region: region, HostedZoneID: c[route53.EnvHostedZoneID], AssumeRoleArn: c[route53.EnvAssumeRoleArn], ExternalID: c[route53.EnvExternalID],
				PrivateZone: c[route53.EnvPrivateZone] == "true", MaxRetries: 5, TTL: 10, WaitForRecordSetsChanged: true,
				PropagationTimeout: dnsPropagationTimeout, PollingInterval: 4 * time.Second})
		},
	},
	"digitalocean": {
		required: []string{digitalocean.EnvAuthToken},
		optional: []string{digitalocean.EnvAPIUrl},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			return digitalocean.NewDNSProviderConfig(&digitalocean.Config{BaseURL: c[digitalocean.EnvAPIUrl], AuthToken: c[digitalocean.EnvAuthToken],
				TTL: 30, PropagationTimeout: dnsPropagationTimeout, PollingInterval: 5 * time.Second, HTTPClient: hc})
		},
	},
	"hetzner": {
		required: []string{hetzner.EnvAPIKey},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			return hetzner.NewDNSProviderConfig(&hetzner.Config{APIKey: c[hetzner.EnvAPIKey], TTL: 120,
				PropagationTimeout: dnsPropagationTimeout, PollingInterval: 2 * time.Second, HTTPClient: hc})
		},
	},
	"gandiv5": {
		optional: []string{gandiv5.EnvPersonalAccessToken, gandiv5.EnvAPIKey},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			return gandiv5.NewDNSProviderConfig(&gandiv5.Config{PersonalAccessToken: c[gandiv5.EnvPersonalAccessToken], APIKey: c[gandiv5.EnvAPIKey],
				TTL: 300, PropagationTimeout: dnsPropagationTimeout, PollingInterval: 5 * time.Second, HTTPClient: hc})
		},
	},
	"ovh": {
		required: []string{ovh.EnvEndpoint},
		optional: []string{ovh.EnvApplicationKey, ovh.EnvApplicationSecret, ovh.EnvConsumerKey, ovh.EnvClientID, ovh.EnvClientSecret, ovh.EnvAccessToken},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			cfg := &ovh.Config{APIEndpoint: c[ovh.EnvEndpoint], ApplicationKey: c[ovh.EnvApplicationKey], ApplicationSecret: c[ovh.EnvApplicationSecret],
				ConsumerKey: c[ovh.EnvConsumerKey], AccessToken: c[ovh.EnvAccessToken], TTL: 120,
				PropagationTimeout: dnsPropagationTimeout, PollingInterval: 2 * time.Second, HTTPClient: hc}
			if c[ovh.EnvClientID] != "" || c[ovh.EnvClientSecret] != "" {
				cfg.OAuth2Config = &ovh.OAuth2Config{ClientID: c[ovh.EnvClientID], ClientSecret: c[ovh.EnvClientSecret]}
			}
			return ovh.NewDNSProviderConfig(cfg)
		},
	},
	"godaddy": {
		required: []string{godaddy.EnvAPIKey, godaddy.EnvAPISecret},
		build: func(c map[string]string, hc *http.Client) (challenge.Provider, error) {
			return godaddy.NewDNSProviderConfig(&godaddy.Config{APIKey: c[godaddy.EnvAPIKey], APISecret: c[godaddy.EnvAPISecret], TTL: 600,
				PropagationTimeout: dnsPropagationTimeout, PollingInterval: 2 * time.Second, HTTPClient: hc})
		},
	},
}

// dnsProviderNames lists the supported DNS providers.
func dnsProviderNames() []string {
	var out []string
	for n := range dnsProviders {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// checkDNSCredentials returns a message when creds do not fit the provider.
func checkDNSCredentials(provider string, creds map[string]string) (field, msg string) {
	spec := dnsProviders[provider]
	for _, k := range spec.required {
		if strings.TrimSpace(creds[k]) == "" {
			return "dns_credentials." + k, "is required by " + provider
		}
	}
	keys := make([]string, 0, len(creds))
	for k := range creds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(spec.required, k) && !slices.Contains(spec.optional, k) {
			return "dns_credentials." + k, fmt.Sprintf("is not a setting of %s (known: %s)", provider, strings.Join(append(append([]string{}, spec.required...), spec.optional...), ", "))
		}
		if len(creds[k]) > 4096 {
			return "dns_credentials." + k, "must be at most 4096 characters"
		}
	}
	for _, k := range []string{httpreq.EnvEndpoint, cloudflare.EnvBaseURL, digitalocean.EnvAPIUrl} {
		if v := creds[k]; v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return "dns_credentials." + k, "must be an http(s) URL"
			}
			if ip := net.ParseIP(u.Hostname()); ip != nil && blockedAddr(ip) {
				return "dns_credentials." + k, "must not point to a link-local or metadata address"
			}
		}
	}
	if v := creds[rfc2136.EnvNameserver]; v != "" {
		host := v
		if h, _, err := net.SplitHostPort(v); err == nil {
			host = h
		}
		if ip := net.ParseIP(host); ip != nil && blockedAddr(ip) {
			return "dns_credentials." + rfc2136.EnvNameserver, "must not point to a link-local or metadata address"
		}
	}
	return "", ""
}
