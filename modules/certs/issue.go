package certs

// ACME issuance. The life of a requested certificate:
//
//  1. Request validates everything (domain, names, challenge, provider, DNS
//     provider and its credentials, key type), then one transaction stores the
//     row in status pending with the credentials sealed, enqueues the issuance
//     job (River, same transaction) and writes the audit row.
//  2. The job claims the row (order_started_at, compare-and-set: one order per
//     certificate in flight, whichever replica runs the job) and tries the
//     requested issuer, then the organization's fallback issuers in order; each
//     try is an attempt row.
//  3. Success stores the chain and the sealed key (active), the renewal time
//     (one third of the lifetime left with jitter, earlier at a random point
//     of the CA's ARI window when it suggests one; from then on the status is
//     expiring),
//     calls ChangeFunc so the agents get the new material, and publishes
//     certificate.issued or certificate.renewed.
//  4. Failure stores a readable error, certificate.failed, and the next
//     attempt (backoff: 1 min, 5 min, 20 min, then hourly, or the longest
//     Retry-After the CA or the DNS provider's API answered with when later;
//     at most maxFailures), scheduled as its own job; a certificate without
//     material is failed. A renewal names the certificate it replaces (RFC
//     9773) when the same issuer issued it.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// PresentFunc makes every online agent targeted by a virtual host whose server names cover domain
// answer GET /.well-known/acme-challenge/<token> with keyAuth, and returns when all confirmed
// (or an error naming the agents that did not). cleanup removes the token from them.
type PresentFunc func(ctx context.Context, workspaceID uuid.UUID, domain, token, keyAuth string) (cleanup func(context.Context) error, err error)

// ServedFunc reports whether some plain-HTTP virtual host of the workspace serves domain (server_name match, incl. wildcards).
type ServedFunc func(ctx context.Context, workspaceID uuid.UUID, domain string) (bool, error)

// Challenges.
const (
	ChallengeHTTP01 = "http-01"
	ChallengeDNS01  = "dns-01"
)

// maxFailures is how many failed attempts in a row end the retries.
const maxFailures = 6

// acmeDeps are what issuance needs besides the service's database.
type acmeDeps struct {
	cfg     app.ACMEConfig
	present PresentFunc
	served  ServedFunc
	jobs    *river.Client[*sql.Tx]
	events  app.Publisher
}

func newACMEDeps(d app.Deps, opts Options) acmeDeps {
	return acmeDeps{cfg: d.Config.ACME, present: opts.PresentFunc, served: opts.ServedFunc, jobs: d.Jobs, events: d.Events}
}

var hostnameLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validDNSName reports whether n is a lowercase DNS name of two labels or
// more, optionally starting with "*.".
func validDNSName(n string) bool {
	n = strings.TrimPrefix(n, "*.")
	if len(n) > 253 || strings.Count(n, ".") < 1 {
		return false
	}
	for _, l := range strings.Split(n, ".") {
		if !hostnameLabel.MatchString(l) {
			return false
		}
	}
	return true
}

// RequestParams are the inputs of Request (the API's request plus options).
type RequestParams struct {
	WorkspaceID uuid.UUID
	Domain      string
	SAN         []string
	Provider    string
	AutoRenew   bool
	Challenge   string
	DNSProvider string
	// DNSCredentials are the DNS provider's lego environment variable names → values.
	DNSCredentials map[string]string
	KeyType        string
	Profile        string
	Name           string
}

type validRequest struct {
	names           []string
	name, challenge string
	keyType         string
	credKeys        []string
	credsJSON       []byte
	wildcard        bool
}

func (s *Service) validateRequest(ctx context.Context, p RequestParams) (validRequest, error) {
	v := &app.Validator{}
	out := validRequest{challenge: p.Challenge, keyType: p.KeyType}
	if out.challenge == "" {
		out.challenge = ChallengeHTTP01
	}
	if out.keyType == "" {
		out.keyType = "ec256"
	}
	domain := normalizeName(p.Domain)
	v.Check(validDNSName(domain), "domain", app.FieldInvalidFormat, "must be a DNS name such as api.example.com or *.example.com")
	out.names = []string{domain}
	for i, n := range p.SAN {
		n = normalizeName(n)
		if !v.Check(validDNSName(n), fmt.Sprintf("san[%d]", i), app.FieldInvalidFormat, "must be a DNS name") {
			continue
		}
		if !slices.Contains(out.names, n) {
			out.names = append(out.names, n)
		}
	}
	v.Check(len(out.names) <= 100, "san", app.FieldTooLong, "at most 100 names")
	v.Check(slices.Contains(acmeProviders, p.Provider), "provider", app.FieldInvalidValue,
		"must be upload (with certificate_pem and private_key_pem) or an ACME provider: "+strings.Join(acmeProviders, ", "))
	okChallenge := v.Check(out.challenge == ChallengeHTTP01 || out.challenge == ChallengeDNS01, "challenge", app.FieldInvalidValue, "must be http-01 or dns-01")
	_, okKey := keyTypes[out.keyType]
	v.Check(okKey, "key_type", app.FieldInvalidValue, "must be ec256, ec384, rsa2048 or rsa4096")
	v.Check(len(p.Profile) <= 64 && !strings.ContainsFunc(p.Profile, unicode.IsSpace), "profile", app.FieldInvalidFormat, "must be a profile name")
	name := strings.TrimSpace(p.Name)
	v.Check(utf8.RuneCountInString(name) <= MaxNameLength && !strings.ContainsFunc(name, unicode.IsControl), "name", app.FieldInvalidValue,
		fmt.Sprintf("must be at most %d characters, without control characters", MaxNameLength))
	for _, n := range out.names {
		if strings.HasPrefix(n, "*.") {
			out.wildcard = out.wildcard || n == domain
			if okChallenge && out.challenge != ChallengeDNS01 {
				v.Add("challenge", app.FieldInvalidValue, "wildcard names ("+n+") need dns-01")
				break
			}
		}
	}
	if out.challenge == ChallengeDNS01 {
		if _, ok := dnsProviders[p.DNSProvider]; !ok {
			if p.DNSProvider == "" {
				v.Add("dns_provider", app.FieldRequired, "dns-01 needs a DNS provider: "+strings.Join(dnsProviderNames(), ", "))
			} else {
				v.Add("dns_provider", app.FieldInvalidValue, "unknown DNS provider; supported: "+strings.Join(dnsProviderNames(), ", "))
			}
		} else if f, msg := checkDNSCredentials(p.DNSProvider, p.DNSCredentials); f != "" {
			v.Add(f, app.FieldInvalidValue, msg)
		}
	} else {
		v.Check(p.DNSProvider == "" && len(p.DNSCredentials) == 0, "dns_provider", app.FieldInvalidValue, "only with challenge dns-01")
	}
	if err := v.Err(); err != nil {
		return out, err
	}
	if out.challenge == ChallengeHTTP01 && s.acme.present == nil {
		return out, app.Invalid("challenge", app.FieldInvalidValue,
			"HTTP-01 through the agents is not available on this master yet: use dns-01 with a dns_provider")
	}
	if out.challenge == ChallengeHTTP01 && s.acme.served != nil {
		for _, n := range out.names {
			ok, err := s.acme.served(ctx, p.WorkspaceID, n)
			if err != nil {
				return out, fmt.Errorf("check virtual hosts serving %s: %w", n, err)
			}
			if !ok {
				return out, app.Invalid("domain", app.FieldInvalidValue, fmt.Sprintf("no plain-HTTP virtual host of this workspace serves %s: create a virtual host for it or use dns-01", n))
			}
		}
	}
	for k := range p.DNSCredentials {
		out.credKeys = append(out.credKeys, k)
	}
	slices.Sort(out.credKeys)
	if len(p.DNSCredentials) > 0 {
		out.credsJSON, _ = json.Marshal(p.DNSCredentials)
	}
	out.name = name
	if out.name == "" {
		out.name = domain
	}
	return out, nil
}

// Request validates an ACME request, stores the certificate as pending and
// enqueues its issuance in the same transaction.
func (s *Service) Request(ctx context.Context, p RequestParams) (Certificate, error) {
	vr, err := s.validateRequest(ctx, p)
	if err != nil {
		return Certificate{}, err
	}
	now := s.now()
	row := certificateRow{
		ID: uuid.New(), WorkspaceID: p.WorkspaceID, Name: vr.name, Domain: vr.names[0], SAN: vr.names, IsWildcard: vr.wildcard,
		Provider: p.Provider, Status: StatusPending, AutoRenew: p.AutoRenew, CreatedAt: now, UpdatedAt: now,
	}
	ext := acmeColumns{Challenge: vr.challenge, KeyType: vr.keyType, Profile: p.Profile, DNSProvider: p.DNSProvider, DNSCredentialKeys: vr.credKeys}
	if vr.credsJSON != nil {
		if ext.DNSCredentialsSealed, err = s.secrets.Seal(vr.credsJSON); err != nil {
			return Certificate{}, fmt.Errorf("request certificate %q: seal DNS credentials: %w", row.Domain, err)
		}
	}
	var cert Certificate
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		orgID, err := lockWorkspace(tx, p.WorkspaceID)
		if err != nil {
			return err
		}
		if err := tx.Create(&row).Error; err != nil {
			return fmt.Errorf("request certificate %q: %w", row.Domain, err)
		}
		if err := tx.Model(&certificateRow{}).Where("id = ?", row.ID).Updates(ext.updates()).Error; err != nil {
			return fmt.Errorf("request certificate %q: %w", row.Domain, err)
		}
		if err := s.enqueue(ctx, tx, row.ID, KindIssue, time.Time{}, 0); err != nil {
			return err
		}
		cert = row.certificate(now)
		return app.Audit(ctx, tx, app.AuditParams{OrgID: orgID, WorkspaceID: p.WorkspaceID, Action: "certificate.request",
			ObjectType: ObjectCertificate, ObjectID: row.ID.String(), After: cert})
	})
	if err != nil {
		return Certificate{}, err
	}
	s.logger.InfoContext(ctx, "certificate requested", "certificate_id", cert.ID, "domain", cert.Domain, "provider", cert.Provider, "challenge", vr.challenge)
	return cert, nil
}

// acmeColumns are the ACME columns of the certificates table (00070).
type acmeColumns struct {
	Challenge            string                `gorm:"column:challenge"`
	KeyType              string                `gorm:"column:key_type"`
	Profile              string                `gorm:"column:profile"`
	DNSProvider          string                `gorm:"column:dns_provider"`
	DNSCredentialsSealed []byte                `gorm:"column:dns_credentials_sealed"`
	DNSCredentialKeys    app.JSONSlice[string] `gorm:"column:dns_credential_keys;type:jsonb"`
	IssuedBy             string                `gorm:"column:issued_by"`
	OrderStartedAt       *time.Time            `gorm:"column:order_started_at"`
	Failures             int                   `gorm:"column:failures"`
	// NextAttemptAt and RenewAt are read for the admin (details.go), never
	// written through updates.
	NextAttemptAt *time.Time `gorm:"column:next_attempt_at"`
	RenewAt       *time.Time `gorm:"column:renew_at"`
}

func (a acmeColumns) updates() map[string]any {
	keys := a.DNSCredentialKeys
	if keys == nil {
		keys = app.JSONSlice[string]{}
	}
	return map[string]any{"challenge": a.Challenge, "key_type": a.KeyType, "profile": a.Profile, "dns_provider": a.DNSProvider,
		"dns_credentials_sealed": a.DNSCredentialsSealed, "dns_credential_keys": keys}
}

// Attempt is one try at issuing or renewing a certificate.
type Attempt struct {
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Kind       string    `json:"kind" doc:"issue or renew"`
	Issuer     string    `json:"issuer"`
	Challenge  string    `json:"challenge"`
	Result     string    `json:"result" doc:"success or failure"`
	Error      string    `json:"error"`
}

type attemptRow struct {
	ID            uuid.UUID `gorm:"column:id;type:uuid;primaryKey;default:gen_random_uuid()"`
	CertificateID uuid.UUID `gorm:"column:certificate_id;type:uuid"`
	Kind          string    `gorm:"column:kind"`
	Issuer        string    `gorm:"column:issuer"`
	Challenge     string    `gorm:"column:challenge"`
	Result        string    `gorm:"column:result"`
	Error         string    `gorm:"column:error"`
	StartedAt     time.Time `gorm:"column:started_at"`
	FinishedAt    time.Time `gorm:"column:finished_at"`
}

// TableName is certificate_attempts.
func (attemptRow) TableName() string { return "certificate_attempts" }

// Attempts returns a certificate's attempts, newest first (at most 100).
func (s *Service) Attempts(ctx context.Context, id uuid.UUID) ([]Attempt, error) {
	var rows []attemptRow
	if err := s.db.WithContext(ctx).Where("certificate_id = ?", id).Order("started_at DESC, finished_at DESC").Limit(100).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list attempts of certificate %s: %w", id, err)
	}
	out := make([]Attempt, len(rows))
	for i, r := range rows {
		out[i] = Attempt{StartedAt: r.StartedAt.UTC(), FinishedAt: r.FinishedAt.UTC(), Kind: r.Kind, Issuer: r.Issuer, Challenge: r.Challenge, Result: r.Result, Error: r.Error}
	}
	return out, nil
}

// Kinds of attempts.
const (
	KindIssue = "issue"
	KindRenew = "renew"
)

// orderRow is what the job reads of a certificate.
type orderRow struct {
	certificateRow
	acmeColumns
	OrganizationID uuid.UUID `gorm:"column:organization_id"`
}

// claim marks the certificate's order as in flight; false when another one is
// (a claim older than an hour counts as abandoned).
func (s *Service) claim(ctx context.Context, id uuid.UUID) (orderRow, bool, error) {
	now := s.now()
	res := s.db.WithContext(ctx).Exec(`UPDATE certificates SET order_started_at = ? WHERE id = ? AND provider <> 'upload'
		AND (order_started_at IS NULL OR order_started_at < ?)`, now, id, now.Add(-time.Hour))
	if res.Error != nil {
		return orderRow{}, false, fmt.Errorf("claim order of certificate %s: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return orderRow{}, false, nil
	}
	var r orderRow
	db := s.db.WithContext(ctx)
	if err := db.Take(&r.certificateRow, "id = ?", id).Error; err != nil {
		return orderRow{}, false, fmt.Errorf("read certificate %s: %w", id, err)
	}
	if err := db.Table("certificates").Where("id = ?", id).Take(&r.acmeColumns).Error; err != nil {
		return orderRow{}, false, fmt.Errorf("read ACME columns of certificate %s: %w", id, err)
	}
	org, err := workspaceOrg(db, r.WorkspaceID)
	if err != nil {
		return orderRow{}, false, err
	}
	r.OrganizationID = org
	return r, true, nil
}

// httpProvider answers HTTP-01 through PresentFunc.
type httpProvider struct {
	ctx      context.Context
	ws       uuid.UUID
	present  PresentFunc
	mu       sync.Mutex
	cleanups map[string]func(context.Context) error
}

func (h *httpProvider) Present(domain, token, keyAuth string) error {
	if h.present == nil {
		return errors.New("no agents can answer HTTP-01 challenges on this master")
	}
	cleanup, err := h.present(h.ctx, h.ws, domain, token, keyAuth)
	if err != nil {
		return fmt.Errorf("present the HTTP-01 token through the agents: %w", err)
	}
	h.mu.Lock()
	h.cleanups[domain+"/"+token] = cleanup
	h.mu.Unlock()
	return nil
}

func (h *httpProvider) CleanUp(domain, token, _ string) error {
	h.mu.Lock()
	f := h.cleanups[domain+"/"+token]
	delete(h.cleanups, domain+"/"+token)
	h.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(context.WithoutCancel(h.ctx))
}

// work runs one issuance or renewal of the certificate. It returns nil when the
// outcome is stored (success or failure); an error only when it could not be.
func (s *Service) work(ctx context.Context, id uuid.UUID) error {
	r, ok, err := s.claim(ctx, id)
	if err != nil || !ok {
		return err
	}
	kind := KindIssue
	if hasMaterial(r.Status) {
		kind = KindRenew
	}
	st, err := s.acmeSettings(ctx, r.OrganizationID)
	if err != nil {
		s.release(ctx, id)
		return err
	}
	issuers := []string{r.Provider}
	for _, f := range st.Fallback {
		if !slices.Contains(issuers, f) {
			issuers = append(issuers, f)
		}
	}
	var attempts []attemptRow
	var res issued
	var issuer string
	var lastErr string
	ra := &retryAfter{now: s.now}
	for _, iss := range issuers {
		started := s.now()
		res, err = s.obtain(ctx, r, st, iss, ra)
		a := attemptRow{ID: uuid.New(), CertificateID: id, Kind: kind, Issuer: iss, Challenge: r.Challenge, StartedAt: started, FinishedAt: s.now()}
		if err == nil {
			a.Result = "success"
			attempts = append(attempts, a)
			issuer = iss
			break
		}
		lastErr = readableError(r.Domain, r.Challenge, err)
		s.logger.WarnContext(ctx, "certificate order failed", "certificate_id", id, "issuer", iss, "error", err)
		a.Result, a.Error = "failure", lastErr
		if len(issuers) > 1 {
			a.Error += " (next issuer tried)"
		}
		attempts = append(attempts, a)
	}
	if res.res != nil {
		return s.storeIssued(ctx, r, kind, issuer, res, attempts)
	}
	if len(issuers) > 1 {
		attempts[len(attempts)-1].Error = lastErr
	}
	return s.storeFailure(ctx, r, kind, lastErr, attempts, ra.wait())
}

// release clears the in-flight mark after an error that stored nothing.
func (s *Service) release(ctx context.Context, id uuid.UUID) {
	if err := s.db.WithContext(context.WithoutCancel(ctx)).Exec("UPDATE certificates SET order_started_at = NULL WHERE id = ?", id).Error; err != nil {
		s.logger.ErrorContext(ctx, "release certificate order", "certificate_id", id, "error", err)
	}
}

// issued is what a successful order gave: the chain and key, and the renewal
// time the CA's renewal information (RFC 9773) suggests (zero when it offers none).
type issued struct {
	res     *certificate.Resource
	ariPick time.Time
}

// obtain runs one ACME order at issuer. Retry-After answers of the CA or the
// DNS provider's API are recorded in ra.
func (s *Service) obtain(ctx context.Context, r orderRow, st acmeSettings, issuer string, ra *retryAfter) (issued, error) {
	dir, err := s.directoryOf(issuer, st)
	if err != nil {
		return issued{}, err
	}
	email := st.Email
	if email == "" {
		email = s.acme.cfg.Email
	}
	client, err := s.legoClient(ctx, r.OrganizationID, dir, email, keyTypes[r.KeyType], ra)
	if err != nil {
		return issued{}, err
	}
	switch r.Challenge {
	case ChallengeDNS01:
		var creds map[string]string
		if len(r.DNSCredentialsSealed) > 0 {
			b, err := s.secrets.Open(r.DNSCredentialsSealed)
			if err != nil {
				return issued{}, fmt.Errorf("open DNS credentials: %w", err)
			}
			if err := json.Unmarshal(b, &creds); err != nil {
				return issued{}, fmt.Errorf("decode DNS credentials: %w", err)
			}
		}
		spec, ok := dnsProviders[r.DNSProvider]
		if !ok {
			return issued{}, fmt.Errorf("unknown DNS provider %q", r.DNSProvider)
		}
		hc := guardedHTTPClient()
		hc.Transport = ra.wrap(hc.Transport)
		p, err := spec.build(creds, hc)
		if err != nil {
			return issued{}, fmt.Errorf("set up DNS provider %s: %w", r.DNSProvider, err)
		}
		var opts []dns01.ChallengeOption
		if rs := splitList(s.acme.cfg.DNSResolvers); len(rs) > 0 {
			opts = append(opts, dns01.AddRecursiveNameservers(rs), dns01.DisableAuthoritativeNssPropagationRequirement())
		}
		if err := client.Challenge.SetDNS01Provider(p, opts...); err != nil {
			return issued{}, err
		}
	default:
		hp := &httpProvider{ctx: ctx, ws: r.WorkspaceID, present: s.acme.present, cleanups: map[string]func(context.Context) error{}}
		if err := client.Challenge.SetHTTP01Provider(hp); err != nil {
			return issued{}, err
		}
	}
	req := certificate.ObtainRequest{Domains: r.SAN, Bundle: true, Profile: r.Profile}
	if len(req.Domains) == 0 {
		req.Domains = []string{r.Domain}
	}
	// A renewal at the same issuer names the certificate it replaces (RFC
	// 9773), so the CA can let it through rate limits; lego sends it only to
	// CAs offering renewal information.
	if r.CertificatePEM != "" && r.IssuedBy == issuer {
		if old, err := certcrypto.ParsePEMCertificate([]byte(r.CertificatePEM)); err == nil {
			if id, err := certificate.MakeARICertID(old); err == nil {
				req.ReplacesCertID = id
			}
		}
	}
	res, err := client.Certificate.Obtain(req)
	var pd *acme.ProblemDetails
	if err != nil && req.ReplacesCertID != "" && errors.As(err, &pd) && strings.Contains(strings.ToLower(pd.Detail), "replace") {
		// The CA refuses the replacement (another account's certificate, one
		// already replaced): order without it.
		s.logger.WarnContext(ctx, "renewal ordered without replaces", "certificate_id", r.ID, "error", err)
		req.ReplacesCertID = ""
		res, err = client.Certificate.Obtain(req)
	}
	if err != nil {
		return issued{}, err
	}
	out := issued{res: res}
	if leaf, err := certcrypto.ParsePEMCertificate(res.Certificate); err == nil {
		info, err := client.Certificate.GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
		switch {
		case err == nil:
			now := s.now()
			if at := info.ShouldRenewAt(now, leaf.NotAfter.Sub(now)+time.Hour); at != nil {
				out.ariPick = *at
			}
		case !errors.Is(err, api.ErrNoARI):
			s.logger.WarnContext(ctx, "renewal information unavailable", "certificate_id", r.ID, "issuer", issuer, "error", err)
		}
	}
	return out, nil
}

// retryAfter keeps the longest wait a Retry-After header of an error answer
// asked for during one order (the CA's rate limits, the DNS provider's API).
type retryAfter struct {
	now func() time.Time
	mu  sync.Mutex
	d   time.Duration
}

// maxRetryAfter bounds how long a Retry-After answer may postpone the next attempt.
const maxRetryAfter = 24 * time.Hour

func (ra *retryAfter) wrap(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return retryAfterTransport{next: next, ra: ra}
}

func (ra *retryAfter) wait() time.Duration {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	return ra.d
}

// note records the Retry-After of resp when it is an error answer.
func (ra *retryAfter) note(resp *http.Response) {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if resp.StatusCode < 400 || v == "" {
		return
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(ra.now())
	}
	d = min(d, maxRetryAfter)
	ra.mu.Lock()
	ra.d = max(ra.d, d)
	ra.mu.Unlock()
}

type retryAfterTransport struct {
	next http.RoundTripper
	ra   *retryAfter
}

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.ra.note(resp)
	}
	return resp, err
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readableError turns lego's error into one line people can act on, each
// problem as "<name>: <CHALLENGE> challenge: <what went wrong>".
func readableError(domain, chal string, err error) string {
	label := strings.ToUpper(chal)
	if label == "" {
		label = "HTTP-01"
	}
	var lines []string
	var pd *acme.ProblemDetails
	if errors.As(err, &pd) {
		name := domain
		if len(pd.SubProblems) > 0 && pd.SubProblems[0].Identifier.Value != "" {
			name = pd.SubProblems[0].Identifier.Value
		}
		msg := strings.TrimPrefix(pd.Type, "urn:ietf:params:acme:error:") + ": " + pd.Detail
		for _, sp := range pd.SubProblems {
			msg += "; " + sp.Identifier.Value + ": " + sp.Detail
		}
		lines = []string{name + ": " + label + " challenge: " + msg}
	} else {
		raw := strings.ReplaceAll(err.Error(), "error: one or more domains had a problem:\n", "")
		for _, l := range strings.Split(raw, "\n") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			// lego names the domain as "[name] ", sometimes twice.
			name := domain
			for strings.HasPrefix(l, "[") {
				end := strings.Index(l, "] ")
				if end < 0 {
					break
				}
				name, l = l[1:end], strings.TrimSpace(l[end+2:])
			}
			if strings.HasPrefix(l, name+": ") {
				l = strings.TrimPrefix(l, name+": ")
			}
			lines = append(lines, name+": "+label+" challenge: "+strings.TrimPrefix(l, "acme: "))
		}
		if len(lines) == 0 {
			lines = []string{domain + ": " + label + " challenge: " + raw}
		}
	}
	msg := strings.Join(strings.Fields(strings.Join(lines, "; ")), " ")
	msg = strings.TrimRight(strings.ReplaceAll(msg, "; ;", ";"), "; ")
	if chal != ChallengeDNS01 && (strings.Contains(msg, "404") || strings.Contains(msg, "connection refused")) {
		msg += " — is port 80 served by an NxMesh agent?"
	}
	if len(msg) > 2000 {
		msg = msg[:2000]
	}
	return msg
}

// renewAt is when a certificate valid from nb to na is renewed: at one third
// of its lifetime left, minus up to 2% of the lifetime of jitter, or earlier
// at ariPick, the random point of the CA's suggested renewal window (RFC
// 9773) when the CA offers one (a window in the past, after a revocation,
// means now).
func renewAt(nb, na, ariPick time.Time) time.Time {
	life := na.Sub(nb)
	jitter := time.Duration(rand.Int64N(int64(life/50) + 1))
	at := na.Add(-life / 3).Add(-jitter)
	if !ariPick.IsZero() && ariPick.Before(at) {
		return ariPick
	}
	return at
}

// storeIssued stores the new material and its attempts, bumps the config, and
// publishes the event, in one transaction.
func (s *Service) storeIssued(ctx context.Context, r orderRow, kind, issuer string, res issued, attempts []attemptRow) error {
	now := s.now()
	u, err := parseUpload(string(res.res.Certificate), string(res.res.PrivateKey), now)
	if err != nil {
		return s.storeFailure(ctx, r, kind, "the issued certificate did not validate: "+err.Error(), attempts, 0)
	}
	sealed, err := s.secrets.Seal(u.keyPEM)
	if err != nil {
		s.release(ctx, r.ID)
		return fmt.Errorf("seal issued key: %w", err)
	}
	ra := renewAt(u.notBefore, u.notAfter, res.ariPick)
	var cert Certificate
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := lockWorkspace(tx, r.WorkspaceID); err != nil {
			return err
		}
		upd := map[string]any{
			"certificate_pem": u.chainPEM, "private_key_sealed": sealed, "issuer": u.issuer, "serial": u.serial,
			"fingerprint_sha256": u.fingerprintSHA256, "issued_at": u.notBefore, "expires_at": u.notAfter, "san": app.JSONSlice[string](u.san),
			"error": "", "issued_by": issuer, "order_started_at": nil, "next_attempt_at": nil, "failures": 0,
			"renew_at": ra, "alerted_days": 0, "updated_at": now, "status": statusAt(u.notAfter, &ra, now),
		}
		if err := tx.Model(&certificateRow{}).Where("id = ?", r.ID).Updates(upd).Error; err != nil {
			return fmt.Errorf("store issued certificate %s: %w", r.ID, err)
		}
		if err := tx.Create(&attempts).Error; err != nil {
			return fmt.Errorf("record attempts: %w", err)
		}
		var row certificateRow
		if err := tx.Select(publicColumns).Take(&row, "id = ?", r.ID).Error; err != nil {
			return err
		}
		cert = row.certificate(now)
		verb := "issued"
		if kind == KindRenew {
			verb = "renewed"
		}
		if err := s.changed(ctx, tx, r.WorkspaceID, fmt.Sprintf("certificate %q %s", r.Domain, verb)); err != nil {
			return err
		}
		if err := s.publish(ctx, tx, r, "certificate."+verb, ""); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{OrgID: r.OrganizationID, WorkspaceID: r.WorkspaceID, Action: "certificate." + verb,
			ObjectType: ObjectCertificate, ObjectID: r.ID.String(), After: cert})
	})
	if err != nil {
		s.release(ctx, r.ID)
		return err
	}
	s.logger.InfoContext(ctx, "certificate "+kind+" succeeded", "certificate_id", r.ID, "domain", r.Domain, "issuer", issuer, "expires_at", u.notAfter)
	return nil
}

// backoff is the wait before the next attempt after n failures in a row.
func backoff(n int) time.Duration {
	switch n {
	case 1:
		return time.Minute
	case 2:
		return 5 * time.Minute
	case 3:
		return 20 * time.Minute
	}
	return time.Hour
}

// storeFailure stores a failed order: the error, the attempts, and while
// retries remain the next attempt, after backoff or the longest Retry-After
// the CA or the DNS provider's API answered with (wait), whichever is later.
func (s *Service) storeFailure(ctx context.Context, r orderRow, kind, msg string, attempts []attemptRow, wait time.Duration) error {
	now := s.now()
	failures := r.Failures + 1
	var next *time.Time
	if failures < maxFailures {
		t := now.Add(max(backoff(failures), wait))
		next = &t
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		upd := map[string]any{"error": msg, "order_started_at": nil, "next_attempt_at": next, "failures": failures, "updated_at": now}
		if !hasMaterial(r.Status) {
			upd["status"] = StatusFailed
		}
		if err := tx.Model(&certificateRow{}).Where("id = ?", r.ID).Updates(upd).Error; err != nil {
			return fmt.Errorf("store failure of certificate %s: %w", r.ID, err)
		}
		if len(attempts) > 0 {
			if err := tx.Create(&attempts).Error; err != nil {
				return fmt.Errorf("record attempts: %w", err)
			}
		}
		if next != nil {
			if err := s.enqueue(ctx, tx, r.ID, kind, *next, failures); err != nil {
				return err
			}
		}
		if err := s.publish(ctx, tx, r, "certificate.failed", msg); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{OrgID: r.OrganizationID, WorkspaceID: r.WorkspaceID, Action: "certificate.failed",
			ObjectType: ObjectCertificate, ObjectID: r.ID.String(), After: map[string]any{"domain": r.Domain, "error": msg}})
	})
	if err != nil {
		s.release(ctx, r.ID)
		return err
	}
	s.logger.WarnContext(ctx, "certificate "+kind+" failed", slog.String("certificate_id", r.ID.String()), "domain", r.Domain, "error", msg, "next_attempt_at", next)
	return nil
}

func (s *Service) publish(ctx context.Context, tx *gorm.DB, r orderRow, typ, msg string) error {
	if s.acme.events == nil {
		return nil
	}
	return s.acme.events.Publish(ctx, tx, app.Event{Type: typ, OrgID: r.OrganizationID, WorkspaceID: r.WorkspaceID, Object: ObjCertificate,
		Timestamp: s.now(), Data: map[string]any{"certificate_id": r.ID.String(), "domain": r.Domain, "error": msg}})
}
