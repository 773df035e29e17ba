package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nxmesh/nxmesh/app"
)

func TestAPI_Login(t *testing.T) {
	t.Parallel()

	t.Run("ReturnsTokensThatAuthenticate", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		r := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "Alice@Example.com", "password": testPassword})
		r.expect(t, http.StatusOK, "")
		var pair TokenPair
		r.decode(t, &pair)
		if pair.AccessToken == "" || pair.RefreshToken == "" || pair.ExpiresIn != 3600 || pair.TokenType != "Bearer" {
			t.Fatalf("token response = %+v", pair)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", cc)
		}
		me := b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...)
		me.expect(t, http.StatusOK, "")
		var u User
		me.decode(t, &u)
		if u.Email != "alice@example.com" {
			t.Fatalf("me = %+v", u)
		}
		if strings.Contains(string(me.Body), "password") {
			t.Fatalf("user JSON mentions the password: %s", me.Body)
		}
	})

	t.Run("AccessTokenCarriesSessionAndIssuer", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		var claims accessClaims
		tok, _, err := jwt.NewParser().ParseUnverified(pair.AccessToken, &claims)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Method.Alg() != "HS256" || claims.Subject != u.ID.String() || claims.Issuer != "nxmesh" || claims.SessionID == "" {
			t.Fatalf("alg %s claims %+v", tok.Method.Alg(), claims)
		}
		if got := claims.ExpiresAt.Sub(claims.IssuedAt.Time); got != time.Hour {
			t.Fatalf("lifetime = %s, want 1h", got)
		}
		var stored int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM refresh_tokens WHERE token_hash = ?`, sha256Sum(pair.RefreshToken)).Scan(&stored)
		if stored != 1 {
			t.Fatalf("refresh token not stored as its SHA-256")
		}
	})

	t.Run("WrongPasswordAndUnknownEmailAnswerTheSame", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		wrong := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": "not the password"})
		unknown := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "nobody@example.com", "password": "not the password"})
		wrong.expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		unknown.expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		we, ue := wrong.errorBody(t), unknown.errorBody(t)
		if we.Error.Message != "Invalid email or password" {
			t.Fatalf("message = %q", we.Error.Message)
		}
		we.Error.RequestID, ue.Error.RequestID = "", ""
		wj, _ := json.Marshal(we)
		uj, _ := json.Marshal(ue)
		if string(wj) != string(uj) {
			t.Fatalf("bodies differ:\n%s\n%s", wj, uj)
		}
	})

	t.Run("MissingFieldsAre422", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		r := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": ""})
		r.expect(t, http.StatusUnprocessableEntity, app.CodeValidation)
		if d := r.errorBody(t).Error.Details; len(d) != 2 {
			t.Fatalf("details = %+v", d)
		}
		b.do(t, "POST", "/v1/auth/login", `{"email":"a@b.c","password":"x","extra":1}`).expect(t, http.StatusUnprocessableEntity, app.CodeValidation)
	})

	t.Run("DisabledUserIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		if err := b.svc.SetUserDisabled(b.ctx, u.ID, true); err != nil {
			t.Fatal(err)
		}
		r := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": testPassword})
		r.expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		if msg := r.errorBody(t).Error.Message; msg != "Account is disabled" {
			t.Fatalf("message = %q", msg)
		}
	})

	for _, tc := range []struct {
		name  string
		cfg   func(*app.Config)
		prep  func(t *testing.T, b *bundle, u User)
		email string
	}{
		{name: "UserRequiresEmailCode", prep: func(t *testing.T, b *bundle, u User) {
			on := true
			if _, err := b.svc.UpdateUser(b.ctx, u.ID, UpdateUserParams{EmailCodeRequired: &on}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "ConfigRequiresEmailCode", cfg: func(c *app.Config) { c.Auth.RequireEmailCode = true }},
	} {
		t.Run("PasswordAloneIsRefusedWhen"+tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.cfg)
			u := b.createUser(t, "alice@example.com", false)
			if tc.prep != nil {
				tc.prep(t, b, u)
			}
			r := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": testPassword})
			r.expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
			e := r.errorBody(t)
			if len(e.Error.Details) != 1 || e.Error.Details[0].Field != "code" || e.Error.Details[0].Code != "OTP_REQUIRED" || e.Error.RequestID == "" {
				t.Fatalf("error = %+v", e)
			}
			b.mail.Empty(t)
		})
	}

	// One organization's policy does not change how its members sign in: the
	// organization admits only code-confirmed sessions instead (orgs module).
	t.Run("OrganizationRequiringEmailCodeDoesNotBlockPasswordLogin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.SMTP.Host = "" })
		u := b.createUser(t, "root@example.com", true)
		org := b.createOrg(t, true)
		b.addMember(t, org, u.ID, "viewer")
		pair := b.login(t, "root@example.com")
		p, err := b.svc.AuthenticateAccessToken(b.ctx, pair.AccessToken)
		if err != nil || p.EmailCodeVerified {
			t.Fatalf("password session = %+v, %v; want one not confirmed by a code", p, err)
		}
		b.mail.Empty(t)
	})

	t.Run("MembershipInOrganizationWithoutRequirementIsEnough", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		org := b.createOrg(t, false)
		if err := b.app.Deps.DB.Exec(`INSERT INTO memberships (organization_id, user_id, role) VALUES (?, ?, 'owner')`, org, u.ID).Error; err != nil {
			t.Fatal(err)
		}
		b.login(t, "alice@example.com")
	})
}

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestAPI_AccessToken(t *testing.T) {
	t.Parallel()

	t.Run("ExpiredIsRejected", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		b.clock.Advance(59 * time.Minute)
		b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusOK, "")
		b.clock.Advance(time.Minute + time.Second)
		b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("TamperedIsRejected", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		admin := b.createUser(t, "root@example.com", true)
		pair := b.login(t, "alice@example.com")
		parts := strings.Split(pair.AccessToken, ".")
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims map[string]any
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		claims["sub"] = admin.ID.String()
		forged, _ := json.Marshal(claims)
		swapped := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]

		noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(claims)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		otherKey, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString([]byte("another key, another key, another key!"))
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{
			"payload swapped":  swapped,
			"alg none":         noneTok,
			"other key":        otherKey,
			"signature broken": pair.AccessToken[:len(pair.AccessToken)-4] + "AAAA",
			"garbage":          "not-a-jwt",
		} {
			r := b.do(t, "GET", "/v1/users/me", nil, bearer(tok)...)
			if r.Status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", name, r.Status)
			}
		}
		b.do(t, "GET", "/v1/users/me", nil).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me", nil, "Authorization", "Basic YTpi").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})
}

func TestAPI_QueryToken(t *testing.T) {
	t.Parallel()

	t.Run("AcceptedOnEventsPathsOnly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		q := "?token=" + pair.AccessToken
		// Authenticated, then refused for not being a WebSocket / SSE client.
		b.do(t, "GET", "/v1/events"+q, nil).expect(t, http.StatusUpgradeRequired, "")
		b.do(t, "GET", "/v1/events/stream"+q, nil).expect(t, http.StatusNotAcceptable, "")
		b.do(t, "GET", "/v1/events", nil).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/events?token=not-a-jwt", nil).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me"+q, nil).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})
}

func TestAPI_Refresh(t *testing.T) {
	t.Parallel()

	refresh := func(t *testing.T, b *bundle, token string) response {
		t.Helper()
		return b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": token})
	}

	t.Run("RotatesTheRefreshToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		first := b.login(t, "alice@example.com")
		r := refresh(t, b, first.RefreshToken)
		r.expect(t, http.StatusOK, "")
		var second TokenPair
		r.decode(t, &second)
		if second.RefreshToken == first.RefreshToken || second.AccessToken == "" || second.ExpiresIn != 3600 || second.TokenType != "Bearer" {
			t.Fatalf("refresh response = %+v", second)
		}
		b.do(t, "GET", "/v1/users/me", nil, bearer(second.AccessToken)...).expect(t, http.StatusOK, "")
		refresh(t, b, first.RefreshToken).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("ReuseRevokesTheWholeSession", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		first := b.login(t, "alice@example.com")
		other := b.login(t, "alice@example.com")
		var second, third TokenPair
		r := refresh(t, b, first.RefreshToken)
		r.expect(t, http.StatusOK, "")
		r.decode(t, &second)
		r = refresh(t, b, second.RefreshToken)
		r.expect(t, http.StatusOK, "")
		r.decode(t, &third)

		// first is used: presenting it again is theft.
		refresh(t, b, first.RefreshToken).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		refresh(t, b, third.RefreshToken).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		for _, tok := range []string{first.AccessToken, second.AccessToken, third.AccessToken} {
			b.do(t, "GET", "/v1/users/me", nil, bearer(tok)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		// Another session of the same user is untouched.
		b.do(t, "GET", "/v1/users/me", nil, bearer(other.AccessToken)...).expect(t, http.StatusOK, "")
		refresh(t, b, other.RefreshToken).expect(t, http.StatusOK, "")
	})

	t.Run("RejectsUnknownAndEmptyTokens", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		refresh(t, b, "bm90IGEgcmVmcmVzaCB0b2tlbg").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		refresh(t, b, "").expect(t, http.StatusUnprocessableEntity, app.CodeValidation)
	})

	t.Run("ExpiredRefreshTokenIsRejected", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		b.clock.Advance(30*24*time.Hour + time.Second)
		refresh(t, b, pair.RefreshToken).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})
}

func TestAPI_Logout(t *testing.T) {
	t.Parallel()

	t.Run("EndsTheCallersSession", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		other := b.login(t, "alice@example.com")
		b.do(t, "POST", "/v1/auth/logout", nil, bearer(pair.AccessToken)...).expect(t, http.StatusNoContent, "")
		b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": pair.RefreshToken}).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me", nil, bearer(other.AccessToken)...).expect(t, http.StatusOK, "")
	})

	t.Run("EndsTheSessionOfTheGivenRefreshToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		b.createUser(t, "bob@example.com", false)
		pair := b.login(t, "alice@example.com")
		second := b.login(t, "alice@example.com")
		bobs := b.login(t, "bob@example.com")
		b.do(t, "POST", "/v1/auth/logout", map[string]string{"refresh_token": second.RefreshToken}, bearer(pair.AccessToken)...).
			expect(t, http.StatusNoContent, "")
		b.do(t, "GET", "/v1/users/me", nil, bearer(second.AccessToken)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)

		// Someone else's refresh token is left alone.
		third := b.login(t, "alice@example.com")
		b.do(t, "POST", "/v1/auth/logout", map[string]string{"refresh_token": bobs.RefreshToken}, bearer(third.AccessToken)...).
			expect(t, http.StatusNoContent, "")
		b.do(t, "GET", "/v1/users/me", nil, bearer(bobs.AccessToken)...).expect(t, http.StatusOK, "")
	})

	t.Run("RequiresAuthentication", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.do(t, "POST", "/v1/auth/logout", nil).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})
}

func TestAPI_EmailCode(t *testing.T) {
	t.Parallel()

	initLogin := func(t *testing.T, b *bundle, email, password string) response {
		t.Helper()
		return b.do(t, "POST", "/v1/auth/login/init", map[string]string{"email": email, "password": password})
	}
	verify := func(t *testing.T, b *bundle, email, code string) response {
		t.Helper()
		return b.do(t, "POST", "/v1/auth/login/verify", map[string]string{"email": email, "code": code})
	}
	// Generous throttling so that a code's own attempt limit is what is tested.
	lenient := func(c *app.Config) { c.Auth.LoginAttemptsPerAccount, c.Auth.LoginAttemptsPerIP = 100, 100 }

	t.Run("CodeWorksOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.RequireEmailCode = true })
		b.createUser(t, "alice@example.com", false)
		r := initLogin(t, b, "alice@example.com", testPassword)
		r.expect(t, http.StatusOK, "")
		var msg messageResponse
		r.decode(t, &msg)
		if msg.Message != "One-time code sent to a***e@example.com" {
			t.Fatalf("message = %q", msg.Message)
		}
		mail := b.mail.Next(t)
		if mail.From != "nxmesh@example.test" || len(mail.To) != 1 || mail.To[0] != "alice@example.com" {
			t.Fatalf("envelope from %q to %v", mail.From, mail.To)
		}
		code := mail.Code(t)
		r = verify(t, b, "alice@example.com", code)
		r.expect(t, http.StatusOK, "")
		var pair TokenPair
		r.decode(t, &pair)
		b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusOK, "")
		verify(t, b, "alice@example.com", code).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("CodeSessionsAreMarkedThroughRefresh", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		password := b.login(t, "alice@example.com")
		initLogin(t, b, "alice@example.com", testPassword).expect(t, http.StatusOK, "")
		r := verify(t, b, "alice@example.com", b.mail.Next(t).Code(t))
		r.expect(t, http.StatusOK, "")
		var pair TokenPair
		r.decode(t, &pair)
		r = b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": pair.RefreshToken})
		r.expect(t, http.StatusOK, "")
		var refreshed TokenPair
		r.decode(t, &refreshed)
		for _, tc := range []struct {
			name     string
			token    string
			verified bool
			amr      []string
		}{
			{"Password", password.AccessToken, false, []string{"pwd"}},
			{"Code", pair.AccessToken, true, []string{"pwd", "otp"}},
			{"RefreshedCode", refreshed.AccessToken, true, []string{"pwd", "otp"}},
		} {
			p, err := b.svc.AuthenticateAccessToken(b.ctx, tc.token)
			if err != nil || p.EmailCodeVerified != tc.verified {
				t.Errorf("%s: principal %+v, %v; want EmailCodeVerified %v", tc.name, p, err, tc.verified)
			}
			var claims accessClaims
			if _, _, err := jwt.NewParser().ParseUnverified(tc.token, &claims); err != nil || strings.Join(claims.AMR, ",") != strings.Join(tc.amr, ",") {
				t.Errorf("%s: amr %v (%v), want %v", tc.name, claims.AMR, err, tc.amr)
			}
		}
		// The admin's code step marks web sessions the same way.
		web, _, err := b.svc.CreateEmailCodeWebSession(b.ctx, u.ID, "192.0.2.1", "browser")
		if err != nil {
			t.Fatal(err)
		}
		if p, err := b.svc.AuthenticateWebSession(b.ctx, web); err != nil || !p.EmailCodeVerified {
			t.Fatalf("code web session = %+v, %v", p, err)
		}
	})

	t.Run("FiveWrongCodesKillTheCode", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lenient)
		b.createUser(t, "alice@example.com", false)
		initLogin(t, b, "alice@example.com", testPassword).expect(t, http.StatusOK, "")
		code := b.mail.Next(t).Code(t)
		wrong := "000000"
		if code == wrong {
			wrong = "111111"
		}
		for range 5 {
			verify(t, b, "alice@example.com", wrong).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		verify(t, b, "alice@example.com", code).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("ExpiredCodeIsRejected", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		initLogin(t, b, "alice@example.com", testPassword).expect(t, http.StatusOK, "")
		code := b.mail.Next(t).Code(t)
		b.clock.Advance(5*time.Minute + time.Second)
		verify(t, b, "alice@example.com", code).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("NewCodeReplacesTheOldOne", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		initLogin(t, b, "alice@example.com", testPassword).expect(t, http.StatusOK, "")
		old := b.mail.Next(t).Code(t)
		initLogin(t, b, "alice@example.com", testPassword).expect(t, http.StatusOK, "")
		current := b.mail.Next(t).Code(t)
		if old != current {
			verify(t, b, "alice@example.com", old).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		verify(t, b, "alice@example.com", current).expect(t, http.StatusOK, "")
	})

	t.Run("WrongPasswordSendsNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		initLogin(t, b, "alice@example.com", "not the password").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		initLogin(t, b, "nobody@example.com", testPassword).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		verify(t, b, "nobody@example.com", "123456").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.mail.Empty(t)
	})

	t.Run("CodeIsStoredOnlyAsMAC", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		initLogin(t, b, "alice@example.com", testPassword).expect(t, http.StatusOK, "")
		code := b.mail.Next(t).Code(t)
		var hashes [][]byte
		b.app.Deps.DB.Raw(`SELECT code_hash FROM login_codes WHERE user_id = ?`, u.ID).Scan(&hashes)
		if len(hashes) != 1 || strings.Contains(string(hashes[0]), code) || string(hashes[0]) == string(sha256Sum(code)) {
			t.Fatalf("stored code hashes = %x", hashes)
		}
	})

	t.Run("UnreachableMailServerIs503", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.SMTP.Port = 1 })
		u := b.createUser(t, "alice@example.com", false)
		r := initLogin(t, b, "alice@example.com", testPassword)
		r.expect(t, http.StatusServiceUnavailable, app.CodeServiceUnavailable)
		var n int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM login_codes WHERE user_id = ?`, u.ID).Scan(&n)
		if n != 0 {
			t.Fatalf("%d unsent codes left", n)
		}
	})
}

func TestAPI_LoginThrottle(t *testing.T) {
	t.Parallel()

	login := func(t *testing.T, b *bundle, email, password string) response {
		t.Helper()
		return b.do(t, "POST", "/v1/auth/login", map[string]string{"email": email, "password": password})
	}

	t.Run("PerAccount", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) {
			c.Auth.LoginAttemptsPerAccount, c.Auth.LoginAttemptsPerIP, c.Auth.LoginWindow = 3, 100, 15*time.Minute
		})
		b.createUser(t, "alice@example.com", false)
		for range 3 {
			login(t, b, "alice@example.com", "wrong password").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		r := login(t, b, "alice@example.com", testPassword)
		r.expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		if ra := r.Header.Get("Retry-After"); ra != "900" {
			t.Fatalf("Retry-After = %q, want 900", ra)
		}
		// The two-step login and other accounts share nothing with it but the IP.
		b.do(t, "POST", "/v1/auth/login/init", map[string]string{"email": "ALICE@example.com", "password": testPassword}).
			expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		b.do(t, "POST", "/v1/auth/login/verify", map[string]string{"email": "alice@example.com", "code": "123456"}).
			expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		if _, err := b.svc.VerifyPassword(b.ctx, "alice@example.com", testPassword, "192.0.2.1"); err == nil {
			t.Fatal("VerifyPassword (admin login page) was not throttled")
		}
		b.createUser(t, "bob@example.com", false)
		b.login(t, "bob@example.com")

		b.clock.Advance(15*time.Minute + time.Second)
		b.login(t, "alice@example.com")
	})

	t.Run("SuccessResetsTheAccountCount", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.LoginAttemptsPerAccount, c.Auth.LoginAttemptsPerIP = 3, 100 })
		b.createUser(t, "alice@example.com", false)
		for range 2 {
			login(t, b, "alice@example.com", "wrong password").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		b.clock.Advance(time.Second)
		b.login(t, "alice@example.com")
		b.clock.Advance(time.Second)
		for range 2 {
			login(t, b, "alice@example.com", "wrong password").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		b.login(t, "alice@example.com")
	})

	t.Run("PerIP", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) {
			c.Auth.LoginAttemptsPerAccount, c.Auth.LoginAttemptsPerIP, c.Auth.LoginWindow = 100, 3, 10*time.Minute
		})
		b.createUser(t, "alice@example.com", false)
		for i := range 3 {
			login(t, b, "guess"+string(rune('a'+i))+"@example.com", "whatever1").expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		r := login(t, b, "alice@example.com", testPassword)
		r.expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		if ra := r.Header.Get("Retry-After"); ra != "600" {
			t.Fatalf("Retry-After = %q, want 600", ra)
		}
		// Another address is not affected.
		if _, err := b.svc.VerifyPassword(b.ctx, "alice@example.com", testPassword, "192.0.2.7"); err != nil {
			t.Fatalf("login from another IP: %v", err)
		}
	})

	t.Run("ParallelGuessesForOneAccountStopAtTheLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil) // 5 per account, 20 per IP
		b.createUser(t, "alice@example.com", false)
		b.svc.hashWait = time.Minute // slow hashing (-race) must not turn into 503s
		hashes := newHashProbe(b.svc)
		close(hashes.release)
		rs := b.parallel(t, 30, func(i int) *http.Request {
			return jsonRequest(t, "/v1/auth/login", map[string]string{"email": "alice@example.com", "password": fmt.Sprintf("wrong guess %d", i)})
		})
		if n := hashes.started.Load(); n != 5 {
			t.Errorf("%d passwords hashed for 30 parallel guesses, want 5", n)
		}
		got := statuses(rs)
		if got[http.StatusUnauthorized] != 5 || got[http.StatusTooManyRequests] != 25 {
			t.Fatalf("30 parallel wrong passwords: %v, want 5 evaluated (401) and 25 refused (429)", got)
		}
		for _, r := range rs {
			if r.Status == http.StatusTooManyRequests {
				r.expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
				if ra := r.Header.Get("Retry-After"); ra != "900" {
					t.Fatalf("Retry-After = %q, want 900", ra)
				}
			}
		}
		login(t, b, "alice@example.com", testPassword).expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		var failures int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM login_attempts WHERE NOT success`).Scan(&failures)
		if failures != 5 {
			t.Fatalf("%d failures recorded, want 5 (refused attempts are not recorded)", failures)
		}
	})

	t.Run("ParallelGuessesFromOneIPStopAtTheLimit", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil) // 5 per account, 20 per IP
		b.createUser(t, "alice@example.com", false)
		b.svc.hashWait = time.Minute // slow hashing (-race) must not turn into 503s
		rs := b.parallel(t, 30, func(i int) *http.Request {
			return jsonRequest(t, "/v1/auth/login", map[string]string{"email": fmt.Sprintf("guess%d@example.com", i), "password": "wrong guess"})
		})
		got := statuses(rs)
		if got[http.StatusUnauthorized] != 20 || got[http.StatusTooManyRequests] != 10 {
			t.Fatalf("30 parallel guesses from one IP: %v, want 20 evaluated (401) and 10 refused (429)", got)
		}
		for _, r := range rs {
			if r.Status == http.StatusTooManyRequests && r.Header.Get("Retry-After") != "900" {
				t.Fatalf("Retry-After = %q, want 900", r.Header.Get("Retry-After"))
			}
		}
		login(t, b, "alice@example.com", testPassword).expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
	})

	t.Run("WrongCodesCountToo", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.LoginAttemptsPerAccount, c.Auth.LoginAttemptsPerIP = 2, 100 })
		b.createUser(t, "alice@example.com", false)
		b.do(t, "POST", "/v1/auth/login/init", map[string]string{"email": "alice@example.com", "password": testPassword}).expect(t, http.StatusOK, "")
		code := b.mail.Next(t).Code(t)
		wrong := "000000"
		if code == wrong {
			wrong = "111111"
		}
		for range 2 {
			b.do(t, "POST", "/v1/auth/login/verify", map[string]string{"email": "alice@example.com", "code": wrong}).
				expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
		b.do(t, "POST", "/v1/auth/login/verify", map[string]string{"email": "alice@example.com", "code": code}).
			expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
	})
}

func TestAPI_RateLimit(t *testing.T) {
	t.Parallel()

	t.Run("PerCredentialBudgetGives429WithRetryAfter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(c *app.Config) { c.Auth.RateLimitPerMinute = 5 })
		b.createUser(t, "alice@example.com", false)
		b.createUser(t, "bob@example.com", false)
		alice := b.login(t, "alice@example.com")
		bob := b.login(t, "bob@example.com")
		// The budget is a fixed window on the wall clock: if a window starts
		// during the loop the count restarts once, so allow a second round.
		var limited response
		for i := 0; i < 11; i++ {
			r := b.do(t, "GET", "/v1/users/me", nil, bearer(alice.AccessToken)...)
			if r.Status == http.StatusTooManyRequests {
				if i < 5 {
					t.Fatalf("limited after %d requests", i)
				}
				limited = r
				break
			}
			r.expect(t, http.StatusOK, "")
		}
		if limited.Status == 0 {
			t.Fatal("never limited")
		}
		limited.expect(t, http.StatusTooManyRequests, app.CodeRateLimited)
		if ra := limited.Header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Fatalf("Retry-After = %q", ra)
		}
		b.do(t, "GET", "/v1/users/me", nil, bearer(bob.AccessToken)...).expect(t, http.StatusOK, "")
	})
}
