package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The replicas registry: every master process registers itself in the
// replicas table when Run starts serving, refreshes its row every
// ReplicaHeartbeat (last_seen_at and the number of agent streams it holds)
// and marks it stopped on a clean shutdown. A row not refreshed for
// ReplicaDownAfter reads as down (the process died or lost the database);
// rows not seen for ReplicaPruneAfter are deleted by the other replicas'
// heartbeats. The replica id is also the River client id, so the replica
// that River elected leader (river_leader.leader_id), the one that runs the
// periodic jobs, is known.

const (
	// ReplicaHeartbeat is how often a replica refreshes its row.
	ReplicaHeartbeat = 5 * time.Second
	// ReplicaDownAfter is how long a replica's row may go unrefreshed before
	// the replica reads as down.
	ReplicaDownAfter = 30 * time.Second
	// ReplicaPruneAfter is how long the row of a replica that stopped or
	// died stays listed.
	ReplicaPruneAfter = 24 * time.Hour
)

// Replica states.
const (
	// ReplicaUp: the replica refreshed its row within ReplicaDownAfter.
	ReplicaUp = "up"
	// ReplicaDown: the replica stopped, or has not refreshed its row for
	// ReplicaDownAfter.
	ReplicaDown = "down"
)

// Replica is one master process as the replicas table records it.
type Replica struct {
	// ID names the process: "<hostname>/<pid>/<random>". It is the River
	// client id and the agents' connected_replica.
	ID       string `json:"id"`
	Hostname string `json:"hostname"`
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	// GRPCAddr and HTTPAddr are the addresses the process listens on.
	GRPCAddr   string    `json:"grpc_addr"`
	HTTPAddr   string    `json:"http_addr"`
	StartedAt  time.Time `json:"started_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
	// State is ReplicaUp or ReplicaDown.
	State string `json:"state"`
	// Leader: River elected this replica leader; it runs the periodic jobs.
	Leader bool `json:"leader"`
	// ConnectedAgents is the number of agent streams the replica held at
	// its last refresh.
	ConnectedAgents int `json:"connected_agents"`
}

// Replicas is this process's entry in the replicas registry, and the
// registry's reader.
type Replicas struct {
	pool     *pgxpool.Pool
	logger   *slog.Logger
	id       string
	hostname string

	mu      sync.Mutex
	stopped bool
}

func newReplicas(pool *pgxpool.Pool, logger *slog.Logger) (*Replicas, error) {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate replica id: %w", err)
	}
	// River refuses client ids longer than 100 characters.
	short := host
	if len(short) > 60 {
		short = short[:60]
	}
	id := fmt.Sprintf("%s/%d/%s", short, os.Getpid(), hex.EncodeToString(b))
	return &Replicas{pool: pool, logger: logger, id: id, hostname: host}, nil
}

// ID is this process's replica id.
func (r *Replicas) ID() string { return r.id }

// replicaStart is what a replica records about itself when it starts.
type replicaStart struct {
	Version, Commit    string
	GRPCAddr, HTTPAddr string
	ConnectedAgents    int
}

// register inserts (or, for a restarted registration, resets) this
// replica's row.
func (r *Replicas) register(ctx context.Context, s replicaStart) error {
	_, err := r.pool.Exec(ctx, `
INSERT INTO replicas (id, hostname, version, commit, grpc_addr, http_addr, connected_agents, started_at, last_seen_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())
ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, version = EXCLUDED.version, commit = EXCLUDED.commit,
    grpc_addr = EXCLUDED.grpc_addr, http_addr = EXCLUDED.http_addr, connected_agents = EXCLUDED.connected_agents,
    last_seen_at = now(), stopped_at = NULL`,
		r.id, r.hostname, s.Version, s.Commit, s.GRPCAddr, s.HTTPAddr, s.ConnectedAgents)
	if err != nil {
		return fmt.Errorf("register replica %s: %w", r.id, err)
	}
	return nil
}

// heartbeat refreshes this replica's row and prunes rows of replicas gone
// for ReplicaPruneAfter, in one statement. It reports false when the row is
// missing (the registration at start failed, or the row was deleted).
func (r *Replicas) heartbeat(ctx context.Context, agents int) (bool, error) {
	tag, err := r.pool.Exec(ctx, `
WITH pruned AS (
    DELETE FROM replicas WHERE id <> $1 AND last_seen_at < now() - make_interval(secs => $3)
)
UPDATE replicas SET last_seen_at = now(), connected_agents = $2, stopped_at = NULL WHERE id = $1`,
		r.id, agents, ReplicaPruneAfter.Seconds())
	if err != nil {
		return false, fmt.Errorf("refresh replica %s: %w", r.id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// run refreshes this replica's row every ReplicaHeartbeat until ctx ends,
// registering it again (as s, with the current agent count) when the row is
// missing; agents counts the agent streams (nil: none).
func (r *Replicas) run(ctx context.Context, s replicaStart, agents func() int) {
	t := time.NewTicker(ReplicaHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := 0
		if agents != nil {
			n = agents()
		}
		ok, err := r.heartbeat(ctx, n)
		if err == nil && !ok {
			s.ConnectedAgents = n
			err = r.register(ctx, s)
		}
		if err != nil && ctx.Err() == nil {
			r.logger.Warn("replica heartbeat", "error", err)
		}
	}
}

// stop marks this replica stopped (a clean shutdown).
func (r *Replicas) stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	if _, err := r.pool.Exec(ctx, `UPDATE replicas SET stopped_at = now(), connected_agents = 0 WHERE id = $1`, r.id); err != nil {
		return fmt.Errorf("mark replica %s stopped: %w", r.id, err)
	}
	return nil
}

// List returns every registered replica, oldest first, with its state and
// whether River elected it leader.
func (r *Replicas) List(ctx context.Context) ([]Replica, error) {
	rows, err := r.pool.Query(ctx, `
SELECT r.id, r.hostname, r.version, r.commit, r.grpc_addr, r.http_addr, r.started_at, r.last_seen_at, r.connected_agents,
    (r.stopped_at IS NULL AND r.last_seen_at > now() - make_interval(secs => $1)) AS up,
    EXISTS (SELECT 1 FROM river_leader l WHERE l.leader_id = r.id AND l.expires_at > now()) AS leader
FROM replicas r
ORDER BY r.started_at, r.id`, ReplicaDownAfter.Seconds())
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	defer rows.Close()
	var out []Replica
	for rows.Next() {
		var x Replica
		var up bool
		if err := rows.Scan(&x.ID, &x.Hostname, &x.Version, &x.Commit, &x.GRPCAddr, &x.HTTPAddr, &x.StartedAt, &x.LastSeenAt, &x.ConnectedAgents, &up, &x.Leader); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		x.State = ReplicaDown
		if up {
			x.State = ReplicaUp
		}
		x.Leader = x.Leader && up
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	return out, nil
}
