package auth

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

func TestAPI_Users(t *testing.T) {
	t.Parallel()

	t.Run("MeReturnsTheCaller", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		pair := b.login(t, "alice@example.com")
		var me User
		r := b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...)
		r.expect(t, http.StatusOK, "")
		r.decode(t, &me)
		if me.ID != u.ID || me.IsSuperadmin || me.Disabled {
			t.Fatalf("me = %+v", me)
		}
	})

	t.Run("UserManagementIsForSuperadminsOnly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		tok := b.login(t, "alice@example.com").AccessToken
		for _, rq := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/users", nil},
			{"POST", "/v1/users", map[string]any{"email": "x@example.com", "password": testPassword}},
			{"GET", "/v1/users/" + u.ID.String(), nil},
			{"PATCH", "/v1/users/" + u.ID.String(), map[string]any{"is_superadmin": true}},
		} {
			r := b.do(t, rq.method, rq.path, rq.body, bearer(tok)...)
			if r.Status != http.StatusForbidden {
				t.Errorf("%s %s: status %d, want 403", rq.method, rq.path, r.Status)
			}
			b.do(t, rq.method, rq.path, rq.body).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
	})

	t.Run("SuperadminCreatesListsAndUpdatesUsers", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		tok := b.login(t, "root@example.com").AccessToken
		b.clock.Advance(time.Second) // list order is by creation time

		r := b.do(t, "POST", "/v1/users", map[string]any{"email": " Carol@Example.com ", "password": testPassword, "name": "Carol"}, bearer(tok)...)
		r.expect(t, http.StatusCreated, "")
		var carol User
		r.decode(t, &carol)
		if carol.Email != "carol@example.com" || carol.Name != "Carol" || carol.IsSuperadmin {
			t.Fatalf("created = %+v", carol)
		}
		b.login(t, "carol@example.com")

		b.do(t, "POST", "/v1/users", map[string]any{"email": "CAROL@example.com", "password": testPassword}, bearer(tok)...).
			expect(t, http.StatusConflict, app.CodeConflict)
		r = b.do(t, "POST", "/v1/users", map[string]any{"email": "not-an-email", "password": "short"}, bearer(tok)...)
		r.expect(t, http.StatusUnprocessableEntity, app.CodeValidation)
		fields := map[string]bool{}
		for _, d := range r.errorBody(t).Error.Details {
			fields[d.Field] = true
		}
		if !fields["email"] || !fields["password"] {
			t.Fatalf("details = %s", r.Body)
		}

		var list app.List[User]
		r = b.do(t, "GET", "/v1/users?per_page=1&page=2", nil, bearer(tok)...)
		r.expect(t, http.StatusOK, "")
		r.decode(t, &list)
		if list.Meta.Total != 2 || list.Meta.Page != 2 || list.Meta.PerPage != 1 || len(list.Data) != 1 || list.Data[0].ID != carol.ID {
			t.Fatalf("list = %+v", list)
		}

		r = b.do(t, "PATCH", "/v1/users/"+carol.ID.String(), map[string]any{"name": "Carol C", "email_code_required": true, "is_superadmin": true}, bearer(tok)...)
		r.expect(t, http.StatusOK, "")
		var updated User
		r.decode(t, &updated)
		if updated.Name != "Carol C" || !updated.EmailCodeRequired || !updated.IsSuperadmin || updated.Disabled {
			t.Fatalf("updated = %+v", updated)
		}

		var actions []string
		b.app.Deps.DB.Raw(`SELECT action FROM audit_log WHERE object_id = ? AND actor_user_id = ? ORDER BY created_at`, carol.ID.String(), root.ID).Scan(&actions)
		if len(actions) != 2 || actions[0] != "user.create" || actions[1] != "user.update" {
			t.Fatalf("audit actions = %v", actions)
		}
	})

	t.Run("UnknownOrMalformedIDIs404", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "root@example.com", true)
		tok := b.login(t, "root@example.com").AccessToken
		b.do(t, "GET", "/v1/users/"+uuid.NewString(), nil, bearer(tok)...).expect(t, http.StatusNotFound, app.CodeNotFound)
		b.do(t, "PATCH", "/v1/users/nope", map[string]any{"name": "x"}, bearer(tok)...).expect(t, http.StatusNotFound, app.CodeNotFound)
	})

	t.Run("SuperadminCannotDisableThemselves", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		tok := b.login(t, "root@example.com").AccessToken
		r := b.do(t, "PATCH", "/v1/users/"+root.ID.String(), map[string]any{"disabled": true}, bearer(tok)...)
		r.expect(t, http.StatusUnprocessableEntity, app.CodeValidation)
		if d := r.errorBody(t).Error.Details; len(d) != 1 || d[0].Field != "disabled" {
			t.Fatalf("details = %+v", d)
		}
		b.do(t, "GET", "/v1/users/me", nil, bearer(tok)...).expect(t, http.StatusOK, "")
	})
}

func TestAPI_LastSuperadmin(t *testing.T) {
	t.Parallel()

	activeSuperadmins := func(t *testing.T, b *bundle) int64 {
		t.Helper()
		var n int64
		if err := b.app.Deps.DB.Raw(`SELECT count(*) FROM users WHERE is_superadmin AND disabled_at IS NULL`).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("CannotRemoveTheirOwnFlag", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		tok := b.login(t, "root@example.com").AccessToken
		r := b.do(t, "PATCH", "/v1/users/"+root.ID.String(), map[string]any{"is_superadmin": false, "name": "Renamed"}, bearer(tok)...)
		r.expect(t, http.StatusConflict, app.CodeConflict)
		if msg := r.errorBody(t).Error.Message; !strings.Contains(msg, "last active superadmin") {
			t.Fatalf("message = %q", msg)
		}
		u, err := b.svc.GetUser(b.ctx, root.ID)
		if err != nil || !u.IsSuperadmin || u.Name != "Test" {
			t.Fatalf("after a refused update: %+v, %v", u, err)
		}

		// With a second superadmin the flag can go.
		b.do(t, "POST", "/v1/users", map[string]any{"email": "ops@example.com", "password": testPassword, "is_superadmin": true}, bearer(tok)...).
			expect(t, http.StatusCreated, "")
		b.do(t, "PATCH", "/v1/users/"+root.ID.String(), map[string]any{"is_superadmin": false}, bearer(tok)...).expect(t, http.StatusOK, "")
		if n := activeSuperadmins(t, b); n != 1 {
			t.Fatalf("%d active superadmins", n)
		}
	})

	t.Run("DisabledSuperadminsDoNotCount", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		old := b.createUser(t, "old@example.com", true)
		if err := b.svc.SetUserDisabled(b.ctx, old.ID, true); err != nil {
			t.Fatal(err)
		}
		tok := b.login(t, "root@example.com").AccessToken
		b.do(t, "PATCH", "/v1/users/"+root.ID.String(), map[string]any{"is_superadmin": false}, bearer(tok)...).
			expect(t, http.StatusConflict, app.CodeConflict)
		if n := activeSuperadmins(t, b); n != 1 {
			t.Fatalf("%d active superadmins", n)
		}
	})

	t.Run("CannotBeDisabled", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		b.createUser(t, "alice@example.com", false)
		// Without a caller (as from the command line) nothing else stops it.
		err := b.svc.SetUserDisabled(b.ctx, root.ID, true)
		if !errors.Is(err, ErrLastSuperadmin) || !errors.Is(err, app.ErrConflict) {
			t.Fatalf("disable the last superadmin: %v", err)
		}
		if n := activeSuperadmins(t, b); n != 1 {
			t.Fatalf("%d active superadmins", n)
		}
		b.login(t, "root@example.com")
	})

	t.Run("ConcurrentDemotionsKeepOne", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		a := b.createUser(t, "a@example.com", true)
		c := b.createUser(t, "c@example.com", true)
		ta, tc := b.login(t, "a@example.com").AccessToken, b.login(t, "c@example.com").AccessToken
		rs := b.parallel(t, 2, func(i int) *http.Request {
			id, tok := a.ID, ta
			if i == 1 {
				id, tok = c.ID, tc
			}
			req := jsonRequest(t, "/v1/users/"+id.String(), map[string]any{"is_superadmin": false}, bearer(tok)...)
			req.Method = "PATCH"
			return req
		})
		if got := statuses(rs); got[http.StatusOK] != 1 || got[http.StatusConflict] != 1 {
			t.Fatalf("two superadmins removing their own flags at once: %v, want one 200 and one 409", got)
		}
		if n := activeSuperadmins(t, b); n != 1 {
			t.Fatalf("%d active superadmins", n)
		}
	})

	t.Run("ConcurrentCrossDisablesKeepOne", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		a := b.createUser(t, "a@example.com", true)
		c := b.createUser(t, "c@example.com", true)
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, id := range []uuid.UUID{a.ID, c.ID} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = b.svc.SetUserDisabled(b.ctx, id, true)
			}()
		}
		close(start)
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("disabling both superadmins at once: %v, %v; want exactly one refused", errs[0], errs[1])
		}
		if n := activeSuperadmins(t, b); n != 1 {
			t.Fatalf("%d active superadmins", n)
		}
	})
}

func TestAPI_DisableUser(t *testing.T) {
	t.Parallel()

	t.Run("RevokesTokensSessionsAndKeysAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "root@example.com", true)
		alice := b.createUser(t, "alice@example.com", false)
		rootTok := b.login(t, "root@example.com").AccessToken
		pair := b.login(t, "alice@example.com")
		org := b.createOrg(t, false)
		b.addMember(t, org, alice.ID, "admin")
		_, secret, err := b.svc.CreateAPIKey(b.ctx, CreateAPIKeyParams{OrgID: org, Name: "ci", Role: "viewer", CreatedBy: alice.ID})
		if err != nil {
			t.Fatal(err)
		}
		web, _, err := b.svc.CreateWebSession(b.ctx, alice.ID, "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")

		r := b.do(t, "PATCH", "/v1/users/"+alice.ID.String(), map[string]any{"disabled": true}, bearer(rootTok)...)
		r.expect(t, http.StatusOK, "")
		var u User
		r.decode(t, &u)
		if !u.Disabled || u.DisabledAt == nil {
			t.Fatalf("user = %+v", u)
		}

		b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": pair.RefreshToken}).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		if r := b.do(t, "GET", "/probe/ui", nil, "Cookie", SessionCookie+"="+web); r.Status != http.StatusSeeOther {
			t.Fatalf("admin page with the disabled user's session: %d", r.Status)
		}

		// Re-enabling allows new logins but brings nothing back.
		if err := b.svc.SetUserDisabled(b.ctx, alice.ID, false); err != nil {
			t.Fatal(err)
		}
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.login(t, "alice@example.com")

		var actions []string
		b.app.Deps.DB.Raw(`SELECT action FROM audit_log ORDER BY created_at, action`).Scan(&actions)
		want := map[string]bool{"user.disable": false, "user.enable": false, "apikey.revoke": false}
		for _, a := range actions {
			if _, ok := want[a]; ok {
				want[a] = true
			}
		}
		for a, seen := range want {
			if !seen {
				t.Errorf("no %s audit entry in %v", a, actions)
			}
		}
	})
}

func TestService_EnsureFirstAdmin(t *testing.T) {
	t.Parallel()

	t.Run("CreatesOnceWithGeneratedPassword", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		created, pw, err := b.svc.EnsureFirstAdmin(b.ctx, "", "")
		if err != nil || !created || len(pw) != 20 {
			t.Fatalf("EnsureFirstAdmin = %v, %q, %v", created, pw, err)
		}
		u, err := b.svc.VerifyPassword(b.ctx, "admin@localhost", pw, "192.0.2.1")
		if err != nil || !u.IsSuperadmin {
			t.Fatalf("generated credentials: %+v, %v", u, err)
		}
		var hash string
		b.app.Deps.DB.Raw(`SELECT password_hash FROM users`).Scan(&hash)
		if hash == pw || len(hash) < 60 {
			t.Fatalf("stored password = %q", hash)
		}
		created, pw, err = b.svc.EnsureFirstAdmin(b.ctx, "", "")
		if err != nil || created || pw != "" {
			t.Fatalf("second EnsureFirstAdmin = %v, %q, %v", created, pw, err)
		}
	})

	t.Run("UsesGivenCredentials", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		created, pw, err := b.svc.EnsureFirstAdmin(b.ctx, "Ops@Example.com", testPassword)
		if err != nil || !created || pw != "" {
			t.Fatalf("EnsureFirstAdmin = %v, %q, %v", created, pw, err)
		}
		b.login(t, "ops@example.com")
		if _, _, err := b.svc.EnsureFirstAdmin(b.ctx, "x@example.com", "short"); err != nil {
			t.Fatalf("with users present the arguments are ignored: %v", err)
		}
	})

	t.Run("DoesNothingWhenUsersExist", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		created, _, err := b.svc.EnsureFirstAdmin(b.ctx, "", "")
		if err != nil || created {
			t.Fatalf("EnsureFirstAdmin = %v, %v", created, err)
		}
	})

	t.Run("ConcurrentCallsCreateOneAdmin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		const n = 6
		var wg sync.WaitGroup
		results := make([]bool, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], _, errs[i] = b.svc.EnsureFirstAdmin(b.ctx, "", "")
			}()
		}
		close(start)
		wg.Wait()
		createdCount := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("call %d: %v", i, errs[i])
			}
			if results[i] {
				createdCount++
			}
		}
		var users int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM users`).Scan(&users)
		if createdCount != 1 || users != 1 {
			t.Fatalf("created %d times, %d users", createdCount, users)
		}
	})
}

func TestService_CreateUser(t *testing.T) {
	t.Parallel()

	t.Run("RejectsDuplicateEmailIgnoringCase", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "alice@example.com", false)
		_, err := b.svc.CreateUser(b.ctx, CreateUserParams{Email: "ALICE@example.com", Password: testPassword})
		if !errors.Is(err, ErrEmailTaken) || !errors.Is(err, app.ErrConflict) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("ValidatesInput", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		for _, p := range []CreateUserParams{
			{Email: "", Password: testPassword},
			{Email: "a@", Password: testPassword},
			{Email: "Alice <a@example.com>", Password: testPassword},
			{Email: "a@example.com", Password: "1234567"},
		} {
			var ve *app.ValidationError
			if _, err := b.svc.CreateUser(b.ctx, p); !errors.As(err, &ve) {
				t.Errorf("CreateUser(%+v) = %v, want a validation error", p, err)
			}
		}
	})
}
