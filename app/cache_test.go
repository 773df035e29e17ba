package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
)

// TestCache_InvalidatedByNotification: an entry is served until a
// notification with one of its tags arrives; a value loaded while an
// invalidation arrived is not stored; a nil Invalidator never caches.
func TestCache_InvalidatedByNotification(t *testing.T) {
	a := apptest.NewApp(t, nil)
	inv := a.Invalidator()
	deadline := time.Now().Add(5 * time.Second)
	for !inv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("listener not up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx := context.Background()
	c := app.NewCache[int](inv, time.Minute)
	loads := 0
	load := func(v int, tags ...string) func(context.Context) (int, []string, error) {
		return func(context.Context) (int, []string, error) { loads++; return v, tags, nil }
	}
	get := func(v int, tags ...string) int {
		t.Helper()
		got, err := c.Load(ctx, "k", load(v, tags...))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := get(1, "user:a"); got != 1 {
		t.Fatalf("first load = %d", got)
	}
	if got := get(2, "user:a"); got != 1 || loads != 1 {
		t.Fatalf("cached load = %d after %d loads, want 1 after 1", got, loads)
	}
	// An unrelated tag leaves it; its own tag, notified by another
	// connection, drops it.
	if _, err := a.Deps.Pool.Exec(ctx, "SELECT pg_notify($1, 'user:b')", app.InvalidationChannel); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Deps.Pool.Exec(ctx, "SELECT pg_notify($1, 'user:a')", app.InvalidationChannel); err != nil {
		t.Fatal(err)
	}
	inv.Sync(ctx)
	if got := get(3, "user:a"); got != 3 {
		t.Fatalf("after invalidation = %d, want 3 (reloaded)", got)
	}

	// A load during which an invalidation arrives is returned, not stored.
	c2 := app.NewCache[int](inv, time.Minute)
	v, _ := c2.Load(ctx, "k", func(context.Context) (int, []string, error) {
		inv.Invalidate("other:x")
		return 7, []string{"user:z"}, nil
	})
	if v != 7 || c2.Len() != 0 {
		t.Fatalf("raced load: value %d, %d entries; want 7 and none stored", v, c2.Len())
	}

	var none *app.Invalidator
	c3 := app.NewCache[int](none, time.Minute)
	_, _ = c3.Load(ctx, "k", load(1))
	if c3.Len() != 0 {
		t.Fatal("a cache without an invalidator stored an entry")
	}
}
