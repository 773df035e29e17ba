package vhosts

import (
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/upstreams"
)

// Audit object types written by this module.
const (
	ObjectVirtualHost = "virtual_host"
	ObjectStream      = "stream"
	ObjectConfig      = "config"
)

// ---- Targeting ----

// Target types of TargetAgents.
const (
	TargetAll       = "all"
	TargetSelector  = "selector"
	TargetAgentList = "agents"
)

// TargetAgents says which agents of the workspace get an object:
// {"type":"all"}, {"type":"selector","label_selector":"env=production,region!=us-east"}
// or {"type":"agents","agent_ids":[...]}.
type TargetAgents struct {
	Type          string   `json:"type" doc:"all (default), selector or agents"`
	LabelSelector string   `json:"label_selector,omitempty" doc:"with type selector: comma-separated key=value or key!=value terms; keys and values are 1-63 of A-Z a-z 0-9 . _ / -"`
	AgentIDs      []string `json:"agent_ids,omitempty" doc:"with type agents: agent UUIDs"`
}

// Matches reports whether an agent with id and labels is targeted. A key!=value
// term also matches agents without the key.
func (t TargetAgents) Matches(agentID uuid.UUID, labels map[string]string) bool {
	switch t.Type {
	case TargetAll, "":
		return true
	case TargetSelector:
		terms, err := ParseLabelSelector(t.LabelSelector)
		if err != nil {
			return false
		}
		for _, term := range terms {
			v, ok := labels[term.Key]
			if term.Not == (ok && v == term.Value) {
				return false
			}
		}
		return true
	case TargetAgentList:
		return slices.Contains(t.AgentIDs, agentID.String())
	}
	return false
}

// ---- Virtual hosts ----

// Header is a header a location adds: to requests sent upstream in proxied
// locations (proxy_set_header), to responses in static ones (add_header, with
// always when Always is set).
type Header struct {
	Name   string `json:"name" doc:"letters, digits, - _ . (at most 128)"`
	Value  string `json:"value" doc:"printable ASCII without \" \\ { } # and backquote; $ only in $args $host $http_host $proxy_add_x_forwarded_for $remote_addr $request_id $request_uri $scheme $server_name $server_port"`
	Always bool   `json:"always"`
}

// RewriteRule is an nginx rewrite directive.
type RewriteRule struct {
	Pattern     string `json:"pattern" doc:"regular expression without spaces, quotes, ; # or backquote; { } only as {n,m} repetitions; $ only as an end anchor"`
	Replacement string `json:"replacement" doc:"path or http(s):// or $scheme:// URL; $1-$9 and the allowed variables"`
	Flag        string `json:"flag" doc:"last, break, redirect, permanent, or empty"`
}

// Location is a location block of a virtual host. Exactly one of ProxyPass,
// UpstreamID and Root is set.
type Location struct {
	Path string `json:"path" doc:"starts with /; letters, digits, %XX and - . _ ~ ! & ( ) * + , = : @ /"`
	// Match is prefix (nginx "location /path") or exact ("location = /path").
	Match         string        `json:"match" doc:"prefix (default) or exact"`
	ProxyPass     string        `json:"proxy_pass,omitempty" doc:"http(s)://host[:port][/path]"`
	UpstreamID    string        `json:"upstream_id,omitempty" doc:"an upstream of the same workspace"`
	Root          string        `json:"root,omitempty" doc:"absolute directory of static files, not under system directories"`
	Index         string        `json:"index,omitempty" doc:"space-separated file names (with root)"`
	CustomHeaders []Header      `json:"custom_headers"`
	RewriteRules  []RewriteRule `json:"rewrite_rules"`
	Websocket     bool          `json:"websocket" doc:"proxy WebSocket upgrades (proxied locations)"`
}

// BasicAuthUser is a basic-auth user. Requests carry Password; responses carry
// HasPassword and never the password or its hash.
type BasicAuthUser struct {
	Username string `json:"username" doc:"letters, digits, . _ @ - (at most 64)"`
	Password string `json:"password,omitempty" doc:"8 to 72 bytes; write-only, stored as a bcrypt hash; omit to keep the current password of an existing user"`
	// HasPassword is always true in responses; it is ignored in requests.
	HasPassword bool `json:"has_password"`
}

// AccessList restricts who reaches a virtual host.
type AccessList struct {
	Allow          []string        `json:"allow" doc:"IP addresses or CIDR networks; when any is set every other client is denied"`
	Deny           []string        `json:"deny" doc:"IP addresses or CIDR networks, checked before allow"`
	BasicAuthUsers []BasicAuthUser `json:"basic_auth_users"`
	Realm          string          `json:"realm" doc:"basic-auth realm, default Restricted"`
}

// RateLimit limits requests per client address.
type RateLimit struct {
	RequestsPerSecond int `json:"requests_per_second" doc:"1 to 100000"`
	Burst             int `json:"burst" doc:"0 to 100000"`
}

// VirtualHost is a workspace's virtual host (an nginx server block) as the API
// returns it and configuration snapshots store it. Its JSON form is the API's
// virtual host object with the additional fields of the product specification.
type VirtualHost struct {
	ID          uuid.UUID `json:"id"`
	WorkspaceID uuid.UUID `json:"workspace_id"`
	Name        string    `json:"name"`
	// ServerName is space-separated host names.
	ServerName string `json:"server_name"`
	ListenPort int    `json:"listen_port"`
	// HTTPPort is the plain-HTTP port of a TLS host (0: none): the host is
	// served there too, or only redirected with RedirectHTTPS.
	HTTPPort         int        `json:"http_port"`
	SSLEnabled       bool       `json:"ssl_enabled"`
	SSLCertificateID *uuid.UUID `json:"ssl_certificate_id"`
	HTTP2Enabled     bool       `json:"http2_enabled"`
	RedirectHTTPS    bool       `json:"redirect_https"`
	// DefaultServer: the host answers requests whose Host matches no server
	// name on its listen port, and on its HTTP port unless that only
	// redirects.
	DefaultServer       bool              `json:"default_server"`
	RedirectTo          string            `json:"redirect_to"`
	RedirectCode        int               `json:"redirect_code"`
	Locations           []Location        `json:"locations"`
	AccessList          *AccessList       `json:"access_list"`
	RateLimit           *RateLimit        `json:"rate_limit"`
	ClientMaxBodySize   string            `json:"client_max_body_size"`
	ProxyConnectTimeout *int              `json:"proxy_connect_timeout"`
	ProxyReadTimeout    *int              `json:"proxy_read_timeout"`
	ProxySendTimeout    *int              `json:"proxy_send_timeout"`
	CustomDirectives    map[string]string `json:"custom_directives"`
	TargetAgents        TargetAgents      `json:"target_agents"`
	CreatedAt           time.Time         `json:"created_at"`
	UpdatedAt           time.Time         `json:"updated_at"`
}

// MarshalJSON writes timestamps as RFC 3339 UTC seconds and empty lists and
// maps as [] and {}.
func (v VirtualHost) MarshalJSON() ([]byte, error) {
	type plain VirtualHost
	p := plain(v)
	if p.Locations == nil {
		p.Locations = []Location{}
	}
	for i := range p.Locations {
		p.Locations[i] = p.Locations[i].withEmptyLists()
	}
	if p.CustomDirectives == nil {
		p.CustomDirectives = map[string]string{}
	}
	if p.AccessList != nil {
		al := *p.AccessList
		al.Allow = nonNil(al.Allow)
		al.Deny = nonNil(al.Deny)
		al.BasicAuthUsers = nonNil(al.BasicAuthUsers)
		p.AccessList = &al
	}
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
		UpdatedAt app.Time `json:"updated_at"`
	}{p, app.Time{Time: v.CreatedAt}, app.Time{Time: v.UpdatedAt}})
}

func (l Location) withEmptyLists() Location {
	l.CustomHeaders = nonNil(l.CustomHeaders)
	l.RewriteRules = nonNil(l.RewriteRules)
	return l
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// VirtualHostInput is the request body of creating a virtual host, and the
// form an update is applied to (PATCH replaces the top-level fields it names).
type VirtualHostInput struct {
	Name                string            `json:"name" doc:"1 to 100 printable characters, unique in the workspace"`
	ServerName          string            `json:"server_name" doc:"space-separated host names (RFC 1123, *.example.com allowed), at most 20"`
	ListenPort          *int              `json:"listen_port" doc:"1 to 65535; default 443 with ssl_enabled, else 80; the TLS port when ssl_enabled"`
	HTTPPort            int               `json:"http_port,omitempty" doc:"with ssl_enabled only: a plain-HTTP port (1 to 65535, not listen_port) served alongside the TLS listen_port, or where redirect_https redirects from; 0 or absent: none (redirect_https then uses port 80)"`
	SSLEnabled          bool              `json:"ssl_enabled"`
	SSLCertificateID    string            `json:"ssl_certificate_id" doc:"a certificate of the same workspace; required with ssl_enabled"`
	HTTP2Enabled        bool              `json:"http2_enabled" doc:"requires ssl_enabled"`
	RedirectHTTPS       bool              `json:"redirect_https" doc:"answer plain HTTP on http_port (port 80 when http_port is 0) with a 301 to https on listen_port instead of serving it; requires ssl_enabled"`
	DefaultServer       bool              `json:"default_server" doc:"answer requests whose Host matches no server name on listen_port, and on http_port unless redirect_https (default false: those get 404, or a refused TLS handshake); at most one host per port in a workspace"`
	RedirectTo          string            `json:"redirect_to" doc:"http(s):// URL; makes a redirect-only host (no locations)"`
	RedirectCode        int               `json:"redirect_code" doc:"301 (default), 302, 307 or 308"`
	Locations           []Location        `json:"locations"`
	AccessList          *AccessList       `json:"access_list"`
	RateLimit           *RateLimit        `json:"rate_limit"`
	ClientMaxBodySize   string            `json:"client_max_body_size" doc:"nginx size: 1-6 digits and an optional k, m or g"`
	ProxyConnectTimeout *int              `json:"proxy_connect_timeout" doc:"seconds, 1 to 3600"`
	ProxyReadTimeout    *int              `json:"proxy_read_timeout" doc:"seconds, 1 to 3600"`
	ProxySendTimeout    *int              `json:"proxy_send_timeout" doc:"seconds, 1 to 3600"`
	CustomDirectives    map[string]string `json:"custom_directives" doc:"allowlisted directive name to value (see the virtual hosts description)"`
	TargetAgents        *TargetAgents     `json:"target_agents" doc:"default {\"type\":\"all\"}"`
}

// Input returns v as the input that would recreate it: basic-auth users carry
// no password (the stored hashes are kept).
func (v VirtualHost) Input() VirtualHostInput {
	port := v.ListenPort
	in := VirtualHostInput{
		Name:                v.Name,
		ServerName:          v.ServerName,
		ListenPort:          &port,
		HTTPPort:            v.HTTPPort,
		SSLEnabled:          v.SSLEnabled,
		HTTP2Enabled:        v.HTTP2Enabled,
		RedirectHTTPS:       v.RedirectHTTPS,
		DefaultServer:       v.DefaultServer,
		RedirectTo:          v.RedirectTo,
		RedirectCode:        v.RedirectCode,
		Locations:           cloneLocations(v.Locations),
		ClientMaxBodySize:   v.ClientMaxBodySize,
		ProxyConnectTimeout: clonePtr(v.ProxyConnectTimeout),
		ProxyReadTimeout:    clonePtr(v.ProxyReadTimeout),
		ProxySendTimeout:    clonePtr(v.ProxySendTimeout),
		CustomDirectives:    maps.Clone(v.CustomDirectives),
	}
	if v.SSLCertificateID != nil {
		in.SSLCertificateID = v.SSLCertificateID.String()
	}
	if v.AccessList != nil {
		al := *v.AccessList
		al.Allow = slices.Clone(al.Allow)
		al.Deny = slices.Clone(al.Deny)
		al.BasicAuthUsers = slices.Clone(al.BasicAuthUsers)
		in.AccessList = &al
	}
	if v.RateLimit != nil {
		rl := *v.RateLimit
		in.RateLimit = &rl
	}
	t := v.TargetAgents
	t.AgentIDs = slices.Clone(t.AgentIDs)
	in.TargetAgents = &t
	return in
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

func cloneLocations(ls []Location) []Location {
	out := slices.Clone(ls)
	for i := range out {
		out[i].CustomHeaders = slices.Clone(out[i].CustomHeaders)
		out[i].RewriteRules = slices.Clone(out[i].RewriteRules)
	}
	return out
}

// storedUser is a basic-auth user as stored: the bcrypt hash, never the
// password.
type storedUser struct {
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
}

// storedAccessList is the access_list column.
type storedAccessList struct {
	Allow          []string     `json:"allow,omitempty"`
	Deny           []string     `json:"deny,omitempty"`
	BasicAuthUsers []storedUser `json:"basic_auth_users,omitempty"`
	Realm          string       `json:"realm,omitempty"`
}

func (a storedAccessList) empty() bool {
	return len(a.Allow) == 0 && len(a.Deny) == 0 && len(a.BasicAuthUsers) == 0 && a.Realm == ""
}

// vhostRow is the virtual_hosts table. Only this module reads and writes it.
type vhostRow struct {
	ID                  uuid.UUID         `gorm:"column:id;type:uuid;primaryKey"`
	WorkspaceID         uuid.UUID         `gorm:"column:workspace_id;type:uuid;not null"`
	Name                string            `gorm:"column:name;not null"`
	ServerName          string            `gorm:"column:server_name;not null"`
	ListenPort          int               `gorm:"column:listen_port;not null"`
	HTTPPort            int               `gorm:"column:http_port;not null"`
	SSLEnabled          bool              `gorm:"column:ssl_enabled;not null"`
	SSLCertificateID    *uuid.UUID        `gorm:"column:ssl_certificate_id;type:uuid"`
	HTTP2Enabled        bool              `gorm:"column:http2_enabled;not null"`
	RedirectHTTPS       bool              `gorm:"column:redirect_https;not null"`
	DefaultServer       bool              `gorm:"column:default_server;not null"`
	RedirectTo          string            `gorm:"column:redirect_to;not null"`
	RedirectCode        int               `gorm:"column:redirect_code;not null"`
	Locations           []Location        `gorm:"column:locations;type:jsonb;serializer:json;not null"`
	AccessList          storedAccessList  `gorm:"column:access_list;type:jsonb;serializer:json;not null"`
	RateLimitRPS        int               `gorm:"column:rate_limit_rps;not null"`
	RateLimitBurst      int               `gorm:"column:rate_limit_burst;not null"`
	ClientMaxBodySize   string            `gorm:"column:client_max_body_size;not null"`
	ProxyConnectTimeout int               `gorm:"column:proxy_connect_timeout;not null"`
	ProxyReadTimeout    int               `gorm:"column:proxy_read_timeout;not null"`
	ProxySendTimeout    int               `gorm:"column:proxy_send_timeout;not null"`
	CustomDirectives    map[string]string `gorm:"column:custom_directives;type:jsonb;serializer:json;not null"`
	TargetAgents        TargetAgents      `gorm:"column:target_agents;type:jsonb;serializer:json;not null"`
	CreatedAt           time.Time         `gorm:"column:created_at;not null"`
	UpdatedAt           time.Time         `gorm:"column:updated_at;not null"`
}

// TableName is the virtual_hosts table.
func (vhostRow) TableName() string { return "virtual_hosts" }

// vhostColumns are the columns a write sets (everything but the generated
// name_key).
var vhostColumns = []string{
	"name", "server_name", "listen_port", "http_port", "ssl_enabled", "ssl_certificate_id", "http2_enabled",
	"redirect_https", "default_server", "redirect_to", "redirect_code", "locations", "access_list", "rate_limit_rps",
	"rate_limit_burst", "client_max_body_size", "proxy_connect_timeout", "proxy_read_timeout",
	"proxy_send_timeout", "custom_directives", "target_agents", "created_at", "updated_at",
}

func optionalSeconds(n int) *int {
	if n <= 0 {
		return nil
	}
	return &n
}

func seconds(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// virtualHost is r's API form; hashes are the basic-auth users' password
// hashes by user name.
func (r vhostRow) virtualHost() (VirtualHost, map[string]string) {
	v := VirtualHost{
		ID:                  r.ID,
		WorkspaceID:         r.WorkspaceID,
		Name:                r.Name,
		ServerName:          r.ServerName,
		ListenPort:          r.ListenPort,
		HTTPPort:            r.HTTPPort,
		SSLEnabled:          r.SSLEnabled,
		SSLCertificateID:    clonePtr(r.SSLCertificateID),
		HTTP2Enabled:        r.HTTP2Enabled,
		RedirectHTTPS:       r.RedirectHTTPS,
		DefaultServer:       r.DefaultServer,
		RedirectTo:          r.RedirectTo,
		RedirectCode:        r.RedirectCode,
		Locations:           cloneLocations(r.Locations),
		ClientMaxBodySize:   r.ClientMaxBodySize,
		ProxyConnectTimeout: optionalSeconds(r.ProxyConnectTimeout),
		ProxyReadTimeout:    optionalSeconds(r.ProxyReadTimeout),
		ProxySendTimeout:    optionalSeconds(r.ProxySendTimeout),
		CustomDirectives:    maps.Clone(r.CustomDirectives),
		TargetAgents:        r.TargetAgents,
		CreatedAt:           r.CreatedAt.UTC(),
		UpdatedAt:           r.UpdatedAt.UTC(),
	}
	if v.CustomDirectives == nil {
		v.CustomDirectives = map[string]string{}
	}
	if v.Locations == nil {
		v.Locations = []Location{}
	}
	var hashes map[string]string
	if !r.AccessList.empty() {
		al := &AccessList{
			Allow: slices.Clone(r.AccessList.Allow),
			Deny:  slices.Clone(r.AccessList.Deny),
			Realm: r.AccessList.Realm,
		}
		for _, u := range r.AccessList.BasicAuthUsers {
			al.BasicAuthUsers = append(al.BasicAuthUsers, BasicAuthUser{Username: u.Username, HasPassword: true})
			if hashes == nil {
				hashes = map[string]string{}
			}
			hashes[u.Username] = u.PasswordHash
		}
		v.AccessList = al
	}
	if r.RateLimitRPS > 0 {
		v.RateLimit = &RateLimit{RequestsPerSecond: r.RateLimitRPS, Burst: r.RateLimitBurst}
	}
	return v, hashes
}

// vhostRowOf is the row of v with the given password hashes (by user name).
func vhostRowOf(v VirtualHost, hashes map[string]string) vhostRow {
	r := vhostRow{
		ID:                  v.ID,
		WorkspaceID:         v.WorkspaceID,
		Name:                v.Name,
		ServerName:          v.ServerName,
		ListenPort:          v.ListenPort,
		HTTPPort:            v.HTTPPort,
		SSLEnabled:          v.SSLEnabled,
		SSLCertificateID:    clonePtr(v.SSLCertificateID),
		HTTP2Enabled:        v.HTTP2Enabled,
		RedirectHTTPS:       v.RedirectHTTPS,
		DefaultServer:       v.DefaultServer,
		RedirectTo:          v.RedirectTo,
		RedirectCode:        v.RedirectCode,
		Locations:           nonNil(cloneLocations(v.Locations)),
		ClientMaxBodySize:   v.ClientMaxBodySize,
		ProxyConnectTimeout: seconds(v.ProxyConnectTimeout),
		ProxyReadTimeout:    seconds(v.ProxyReadTimeout),
		ProxySendTimeout:    seconds(v.ProxySendTimeout),
		CustomDirectives:    maps.Clone(v.CustomDirectives),
		TargetAgents:        v.TargetAgents,
		CreatedAt:           v.CreatedAt,
		UpdatedAt:           v.UpdatedAt,
	}
	if r.CustomDirectives == nil {
		r.CustomDirectives = map[string]string{}
	}
	if v.AccessList != nil {
		r.AccessList = storedAccessList{
			Allow: slices.Clone(v.AccessList.Allow),
			Deny:  slices.Clone(v.AccessList.Deny),
			Realm: v.AccessList.Realm,
		}
		for _, u := range v.AccessList.BasicAuthUsers {
			r.AccessList.BasicAuthUsers = append(r.AccessList.BasicAuthUsers, storedUser{Username: u.Username, PasswordHash: hashes[u.Username]})
		}
	}
	if v.RateLimit != nil {
		r.RateLimitRPS, r.RateLimitBurst = v.RateLimit.RequestsPerSecond, v.RateLimit.Burst
	}
	return r
}

// ---- Streams ----

// Stream protocols.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// Stream is a TCP or UDP proxy of a workspace (an nginx stream server block).
// It is the GORM model of the streams table and, through MarshalJSON, the
// object the API returns and configuration snapshots store.
type Stream struct {
	ID          uuid.UUID `gorm:"column:id;type:uuid;primaryKey" json:"id"`
	WorkspaceID uuid.UUID `gorm:"column:workspace_id;type:uuid;not null" json:"workspace_id"`
	Name        string    `gorm:"column:name;not null" json:"name"`
	ListenPort  int       `gorm:"column:listen_port;not null" json:"listen_port"`
	Protocol    string    `gorm:"column:protocol;not null" json:"protocol" doc:"tcp or udp"`
	UpstreamID  uuid.UUID `gorm:"column:upstream_id;type:uuid;not null" json:"upstream_id"`
	// SSLEnabled terminates TLS on the listener (tcp only).
	SSLEnabled       bool       `gorm:"column:ssl_enabled;not null" json:"ssl_enabled"`
	SSLCertificateID *uuid.UUID `gorm:"column:ssl_certificate_id;type:uuid" json:"ssl_certificate_id"`
	// ProxyProtocol sends the PROXY protocol header to the upstream.
	ProxyProtocol bool `gorm:"column:proxy_protocol;not null" json:"proxy_protocol"`
	// AcceptProxyProtocol expects the PROXY protocol header from clients (tcp only).
	AcceptProxyProtocol bool `gorm:"column:accept_proxy_protocol;not null" json:"accept_proxy_protocol"`
	// ConnectTimeout is seconds to connect to the upstream; nil keeps nginx's
	// default (60 s).
	ConnectTimeout *int `gorm:"column:connect_timeout" json:"connect_timeout"`
	// Timeout is the idle time between two reads or writes, in seconds; nil
	// keeps nginx's default (10 min).
	Timeout *int `gorm:"column:timeout" json:"timeout"`
	// BandwidthLimit is bytes per second in nginx size syntax, each direction;
	// empty means unlimited.
	BandwidthLimit string       `gorm:"column:bandwidth_limit;not null" json:"bandwidth_limit"`
	TargetAgents   TargetAgents `gorm:"column:target_agents;type:jsonb;serializer:json;not null" json:"target_agents"`
	CreatedAt      time.Time    `gorm:"column:created_at;not null" json:"created_at"`
	UpdatedAt      time.Time    `gorm:"column:updated_at;not null" json:"updated_at"`
}

// TableName is the streams table.
func (Stream) TableName() string { return "streams" }

// MarshalJSON writes timestamps as RFC 3339 UTC seconds.
func (s Stream) MarshalJSON() ([]byte, error) {
	type plain Stream
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
		UpdatedAt app.Time `json:"updated_at"`
	}{plain(s), app.Time{Time: s.CreatedAt}, app.Time{Time: s.UpdatedAt}})
}

// streamColumns are the columns a write sets.
var streamColumns = []string{
	"name", "listen_port", "protocol", "upstream_id", "ssl_enabled", "ssl_certificate_id",
	"proxy_protocol", "accept_proxy_protocol", "connect_timeout", "timeout", "bandwidth_limit",
	"target_agents", "created_at", "updated_at",
}

// StreamInput is the request body of creating a stream, and the form an update
// is applied to (PATCH replaces the top-level fields it names).
type StreamInput struct {
	Name                string        `json:"name" doc:"1 to 100 printable characters, unique in the workspace"`
	ListenPort          int           `json:"listen_port" doc:"1 to 65535"`
	Protocol            string        `json:"protocol" doc:"tcp (default) or udp"`
	UpstreamID          string        `json:"upstream_id" doc:"an upstream of the same workspace whose servers have ports"`
	SSLEnabled          bool          `json:"ssl_enabled" doc:"terminate TLS (tcp only)"`
	SSLCertificateID    string        `json:"ssl_certificate_id" doc:"a certificate of the same workspace; required with ssl_enabled"`
	ProxyProtocol       bool          `json:"proxy_protocol" doc:"send the PROXY protocol header to the upstream"`
	AcceptProxyProtocol bool          `json:"accept_proxy_protocol" doc:"expect the PROXY protocol header from clients (tcp only)"`
	ConnectTimeout      *int          `json:"connect_timeout" doc:"seconds, 1 to 3600"`
	Timeout             *int          `json:"timeout" doc:"seconds, 1 to 86400"`
	BandwidthLimit      string        `json:"bandwidth_limit" doc:"bytes per second, nginx size: 1-6 digits and an optional k, m or g"`
	TargetAgents        *TargetAgents `json:"target_agents" doc:"default {\"type\":\"all\"}"`
}

// Input returns s as the input that would recreate it.
func (s Stream) Input() StreamInput {
	in := StreamInput{
		Name:                s.Name,
		ListenPort:          s.ListenPort,
		Protocol:            s.Protocol,
		UpstreamID:          s.UpstreamID.String(),
		SSLEnabled:          s.SSLEnabled,
		ProxyProtocol:       s.ProxyProtocol,
		AcceptProxyProtocol: s.AcceptProxyProtocol,
		ConnectTimeout:      clonePtr(s.ConnectTimeout),
		Timeout:             clonePtr(s.Timeout),
		BandwidthLimit:      s.BandwidthLimit,
	}
	if s.SSLCertificateID != nil {
		in.SSLCertificateID = s.SSLCertificateID.String()
	}
	t := s.TargetAgents
	t.AgentIDs = slices.Clone(t.AgentIDs)
	in.TargetAgents = &t
	return in
}

// ---- Configuration versions ----

// CertificateRef is what a configuration snapshot records of a certificate:
// its identity, not its material (certificates are not restored by rollback).
type CertificateRef struct {
	ID        uuid.UUID  `json:"id"`
	Domain    string     `json:"domain"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// Snapshot is a workspace's configuration at one version: every upstream,
// virtual host, stream and certificate reference, in their API form.
type Snapshot struct {
	Upstreams    []upstreams.Upstream `json:"upstreams"`
	VirtualHosts []VirtualHost        `json:"virtual_hosts"`
	Streams      []Stream             `json:"streams"`
	Certificates []CertificateRef     `json:"certificates"`
}

// storedSnapshot is the config_versions.snapshot column: the snapshot and the
// basic-auth password hashes (virtual host id → user name → hash), which the
// API never shows but a rollback restores.
type storedSnapshot struct {
	Snapshot
	PasswordHashes map[string]map[string]string `json:"password_hashes,omitempty"`
}

// Actor is who made a configuration change.
type Actor struct {
	UserID   *uuid.UUID `json:"user_id"`
	APIKeyID *uuid.UUID `json:"api_key_id"`
	Email    string     `json:"email"`
}

// VersionSummary is one entry of a workspace's configuration history.
type VersionSummary struct {
	Version   int64     `json:"version"`
	Actor     Actor     `json:"actor"`
	Summary   string    `json:"summary"`
	CreatedAt time.Time `json:"created_at"`
}

// MarshalJSON writes the timestamp as RFC 3339 UTC seconds.
func (v VersionSummary) MarshalJSON() ([]byte, error) {
	type plain VersionSummary
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
	}{plain(v), app.Time{Time: v.CreatedAt}})
}

// Version is one configuration version with its snapshot and the nginx files
// rendered from it (certificate material is not included; basic-auth password
// hashes are shown only as fingerprints).
type Version struct {
	VersionSummary
	Snapshot Snapshot          `json:"snapshot"`
	Files    map[string]string `json:"files"`
	// Agents is the version's rollout: what each agent made of it.
	Agents []AgentRollout `json:"agents"`
}

// MarshalJSON flattens the summary next to the snapshot and files.
func (v Version) MarshalJSON() ([]byte, error) {
	s, err := json.Marshal(v.VersionSummary)
	if err != nil {
		return nil, err
	}
	rest, err := json.Marshal(struct {
		Snapshot Snapshot          `json:"snapshot"`
		Files    map[string]string `json:"files"`
		Agents   []AgentRollout    `json:"agents"`
	}{v.Snapshot, v.Files, v.Agents})
	if err != nil {
		return nil, err
	}
	return append(append(s[:len(s)-1], ','), rest[1:]...), nil
}

// Diff is the unified diff of the rendered files of two versions.
type Diff struct {
	Version int64 `json:"version"`
	Against int64 `json:"against"`
	// Diff is a unified diff (a/<file> is Against, b/<file> is Version),
	// empty when the rendered files are equal.
	Diff string `json:"diff"`
}

// Preview is the nginx configuration the renderer produces for one object.
type Preview struct {
	Files map[string]string `json:"files"`
}

// configVersionRow is the config_versions table.
type configVersionRow struct {
	WorkspaceID   uuid.UUID      `gorm:"column:workspace_id;type:uuid;primaryKey"`
	Version       int64          `gorm:"column:version;primaryKey"`
	ActorUserID   *uuid.UUID     `gorm:"column:actor_user_id;type:uuid"`
	ActorAPIKeyID *uuid.UUID     `gorm:"column:actor_api_key_id;type:uuid"`
	ActorEmail    string         `gorm:"column:actor_email;not null"`
	Summary       string         `gorm:"column:summary;not null"`
	Snapshot      storedSnapshot `gorm:"column:snapshot;type:jsonb;serializer:json;not null"`
	CreatedAt     time.Time      `gorm:"column:created_at;not null"`
}

// TableName is the config_versions table.
func (configVersionRow) TableName() string { return "config_versions" }

func (r configVersionRow) summary() VersionSummary {
	return VersionSummary{
		Version:   r.Version,
		Actor:     Actor{UserID: r.ActorUserID, APIKeyID: r.ActorAPIKeyID, Email: r.ActorEmail},
		Summary:   r.Summary,
		CreatedAt: r.CreatedAt.UTC(),
	}
}
