package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
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

func TestAPI_PasswordHashing(t *testing.T) {
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

func TestService_PasswordPolicy(t *testing.T) {
	t.Parallel()

	const email = "alice.smith@example.com"
	for _, tc := range []struct {
		name, password, want string // want: part of the message, "" when accepted
	}{
		{"RefusesTheMostCommonPassword", "12345678", "most commonly used"},
		{"RefusesDigitSequence", "23456789", "sequences"},
		{"RefusesCommonPassword", "password", "most commonly used"},
		{"RefusesCommonPasswordInCapitals", "PASSWORD", "most commonly used"},
		{"RefusesCommonPasswordWithDigitsAndPunctuation", "Monkey2024!", "most commonly used"},
		{"RefusesCommonPasswordWithDigitsForLetters", "P@ssw0rd1", "most commonly used"},
		{"RefusesTheServiceName", "nxmesh2025", "most commonly used"},
		{"RefusesTheEmail", "Alice.Smith@example.com", "e-mail"},
		{"RefusesTheLocalPart", "alice.smith", "e-mail"},
		{"RefusesTheLocalPartWithDigits", "alicesmith99", "e-mail"},
		{"RefusesOneRepeatedCharacter", "aaaaaaaaaaaa", "repeated"},
		{"RefusesARepeatedShortUnit", "wordword", "repeated"},
		{"RefusesARepeatedCommonPassword", "sunshinesunshine", "repeated"},
		{"RefusesTwoAlternatingCharacters", "abababab", "repeated"},
		{"RefusesLetterSequence", "bcdefghi", "sequences"},
		{"RefusesDescendingSequence", "87654321", "sequences"},
		{"RefusesKeyboardRow", "qwertyuiop", "most commonly used"},
		{"RefusesKeyboardWalk", "mnbvcxz;lkj", "keyboard rows"},
		{"RefusesKeyboardColumns", "1qaz2wsx3edc", "keyboard rows"},
		{"RefusesTwoSequences", "1234abcd", "sequences"},
		{"RefusesSevenCharacters", "Zq9#xP2", "at least 8"},
		{"RefusesNUL", "long enough\x00really", "NUL"},
		{"RefusesInvalidUTF8", "long enough \xff\xfe", "UTF-8"},
		{"RefusesMoreThan256Characters", strings.Repeat("correct horse ", 19), "at most 256"},

		{"AcceptsAPassphrase", "correct horse battery", ""},
		{"AcceptsALongPassphrase", strings.Repeat("Tr0ub4dor&3 ", 5) + "plus four", ""},
		{"Accepts256Characters", strings.Repeat("jx7Kq2", 42) + "Lm9w", ""},
		{"AcceptsNonASCII", "Grüße aus Köln, 2024", ""},
		{"AcceptsAWordInsideAPhrase", "password-viewer", ""},
		{"AcceptsACommonWordWithMoreAfterIt", "bench-password-1", ""},
		{"AcceptsEightRandomCharacters", "k3#Wq9!z", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, msg, weak := passwordWeakness(tc.password, email)
			switch {
			case tc.want == "" && weak:
				t.Fatalf("%q refused: %s", tc.password, msg)
			case tc.want != "" && !weak:
				t.Fatalf("%q accepted, want refused (%s)", tc.password, tc.want)
			case tc.want != "" && !strings.Contains(msg, tc.want):
				t.Fatalf("%q refused with %q, want a message about %q", tc.password, msg, tc.want)
			}
		})
	}

	t.Run("AcceptsGeneratedPasswords", func(t *testing.T) {
		t.Parallel()
		for range 500 {
			pw, err := randomBase62(generatedPasswordLen)
			if err != nil {
				t.Fatal(err)
			}
			if _, msg, weak := passwordWeakness(pw, "admin@localhost"); weak {
				t.Fatalf("generated %q refused: %s", pw, msg)
			}
		}
	})

	t.Run("ListIsLoaded", func(t *testing.T) {
		t.Parallel()
		if n := len(commonPasswords()); n < 500 {
			t.Fatalf("%d common passwords", n)
		}
		if _, ok := commonPasswords()["# passwords refused by the password policy (password.go) because they are among"]; ok {
			t.Fatal("comment lines are read as passwords")
		}
	})
}

func TestAPI_PasswordPolicyIsApplied(t *testing.T) {
	t.Parallel()

	t.Run("CreateUserAPIAnswers422NamingPassword", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		b.createUser(t, "root@example.com", true)
		tok := b.login(t, "root@example.com").AccessToken
		for _, pw := range []string{"12345678", "password", "carol.jones@example.com", "bad\u0000password!"} {
			r := b.do(t, "POST", "/v1/users", map[string]any{"email": "carol.jones@example.com", "password": pw}, bearer(tok)...)
			r.expect(t, http.StatusUnprocessableEntity, app.CodeValidation)
			d := r.errorBody(t).Error.Details
			if len(d) != 1 || d[0].Field != "password" || d[0].Message == "" {
				t.Fatalf("password %q: details %+v", pw, d)
			}
		}
		if _, err := b.svc.UserByEmail(b.ctx, "carol.jones@example.com"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("a refused user was created: %v", err)
		}
		b.do(t, "POST", "/v1/users", map[string]any{"email": "carol.jones@example.com", "password": "a perfectly fine passphrase"}, bearer(tok)...).
			expect(t, http.StatusCreated, "")
	})

	t.Run("FirstAdminWithWeakConfiguredPasswordFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		created, _, err := b.svc.EnsureFirstAdmin(b.ctx, "ops@example.com", "password123")
		if created || !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), "NXMESH_ADMIN_PASSWORD") ||
			!strings.Contains(err.Error(), "most commonly used") {
			t.Fatalf("EnsureFirstAdmin with a weak password = %v, %v", created, err)
		}
		var users int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM users`).Scan(&users)
		if users != 0 {
			t.Fatalf("%d users created", users)
		}
	})

	t.Run("SetPasswordRefusesWeakOnes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		u := b.createUser(t, "alice@example.com", false)
		var ve *app.ValidationError
		if err := b.svc.SetPassword(b.ctx, u.ID, "iloveyou"); !errors.As(err, &ve) || ve.Fields[0].Field != "password" {
			t.Fatalf("SetPassword(iloveyou) = %v", err)
		}
		b.login(t, "alice@example.com")
		if err := b.svc.SetPassword(b.ctx, u.ID, "another fine passphrase"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.svc.VerifyPassword(b.ctx, "alice@example.com", "another fine passphrase", "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
	})
}
