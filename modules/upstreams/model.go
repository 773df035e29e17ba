package upstreams

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// Algorithm is how an upstream spreads requests over its servers.
type Algorithm string

// Load-balancing algorithms.
const (
	// RoundRobin is nginx's default: requests in turn, honouring weights.
	RoundRobin Algorithm = "round_robin"
	// LeastConnections sends a request to the server with the fewest active
	// connections (nginx least_conn).
	LeastConnections Algorithm = "least_connections"
	// IPHash pins a client address to a server (nginx ip_hash). Backup servers
	// cannot be used with it.
	IPHash Algorithm = "ip_hash"
	// WeightedRoundRobin is round robin with the servers' weights; nginx renders
	// it exactly like RoundRobin.
	WeightedRoundRobin Algorithm = "weighted_round_robin"
)

// Algorithms lists every algorithm, the default first.
var Algorithms = []Algorithm{RoundRobin, LeastConnections, IPHash, WeightedRoundRobin}

// Valid reports whether a is one of Algorithms.
func (a Algorithm) Valid() bool {
	for _, x := range Algorithms {
		if a == x {
			return true
		}
	}
	return false
}

// Upstream is a named group of backend servers in a workspace. It is the GORM
// model of the upstreams table and, through MarshalJSON, the API's upstream
// object: the API returns it, the audit log records it, and configuration
// snapshots store it, so a snapshot holds exactly what the API returned and
// decodes back into an Upstream (see Service.ReplaceAll).
type Upstream struct {
	ID          uuid.UUID `gorm:"type:uuid;primaryKey" json:"id"`
	WorkspaceID uuid.UUID `gorm:"type:uuid;not null" json:"workspace_id"`
	Name        string    `gorm:"not null" json:"name"`
	Algorithm   Algorithm `gorm:"not null" json:"algorithm" doc:"round_robin (default), least_connections, ip_hash or weighted_round_robin"`
	// Servers are tried in the order given.
	Servers              []Server    `gorm:"type:jsonb;serializer:json;not null" json:"servers"`
	KeepaliveConnections int         `gorm:"not null" json:"keepalive_connections" doc:"idle keepalive connections kept open to the servers per worker; 0 disables keepalive"`
	HealthCheck          HealthCheck `gorm:"embedded;embeddedPrefix:health_check_" json:"health_check"`
	CreatedAt            time.Time   `gorm:"not null" json:"created_at"`
	UpdatedAt            time.Time   `gorm:"not null" json:"updated_at"`
}

// TableName is the upstreams table.
func (Upstream) TableName() string { return "upstreams" }

// AfterFind puts the timestamps in UTC, so that a read upstream equals the one
// Create or Update returned.
func (u *Upstream) AfterFind(*gorm.DB) error {
	u.CreatedAt = u.CreatedAt.UTC()
	u.UpdatedAt = u.UpdatedAt.UTC()
	return nil
}

// MarshalJSON writes timestamps as RFC 3339 UTC seconds (app.Time) and servers
// as an array even when there are none.
func (u Upstream) MarshalJSON() ([]byte, error) {
	type plain Upstream
	if u.Servers == nil {
		u.Servers = []Server{}
	}
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
		UpdatedAt app.Time `json:"updated_at"`
	}{plain(u), app.Time{Time: u.CreatedAt}, app.Time{Time: u.UpdatedAt}})
}

// Server is one backend of an upstream (an nginx "server" line).
type Server struct {
	// Address is host:port: an IPv4 address, an IPv6 address in brackets or a
	// DNS name, and a port from 1 to 65535.
	Address string `json:"address" doc:"host:port; host is an IPv4 address, an IPv6 address in brackets or a DNS name"`
	Weight  int    `json:"weight" doc:"1 to 1000, default 1"`
	// Backup servers get requests only when every other server is unavailable.
	Backup bool `json:"backup" doc:"receives requests only when the other servers are unavailable; not allowed with ip_hash"`
	// Down marks the server permanently unavailable.
	Down        bool `json:"down" doc:"marks the server as permanently unavailable"`
	MaxFails    int  `json:"max_fails" doc:"failed attempts within fail_timeout that mark the server unavailable, 0 to 100 (0 disables), default 1"`
	FailTimeout int  `json:"fail_timeout" doc:"seconds, 0 to 3600, default 10"`
}

// HealthCheck configures the active health checks the agent runs against an
// upstream's servers (open-source nginx has none).
type HealthCheck struct {
	Enabled bool `json:"enabled"`
	// Path is the HTTP request target probed on each server.
	Path string `json:"path" doc:"request path, starting with /, default /"`
	// Interval is the number of seconds between two probes of a server.
	Interval int `json:"interval" doc:"seconds between probes, 1 to 3600, default 10"`
	// Timeout is how long a probe may take, in seconds; at most Interval.
	Timeout int `json:"timeout" doc:"seconds, 1 to 300 and at most interval, default 5"`
	// HealthyThreshold is the number of consecutive passes that mark a server up.
	HealthyThreshold int `json:"healthy_threshold" doc:"consecutive passes that mark a server healthy, 1 to 100, default 2"`
	// UnhealthyThreshold is the number of consecutive failures that mark a server
	// down.
	UnhealthyThreshold int `json:"unhealthy_threshold" doc:"consecutive failures that mark a server unhealthy, 1 to 100, default 3"`
}

// Defaults of the optional fields.
const (
	DefaultWeight             = 1
	DefaultMaxFails           = 1
	DefaultFailTimeout        = 10
	DefaultHealthPath         = "/"
	DefaultHealthInterval     = 10
	DefaultHealthTimeout      = 5
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
)

// DefaultHealthCheck is the health check of an upstream created without one:
// disabled, with the default probe settings ready for when it is enabled.
func DefaultHealthCheck() HealthCheck {
	return HealthCheck{
		Path:               DefaultHealthPath,
		Interval:           DefaultHealthInterval,
		Timeout:            DefaultHealthTimeout,
		HealthyThreshold:   DefaultHealthyThreshold,
		UnhealthyThreshold: DefaultUnhealthyThreshold,
	}
}

// Audit object type written by this module.
const objectUpstream = "upstream"
