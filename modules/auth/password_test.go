package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
)

// hashProbe is a hashHook that counts hashes and holds each one that starts
// until release is closed.
type hashProbe struct {
	waiting, running, started, maxRunning atomic.Int64
	release                               chan struct{}
}

func newHashProbe(s *Service) *hashProbe {
	p := &hashProbe{release: make(chan struct{})}
	s.hashHook = func(ev hashEvent) {
		switch ev {
		case hashWaiting:
			p.waiting.Add(1)
		case hashStarted:
			n := p.running.Add(1)
			p.started.Add(1)
			for m := p.maxRunning.Load(); n > m && !p.maxRunning.CompareAndSwap(m, n); m = p.maxRunning.Load() {
			}
			<-p.release
		case hashDone:
			p.running.Add(-1)
		}
	}
	return p
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPasswordHashing(t *testing.T) {
	t.Parallel()

	unthrottled := func(n int) func(*app.Config) {
		return func(c *app.Config) {
			c.Auth.PasswordHashConcurrency = n
			c.Auth.LoginAttemptsPerAccount, c.Auth.LoginAttemptsPerIP = 1000, 1000
		}
	}

	t.Run("ConcurrentHashesNeverExceedTheBound", func(t *testing.T) {
		t.Parallel()
		const bound, logins = 2, 16
		b := setup(t, unthrottled(bound))
		b.createUser(t, "alice@example.com", false)
		b.svc.hashWait = time.Minute
		p := newHashProbe(b.svc)
		errs := make([]error, logins)
		var wg sync.WaitGroup
		for i := range logins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				email := "alice@example.com"
				if i%2 == 1 {
					email = fmt.Sprintf("nobody%d@example.com", i)
				}
				_, errs[i] = b.svc.VerifyPassword(b.ctx, email, "wrong guess", fmt.Sprintf("192.0.2.%d", i))
			}()
		}
		// Every login asks for a slot; the first two hold theirs, so the other
		// fourteen must be waiting, not hashing.
		waitFor(t, "every login to ask for a hashing slot", func() bool { return p.waiting.Load() == logins && p.started.Load() == bound })
		if n := p.started.Load(); n != bound {
			t.Fatalf("%d hashes started with %d slots", n, bound)
		}
		close(p.release)
		wg.Wait()
		for i, err := range errs {
			if !errors.Is(err, ErrInvalidCredentials) {
				t.Errorf("login %d: %v, want invalid credentials", i, err)
			}
		}
		if m, n := p.maxRunning.Load(), p.started.Load(); m != bound || n != logins {
			t.Fatalf("at most %d hashes ran at once (want %d), %d in all (want %d)", m, bound, n, logins)
		}
	})

	t.Run("BoundDefaultsToTwiceGOMAXPROCS", func(t *testing.T) {
		t.Parallel()
		if n := hashSlotsFor(0); n < 2 || n%2 != 0 {
			t.Fatalf("default slots = %d", n)
		}
		if n := hashSlotsFor(3); n != 3 {
			t.Fatalf("configured slots = %d, want 3", n)
		}
	})

	t.Run("LongWaitAnswers503WithRetryAfter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, unthrottled(1))
		b.createUser(t, "alice@example.com", false)
		b.svc.hashWait = 100 * time.Millisecond
		p := newHashProbe(b.svc)
		held := make(chan error, 1)
		go func() {
			_, err := b.svc.VerifyPassword(b.ctx, "alice@example.com", testPassword, "192.0.2.1")
			held <- err
		}()
		waitFor(t, "the first login to hold the only slot", func() bool { return p.started.Load() == 1 })

		r := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "bob@example.com", "password": "wrong guess"})
		r.expect(t, http.StatusServiceUnavailable, app.CodeServiceUnavailable)
		if ra := r.Header.Get("Retry-After"); ra != "1" {
			t.Fatalf("Retry-After = %q, want 1", ra)
		}
		close(p.release)
		if err := <-held; err != nil {
			t.Fatalf("held login: %v", err)
		}
		var counted int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM login_attempts WHERE email = 'bob@example.com'`).Scan(&counted)
		if counted != 0 {
			t.Fatalf("the unevaluated login counts as %d failures", counted)
		}
	})

	t.Run("WaitEndsWithTheRequestContext", func(t *testing.T) {
		t.Parallel()
		b := setup(t, unthrottled(1))
		b.createUser(t, "alice@example.com", false)
		b.svc.hashWait = time.Hour
		p := newHashProbe(b.svc)
		defer close(p.release)
		go func() { _, _ = b.svc.VerifyPassword(b.ctx, "alice@example.com", testPassword, "192.0.2.1") }()
		waitFor(t, "the first login to hold the only slot", func() bool { return p.started.Load() == 1 })
		ctx, cancel := context.WithCancel(b.ctx)
		done := make(chan error, 1)
		go func() {
			_, err := b.svc.VerifyPassword(ctx, "alice@example.com", testPassword, "192.0.2.2")
			done <- err
		}()
		waitFor(t, "the second login to wait for a slot", func() bool { return p.waiting.Load() == 2 })
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the waiting login did not end with its context")
		}
	})

	t.Run("RefusedLoginsDoNotHash", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.LoginAttemptsPerAccount = 2 })
		b.createUser(t, "alice@example.com", false)
		p := newHashProbe(b.svc)
		close(p.release)
		for range 2 {
			b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": "wrong guess"}).
				expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		for range 3 {
			b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": "wrong guess"}).
				expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		}
		if n := p.started.Load(); n != 2 {
			t.Fatalf("%d hashes for 2 evaluated and 3 refused logins", n)
		}
	})
}
