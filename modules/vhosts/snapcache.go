package vhosts

import (
	"context"
	"sync"

	"github.com/google/uuid"
)

// snapshotCacheSize is how many decoded configuration versions a Service
// keeps. A push to a fleet reads the same version once per agent; a few
// recent versions per busy workspace are all that is ever asked for.
const snapshotCacheSize = 16

type snapshotKey struct {
	workspaceID uuid.UUID
	version     int64
}

// snapshotCache holds decoded snapshots of stored configuration versions.
// A stored version never changes (a rollback stores a new one), so entries
// need no invalidation; the oldest entry makes room for a new one.
type snapshotCache struct {
	mu    sync.Mutex
	m     map[snapshotKey]storedSnapshot
	order []snapshotKey
}

// snapshot returns the stored snapshot of a workspace's version, from the
// cache or the database. Callers must not modify it.
func (s *Service) snapshot(ctx context.Context, workspaceID uuid.UUID, version int64) (storedSnapshot, error) {
	key := snapshotKey{workspaceID, version}
	c := &s.snapshots
	c.mu.Lock()
	snap, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return snap, nil
	}
	r, err := loadVersion(s.db.WithContext(ctx), workspaceID, version)
	if err != nil {
		return storedSnapshot{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[snapshotKey]storedSnapshot, snapshotCacheSize)
	}
	if _, ok := c.m[key]; !ok {
		if len(c.order) >= snapshotCacheSize {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
		c.m[key] = r.Snapshot
		c.order = append(c.order, key)
	}
	return r.Snapshot, nil
}
