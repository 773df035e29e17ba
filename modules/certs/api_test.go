package certs_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/certs"
)

func TestAPI_Certificates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.pki

	t.Run("UploadsChainAndDerivesFields", func(t *testing.T) {
		t.Parallel()
		key := rsaKey(t, 2048)
		leaf, _ := p.issue(t, leafSpec{cn: "api.example.com", dns: []string{"api.example.com", "www.example.com"}, key: key}, false)
		keyPEM := b.secret(rsaKeyPKCS1PEM(key))
		ws := b.newWorkspace(t)

		status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
			map[string]any{"certificate_pem": certsPEM(leaf, p.inter), "private_key_pem": keyPEM, "name": "API edge"})
		if status != http.StatusCreated {
			t.Fatalf("upload: %d %s", status, body)
		}
		var raw map[string]any
		mustDecode(t, body, &raw)
		for _, k := range []string{"id", "workspace_id", "domain", "is_wildcard", "provider", "status", "issued_at", "expires_at", "auto_renew", "created_at",
			"san", "issuer", "fingerprint_sha256", "serial", "updated_at", "error", "name"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("response lacks %q: %s", k, body)
			}
		}
		var c certJSON
		mustDecode(t, body, &c)
		sum := sha256.Sum256(leaf.Raw)
		want := certJSON{
			ID: c.ID, WorkspaceID: ws.String(), Name: "API edge", Domain: "api.example.com",
			SAN: []string{"api.example.com", "www.example.com"}, IsWildcard: false, Provider: "upload", Status: "active",
			IssuedAt: leaf.NotBefore.UTC().Format(time.RFC3339), ExpiresAt: leaf.NotAfter.UTC().Format(time.RFC3339),
			AutoRenew: false, Issuer: leaf.Issuer.String(), Serial: leaf.SerialNumber.Text(16),
			FingerprintSHA256: hex.EncodeToString(sum[:]), CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
		}
		if !equalJSON(c, want) {
			t.Errorf("upload returned\n%+v\nwant\n%+v", c, want)
		}
		if _, err := uuid.Parse(c.ID); err != nil {
			t.Errorf("id %q: %v", c.ID, err)
		}

		status, body = b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+c.ID, nil)
		if status != http.StatusOK {
			t.Fatalf("get: %d %s", status, body)
		}
		var got certJSON
		mustDecode(t, body, &got)
		if !equalJSON(got, c) {
			t.Errorf("get returned %+v, want %+v", got, c)
		}

		changes := b.hooks.changesOf(ws)
		if len(changes) != 1 || !strings.Contains(changes[0].summary, "api.example.com") || changes[0].visible != 1 {
			t.Errorf("ChangeFunc calls = %+v, want one naming the domain that sees the new row", changes)
		}
		var after []string
		if err := b.app.Deps.DB.Table("audit_log").Where("workspace_id = ? AND action = ? AND object_id = ?", ws, "certificate.create", c.ID).
			Pluck("after::text", &after).Error; err != nil {
			t.Fatalf("read audit log: %v", err)
		}
		if len(after) != 1 || !strings.Contains(after[0], `"domain": "api.example.com"`) || !strings.Contains(after[0], c.FingerprintSHA256) {
			t.Errorf("audit rows for the upload = %q, want one with the certificate", after)
		}
		if !strings.Contains(b.logs.String(), c.ID) {
			t.Error("the upload was not logged")
		}
	})

	t.Run("DerivesWildcard", func(t *testing.T) {
		t.Parallel()
		leaf, key := p.issue(t, leafSpec{cn: "example.org", dns: []string{"*.example.org", "example.org"}}, false)
		c := b.upload(t, b.ws, certsPEM(leaf, p.inter), b.keyPEM(t, key))
		if c.Domain != "*.example.org" || !c.IsWildcard || c.Name != "*.example.org" {
			t.Errorf("wildcard upload: domain %q, is_wildcard %v, name %q", c.Domain, c.IsWildcard, c.Name)
		}
	})

	t.Run("DerivesDomainFromCommonName", func(t *testing.T) {
		t.Parallel()
		leaf, key := p.issue(t, leafSpec{cn: "Legacy.Example.NET"}, false)
		c := b.upload(t, b.ws, certsPEM(leaf, p.inter, p.root), b.keyPEM(t, key))
		if c.Domain != "legacy.example.net" || c.IsWildcard || len(c.SAN) != 0 {
			t.Errorf("common-name upload: domain %q, is_wildcard %v, san %v", c.Domain, c.IsWildcard, c.SAN)
		}
	})

	t.Run("MarksShortLivedAsExpiring", func(t *testing.T) {
		t.Parallel()
		leaf, key := p.issue(t, leafSpec{cn: "soon.example.com", dns: []string{"soon.example.com"}, notAfter: time.Now().Add(10 * 24 * time.Hour)}, false)
		c := b.upload(t, b.ws, certsPEM(leaf, p.inter), b.keyPEM(t, key))
		if c.Status != "expiring" {
			t.Errorf("status = %q, want expiring", c.Status)
		}
	})

	t.Run("AcceptsKeyKinds", func(t *testing.T) {
		t.Parallel()
		ec := ecKey(t, elliptic.P384())
		ecLeaf, _ := p.issue(t, leafSpec{cn: "ec.example.com", dns: []string{"ec.example.com"}, key: ec}, true)
		ed := ed25519Key(t)
		edLeaf, _ := p.issue(t, leafSpec{cn: "ed.example.com", dns: []string{"ed.example.com"}, key: ed}, false)
		for name, tc := range map[string]struct{ chain, key string }{
			"SelfSignedP384WithSEC1Key": {certsPEM(ecLeaf), b.secret(ecKeySEC1PEM(t, ec))},
			"Ed25519WithPKCS8Key":       {certsPEM(edLeaf, p.inter), b.keyPEM(t, ed)},
			"KeyAfterECParameters":      {certsPEM(ecLeaf), "-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n" + b.secret(ecKeySEC1PEM(t, ec))},
			"WindowsLineEndings":        {crlf(certsPEM(edLeaf, p.inter)), crlf(b.keyPEM(t, ed))},
		} {
			ws := b.newWorkspace(t)
			status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
				map[string]any{"certificate_pem": tc.chain, "private_key_pem": tc.key})
			if status != http.StatusCreated {
				t.Errorf("%s: %d %s", name, status, body)
			}
		}
	})

	t.Run("RejectsBadUploads", func(t *testing.T) {
		t.Parallel()
		good, goodKey := p.issue(t, leafSpec{cn: "good.example.com", dns: []string{"good.example.com"}}, false)
		goodChain, goodKeyPEM := certsPEM(good, p.inter), b.keyPEM(t, goodKey)
		otherKey := b.keyPEM(t, ecKey(t, elliptic.P256()))
		expired, expiredKey := p.issue(t, leafSpec{cn: "old.example.com", dns: []string{"old.example.com"},
			notBefore: time.Now().Add(-400 * 24 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)}, false)
		future, futureKey := p.issue(t, leafSpec{cn: "future.example.com", dns: []string{"future.example.com"},
			notBefore: time.Now().Add(24 * time.Hour)}, false)
		rsa1024 := rsaKey(t, 1024)
		weak, _ := p.issue(t, leafSpec{cn: "weak.example.com", dns: []string{"weak.example.com"}, key: rsa1024}, true)
		p521 := ecKey(t, elliptic.P521())
		p521Leaf, _ := p.issue(t, leafSpec{cn: "p521.example.com", dns: []string{"p521.example.com"}, key: p521}, true)
		client, clientKey := p.issue(t, leafSpec{cn: "client.example.com", dns: []string{"client.example.com"},
			extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, false)
		noHost, noHostKey := p.issue(t, leafSpec{cn: "My Certificate"}, false)
		strangerCA, _ := p.issue(t, leafSpec{cn: "stranger.example.com", dns: []string{"stranger.example.com"}}, true)
		encrypted := "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n"
		junkCert := "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4\n-----END CERTIFICATE-----\n"

		cases := []struct {
			name  string
			body  any
			field string
		}{
			{"EmptyBody", map[string]any{}, "certificate_pem"},
			{"MissingKey", map[string]any{"certificate_pem": goodChain}, "private_key_pem"},
			{"NotPEM", map[string]any{"certificate_pem": "hello", "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"TextAroundBlocks", map[string]any{"certificate_pem": "subject=CN = good.example.com\n" + goodChain, "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"KeyInCertificateField", map[string]any{"certificate_pem": goodKeyPEM, "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"KeyAppendedToChain", map[string]any{"certificate_pem": goodChain + goodKeyPEM, "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"MalformedCertificate", map[string]any{"certificate_pem": junkCert, "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"CertificateInKeyField", map[string]any{"certificate_pem": goodChain, "private_key_pem": goodChain}, "private_key_pem"},
			{"TwoKeys", map[string]any{"certificate_pem": goodChain, "private_key_pem": goodKeyPEM + otherKey}, "private_key_pem"},
			{"EncryptedKey", map[string]any{"certificate_pem": goodChain, "private_key_pem": encrypted}, "private_key_pem"},
			{"MismatchedKey", map[string]any{"certificate_pem": goodChain, "private_key_pem": otherKey}, "private_key_pem"},
			{"WrongChainOrder", map[string]any{"certificate_pem": certsPEM(p.inter, good), "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"IssuerMissingFromChain", map[string]any{"certificate_pem": certsPEM(good, p.root), "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"UnrelatedSecondCertificate", map[string]any{"certificate_pem": certsPEM(good, strangerCA), "private_key_pem": goodKeyPEM}, "certificate_pem"},
			{"ExpiredLeaf", map[string]any{"certificate_pem": certsPEM(expired, p.inter), "private_key_pem": b.keyPEM(t, expiredKey)}, "certificate_pem"},
			{"NotYetValidLeaf", map[string]any{"certificate_pem": certsPEM(future, p.inter), "private_key_pem": b.keyPEM(t, futureKey)}, "certificate_pem"},
			{"RSA1024Key", map[string]any{"certificate_pem": certsPEM(weak), "private_key_pem": b.secret(rsaKeyPKCS1PEM(rsa1024))}, "private_key_pem"},
			{"P521Key", map[string]any{"certificate_pem": certsPEM(p521Leaf), "private_key_pem": b.keyPEM(t, p521)}, "private_key_pem"},
			{"ClientOnlyCertificate", map[string]any{"certificate_pem": certsPEM(client, p.inter), "private_key_pem": b.keyPEM(t, clientKey)}, "certificate_pem"},
			{"NoHostName", map[string]any{"certificate_pem": certsPEM(noHost, p.inter), "private_key_pem": b.keyPEM(t, noHostKey)}, "certificate_pem"},
			{"AutoRenewOnUpload", map[string]any{"certificate_pem": goodChain, "private_key_pem": goodKeyPEM, "auto_renew": true}, "auto_renew"},
			{"DomainMismatch", map[string]any{"certificate_pem": goodChain, "private_key_pem": goodKeyPEM, "domain": "evil.example.com"}, "domain"},
			{"NameWithControlCharacters", map[string]any{"certificate_pem": goodChain, "private_key_pem": goodKeyPEM, "name": "a\nb"}, "name"},
			{"UnknownField", map[string]any{"certificate_pem": goodChain, "private_key_pem": goodKeyPEM, "chain": "x"}, "chain"},
			{"NotAnObject", `["certificate_pem"]`, "body"},
		}
		ws := b.newWorkspace(t)
		for _, tc := range cases {
			status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates", tc.body)
			if status != http.StatusUnprocessableEntity {
				t.Errorf("%s: status %d, want 422: %s", tc.name, status, body)
				continue
			}
			var e errorJSON
			mustDecode(t, body, &e)
			t.Logf("%s: %+v", tc.name, e.Error.Details)
			if e.Error.Code != "VALIDATION_ERROR" || !slices.ContainsFunc(e.Error.Details, func(f app.FieldError) bool { return f.Field == tc.field }) {
				t.Errorf("%s: want a VALIDATION_ERROR naming %s, got %s", tc.name, tc.field, body)
			}
		}
		if n := b.countRows(t, "certificates", "workspace_id = ?", ws); n != 0 {
			t.Errorf("%d certificates stored after rejected uploads", n)
		}
		if n := b.countAudit(t, ws); n != 0 {
			t.Errorf("%d audit rows after rejected uploads", n)
		}
		if c := b.hooks.changesOf(ws); len(c) != 0 {
			t.Errorf("ChangeFunc called for rejected uploads: %+v", c)
		}
		// The same chain and key, fixed, are accepted.
		b.upload(t, ws, goodChain, goodKeyPEM)
	})

	t.Run("AcceptsACMERequestAsPending", func(t *testing.T) {
		t.Parallel()
		ws := b.newWorkspace(t)
		status, resp := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
			map[string]any{"domain": "api.example.com", "provider": "letsencrypt", "auto_renew": true})
		var c certJSON
		mustDecode(t, resp, &c)
		if status != http.StatusAccepted || c.Status != "pending" || c.Domain != "api.example.com" || c.Provider != "letsencrypt" {
			t.Fatalf("ACME request: %d %s", status, resp)
		}
	})

	t.Run("RefusesHTTP01WithoutAFleetToAnswerIt", func(t *testing.T) {
		t.Parallel()
		nb := setupWith(t, nil, func(o *certs.Options) { o.PresentFunc = nil })
		ws := nb.newWorkspace(t)
		status, resp := nb.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
			map[string]any{"domain": "api.example.com", "provider": "letsencrypt", "auto_renew": true})
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(resp), `"field":"challenge"`) {
			t.Fatalf("http-01 without agents: %d %s, want 422 naming challenge", status, resp)
		}
		if n := nb.countRows(t, "certificates", "workspace_id = ?", ws); n != 0 {
			t.Fatalf("%d certificates stored after a refused request", n)
		}
	})

	t.Run("RefusesHTTP01ForANameNoPlainHostServes", func(t *testing.T) {
		t.Parallel()
		nb := setupWith(t, nil, func(o *certs.Options) {
			o.ServedFunc = func(_ context.Context, _ uuid.UUID, domain string) (bool, error) {
				return domain == "api.example.com", nil
			}
		})
		ws := nb.newWorkspace(t)
		status, resp := nb.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
			map[string]any{"domain": "api.example.com", "san": []string{"www.example.com"}, "provider": "letsencrypt"})
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(resp), `"field":"domain"`) || !strings.Contains(string(resp), "www.example.com") {
			t.Fatalf("http-01 for a name no plain host serves: %d %s, want 422 naming domain and www.example.com", status, resp)
		}
		if n := nb.countRows(t, "certificates", "workspace_id = ?", ws); n != 0 {
			t.Fatalf("%d certificates stored after a refused request", n)
		}
		status, resp = nb.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
			map[string]any{"domain": "api.example.com", "provider": "letsencrypt"})
		if status != http.StatusAccepted {
			t.Fatalf("http-01 for a served name: %d %s", status, resp)
		}
	})

	t.Run("RejectsBadACMERequests", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name  string
			body  map[string]any
			field string
		}{
			{"MalformedDomain", map[string]any{"domain": "bad_domain", "provider": "letsencrypt"}, "domain"},
			{"UnknownProvider", map[string]any{"domain": "api.example.com", "provider": "nope"}, "provider"},
			{"MissingProvider", map[string]any{"domain": "api.example.com"}, "provider"},
			{"WildcardWithoutDNS01", map[string]any{"domain": "*.example.com", "provider": "letsencrypt"}, "challenge"},
			{"DNS01WithoutProvider", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01"}, "dns_provider"},
			{"UnknownDNSProvider", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "nope"}, "dns_provider"},
			{"MetadataEndpoint", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "httpreq",
				"dns_credentials": map[string]string{"HTTPREQ_ENDPOINT": "http://169.254.169.254/"}}, "dns_credentials.HTTPREQ_ENDPOINT"},
			{"UnknownCredential", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "httpreq",
				"dns_credentials": map[string]string{"HTTPREQ_ENDPOINT": "http://127.0.0.1:1/", "AWS_SECRET": "x"}}, "dns_credentials.AWS_SECRET"},
			{"BadKeyType", map[string]any{"domain": "api.example.com", "provider": "letsencrypt", "key_type": "dsa"}, "key_type"},
			{"Route53WithoutSecret", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "route53",
				"dns_credentials": map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}}, "dns_credentials.AWS_SECRET_ACCESS_KEY"},
			{"GoDaddyWithoutSecret", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "godaddy",
				"dns_credentials": map[string]string{"GODADDY_API_KEY": "k"}}, "dns_credentials.GODADDY_API_SECRET"},
			{"DigitalOceanMetadataURL", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "digitalocean",
				"dns_credentials": map[string]string{"DO_AUTH_TOKEN": "t", "DO_API_URL": "http://169.254.169.254/"}}, "dns_credentials.DO_API_URL"},
			{"HetznerForeignKey", map[string]any{"domain": "*.example.com", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "hetzner",
				"dns_credentials": map[string]string{"HETZNER_API_KEY": "k", "CLOUDFLARE_DNS_API_TOKEN": "x"}}, "dns_credentials.CLOUDFLARE_DNS_API_TOKEN"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ws := b.newWorkspace(t)
				status, resp := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates", tc.body)
				var e errorJSON
				mustDecode(t, resp, &e)
				if status != http.StatusUnprocessableEntity || len(e.Error.Details) == 0 || e.Error.Details[0].Field != tc.field {
					t.Errorf("%v: %d %s, want 422 on %s", tc.body, status, resp, tc.field)
				}
				if n := b.countRows(t, "certificates", "workspace_id = ?", ws); n != 0 {
					t.Errorf("%d certificates stored for a bad request", n)
				}
			})
		}
	})

	t.Run("RejectsDuplicateUpload", func(t *testing.T) {
		t.Parallel()
		leaf, key := p.issue(t, leafSpec{cn: "dup.example.com", dns: []string{"dup.example.com"}}, false)
		body := map[string]any{"certificate_pem": certsPEM(leaf, p.inter), "private_key_pem": b.keyPEM(t, key)}
		ws := b.newWorkspace(t)
		first := b.upload(t, ws, body["certificate_pem"].(string), body["private_key_pem"].(string))
		status, resp := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates", body)
		if status != http.StatusConflict || !strings.Contains(string(resp), first.ID) {
			t.Errorf("second upload: %d %s, want 409 naming %s", status, resp, first.ID)
		}
		// Another workspace may hold the same certificate.
		b.upload(t, b.newWorkspace(t), body["certificate_pem"].(string), body["private_key_pem"].(string))
	})

	t.Run("RejectsOversizedBody", func(t *testing.T) {
		t.Parallel()
		// Over a real socket, sending only the headers: the declared length is
		// refused before the body is read (a client still writing the body could
		// see the connection reset instead of the answer).
		conn, err := net.Dial("tcp", strings.TrimPrefix(b.serve(t), "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/workspaces/%s/certificates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
			b.ws.String(), b.tokens["operator"], 1<<20+64)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("post: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e errorJSON
		mustDecode(t, body, &e)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Error.Code != "PAYLOAD_TOO_LARGE" {
			t.Errorf("body over 1 MiB: %d %s, want 413 PAYLOAD_TOO_LARGE", resp.StatusCode, body)
		}
	})

	t.Run("RolesAndOrganizations", func(t *testing.T) {
		t.Parallel()
		leaf, key := p.issue(t, leafSpec{cn: "roles.example.com", dns: []string{"roles.example.com"}}, false)
		chain, kp := certsPEM(leaf, p.inter), b.keyPEM(t, key)
		c := b.upload(t, b.ws, chain, kp)
		list := "/v1/workspaces/" + b.ws.String() + "/certificates"
		one := "/v1/certificates/" + c.ID
		upload := map[string]any{"certificate_pem": chain, "private_key_pem": kp}
		for _, tc := range []struct {
			who, method, path string
			body              any
			want              int
		}{
			{"", http.MethodGet, list, nil, http.StatusUnauthorized},
			{"", http.MethodGet, one, nil, http.StatusUnauthorized},
			{"", http.MethodPost, list, upload, http.StatusUnauthorized},
			{"viewer", http.MethodGet, list, nil, http.StatusOK},
			{"viewer", http.MethodGet, one, nil, http.StatusOK},
			{"viewer", http.MethodPost, list, upload, http.StatusForbidden},
			{"viewer", http.MethodDelete, one, nil, http.StatusForbidden},
			{"outsider", http.MethodGet, list, nil, http.StatusNotFound},
			{"outsider", http.MethodGet, one, nil, http.StatusNotFound},
			{"outsider", http.MethodPost, list, upload, http.StatusNotFound},
			{"outsider", http.MethodDelete, one, nil, http.StatusNotFound},
			{"owner", http.MethodGet, "/v1/workspaces/" + b.otherWS.String() + "/certificates", nil, http.StatusNotFound},
			{"owner", http.MethodGet, "/v1/certificates/not-a-uuid", nil, http.StatusNotFound},
			{"owner", http.MethodGet, "/v1/certificates/" + uuid.NewString(), nil, http.StatusNotFound},
			{"owner", http.MethodDelete, "/v1/certificates/" + uuid.NewString(), nil, http.StatusNotFound},
		} {
			token := ""
			if tc.who != "" {
				token = b.tokens[tc.who]
			}
			if status, body := b.do(t, tc.method, tc.path, token, tc.body); status != tc.want {
				t.Errorf("%s %s as %q: %d %s, want %d", tc.method, tc.path, tc.who, status, body, tc.want)
			}
		}
		if status, body := b.as(t, "viewer", http.MethodGet, one, nil); status != http.StatusOK || !strings.Contains(string(body), c.ID) {
			t.Errorf("certificate changed by refused requests: %d %s", status, body)
		}
	})

	t.Run("DeleteInUseConflicts", func(t *testing.T) {
		t.Parallel()
		ws := b.newWorkspace(t)
		leaf, key := p.issue(t, leafSpec{cn: "used.example.com", dns: []string{"used.example.com"}}, false)
		c := b.upload(t, ws, certsPEM(leaf, p.inter), b.keyPEM(t, key))
		id := uuid.MustParse(c.ID)
		user := `virtual host "api" (` + uuid.NewString() + `)`
		b.hooks.setInUse(id, []string{user, `stream "tls-db" (` + uuid.NewString() + `)`})

		status, body := b.as(t, "operator", http.MethodDelete, "/v1/certificates/"+c.ID, nil)
		var e errorJSON
		mustDecode(t, body, &e)
		if status != http.StatusConflict || e.Error.Code != "CONFLICT" || !strings.Contains(e.Error.Message, user) || !strings.Contains(e.Error.Message, `stream "tls-db"`) {
			t.Errorf("delete in use: %d %s, want 409 naming the users", status, body)
		}
		if status, _ := b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+c.ID, nil); status != http.StatusOK {
			t.Errorf("certificate gone after refused delete: %d", status)
		}

		b.hooks.setInUse(id, nil)
		if status, body := b.as(t, "operator", http.MethodDelete, "/v1/certificates/"+c.ID, nil); status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", status, body)
		}
		if status, _ := b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+c.ID, nil); status != http.StatusNotFound {
			t.Errorf("get after delete: %d, want 404", status)
		}
		changes := b.hooks.changesOf(ws)
		if len(changes) != 2 || !strings.Contains(changes[1].summary, "deleted") || changes[1].visible != 0 {
			t.Errorf("ChangeFunc calls = %+v, want upload then delete (seeing no row)", changes)
		}
		if n := b.countRows(t, "audit_log", "workspace_id = ? AND action = ? AND object_id = ?", ws, "certificate.delete", c.ID); n != 1 {
			t.Errorf("audit rows for the delete = %d, want 1", n)
		}
	})

	t.Run("ChangeFailureStoresNothing", func(t *testing.T) {
		t.Parallel()
		leaf, key := p.issue(t, leafSpec{cn: "fail.example.com", dns: []string{"fail.example.com"}}, false)
		status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+b.failWS.String()+"/certificates",
			map[string]any{"certificate_pem": certsPEM(leaf, p.inter), "private_key_pem": b.keyPEM(t, key)})
		if status != http.StatusInternalServerError {
			t.Errorf("upload with a failing ChangeFunc: %d %s, want 500", status, body)
		}
		if n := b.countRows(t, "certificates", "workspace_id = ?", b.failWS); n != 0 {
			t.Errorf("%d certificates stored although ChangeFunc failed", n)
		}
		if n := b.countAudit(t, b.failWS); n != 0 {
			t.Errorf("%d audit rows although ChangeFunc failed", n)
		}
	})

	t.Run("ListsPaginated", func(t *testing.T) {
		t.Parallel()
		ws := b.newWorkspace(t)
		var ids []string
		for _, name := range []string{"a.example.com", "b.example.com", "c.example.com"} {
			leaf, key := p.issue(t, leafSpec{cn: name, dns: []string{name}}, false)
			ids = append(ids, b.upload(t, ws, certsPEM(leaf, p.inter), b.keyPEM(t, key)).ID)
		}
		var got []string
		for page := 1; page <= 2; page++ {
			status, body := b.as(t, "viewer", http.MethodGet, "/v1/workspaces/"+ws.String()+"/certificates?per_page=2&page="+strconv.Itoa(page), nil)
			if status != http.StatusOK {
				t.Fatalf("list page %d: %d %s", page, status, body)
			}
			var l struct {
				Data []certJSON `json:"data"`
				Meta struct {
					Page, PerPage int
					Total         int64
				} `json:"meta"`
			}
			mustDecode(t, body, &l)
			if l.Meta.Total != 3 || l.Meta.Page != page {
				t.Errorf("page %d meta = %+v: %s", page, l.Meta, body)
			}
			for _, c := range l.Data {
				got = append(got, c.ID)
			}
		}
		if !slices.Equal(got, ids) {
			t.Errorf("listed %v, want %v (oldest first)", got, ids)
		}
	})

	t.Run("ConcurrentChangesToOneWorkspace", func(t *testing.T) {
		t.Parallel()
		ws := b.newWorkspace(t)
		const n = 8
		type upload struct{ chain, key string }
		uploads := make([]upload, n)
		for i := range uploads {
			name := "c" + strconv.Itoa(i) + ".example.com"
			leaf, key := p.issue(t, leafSpec{cn: name, dns: []string{name}}, false)
			uploads[i] = upload{certsPEM(leaf, p.inter), b.keyPEM(t, key)}
		}
		first := b.upload(t, ws, uploads[0].chain, uploads[0].key)
		var wg sync.WaitGroup
		results := make(chan string, n)
		for _, u := range uploads[1:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+ws.String()+"/certificates",
					map[string]any{"certificate_pem": u.chain, "private_key_pem": u.key})
				if status != http.StatusCreated {
					results <- "upload: " + strconv.Itoa(status) + " " + string(body)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, body := b.as(t, "operator", http.MethodDelete, "/v1/certificates/"+first.ID, nil); status != http.StatusNoContent {
				results <- "delete: " + strconv.Itoa(status) + " " + string(body)
			}
		}()
		wg.Wait()
		close(results)
		for r := range results {
			t.Error(r)
		}
		if got := b.countRows(t, "certificates", "workspace_id = ?", ws); got != n-1 {
			t.Errorf("%d certificates stored, want %d", got, n-1)
		}
		if got := len(b.hooks.changesOf(ws)); got != n+1 {
			t.Errorf("%d ChangeFunc calls, want %d", got, n+1)
		}
	})

	t.Run("StoresKeyEncrypted", func(t *testing.T) {
		t.Parallel()
		key := ecKey(t, elliptic.P256())
		leaf, _ := p.issue(t, leafSpec{cn: "sealed.example.com", dns: []string{"sealed.example.com"}, key: key}, false)
		kp := b.keyPEM(t, key)
		c := b.upload(t, b.ws, certsPEM(leaf, p.inter), kp)
		var row struct {
			CertificatePEM   string
			PrivateKeySealed []byte
		}
		if err := b.app.Deps.DB.Raw(`SELECT certificate_pem, private_key_sealed FROM certificates WHERE id = ?`, c.ID).Scan(&row).Error; err != nil {
			t.Fatalf("read row: %v", err)
		}
		der, _ := pem.Decode([]byte(kp))
		switch {
		case len(row.PrivateKeySealed) == 0:
			t.Fatal("no sealed key stored")
		case bytes.Contains(row.PrivateKeySealed, []byte(kp)), bytes.Contains(row.PrivateKeySealed, []byte("PRIVATE KEY")),
			bytes.Contains(row.PrivateKeySealed, der.Bytes[len(der.Bytes)-32:]):
			t.Error("the stored key is not encrypted")
		case strings.Contains(row.CertificatePEM, "PRIVATE KEY"):
			t.Error("certificate_pem holds a key")
		case row.CertificatePEM != certsPEM(leaf, p.inter):
			t.Errorf("stored chain differs from the upload:\n%s", row.CertificatePEM)
		}
		opened, err := b.app.Deps.Secrets.Open(row.PrivateKeySealed)
		if err != nil || string(opened) != kp {
			t.Errorf("sealed key does not open to the uploaded PEM (err %v)", err)
		}
	})

	t.Run("DocumentsRoutes", func(t *testing.T) {
		t.Parallel()
		status, body := b.do(t, http.MethodGet, "/v1/openapi.json", "", nil)
		if status != http.StatusOK {
			t.Fatalf("openapi: %d", status)
		}
		var doc struct {
			Paths map[string]map[string]json.RawMessage `json:"paths"`
		}
		mustDecode(t, body, &doc)
		for path, methods := range map[string][]string{
			"/workspaces/{id}/certificates": {"get", "post"},
			"/certificates/{id}":            {"get", "delete"},
		} {
			for _, m := range methods {
				if _, ok := doc.Paths[path][m]; !ok {
					t.Errorf("OpenAPI document lacks %s %s", m, path)
				}
			}
		}
	})
}

// crlf converts line endings to CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// equalJSON compares two values by their JSON encoding.
func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}
