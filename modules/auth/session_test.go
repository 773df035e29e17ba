package auth

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/nxmesh/nxmesh/app"
)

func TestAPI_WebSession(t *testing.T) {
	t.Parallel()

	t.Run("CookieAuthenticatesAndCarriesCSRF", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		token, csrf, err := b.svc.CreateWebSession(b.ctx, u.ID, "192.0.2.1", "browser")
		if err != nil || token == "" || csrf == "" || token == csrf {
			t.Fatalf("CreateWebSession = %q, %q, %v", token, csrf, err)
		}
		cookie := []string{"Cookie", SessionCookie + "=" + token}
		r := b.do(t, "GET", "/probe/ui", nil, cookie...)
		if r.Status != http.StatusOK || string(r.Body) != "alice@example.com" {
			t.Fatalf("GET with cookie: %d %s", r.Status, r.Body)
		}
		if r := b.do(t, "POST", "/probe/ui", nil, cookie...); r.Status != http.StatusForbidden {
			t.Fatalf("POST without CSRF token: %d", r.Status)
		}
		if r := b.do(t, "POST", "/probe/ui", nil, append(cookie, "X-CSRF-Token", csrf)...); r.Status != http.StatusOK {
			t.Fatalf("POST with CSRF token: %d %s", r.Status, r.Body)
		}
		var stored int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM auth_sessions WHERE kind = 'web' AND token_hash = ?`, sha256Sum(token)).Scan(&stored)
		if stored != 1 {
			t.Fatal("session cookie not stored as its SHA-256")
		}
		// A cookie is not an API credential.
		b.do(t, "GET", "/v1/users/me", nil, cookie...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("NoOrRevokedCookieRedirectsToLogin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		if r := b.do(t, "GET", "/probe/ui", nil); r.Status != http.StatusSeeOther {
			t.Fatalf("without cookie: %d", r.Status)
		}
		token, _, err := b.svc.CreateWebSession(b.ctx, u.ID, "192.0.2.1", "browser")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.svc.RevokeWebSession(b.ctx, token); err != nil {
			t.Fatal(err)
		}
		if r := b.do(t, "GET", "/probe/ui", nil, "Cookie", SessionCookie+"="+token); r.Status != http.StatusSeeOther {
			t.Fatalf("revoked cookie: %d", r.Status)
		}
		if _, err := b.svc.AuthenticateWebSession(b.ctx, token); !errors.Is(err, ErrInvalidSession) {
			t.Fatalf("AuthenticateWebSession(revoked) = %v", err)
		}
	})

	t.Run("ExpiresWithTheRefreshTokenLifetime", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.RefreshTokenTTL = 12 * time.Hour })
		u := b.createUser(t, "alice@example.com", false)
		token, _, err := b.svc.CreateWebSession(b.ctx, u.ID, "192.0.2.1", "browser")
		if err != nil {
			t.Fatal(err)
		}
		if b.svc.WebSessionTTL() != 12*time.Hour {
			t.Fatalf("WebSessionTTL = %s", b.svc.WebSessionTTL())
		}
		b.clock.Advance(12*time.Hour + time.Second)
		if _, err := b.svc.AuthenticateWebSession(b.ctx, token); !errors.Is(err, ErrInvalidSession) {
			t.Fatalf("expired session: %v", err)
		}
	})

	t.Run("UILoginUsesTheSameThrottleAndCodes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.LoginAttemptsPerAccount = 2 })
		b.createUser(t, "alice@example.com", false)
		for range 2 {
			if _, err := b.svc.VerifyPassword(b.ctx, "alice@example.com", "wrong password", "192.0.2.1"); !errors.Is(err, ErrInvalidCredentials) {
				t.Fatalf("wrong password: %v", err)
			}
		}
		b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": testPassword}).
			expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		b.clock.Advance(16 * time.Minute)

		u, err := b.svc.VerifyPassword(b.ctx, "alice@example.com", testPassword, "192.0.2.1")
		if err != nil {
			t.Fatal(err)
		}
		masked, err := b.svc.StartEmailCode(b.ctx, u)
		if err != nil || masked != "a***e@example.com" {
			t.Fatalf("StartEmailCode = %q, %v", masked, err)
		}
		code := b.mail.Next(t).Code(t)
		got, err := b.svc.VerifyEmailCode(b.ctx, "alice@example.com", code, "192.0.2.1")
		if err != nil || got.ID != u.ID {
			t.Fatalf("VerifyEmailCode = %+v, %v", got, err)
		}
		if _, _, err := b.svc.CreateWebSession(b.ctx, got.ID, "192.0.2.1", "browser"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAPI_Cleanup(t *testing.T) {
	t.Parallel()

	t.Run("DeletesExpiredRowsOnly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		b.createUser(t, "bob@example.com", false)
		old := b.login(t, "alice@example.com")
		b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": "wrong password"})
		b.do(t, "POST", "/v1/auth/login/init", map[string]string{"email": "alice@example.com", "password": testPassword}).expect(t, http.StatusOK, "")
		b.mail.Next(t)

		b.clock.Advance(38 * 24 * time.Hour)
		fresh := b.login(t, "bob@example.com")
		res, err := b.svc.Cleanup(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.LoginCodes != 1 || res.LoginAttempts != 2 || res.RefreshTokens != 1 || res.Sessions != 1 {
			t.Fatalf("cleanup = %+v", res)
		}
		b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": old.RefreshToken}).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": fresh.RefreshToken}).expect(t, http.StatusOK, "")
	})

	t.Run("RegistersTheHourlyJob", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		workers := river.NewWorkers()
		if jobs := b.mod.Jobs(workers); len(jobs) != 1 {
			t.Fatalf("%d periodic jobs", len(jobs))
		}
		if (CleanupArgs{}).Kind() != "auth.cleanup" {
			t.Fatal("job kind")
		}
	})
}
