package certs_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/events"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// dnsAPI stands for a DNS provider's API: it takes lego's httpreq calls
// (POST /present and /cleanup with {"fqdn","value"}) and turns them into TXT
// records of pebble-challtestsrv, the DNS server Pebble's validation queries
// (its management API: /set-txt, /clear-txt). fail makes it answer 500 with
// failRetryAfter as Retry-After.
type dnsAPI struct {
	url            string
	challMgmt      string
	mu             sync.Mutex
	presents       []string
	cleanups       []string
	fail           bool
	failRetryAfter string
}

func newDNSAPI(t *testing.T, challMgmt string) *dnsAPI {
	t.Helper()
	d := &dnsAPI{challMgmt: challMgmt}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ FQDN, Value string }
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m.FQDN == "" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		d.mu.Lock()
		fail, ra := d.fail, d.failRetryAfter
		d.mu.Unlock()
		if fail {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			http.Error(w, "zone update refused", http.StatusInternalServerError)
			return
		}
		var path string
		var body map[string]string
		switch r.URL.Path {
		case "/present":
			path, body = "/set-txt", map[string]string{"host": m.FQDN, "value": m.Value}
		case "/cleanup":
			path, body = "/clear-txt", map[string]string{"host": m.FQDN}
		default:
			http.NotFound(w, r)
			return
		}
		b, _ := json.Marshal(body)
		resp, err := http.Post(d.challMgmt+path, "application/json", bytes.NewReader(b))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			http.Error(w, resp.Status, http.StatusBadGateway)
			return
		}
		d.mu.Lock()
		if path == "/set-txt" {
			d.presents = append(d.presents, m.FQDN)
		} else {
			d.cleanups = append(d.cleanups, m.FQDN)
		}
		d.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	d.url = srv.URL
	return d
}

func (d *dnsAPI) calls() (presents, cleanups []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string{}, d.presents...), append([]string{}, d.cleanups...)
}

func (d *dnsAPI) setFail(fail bool, retryAfter string) {
	d.mu.Lock()
	d.fail, d.failRetryAfter = fail, retryAfter
	d.mu.Unlock()
}

// eventLog records the certificate events the live-event hub delivers
// (through PostgreSQL NOTIFY, as every replica's subscribers get them).
type eventLog struct {
	mu  sync.Mutex
	evs []events.Event
}

func recordEvents(t *testing.T, b *bundle) *eventLog {
	t.Helper()
	hub := b.app.Events()
	select {
	case <-hub.Listening():
	case <-time.After(10 * time.Second):
		t.Fatal("the event hub never listened")
	}
	sub, err := hub.Subscribe([]string{"certificate.*"}, uuid.Nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := sub.Next(ctx)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.evs = append(l.evs, ev)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); sub.Close(); <-done })
	return l
}

// of returns the events of type typ about certificate id.
func (l *eventLog) of(typ string, id uuid.UUID) []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []events.Event
	for _, ev := range l.evs {
		if ev.Type == typ && fmt.Sprint(ev.Data["certificate_id"]) == id.String() {
			out = append(out, ev)
		}
	}
	return out
}

func (l *eventLog) await(t *testing.T, typ string, id uuid.UUID, n int) []events.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := l.of(typ, id)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s event(s) for %s, want %d", len(got), typ, id, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// awaitCert polls the certificate until done says so.
func awaitCert(t *testing.T, b *bundle, id uuid.UUID, what string, timeout time.Duration, done func(certs.Certificate) bool) certs.Certificate {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := b.svc.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if done(got) {
			return got
		}
		if time.Now().After(deadline) {
			var jobs []map[string]any
			b.app.Deps.DB.Raw("SELECT kind, state, attempt, scheduled_at, errors::text FROM river_job ORDER BY id").Scan(&jobs)
			t.Fatalf("%s: certificate %+v\njobs: %v\nlogs:\n%s", what, got, jobs, b.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func attemptsOf(t *testing.T, b *bundle, id uuid.UUID) []certs.Attempt {
	t.Helper()
	status, resp := b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+id.String()+"/attempts", nil)
	if status != http.StatusOK {
		t.Fatalf("attempts: %d %s", status, resp)
	}
	var at struct{ Data []certs.Attempt }
	mustDecode(t, resp, &at)
	return at.Data
}

func requestCert(t *testing.T, b *bundle, body map[string]any) uuid.UUID {
	t.Helper()
	status, resp := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+b.ws.String()+"/certificates", body)
	var c certJSON
	mustDecode(t, resp, &c)
	if status != http.StatusAccepted || c.Status != "pending" {
		t.Fatalf("request %v: %d %s", body, status, resp)
	}
	return uuid.MustParse(c.ID)
}

func leafOf(t *testing.T, b *bundle, id uuid.UUID) *x509.Certificate {
	t.Helper()
	m, err := b.svc.Material(context.Background(), nil, []uuid.UUID{id})
	if err != nil || m[id.String()] == nil {
		t.Fatalf("material of %s: %v", id, err)
	}
	blk, _ := pem.Decode([]byte(m[id.String()].CertificatePem))
	if blk == nil {
		t.Fatal("material holds no PEM certificate")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestService_ACMEDNS01 issues a wildcard certificate through DNS-01 against Pebble,
// whose validation asks a real DNS server (pebble-challtestsrv) for the TXT
// records lego's httpreq provider placed there through dnsAPI; then shows a
// DNS provider that refuses: a failed certificate with a readable error, a
// failure attempt, a retry scheduled after the Retry-After it asked for.
func TestService_ACMEDNS01(t *testing.T) {
	lab := newACMELab(t)
	b := setupWith(t, func(c *app.Config) {
		c.ACME.LetsEncryptURL = lab.dirURL
		c.ACME.CAFile = lab.caFile
		c.ACME.DNSResolvers = lab.dnsAddr
	}, func(o *certs.Options) {
		o.PresentFunc = lab.present
		o.ServedFunc = func(context.Context, uuid.UUID, string) (bool, error) { return true, nil }
	})
	evs := recordEvents(t, b)
	startWorkers(t, b)
	api := newDNSAPI(t, lab.challMgmt)
	certsPath := "/v1/workspaces/" + b.ws.String() + "/certificates"

	t.Run("Refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			body  map[string]any
			field string
		}{
			{"WildcardOverHTTP01", map[string]any{"domain": "*.example.test", "provider": "letsencrypt", "challenge": "http-01"}, "challenge"},
			{"ShortWildcardOverHTTP01", map[string]any{"domain": "*.x", "provider": "letsencrypt", "challenge": "http-01"}, "challenge"},
			{"WildcardSANOverHTTP01", map[string]any{"domain": "example.test", "san": []string{"*.example.test"}, "provider": "letsencrypt"}, "challenge"},
			{"MetadataEndpoint", map[string]any{"domain": "*.example.test", "provider": "letsencrypt", "challenge": "dns-01", "dns_provider": "httpreq",
				"dns_credentials": map[string]string{"HTTPREQ_ENDPOINT": "http://169.254.169.254/latest"}}, "dns_credentials.HTTPREQ_ENDPOINT"},
			{"NoDNSProvider", map[string]any{"domain": "*.example.test", "provider": "letsencrypt", "challenge": "dns-01"}, "dns_provider"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := b.countRows(t, "certificates", "workspace_id = ?", b.ws)
				status, resp := b.as(t, "operator", http.MethodPost, certsPath, tc.body)
				if status != http.StatusUnprocessableEntity || !strings.Contains(string(resp), `"field":"`+tc.field+`"`) {
					t.Fatalf("%d %s, want 422 naming %s", status, resp, tc.field)
				}
				if after := b.countRows(t, "certificates", "workspace_id = ?", b.ws); after != before {
					t.Errorf("certificates %d → %d: a refused request stored something", before, after)
				}
			})
		}
	})

	t.Run("WildcardAndApex", func(t *testing.T) {
		id := requestCert(t, b, map[string]any{"domain": "*.example.test", "san": []string{"example.test"}, "provider": "letsencrypt",
			"challenge": "dns-01", "dns_provider": "httpreq", "auto_renew": true,
			// A loopback endpoint is allowed: only link-local and metadata addresses are refused.
			"dns_credentials": map[string]string{"HTTPREQ_ENDPOINT": api.url}})
		got := awaitCert(t, b, id, "wildcard issuance", 90*time.Second, func(c certs.Certificate) bool { return c.Status != "pending" })
		if got.Status != "active" || !got.IsWildcard || got.Domain != "*.example.test" || got.Error != "" {
			t.Fatalf("certificate = %+v, want an active wildcard", got)
		}
		leaf := leafOf(t, b, id)
		if !strings.Contains(leaf.Issuer.String(), "Pebble") || leaf.VerifyHostname("a.example.test") != nil || leaf.VerifyHostname("example.test") != nil {
			t.Errorf("leaf %v (issuer %s) does not cover a.example.test and example.test", leaf.DNSNames, leaf.Issuer)
		}
		presents, cleanups := api.calls()
		want := "_acme-challenge.example.test."
		if len(presents) != 2 || presents[0] != want || presents[1] != want || len(cleanups) != 2 {
			t.Errorf("DNS API presents %v, cleanups %v; want two TXT records at %s, both removed", presents, cleanups, want)
		}
		if at := attemptsOf(t, b, id); len(at) != 1 || at[0].Result != "success" || at[0].Challenge != "dns-01" {
			t.Errorf("attempts = %+v, want one dns-01 success", at)
		}
		ev := evs.await(t, "certificate.issued", id, 1)[0]
		if ev.Data["domain"] != "*.example.test" {
			t.Errorf("certificate.issued data = %v", ev.Data)
		}
	})

	t.Run("ProviderRefuses", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			endpoint   string
			retryAfter string
			minWait    time.Duration
			wantErr    string
		}{
			// Backoff after a first failure is a minute; the API asks for ten.
			{"Answers500", api.url, "600", 10 * time.Minute, "500"},
			{"ClosedPort", closedPortURL(t), "", time.Minute, "connection refused"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				api.setFail(true, tc.retryAfter)
				defer api.setFail(false, "")
				domain := strings.ToLower(tc.name) + ".example.test"
				started := time.Now()
				id := requestCert(t, b, map[string]any{"domain": domain, "provider": "letsencrypt", "challenge": "dns-01",
					"dns_provider": "httpreq", "auto_renew": true, "dns_credentials": map[string]string{"HTTPREQ_ENDPOINT": tc.endpoint}})
				got := awaitCert(t, b, id, "the failure", 60*time.Second, func(c certs.Certificate) bool { return c.Status != "pending" })
				if got.Status != "failed" || !strings.HasPrefix(got.Error, domain+": DNS-01 challenge: ") || !strings.Contains(got.Error, tc.wantErr) ||
					strings.Contains(got.Error, "\n") {
					t.Fatalf("certificate = %+v, want failed with a one-line error naming %s, DNS-01 and %q", got, domain, tc.wantErr)
				}
				if got.NextAttemptAt == nil || got.NextAttemptAt.Before(started.Add(tc.minWait-5*time.Second)) ||
					got.NextAttemptAt.After(time.Now().Add(tc.minWait+5*time.Second)) {
					t.Errorf("next_attempt_at = %v, want about %s from now", got.NextAttemptAt, tc.minWait)
				}
				_, raw := b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+id.String(), nil)
				if !strings.Contains(string(raw), `"next_attempt_at":"`) {
					t.Errorf("GET certificate has no next_attempt_at: %s", raw)
				}
				at := attemptsOf(t, b, id)
				if len(at) != 1 || at[0].Result != "failure" || at[0].Error != got.Error || at[0].Challenge != "dns-01" {
					t.Errorf("attempts = %+v, want one failure with the certificate's error", at)
				}
				ev := evs.await(t, "certificate.failed", id, 1)[0]
				if ev.Data["domain"] != domain || ev.Data["error"] != got.Error {
					t.Errorf("certificate.failed data = %v", ev.Data)
				}
				// The retry waits: it is scheduled at next_attempt_at, and
				// nothing runs before (no tight loop).
				var scheduled []time.Time
				b.app.Deps.DB.Raw("SELECT scheduled_at FROM river_job WHERE kind = 'certs.issue' AND state = 'scheduled' AND args->>'certificate_id' = ?", id.String()).Scan(&scheduled)
				if len(scheduled) != 1 || scheduled[0].Sub(*got.NextAttemptAt).Abs() > time.Second {
					t.Errorf("scheduled retries %v, want one at %v", scheduled, got.NextAttemptAt)
				}
				time.Sleep(2 * time.Second)
				if n := len(attemptsOf(t, b, id)); n != 1 {
					t.Errorf("%d attempts two seconds after the failure, want 1", n)
				}
			})
		}
	})

	t.Run("BackoffGrows", func(t *testing.T) {
		api.setFail(true, "")
		defer api.setFail(false, "")
		id := requestCert(t, b, map[string]any{"domain": "backoff.example.test", "provider": "letsencrypt", "challenge": "dns-01",
			"dns_provider": "httpreq", "auto_renew": true, "dns_credentials": map[string]string{"HTTPREQ_ENDPOINT": api.url}})
		awaitCert(t, b, id, "the first failure", 60*time.Second, func(c certs.Certificate) bool { return c.Status == "failed" })
		// Run the scheduled retry now, as if its time had come.
		b.app.Deps.DB.Exec("UPDATE river_job SET scheduled_at = now() WHERE kind = 'certs.issue' AND state = 'scheduled' AND args->>'certificate_id' = ?", id.String())
		var got certs.Certificate
		deadline := time.Now().Add(60 * time.Second)
		for len(attemptsOf(t, b, id)) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("the retry never ran:\n%s", b.logs.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
		got = awaitCert(t, b, id, "the second failure", 10*time.Second, func(c certs.Certificate) bool { return c.NextAttemptAt != nil })
		if wait := time.Until(*got.NextAttemptAt); wait < 4*time.Minute || wait > 5*time.Minute+5*time.Second {
			t.Errorf("after the second failure the next attempt is in %s, want 5 minutes", wait)
		}
		// Once the provider answers, the retry succeeds.
		api.setFail(false, "")
		b.app.Deps.DB.Exec("UPDATE river_job SET scheduled_at = now() WHERE kind = 'certs.issue' AND state = 'scheduled' AND args->>'certificate_id' = ?", id.String())
		got = awaitCert(t, b, id, "the recovery", 90*time.Second, func(c certs.Certificate) bool { return c.Status == "active" })
		if got.Error != "" || got.NextAttemptAt != nil {
			t.Errorf("after recovery: %+v, want no error and no next attempt", got)
		}
	})
}

func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestService_ACMELifecycle follows ACME certificates through their statuses with a
// clock the test moves (pending → active → expiring → expired), beside
// uploaded ones that keep the 30-day rule, with 6-day and 90-day lifetimes;
// then renews a short-lived certificate by the scheduled scan.
func TestService_ACMELifecycle(t *testing.T) {
	const sixDays, ninetyDays = 6 * 24 * 3600, 90 * 24 * 3600
	lab := newACMELabWith(t, map[string]int{"sixday": sixDays, "ninetyday": ninetyDays, "short": 40})
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	b := setupWith(t, func(c *app.Config) {
		c.ACME.LetsEncryptURL = lab.dirURL
		c.ACME.CAFile = lab.caFile
	}, func(o *certs.Options) {
		o.PresentFunc = lab.present
		o.ServedFunc = func(context.Context, uuid.UUID, string) (bool, error) { return true, nil }
	})
	certs.SetClock(b.svc, clock)
	t.Cleanup(func() { offset.Store(0) })
	evs := recordEvents(t, b)
	startWorkers(t, b)

	t.Run("Statuses", func(t *testing.T) {
		type subject struct {
			name string
			id   uuid.UUID
			life time.Duration
		}
		var subs []subject
		for _, p := range []struct {
			profile string
			life    time.Duration
		}{{"sixday", sixDays * time.Second}, {"ninetyday", ninetyDays * time.Second}} {
			id := requestCert(t, b, map[string]any{"domain": p.profile + ".example.test", "provider": "letsencrypt", "profile": p.profile, "auto_renew": false})
			if got, _ := b.svc.Get(context.Background(), id); got.Status != "pending" {
				t.Errorf("%s right after the request: %s, want pending", p.profile, got.Status)
			}
			subs = append(subs, subject{"acme-" + p.profile, id, p.life})
		}
		for _, s := range subs {
			got := awaitCert(t, b, s.id, s.name+" issuance", 60*time.Second, func(c certs.Certificate) bool { return c.Status != "pending" })
			if got.Status != "active" {
				t.Fatalf("%s: %+v, want active", s.name, got)
			}
			if life := got.ExpiresAt.Sub(*got.IssuedAt).Round(time.Hour); life != s.life {
				t.Fatalf("%s lives %s, want %s (the profile)", s.name, life, s.life)
			}
			// Renewal at one third of the lifetime left (with up to 2% of
			// jitter), or earlier inside Pebble's ARI window (from a day
			// before that point).
			var renewAt time.Time
			b.app.Deps.DB.Raw("SELECT renew_at FROM certificates WHERE id = ?", s.id).Scan(&renewAt)
			third := got.ExpiresAt.Add(-s.life / 3)
			if renewAt.After(third.Add(time.Second)) || renewAt.Before(third.Add(-max(24*time.Hour, s.life/50)-time.Second)) {
				t.Errorf("%s renews at %s, want within a day before %s", s.name, renewAt, third)
			}
		}
		for _, life := range []time.Duration{sixDays * time.Second, ninetyDays * time.Second} {
			leaf, key := b.pki.issue(t, leafSpec{cn: "upload.example.test", dns: []string{"upload.example.test"},
				notBefore: time.Now().Add(-time.Minute), notAfter: time.Now().Add(-time.Minute).Add(life)}, false)
			c := b.upload(t, b.ws, certsPEM(leaf, b.pki.inter), keyPEM(t, key))
			subs = append(subs, subject{fmt.Sprintf("upload-%dd", int(life.Hours()/24)), uuid.MustParse(c.ID), life})
		}
		day := 24 * time.Hour
		// ACME: expiring from the renewal time, inside the CA's ARI window
		// (Pebble: a day either side of one third of the lifetime left) or
		// at one third left; uploads: 30 days before expiry.
		for _, tc := range []struct {
			at   time.Duration
			want map[string]string
		}{
			{time.Hour, map[string]string{"acme-sixday": "active", "acme-ninetyday": "active", "upload-6d": "expiring", "upload-90d": "active"}},
			{2*day + 20*time.Hour, map[string]string{"acme-sixday": "active", "upload-6d": "expiring"}},
			{5*day + 2*time.Hour, map[string]string{"acme-sixday": "expiring", "upload-6d": "expiring"}},
			{6*day + time.Hour, map[string]string{"acme-sixday": "expired", "upload-6d": "expired"}},
			{58 * day, map[string]string{"acme-ninetyday": "active", "upload-90d": "active"}},
			{61*day + time.Hour, map[string]string{"acme-ninetyday": "expiring", "upload-90d": "expiring"}},
			{83*day + 12*time.Hour, map[string]string{"acme-ninetyday": "expiring"}},
			{89*day + 12*time.Hour, map[string]string{"acme-ninetyday": "expiring"}},
			{90*day + time.Hour, map[string]string{"acme-ninetyday": "expired", "upload-90d": "expired"}},
		} {
			offset.Store(int64(tc.at))
			// The scan stores the statuses (RefreshStatuses) besides showing them.
			if _, err := b.svc.RenewScan(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, s := range subs {
				want, ok := tc.want[s.name]
				if !ok {
					continue
				}
				_, raw := b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+s.id.String(), nil)
				var c certJSON
				mustDecode(t, raw, &c)
				var stored string
				b.app.Deps.DB.Raw("SELECT status FROM certificates WHERE id = ?", s.id).Scan(&stored)
				if c.Status != want || stored != want {
					t.Errorf("%s at +%s: shown %s, stored %s, want %s", s.name, tc.at, c.Status, stored, want)
				}
			}
		}
		// Not renewing, the ACME certificates were announced as expiring.
		for _, s := range subs[:2] {
			got := evs.await(t, "certificate.expiring", s.id, 1)
			if ev := got[0]; ev.Data["domain"] != strings.TrimPrefix(s.name, "acme-")+".example.test" || !strings.HasPrefix(fmt.Sprint(ev.Data["error"]), "expires within") ||
				ev.WorkspaceID != b.ws {
				t.Errorf("certificate.expiring = %+v", ev)
			}
			// 7, then 1 day(s) left: one event each, whatever the number of scans.
			if len(got) != 2 {
				t.Errorf("%d certificate.expiring events for %s, want 2 (7 and 1 days left): %+v", len(got), s.name, got)
			}
		}
		offset.Store(0)
	})

	t.Run("RenewedByTheScan", func(t *testing.T) {
		changesBefore := len(b.hooks.changesOf(b.ws))
		id := requestCert(t, b, map[string]any{"domain": "short.example.test", "provider": "letsencrypt", "profile": "short", "auto_renew": true})
		first := awaitCert(t, b, id, "issuance", 60*time.Second, func(c certs.Certificate) bool { return c.Status != "pending" })
		if first.Status != "active" && first.Status != "expiring" {
			t.Fatalf("after issuance: %+v", first)
		}
		var renewAt time.Time
		b.app.Deps.DB.Raw("SELECT renew_at FROM certificates WHERE id = ?", id).Scan(&renewAt)
		if renewAt.Before(*first.IssuedAt) || !renewAt.Before(*first.ExpiresAt) {
			t.Fatalf("renew_at %s is outside the validity %s – %s", renewAt, first.IssuedAt, first.ExpiresAt)
		}
		// The scan, as the periodic job runs it, every half second.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				_, _ = b.svc.RenewScan(ctx)
				time.Sleep(500 * time.Millisecond)
			}
		}()
		got := awaitCert(t, b, id, "the renewal", 60*time.Second, func(c certs.Certificate) bool { return c.Serial != first.Serial && c.Serial != "" })
		cancel()
		renewed := evs.await(t, "certificate.renewed", id, 1)[0]
		if renewed.Data["domain"] != "short.example.test" {
			t.Errorf("certificate.renewed data = %v", renewed.Data)
		}
		if time.Now().Before(renewAt) {
			t.Errorf("renewed before its renewal time %s", renewAt)
		}
		if !got.IssuedAt.After(first.IssuedAt.Add(-time.Second)) || got.Status == "expired" {
			t.Errorf("renewed certificate = %+v", got)
		}
		at := attemptsOf(t, b, id)
		if len(at) < 2 || at[0].Kind != "renew" || at[0].Result != "success" || at[len(at)-1].Kind != "issue" {
			t.Errorf("attempts = %+v, want the issue then a successful renewal", at)
		}
		ch := b.hooks.changesOf(b.ws)[changesBefore:]
		var renewals int
		for _, c := range ch {
			if strings.Contains(c.summary, "renewed") {
				renewals++
			}
		}
		if renewals == 0 {
			t.Errorf("ChangeFunc not called for the renewal: %+v", ch)
		}
	})
}

// TestService_ACMETwoReplicas runs two masters' job workers over one database: each
// certificate gets one order, whichever replica takes its job, and when both
// scans find the same certificates due, each is renewed once.
func TestService_ACMETwoReplicas(t *testing.T) {
	lab := newACMELab(t)
	b := setupWith(t, func(c *app.Config) {
		c.ACME.LetsEncryptURL = lab.dirURL
		c.ACME.CAFile = lab.caFile
	}, func(o *certs.Options) {
		o.PresentFunc = lab.present
		o.ServedFunc = func(context.Context, uuid.UUID, string) (bool, error) { return true, nil }
	})
	startWorkers(t, b)
	// The second replica: its own service and River client, the same database.
	var second *certs.Module
	{
		w := river.NewWorkers()
		d := b.app.Deps
		var err error
		second, err = certs.New(d, certs.Options{PresentFunc: lab.present, ServedFunc: func(context.Context, uuid.UUID, string) (bool, error) { return true, nil },
			ChangeFunc: b.hooks.change})
		if err != nil {
			t.Fatal(err)
		}
		second.Jobs(w)
		c, err := river.NewClient(riverpgxv5.New(d.Pool), &river.Config{Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}}, Workers: w})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Stop(context.Background()) })
	}
	const n = 4
	var ids []uuid.UUID
	for i := range n {
		ids = append(ids, requestCert(t, b, map[string]any{"domain": fmt.Sprintf("r%d.example.test", i), "provider": "letsencrypt", "auto_renew": true}))
	}
	for _, id := range ids {
		awaitCert(t, b, id, "issuance", 90*time.Second, func(c certs.Certificate) bool { return c.Status == "active" })
	}
	if got := lab.presentedCount(); got != n {
		t.Errorf("%d HTTP-01 tokens presented for %d single-name certificates, want one order each", got, n)
	}
	// Concurrent first orders still share the organization's one account.
	if n := b.countRows(t, "acme_accounts", "organization_id = ?", b.orgID); n != 1 {
		t.Errorf("%d ACME accounts for the organization, want 1", n)
	}
	// Both replicas' scans find them due at once.
	b.app.Deps.DB.Exec("UPDATE certificates SET renew_at = now() - interval '1 minute' WHERE id IN ?", ids)
	var wg sync.WaitGroup
	for _, svc := range []*certs.Service{b.svc, second.Service(), b.svc, second.Service()} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := svc.RenewScan(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		awaitCert(t, b, id, "renewal", 90*time.Second, func(c certs.Certificate) bool {
			var renews int64
			b.app.Deps.DB.Raw("SELECT count(*) FROM certificate_attempts WHERE certificate_id = ? AND kind = 'renew'", id).Scan(&renews)
			return renews >= 1
		})
	}
	// Let any duplicate run before counting.
	time.Sleep(3 * time.Second)
	for _, id := range ids {
		at := attemptsOf(t, b, id)
		if len(at) != 2 || at[0].Kind != "renew" || at[0].Result != "success" || at[1].Kind != "issue" {
			t.Errorf("certificate %s attempts = %+v, want one issue and one renewal", id, at)
		}
	}
	var jobs int64
	b.app.Deps.DB.Raw("SELECT count(*) FROM river_job WHERE kind = 'certs.issue' AND args->>'op' = 'renew'").Scan(&jobs)
	if jobs != n {
		var rows []map[string]any
		b.app.Deps.DB.Raw("SELECT id, args::text, state, created_at, finalized_at, errors::text FROM river_job WHERE kind = 'certs.issue' ORDER BY id").Scan(&rows)
		t.Errorf("%d renewal jobs for %d certificates, want one each: %v", jobs, n, rows)
	}
}
