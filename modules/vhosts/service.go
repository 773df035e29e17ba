package vhosts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/upstreams"
)

// Service is the domain logic of virtual hosts, streams and configuration
// versions, and the only writer of their tables.
//
// Every change runs in one transaction that first locks the workspace's row,
// then checks references and listen ports, writes the rows, records a new
// configuration version (ConfigChanged) and writes the audit row. The
// workspace lock serializes every change of a workspace's configuration, so
// versions are gap-free and port checks cannot race.
type Service struct {
	db     *gorm.DB
	logger *slog.Logger
	clock  app.Clock
	ups    *upstreams.Service
	certs  *certs.Service
	// knownAgents checks target_agents.agent_ids; nil skips the check.
	knownAgents KnownAgentsFunc
	// rolloutFunc reads a version's rollout to the agents; nil: none.
	rolloutFunc RolloutFunc
	// agents lists agents for the target picker (ui_targets.go); may be nil.
	agents AgentsFunc
	// rootPrefixes are the directories static roots must lie under
	// (app.VHostsConfig.RootPrefixes).
	rootPrefixes []string
	// bcryptCost is the cost of basic-auth password hashes (tests lower it).
	bcryptCost int
	// snapshots caches decoded configuration versions for DesiredConfig.
	snapshots snapshotCache
	// maxUpdateBytes bounds the configuration update of a workspace
	// (grpc.max_message_bytes, see checkUpdateSize).
	maxUpdateBytes int
}

// KnownAgentsFunc returns which of ids are agents of the workspace, read in
// tx. It is the agents module's Service.InWorkspace; the agents module needs
// this module's service, so main.go passes a closure.
type KnownAgentsFunc func(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]bool, error)

// Options connect the module to the rest of the master. Upstreams and Certs
// are read for references and snapshots (rollback restores upstreams through
// Upstreams); KnownAgentsFunc (nil: agent ids in target_agents are checked
// for their form only) checks the target_agents lists.
//
// The upstreams and certs modules need this module's functions (their
// ChangeFunc = Service().ConfigChanged, UsageFunc = Service().UpstreamUsers /
// CertificateUsers) while this module needs their services, so main.go builds
// them first with closures over the vhosts module built afterwards; likewise
// KnownAgentsFunc is a closure over the agents module, which needs this one.
type Options struct {
	// Upstreams is the upstreams module's service.
	Upstreams *upstreams.Service
	// Certs is the certs module's service.
	Certs *certs.Service
	// KnownAgentsFunc is agents.(*Service).InWorkspace.
	KnownAgentsFunc KnownAgentsFunc
	// RolloutFunc is agents.(*Service).Rollout (nil: versions show no
	// agents).
	RolloutFunc RolloutFunc
	// AgentsFunc lists agents for the forms' target picker (ui_targets.go).
	AgentsFunc AgentsFunc
}

// NewService returns a Service over d.DB. Static roots must lie under
// d.Config.VHosts.RootPrefixes() and configuration updates are held to
// grpc.max_message_bytes (d.Config.GRPC.MaxMessageBytes).
func NewService(d app.Deps, opts Options) *Service {
	s := &Service{
		db: d.DB, logger: d.Logger, clock: d.Clock, ups: opts.Upstreams, certs: opts.Certs, knownAgents: opts.KnownAgentsFunc,
		rolloutFunc: opts.RolloutFunc, agents: opts.AgentsFunc,
		bcryptCost: bcrypt.DefaultCost, rootPrefixes: d.Config.VHosts.RootPrefixes(), maxUpdateBytes: app.DefaultMaxMessageBytes,
	}
	if n := d.Config.GRPC.MaxMessageBytes; n > 0 {
		s.maxUpdateBytes = n
	}
	return s
}

// now is the timestamp of a write, at PostgreSQL's precision so that what a
// method returns equals what a later read returns.
func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// maxAttempts is how often a write transaction is tried when PostgreSQL
// aborts it to break a deadlock or a serialization conflict.
const maxAttempts = 3

// transaction runs fn in a transaction, again (up to maxAttempts) when
// PostgreSQL aborted it to break a deadlock (40P01) or a serialization
// failure (40001). This module's transactions lock the workspace row first
// and no other row before it; a deadlock remains possible only for a rollback,
// which rewrites upstream rows while holding the workspace, against an
// upstream change that locked its row before calling ConfigChanged.
func (s *Service) transaction(ctx context.Context, fn func(tx *gorm.DB) error) error {
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		err = s.db.WithContext(ctx).Transaction(fn)
		if !isRetryable(err) || ctx.Err() != nil {
			return err
		}
		s.logger.WarnContext(ctx, "configuration change aborted by the database, retrying", "attempt", attempt, "error", err)
	}
	return err
}

func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// workspaceLock is what lockWorkspace read.
type workspaceLock struct {
	OrgID   uuid.UUID
	Version int64
}

// lockWorkspace locks the workspace's row until tx ends and returns its
// organization and current configuration version.
//
// The lock is FOR NO KEY UPDATE, not FOR UPDATE: it excludes every other
// configuration change of the workspace, but not the FOR KEY SHARE locks that
// PostgreSQL takes on the workspace row for the foreign key of every row
// inserted into it. With FOR UPDATE, two transactions that each inserted a row
// (an upstream, a certificate) before calling ConfigChanged would each wait
// for the other's key-share lock: a deadlock.
func lockWorkspace(tx *gorm.DB, id uuid.UUID) (workspaceLock, error) {
	var rows []struct {
		OrganizationID uuid.UUID
		ConfigVersion  int64
	}
	err := tx.Raw("SELECT organization_id, config_version FROM workspaces WHERE id = ? FOR NO KEY UPDATE", id).Scan(&rows).Error
	if err != nil {
		return workspaceLock{}, fmt.Errorf("lock workspace %s: %w", id, err)
	}
	if len(rows) == 0 {
		return workspaceLock{}, orgs.ErrWorkspaceNotFound
	}
	return workspaceLock{OrgID: rows[0].OrganizationID, Version: rows[0].ConfigVersion}, nil
}

// describe is the human-readable name of an object in messages.
func describeVirtualHost(name string, id uuid.UUID) string {
	return fmt.Sprintf("virtual host %q (%s)", name, id)
}

func describeStream(name string, id uuid.UUID) string {
	return fmt.Sprintf("stream %q (%s)", name, id)
}

// ---- Validation of a whole virtual host ----

// checkVirtualHost checks in against every grammar and returns the host as it
// will be stored (without id, workspace and timestamps) and the passwords to
// hash, by user name. known are the password hashes the host has now, by user
// name: a user listed without a password keeps its hash. References to
// upstreams and certificates are checked by the caller (checkReferences).
func checkVirtualHost(in VirtualHostInput, known map[string]string, rootPrefixes []string) (VirtualHost, map[string]string, *app.Validator) {
	v := &app.Validator{}
	out := VirtualHost{
		Name:          strings.TrimSpace(in.Name),
		SSLEnabled:    in.SSLEnabled,
		HTTP2Enabled:  in.HTTP2Enabled,
		RedirectHTTPS: in.RedirectHTTPS,
		DefaultServer: in.DefaultServer,
	}
	checkName(v, "name", out.Name)
	out.ServerName = normalizeServerName(v, "server_name", in.ServerName)

	switch {
	case in.ListenPort == nil && in.SSLEnabled:
		out.ListenPort = 443
	case in.ListenPort == nil:
		out.ListenPort = 80
	case *in.ListenPort < 1 || *in.ListenPort > 65535:
		v.Add("listen_port", app.FieldInvalidValue, "must be between 1 and 65535")
	default:
		out.ListenPort = *in.ListenPort
	}
	switch {
	case in.SSLCertificateID != "":
		id, ok := parseUUID(in.SSLCertificateID)
		if v.Check(ok, "ssl_certificate_id", app.FieldInvalidFormat, "must be a UUID") &&
			v.Check(in.SSLEnabled, "ssl_certificate_id", app.FieldInvalidValue, "is only allowed when ssl_enabled is true") {
			out.SSLCertificateID = &id
		}
	case in.SSLEnabled:
		v.Add("ssl_certificate_id", app.FieldRequired, "is required when ssl_enabled is true")
	}
	v.Check(!in.HTTP2Enabled || in.SSLEnabled, "http2_enabled", app.FieldInvalidValue, "requires ssl_enabled")
	// http_port is refused rather than ignored without TLS: the plain port
	// of such a host is listen_port, and a stored value would come back to
	// life when TLS is turned on.
	switch {
	case in.HTTPPort == 0:
	case in.HTTPPort < 1 || in.HTTPPort > 65535:
		v.Add("http_port", app.FieldInvalidValue, "must be between 1 and 65535 (or 0 for none)")
	case !in.SSLEnabled:
		v.Add("http_port", app.FieldInvalidValue, "requires ssl_enabled (without TLS, listen_port is the plain HTTP port)")
	case out.ListenPort != 0 && in.HTTPPort == out.ListenPort:
		v.Add("http_port", app.FieldInvalidValue, "must differ from listen_port (the TLS port)")
	default:
		out.HTTPPort = in.HTTPPort
	}
	if in.RedirectHTTPS {
		if v.Check(in.SSLEnabled, "redirect_https", app.FieldInvalidValue, "requires ssl_enabled") && in.HTTPPort == 0 {
			v.Check(out.ListenPort != 80, "redirect_https", app.FieldInvalidValue, "requires a listen_port other than 80 (without http_port the redirect listens on 80)")
		}
	}

	if in.RedirectTo != "" {
		if err := checkHTTPURL(in.RedirectTo); err != nil || !argOK(in.RedirectTo) {
			msg := "must be an http:// or https:// URL"
			if err != nil {
				msg = err.Error()
			}
			v.Add("redirect_to", app.FieldInvalidFormat, msg)
		}
		out.RedirectTo = in.RedirectTo
		out.RedirectCode = in.RedirectCode
		if out.RedirectCode == 0 {
			out.RedirectCode = 301
		}
		v.Check(slices.Contains(redirectCodes, out.RedirectCode), "redirect_code", app.FieldInvalidValue, "must be 301, 302, 307 or 308")
		v.Check(len(in.Locations) == 0, "locations", app.FieldInvalidValue, "must be empty when redirect_to is set (the host only redirects)")
	} else {
		// redirect_code means nothing without redirect_to; it is dropped so
		// that clearing redirect_to alone is enough.
		v.Check(in.RedirectCode == 0 || slices.Contains(redirectCodes, in.RedirectCode), "redirect_code", app.FieldInvalidValue, "must be 301, 302, 307 or 308")
		v.Check(len(in.Locations) > 0, "locations", app.FieldRequired, "must list at least one location unless redirect_to is set")
	}
	out.Locations = checkLocations(v, in.Locations, rootPrefixes)

	var passwords map[string]string
	out.AccessList, passwords = checkAccessList(v, in.AccessList, known)

	if in.RateLimit != nil {
		rl := *in.RateLimit
		v.Check(rl.RequestsPerSecond >= 1 && rl.RequestsPerSecond <= MaxRequestsPerSecond, "rate_limit.requests_per_second",
			app.FieldInvalidValue, fmt.Sprintf("must be between 1 and %d", MaxRequestsPerSecond))
		v.Check(rl.Burst >= 0 && rl.Burst <= MaxBurst, "rate_limit.burst", app.FieldInvalidValue,
			fmt.Sprintf("must be between 0 and %d", MaxBurst))
		out.RateLimit = &rl
	}
	if in.ClientMaxBodySize != "" {
		if err := checkSize(in.ClientMaxBodySize); err != nil {
			v.Add("client_max_body_size", app.FieldInvalidFormat, err.Error())
		}
		out.ClientMaxBodySize = in.ClientMaxBodySize
	}
	for _, t := range []struct {
		field string
		in    *int
		out   **int
	}{
		{"proxy_connect_timeout", in.ProxyConnectTimeout, &out.ProxyConnectTimeout},
		{"proxy_read_timeout", in.ProxyReadTimeout, &out.ProxyReadTimeout},
		{"proxy_send_timeout", in.ProxySendTimeout, &out.ProxySendTimeout},
	} {
		if t.in == nil {
			continue
		}
		v.Check(*t.in >= 1 && *t.in <= MaxTimeoutSeconds, t.field, app.FieldInvalidValue,
			fmt.Sprintf("must be between 1 and %d seconds (null for nginx's default)", MaxTimeoutSeconds))
		*t.out = clonePtr(t.in)
	}
	checkCustomDirectives(v, "custom_directives", in.CustomDirectives)
	out.CustomDirectives = maps.Clone(in.CustomDirectives)
	if out.CustomDirectives == nil {
		out.CustomDirectives = map[string]string{}
	}
	out.TargetAgents = normalizeTargetAgents(v, "target_agents", in.TargetAgents)
	return out, passwords, v
}

// checkLocations checks every location and returns them normalized.
func checkLocations(v *app.Validator, in []Location, rootPrefixes []string) []Location {
	if len(in) > MaxLocations {
		v.Add("locations", app.FieldInvalidValue, fmt.Sprintf("must list at most %d locations", MaxLocations))
		return nil
	}
	out := make([]Location, 0, len(in))
	seen := map[string]int{}
	for i, l := range in {
		p := fmt.Sprintf("locations[%d]", i)
		n := Location{Path: l.Path, Match: l.Match, Websocket: l.Websocket}
		if n.Match == "" {
			n.Match = MatchPrefix
		}
		v.Check(n.Match == MatchPrefix || n.Match == MatchExact, p+".match", app.FieldInvalidValue, `must be "prefix" or "exact"`)
		if err := checkLocationPath(l.Path); err != nil {
			code := app.FieldInvalidFormat
			if l.Path == "" {
				code = app.FieldRequired
			}
			v.Add(p+".path", code, err.Error())
		} else if j, dup := seen[n.Match+" "+n.Path]; dup {
			v.Add(p+".path", app.FieldInvalidValue, fmt.Sprintf("duplicates locations[%d] (same path and match)", j))
		} else {
			seen[n.Match+" "+n.Path] = i
		}

		targets := 0
		for _, s := range []string{l.ProxyPass, l.UpstreamID, l.Root} {
			if s != "" {
				targets++
			}
		}
		switch {
		case targets == 0:
			v.Add(p, app.FieldRequired, "must set one of proxy_pass, upstream_id or root")
		case targets > 1:
			v.Add(p, app.FieldInvalidValue, "must set only one of proxy_pass, upstream_id or root")
		}
		if l.ProxyPass != "" {
			if err := checkHTTPURL(l.ProxyPass); err != nil {
				v.Add(p+".proxy_pass", app.FieldInvalidFormat, err.Error())
			} else if !argOK(l.ProxyPass) {
				v.Add(p+".proxy_pass", app.FieldInvalidFormat, "cannot be written to nginx configuration unchanged")
			}
			n.ProxyPass = l.ProxyPass
		}
		if l.UpstreamID != "" {
			if id, ok := parseUUID(l.UpstreamID); v.Check(ok, p+".upstream_id", app.FieldInvalidFormat, "must be a UUID") {
				n.UpstreamID = id.String()
			}
		}
		if l.Root != "" {
			if err := checkRoot(l.Root, rootPrefixes); err != nil {
				v.Add(p+".root", app.FieldInvalidFormat, err.Error())
			}
			n.Root = l.Root
		}
		if l.Index != "" {
			if v.Check(l.Root != "", p+".index", app.FieldInvalidValue, "is only allowed with root") {
				idx, err := normalizeIndex(l.Index)
				if err != nil {
					v.Add(p+".index", app.FieldInvalidFormat, err.Error())
				}
				n.Index = idx
			}
		}
		v.Check(!l.Websocket || l.ProxyPass != "" || l.UpstreamID != "", p+".websocket", app.FieldInvalidValue,
			"is only allowed in proxied locations (proxy_pass or upstream_id)")
		n.CustomHeaders = checkHeaders(v, p+".custom_headers", l.CustomHeaders)
		n.RewriteRules = checkRewriteRules(v, p+".rewrite_rules", l.RewriteRules)
		out = append(out, n)
	}
	return out
}

func checkHeaders(v *app.Validator, field string, in []Header) []Header {
	if len(in) > MaxHeaders {
		v.Add(field, app.FieldInvalidValue, fmt.Sprintf("must list at most %d headers", MaxHeaders))
		return []Header{}
	}
	out := make([]Header, 0, len(in))
	seen := map[string]int{}
	for i, h := range in {
		p := fmt.Sprintf("%s[%d]", field, i)
		if err := checkHeaderName(h.Name); err != nil {
			code := app.FieldInvalidFormat
			if h.Name == "" {
				code = app.FieldRequired
			}
			v.Add(p+".name", code, err.Error())
		} else if j, dup := seen[strings.ToLower(h.Name)]; dup {
			v.Add(p+".name", app.FieldInvalidValue, fmt.Sprintf("duplicates %s[%d].name", field, j))
		} else {
			seen[strings.ToLower(h.Name)] = i
		}
		if err := checkHeaderValue(h.Value); err != nil {
			v.Add(p+".value", app.FieldInvalidFormat, err.Error())
		}
		out = append(out, h)
	}
	return out
}

func checkRewriteRules(v *app.Validator, field string, in []RewriteRule) []RewriteRule {
	if len(in) > MaxRewriteRules {
		v.Add(field, app.FieldInvalidValue, fmt.Sprintf("must list at most %d rules", MaxRewriteRules))
		return []RewriteRule{}
	}
	out := make([]RewriteRule, 0, len(in))
	for i, r := range in {
		p := fmt.Sprintf("%s[%d]", field, i)
		if err := checkRewritePattern(r.Pattern); err != nil {
			code := app.FieldInvalidFormat
			if r.Pattern == "" {
				code = app.FieldRequired
			}
			v.Add(p+".pattern", code, err.Error())
		}
		if err := checkRewriteReplacement(r.Replacement); err != nil {
			code := app.FieldInvalidFormat
			if r.Replacement == "" {
				code = app.FieldRequired
			}
			v.Add(p+".replacement", code, err.Error())
		}
		v.Check(r.Flag == "" || slices.Contains(rewriteFlags, r.Flag), p+".flag", app.FieldInvalidValue,
			"must be last, break, redirect, permanent or empty")
		out = append(out, r)
	}
	return out
}

// checkAccessList checks an access list and returns it normalized (nil when
// empty) with the passwords to hash by user name.
func checkAccessList(v *app.Validator, in *AccessList, known map[string]string) (*AccessList, map[string]string) {
	if in == nil {
		return nil, nil
	}
	const p = "access_list."
	out := &AccessList{Realm: in.Realm}
	rules := func(field string, list []string) []string {
		if len(list) > MaxAccessRules {
			v.Add(p+field, app.FieldInvalidValue, fmt.Sprintf("must list at most %d entries", MaxAccessRules))
			return nil
		}
		var norm []string
		for i, s := range list {
			n, err := normalizeAddressRule(s)
			if err != nil {
				v.Add(fmt.Sprintf("%s%s[%d]", p, field, i), app.FieldInvalidFormat, err.Error())
				continue
			}
			norm = append(norm, n)
		}
		return norm
	}
	out.Allow = rules("allow", in.Allow)
	out.Deny = rules("deny", in.Deny)

	var passwords map[string]string
	if len(in.BasicAuthUsers) > MaxBasicAuthUsers {
		v.Add(p+"basic_auth_users", app.FieldInvalidValue, fmt.Sprintf("must list at most %d users", MaxBasicAuthUsers))
	} else {
		seen := map[string]int{}
		for i, u := range in.BasicAuthUsers {
			f := fmt.Sprintf("%sbasic_auth_users[%d]", p, i)
			if err := checkUsername(u.Username); err != nil {
				code := app.FieldInvalidFormat
				if u.Username == "" {
					code = app.FieldRequired
				}
				v.Add(f+".username", code, err.Error())
				continue
			}
			if j, dup := seen[u.Username]; dup {
				v.Add(f+".username", app.FieldInvalidValue, fmt.Sprintf("duplicates %sbasic_auth_users[%d].username", p, j))
				continue
			}
			seen[u.Username] = i
			switch {
			case u.Password != "":
				if err := checkPassword(u.Password); err != nil {
					v.Add(f+".password", app.FieldInvalidValue, err.Error())
					continue
				}
				if passwords == nil {
					passwords = map[string]string{}
				}
				passwords[u.Username] = u.Password
			case known[u.Username] == "":
				v.Add(f+".password", app.FieldRequired, "is required for a new user")
				continue
			}
			out.BasicAuthUsers = append(out.BasicAuthUsers, BasicAuthUser{Username: u.Username, HasPassword: true})
		}
	}
	if err := checkRealm(in.Realm); err != nil {
		v.Add(p+"realm", app.FieldInvalidFormat, err.Error())
	}
	if len(out.Allow) == 0 && len(out.Deny) == 0 && len(out.BasicAuthUsers) == 0 && out.Realm == "" {
		return nil, passwords
	}
	return out, passwords
}

// hashPasswords returns the bcrypt hashes of passwords in the "$2y$" form that
// htpasswd -B writes and nginx's crypt(3) (libxcrypt, musl) accepts.
func (s *Service) hashPasswords(passwords map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(passwords))
	for user, pw := range passwords {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), s.bcryptCost)
		if err != nil {
			return nil, fmt.Errorf("hash password of basic-auth user %q: %w", user, err)
		}
		hs := string(h)
		if strings.HasPrefix(hs, "$2a$") {
			hs = "$2y$" + hs[4:]
		}
		out[user] = hs
	}
	return out, nil
}

// hashesFor returns the password hashes of vh's users: hashed for users in
// fresh, the known hash for the others.
func hashesFor(vh VirtualHost, known, fresh map[string]string) map[string]string {
	if vh.AccessList == nil || len(vh.AccessList.BasicAuthUsers) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, u := range vh.AccessList.BasicAuthUsers {
		if h, ok := fresh[u.Username]; ok {
			out[u.Username] = h
		} else {
			out[u.Username] = known[u.Username]
		}
	}
	return out
}

// refChecker checks references to upstreams and certificates of one
// workspace inside a transaction that holds the workspace lock.
//
// It reads the workspace's upstreams and certificates with plain SELECTs
// (ListAll) and takes no row locks, on purpose: the upstreams and certs
// modules lock their own rows in different orders relative to the workspace
// row, and a row lock taken here while holding the workspace could close a
// cycle with either. A target deleted concurrently cannot leave a dangling
// reference behind: the deleting transaction's ConfigChanged waits for this
// transaction's workspace lock, then renders the workspace including the new
// reference, and fails (ErrNotRenderable) because the target is gone.
type refChecker struct {
	s           *Service
	ctx         context.Context
	tx          *gorm.DB
	workspaceID uuid.UUID
	upstreams   map[uuid.UUID]bool // nil until loaded
	certs       map[uuid.UUID]bool // nil until loaded
}

func (s *Service) refs(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID) *refChecker {
	return &refChecker{s: s, ctx: ctx, tx: tx, workspaceID: workspaceID}
}

// upstream checks that id is an upstream of the workspace.
func (r *refChecker) upstream(v *app.Validator, field string, id uuid.UUID) error {
	if r.upstreams == nil {
		ups, err := r.s.ups.ListAll(r.ctx, r.tx, r.workspaceID)
		if err != nil {
			return err
		}
		r.upstreams = make(map[uuid.UUID]bool, len(ups))
		for _, u := range ups {
			r.upstreams[u.ID] = true
		}
	}
	v.Check(r.upstreams[id], field, app.FieldNotFound, "no such upstream in this workspace")
	return nil
}

// certificate checks that id is a certificate of the workspace.
func (r *refChecker) certificate(v *app.Validator, field string, id uuid.UUID) error {
	if r.certs == nil {
		cs, err := r.s.certs.ListAll(r.ctx, r.tx, r.workspaceID)
		if err != nil {
			return err
		}
		r.certs = make(map[uuid.UUID]bool, len(cs))
		for _, c := range cs {
			r.certs[c.ID] = true
		}
	}
	v.Check(r.certs[id], field, app.FieldNotFound, "no such certificate in this workspace")
	return nil
}

// targets checks that the agents t lists are agents of the workspace. An
// agent deleted later simply stops matching; only a write checks the list.
func (r *refChecker) targets(v *app.Validator, field string, t TargetAgents) error {
	if t.Type != TargetAgentList || r.s.knownAgents == nil || len(t.AgentIDs) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(t.AgentIDs))
	for i, s := range t.AgentIDs {
		ids[i] = uuid.MustParse(s) // canonical after normalizeTargetAgents
	}
	known, err := r.s.knownAgents(r.ctx, r.tx, r.workspaceID, ids)
	if err != nil {
		return fmt.Errorf("check target agents: %w", err)
	}
	for i, id := range ids {
		v.Check(known[id], fmt.Sprintf("%s.agent_ids[%d]", field, i), app.FieldNotFound, "no such agent in this workspace")
	}
	return nil
}

// checkVirtualHostRefs checks the certificate, upstreams and agents vh
// refers to.
func (s *Service) checkVirtualHostRefs(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, vh VirtualHost) error {
	v := &app.Validator{}
	r := s.refs(ctx, tx, workspaceID)
	if err := r.targets(v, "target_agents", vh.TargetAgents); err != nil {
		return err
	}
	if vh.SSLCertificateID != nil {
		if err := r.certificate(v, "ssl_certificate_id", *vh.SSLCertificateID); err != nil {
			return err
		}
	}
	for i, l := range vh.Locations {
		if l.UpstreamID == "" {
			continue
		}
		if err := r.upstream(v, fmt.Sprintf("locations[%d].upstream_id", i), uuid.MustParse(l.UpstreamID)); err != nil {
			return err
		}
	}
	return v.Err()
}

// ---- Listen ports ----

// listener is one listening socket an object asks for.
type listener struct {
	port   int
	proto  string
	ssl    bool
	names  []string // server names of virtual hosts; nil for streams
	stream bool
	owner  string
}

func (l listener) String() string { return fmt.Sprintf("%d/%s", l.port, l.proto) }

// vhostListeners are the sockets of a virtual host: its port, and the plain
// port of a TLS host (http_port, where its HTTP-to-HTTPS redirect listens
// too; port 80 for a redirect without http_port).
func vhostListeners(r vhostRow) []listener {
	names := strings.Fields(r.ServerName)
	owner := describeVirtualHost(r.Name, r.ID)
	out := []listener{{port: r.ListenPort, proto: ProtocolTCP, ssl: r.SSLEnabled, names: names, owner: owner}}
	if p := plainPort(r.SSLEnabled, r.HTTPPort, r.RedirectHTTPS); p != 0 {
		what := " (its HTTP port)"
		if r.RedirectHTTPS {
			what = " (its redirect to HTTPS)"
		}
		out = append(out, listener{port: p, proto: ProtocolTCP, names: names, owner: owner + what})
	}
	return out
}

// plainPort is the plain-HTTP port a TLS virtual host also listens on:
// http_port, or 80 for a redirect without one; 0 for none.
func plainPort(ssl bool, httpPort int, redirectHTTPS bool) int {
	switch {
	case !ssl:
		return 0
	case httpPort != 0:
		return httpPort
	case redirectHTTPS:
		return 80
	}
	return 0
}

// defaultPorts are the ports where a virtual host marked default_server is
// the default: its listen port, and its http_port unless that only
// redirects (a redirect server is never a default server).
func defaultPorts(ssl bool, listenPort, httpPort int, redirectHTTPS bool) []int {
	out := []int{listenPort}
	if ssl && httpPort != 0 && !redirectHTTPS {
		out = append(out, httpPort)
	}
	return out
}

func streamListener(s Stream) listener {
	return listener{port: s.ListenPort, proto: s.Protocol, ssl: s.SSLEnabled, stream: true, owner: describeStream(s.Name, s.ID)}
}

// conflict says why a and b cannot share a socket, or "" when they can:
// virtual hosts share a port when they agree on TLS and their server names
// differ; a stream shares its port and protocol with nothing.
func conflict(a, b listener) string {
	switch {
	case a.port != b.port || a.proto != b.proto:
		return ""
	case a.stream || b.stream:
		return "streams cannot share a port"
	case a.ssl != b.ssl:
		return "one uses TLS on it and the other does not"
	}
	for _, n := range a.names {
		if slices.Contains(b.names, n) {
			return fmt.Sprintf("both serve %s", n)
		}
	}
	return ""
}

// checkPorts returns an error wrapping ErrPortInUse when one of mine cannot
// share its socket with the listeners of the workspace's other virtual hosts
// and streams (except self). The caller holds the workspace lock.
func checkPorts(tx *gorm.DB, workspaceID, self uuid.UUID, mine []listener) error {
	var vhs []vhostRow
	if err := tx.Select("id", "name", "server_name", "listen_port", "http_port", "ssl_enabled", "redirect_https").
		Where("workspace_id = ? AND id <> ?", workspaceID, self).Order("created_at, id").Find(&vhs).Error; err != nil {
		return fmt.Errorf("read listen ports of workspace %s: %w", workspaceID, err)
	}
	var sts []Stream
	if err := tx.Select("id", "name", "listen_port", "protocol", "ssl_enabled").
		Where("workspace_id = ? AND id <> ?", workspaceID, self).Order("created_at, id").Find(&sts).Error; err != nil {
		return fmt.Errorf("read listen ports of workspace %s: %w", workspaceID, err)
	}
	var others []listener
	for _, r := range vhs {
		others = append(others, vhostListeners(r)...)
	}
	for _, s := range sts {
		others = append(others, streamListener(s))
	}
	for _, m := range mine {
		for _, o := range others {
			if why := conflict(m, o); why != "" {
				return fmt.Errorf("%w: %s is used by %s (%s)", ErrPortInUse, m, o.owner, why)
			}
		}
	}
	return nil
}

// checkDefaultServer returns a validation error at default_server when vh is
// marked default_server and another virtual host of its workspace already is
// the default server of one of the same ports (defaultPorts). The caller
// holds the workspace lock.
func checkDefaultServer(tx *gorm.DB, vh VirtualHost) error {
	if !vh.DefaultServer {
		return nil
	}
	mine := defaultPorts(vh.SSLEnabled, vh.ListenPort, vh.HTTPPort, vh.RedirectHTTPS)
	var others []vhostRow
	if err := tx.Select("id", "name", "listen_port", "http_port", "ssl_enabled", "redirect_https").
		Where("workspace_id = ? AND id <> ? AND default_server", vh.WorkspaceID, vh.ID).
		Where("listen_port IN ? OR (http_port IN ? AND ssl_enabled AND NOT redirect_https)", mine, mine).
		Order("created_at, id").Find(&others).Error; err != nil {
		return fmt.Errorf("read default servers of workspace %s: %w", vh.WorkspaceID, err)
	}
	for _, o := range others {
		for _, p := range defaultPorts(o.SSLEnabled, o.ListenPort, o.HTTPPort, o.RedirectHTTPS) {
			if slices.Contains(mine, p) {
				v := &app.Validator{}
				v.Add("default_server", app.FieldInvalidValue, fmt.Sprintf("%s is already the default server of port %d; at most one host per port may be",
					describeVirtualHost(o.Name, o.ID), p))
				return v.Err()
			}
		}
	}
	return nil
}

// ---- Virtual hosts ----

// ListVirtualHosts returns a workspace's virtual hosts, oldest first, and their
// total.
func (s *Service) ListVirtualHosts(ctx context.Context, workspaceID uuid.UUID, page app.Page) ([]VirtualHost, int64, error) {
	return s.SearchVirtualHosts(ctx, workspaceID, ListFilter{}, page)
}

// ListFilter narrows a list of virtual hosts or streams.
type ListFilter struct {
	// Q matches, ignoring case, a part of the name or of the server names (a
	// stream: of the name or the listen port); '%' and '_' are plain
	// characters.
	Q string
}

func (f ListFilter) check() error {
	v := &app.Validator{}
	app.CheckSearch(v, "q", f.Q)
	return v.Err()
}

// SearchVirtualHosts is ListVirtualHosts narrowed by f: a 422 naming q when
// it is too long.
func (s *Service) SearchVirtualHosts(ctx context.Context, workspaceID uuid.UUID, f ListFilter, page app.Page) ([]VirtualHost, int64, error) {
	if err := f.check(); err != nil {
		return nil, 0, err
	}
	q := s.db.WithContext(ctx).Model(&vhostRow{}).Where("workspace_id = ?", workspaceID)
	if f.Q != "" {
		clause, args := app.SearchClause(f.Q, "name", "server_name")
		q = q.Where(clause, args...)
	}
	rows, total, err := app.FindPage[vhostRow](q, page, "created_at, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list virtual hosts of workspace %s: %w", workspaceID, err)
	}
	out := make([]VirtualHost, len(rows))
	for i, r := range rows {
		out[i], _ = r.virtualHost()
	}
	return out, total, nil
}

// GetVirtualHost returns the virtual host with id.
func (s *Service) GetVirtualHost(ctx context.Context, id uuid.UUID) (VirtualHost, error) {
	var r vhostRow
	err := s.db.WithContext(ctx).Take(&r, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return VirtualHost{}, ErrVirtualHostNotFound
	}
	if err != nil {
		return VirtualHost{}, fmt.Errorf("get virtual host %s: %w", id, err)
	}
	vh, _ := r.virtualHost()
	return vh, nil
}

// CreateVirtualHost validates in and creates a virtual host in the workspace.
// Nothing is stored when any check fails.
func (s *Service) CreateVirtualHost(ctx context.Context, workspaceID uuid.UUID, in VirtualHostInput) (VirtualHost, error) {
	vh, passwords, v := checkVirtualHost(in, nil, s.rootPrefixes)
	if err := v.Err(); err != nil {
		return VirtualHost{}, err
	}
	fresh, err := s.hashPasswords(passwords)
	if err != nil {
		return VirtualHost{}, err
	}
	vh.ID = uuid.New()
	vh.WorkspaceID = workspaceID
	vh.CreatedAt = s.now()
	vh.UpdatedAt = vh.CreatedAt
	row := vhostRowOf(vh, hashesFor(vh, nil, fresh))
	err = s.transaction(ctx, func(tx *gorm.DB) error {
		ws, err := lockWorkspace(tx, workspaceID)
		if err != nil {
			return err
		}
		if err := s.checkVirtualHostRefs(ctx, tx, workspaceID, vh); err != nil {
			return err
		}
		if err := checkPorts(tx, workspaceID, vh.ID, vhostListeners(vhostRowOf(vh, nil))); err != nil {
			return err
		}
		if err := checkDefaultServer(tx, vh); err != nil {
			return err
		}
		if err := tx.Select(append([]string{"id", "workspace_id"}, vhostColumns...)).Create(&row).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("create virtual host %q: %w", vh.Name, ErrVirtualHostNameTaken)
			}
			return fmt.Errorf("create virtual host %q: %w", vh.Name, err)
		}
		return s.vhostChanged(ctx, tx, ws.OrgID, "create", nil, &vh)
	})
	if err != nil {
		return VirtualHost{}, err
	}
	return vh, nil
}

// lockVirtualHost locks the workspace of the virtual host with id and then
// reads the host.
func lockVirtualHost(tx *gorm.DB, id uuid.UUID) (vhostRow, workspaceLock, error) {
	var wsIDs []uuid.UUID
	if err := tx.Model(&vhostRow{}).Where("id = ?", id).Limit(1).Pluck("workspace_id", &wsIDs).Error; err != nil {
		return vhostRow{}, workspaceLock{}, fmt.Errorf("find virtual host %s: %w", id, err)
	}
	if len(wsIDs) == 0 {
		return vhostRow{}, workspaceLock{}, ErrVirtualHostNotFound
	}
	ws, err := lockWorkspace(tx, wsIDs[0])
	if err != nil {
		return vhostRow{}, workspaceLock{}, err
	}
	var r vhostRow
	err = tx.Take(&r, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return vhostRow{}, workspaceLock{}, ErrVirtualHostNotFound
	}
	if err != nil {
		return vhostRow{}, workspaceLock{}, fmt.Errorf("read virtual host %s: %w", id, err)
	}
	return r, ws, nil
}

// UpdateVirtualHost changes the virtual host with id: change receives the
// host's current input (VirtualHost.Input) and edits it; the result is
// validated like a create. It runs inside the transaction, after the
// workspace is locked, so concurrent updates do not lose each other's
// changes. An update that changes nothing writes nothing.
func (s *Service) UpdateVirtualHost(ctx context.Context, id uuid.UUID, change func(*VirtualHostInput) error) (VirtualHost, error) {
	var out VirtualHost
	err := s.transaction(ctx, func(tx *gorm.DB) error {
		cur, ws, err := lockVirtualHost(tx, id)
		if err != nil {
			return err
		}
		before, known := cur.virtualHost()
		in := before.Input()
		if err := change(&in); err != nil {
			return err
		}
		vh, passwords, v := checkVirtualHost(in, known, s.rootPrefixes)
		if err := v.Err(); err != nil {
			return err
		}
		fresh, err := s.hashPasswords(passwords)
		if err != nil {
			return err
		}
		vh.ID, vh.WorkspaceID, vh.CreatedAt, vh.UpdatedAt = before.ID, before.WorkspaceID, before.CreatedAt, before.UpdatedAt
		hashes := hashesFor(vh, known, fresh)
		if sameVirtualHost(before, vh) && maps.Equal(known, hashes) {
			out = before
			return nil
		}
		vh.UpdatedAt = s.now()
		if err := s.checkVirtualHostRefs(ctx, tx, vh.WorkspaceID, vh); err != nil {
			return err
		}
		if err := checkPorts(tx, vh.WorkspaceID, vh.ID, vhostListeners(vhostRowOf(vh, nil))); err != nil {
			return err
		}
		if err := checkDefaultServer(tx, vh); err != nil {
			return err
		}
		row := vhostRowOf(vh, hashes)
		if err := tx.Model(&row).Select(vhostColumns).Updates(&row).Error; err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("update virtual host %s: %w", id, ErrVirtualHostNameTaken)
			}
			return fmt.Errorf("update virtual host %s: %w", id, err)
		}
		out = vh
		return s.vhostChanged(ctx, tx, ws.OrgID, "update", &before, &vh)
	})
	if err != nil {
		return VirtualHost{}, err
	}
	return out, nil
}

// sameVirtualHost reports whether a and b have the same JSON form.
func sameVirtualHost(a, b VirtualHost) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

// DeleteVirtualHost removes the virtual host with id.
func (s *Service) DeleteVirtualHost(ctx context.Context, id uuid.UUID) error {
	return s.transaction(ctx, func(tx *gorm.DB) error {
		cur, ws, err := lockVirtualHost(tx, id)
		if err != nil {
			return err
		}
		if err := tx.Delete(&vhostRow{}, "id = ?", id).Error; err != nil {
			return fmt.Errorf("delete virtual host %s: %w", id, err)
		}
		before, _ := cur.virtualHost()
		return s.vhostChanged(ctx, tx, ws.OrgID, "delete", &before, nil)
	})
}

// vhostChanged completes a change of a virtual host inside its transaction:
// a new configuration version and the audit row.
func (s *Service) vhostChanged(ctx context.Context, tx *gorm.DB, orgID uuid.UUID, verb string, before, after *VirtualHost) error {
	vh := after
	if vh == nil {
		vh = before
	}
	if err := s.ConfigChanged(ctx, tx, vh.WorkspaceID, fmt.Sprintf("virtual host %q %sd", vh.Name, verb)); err != nil {
		return fmt.Errorf("%s virtual host %s: %w", verb, vh.ID, err)
	}
	p := app.AuditParams{
		OrgID: orgID, WorkspaceID: vh.WorkspaceID, Action: ObjectVirtualHost + "." + verb,
		ObjectType: ObjectVirtualHost, ObjectID: vh.ID.String(),
	}
	if before != nil {
		p.Before = *before
	}
	if after != nil {
		p.After = *after
	}
	return app.Audit(ctx, tx, p)
}

// ---- Users of upstreams and certificates ----

// UpstreamUsers lists the virtual hosts and streams that use the upstream
// with id (`virtual host "api" (<id>)`), read in tx. It is the upstreams
// module's UsageFunc.
func (s *Service) UpstreamUsers(ctx context.Context, tx *gorm.DB, upstreamID uuid.UUID) ([]string, error) {
	if tx == nil {
		tx = s.db
	}
	tx = tx.WithContext(ctx)
	contains, err := json.Marshal([]map[string]string{{"upstream_id": upstreamID.String()}})
	if err != nil {
		return nil, fmt.Errorf("find users of upstream %s: %w", upstreamID, err)
	}
	var vhs []vhostRow
	if err := tx.Select("id", "name").Where("locations @> ?::jsonb", string(contains)).Order("name, id").Find(&vhs).Error; err != nil {
		return nil, fmt.Errorf("find virtual hosts using upstream %s: %w", upstreamID, err)
	}
	var sts []Stream
	if err := tx.Select("id", "name").Where("upstream_id = ?", upstreamID).Order("name, id").Find(&sts).Error; err != nil {
		return nil, fmt.Errorf("find streams using upstream %s: %w", upstreamID, err)
	}
	return users(vhs, sts), nil
}

// CertificateUsers lists the virtual hosts and streams that use the
// certificate with id, read in tx. It is the certs module's UsageFunc.
func (s *Service) CertificateUsers(ctx context.Context, tx *gorm.DB, certID uuid.UUID) ([]string, error) {
	if tx == nil {
		tx = s.db
	}
	tx = tx.WithContext(ctx)
	var vhs []vhostRow
	if err := tx.Select("id", "name").Where("ssl_certificate_id = ?", certID).Order("name, id").Find(&vhs).Error; err != nil {
		return nil, fmt.Errorf("find virtual hosts using certificate %s: %w", certID, err)
	}
	var sts []Stream
	if err := tx.Select("id", "name").Where("ssl_certificate_id = ?", certID).Order("name, id").Find(&sts).Error; err != nil {
		return nil, fmt.Errorf("find streams using certificate %s: %w", certID, err)
	}
	return users(vhs, sts), nil
}

func users(vhs []vhostRow, sts []Stream) []string {
	out := make([]string, 0, len(vhs)+len(sts))
	for _, r := range vhs {
		out = append(out, describeVirtualHost(r.Name, r.ID))
	}
	for _, st := range sts {
		out = append(out, describeStream(st.Name, st.ID))
	}
	return out
}

// workspaceUpstreams returns every upstream of workspace ws, sorted by name:
// the choices of the forms' upstream selects.
func (s *Service) workspaceUpstreams(ctx context.Context, ws uuid.UUID) ([]upstreams.Upstream, error) {
	return s.ups.ListAll(ctx, nil, ws)
}

// workspaceCertificates returns every certificate of workspace ws, by domain:
// the choices of the forms' certificate selects.
func (s *Service) workspaceCertificates(ctx context.Context, ws uuid.UUID) ([]certs.Certificate, error) {
	return s.certs.ListAll(ctx, nil, ws)
}
