package replicas_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/wire/wiretest"
)

// TestAPI_RateLimitHoldsAcrossReplicas runs two replicas on one database with a
// limit of 100 requests per minute per credential: together they admit the
// limit (within 10 %), then both refuse with 429 and Retry-After.
func TestAPI_RateLimitHoldsAcrossReplicas(t *testing.T) {
	const limit = 100
	a := wiretest.Start(t, wiretest.WithConfig(func(c *app.Config) { c.Auth.RateLimitPerMinute = limit }))
	b := wiretest.Start(t, wiretest.WithConfig(func(c *app.Config) {
		c.Database.URL = a.App.Deps.Config.Database.URL
		c.Auth.RateLimitPerMinute = limit
	}))
	// Both replicas are registered (each replica's share is half of what remains).
	eventually(t, 10*time.Second, "two replicas registered", func() (bool, string) {
		var n int
		if err := a.App.Deps.Pool.QueryRow(t.Context(), `SELECT count(*) FROM replicas WHERE stopped_at IS NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 2, strconv.Itoa(n) + " replicas"
	})
	// Both limiters have read the replicas since, so they know of two.
	time.Sleep(1500 * time.Millisecond)

	// send sends up to n requests of the user with token to m, and returns
	// how many were admitted before the first 429 and that 429.
	send := func(m *wiretest.Master, token string, n int) (int, apptest.Response) {
		c := m.Client.As(token)
		for i := 0; i < n; i++ {
			r := c.Do(t, http.MethodGet, "/v1/users/me", nil)
			if r.Status == http.StatusTooManyRequests {
				return i, r
			}
			if r.Status != http.StatusOK {
				t.Fatalf("GET /v1/users/me: status %d: %s", r.Status, r.Body)
			}
		}
		return n, apptest.Response{}
	}
	within := func(t *testing.T, total int) {
		t.Helper()
		if total < limit-limit/10 || total > limit+limit/10 {
			t.Errorf("the replicas together admitted %d requests, want %d to %d", total, limit-limit/10, limit+limit/10)
		}
		t.Logf("the replicas together admitted %d requests (limit %d)", total, limit)
	}
	refused := func(t *testing.T, r apptest.Response) {
		t.Helper()
		r.Expect(t, http.StatusTooManyRequests, "RATE_LIMITED")
		if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
			t.Errorf("Retry-After %q, want 1 to 60 seconds", r.Header.Get("Retry-After"))
		}
	}

	// The limit is a fixed window on the wall clock: each case starts with
	// at least 10 s of its window left.
	fresh := func() {
		if left := time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)); left < 10*time.Second {
			time.Sleep(left + 100*time.Millisecond)
		}
	}

	t.Run("OneReplicaThenTheOther", func(t *testing.T) {
		_, _ = a.User(t, "seq@example.test", false)
		token := login(t, a, "seq@example.test")
		fresh()
		na, _ := send(a, token, 60)
		if na != 60 {
			t.Fatalf("replica a admitted %d of the first 60", na)
		}
		nb, r := send(b, token, 2*limit)
		within(t, na+nb)
		refused(t, r)
		// Replica a learns the total at its next flush and refuses too.
		extra := 0
		eventually(t, 3*time.Second, "replica a refuses", func() (bool, string) {
			n, r := send(a, token, 1)
			extra += n
			return r.Status == http.StatusTooManyRequests, "admitted " + strconv.Itoa(extra) + " more"
		})
		within(t, na+nb+extra)
		_, r = send(a, token, 1)
		refused(t, r)
		_, r = send(b, token, 1)
		refused(t, r)
	})

	t.Run("BothAtOnce", func(t *testing.T) {
		_, _ = a.User(t, "burst@example.test", false)
		token := login(t, a, "burst@example.test")
		fresh()
		var wg sync.WaitGroup
		counts := make([]int, 4)
		for i, m := range []*wiretest.Master{a, b, a, b} {
			wg.Go(func() { counts[i], _ = send(m, token, limit) })
		}
		wg.Wait()
		within(t, counts[0]+counts[1]+counts[2]+counts[3])
		for _, m := range []*wiretest.Master{a, b} {
			_, r := send(m, token, 1)
			refused(t, r)
		}
	})
}

// login signs in through POST /v1/auth/login on m (not rate limited per
// credential) and returns the access token.
func login(t *testing.T, m *wiretest.Master, email string) string {
	t.Helper()
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	m.Client.Call(t, http.MethodPost, "/v1/auth/login", map[string]string{"email": email, "password": wiretest.Password}, http.StatusOK, &pair)
	return pair.AccessToken
}
