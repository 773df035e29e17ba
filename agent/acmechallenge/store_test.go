package acmechallenge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidToken(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		token string
		ok    bool
	}{
		{"LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", true},
		{"a", true},
		{"a-b_C9", true},
		{strings.Repeat("a", MaxTokenLength), true},
		{"", false},
		{strings.Repeat("a", MaxTokenLength+1), false},
		{".", false},
		{"..", false},
		{"../etc", false},
		{"a/b", false},
		{"a.b", false},
		{`a\b`, false},
		{"a b", false},
		{"a\x00", false},
		{"é", false},
	} {
		if got := ValidToken(c.token); got != c.ok {
			t.Errorf("ValidToken(%q) = %v, want %v", c.token, got, c.ok)
		}
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "acme")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Left over from before a restart: removed by Open.
	if err := os.WriteFile(filepath.Join(dir, "stale"), []byte("stale.x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("directory mode: %v %v, want 0755", st.Mode(), err)
	}
	if _, ok := s.Get("stale"); ok {
		t.Error("Open kept a file from before")
	}
	now := time.Unix(1_800_000_000, 0)
	s.now = func() time.Time { return now }

	t.Run("PutWritesExactlyTheKeyAuthorization", func(t *testing.T) {
		if err := s.Put("tok-1", "tok-1.thumb_print", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "tok-1")
		b, err := os.ReadFile(p)
		if err != nil || string(b) != "tok-1.thumb_print" {
			t.Fatalf("file: %q %v", b, err)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
			t.Errorf("file mode %v, want 0644", st.Mode().Perm())
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("directory holds %d entries, want 1 (no temporary files left)", len(entries))
		}
	})

	t.Run("Refused", func(t *testing.T) {
		for _, c := range []struct{ token, ka string }{
			{"../x", "../x.t"},
			{"a/b", "a/b.t"},
			{"", ".t"},
			{"ok", "other.t"},
			{"ok", "ok."},
			{"ok", "ok.t\n"},
			{"ok", "ok.t/../x"},
			{"ok", "ok." + strings.Repeat("t", MaxKeyAuthLength)},
		} {
			if err := s.Put(c.token, c.ka, now.Add(time.Minute)); !errors.Is(err, ErrInvalid) {
				t.Errorf("Put(%q, %q) = %v, want ErrInvalid", c.token, c.ka, err)
			}
		}
		if err := s.Put("ok", "ok.t", now.Add(-time.Second)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put with a past expiry = %v, want ErrInvalid", err)
		}
		if err := s.Remove("../tok-1"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Remove(../tok-1) = %v, want ErrInvalid", err)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x")); err == nil {
			t.Error("a file was written outside the directory")
		}
	})

	t.Run("RemoveIsIdempotent", func(t *testing.T) {
		if err := s.Put("tok-2", "tok-2.t", time.Time{}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := s.Remove("tok-2"); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := s.Get("tok-2"); ok {
			t.Error("tok-2 still served")
		}
		// A challenge handled after its removal is stale.
		if err := s.Put("tok-2", "tok-2.t", time.Time{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put after Remove = %v, want ErrInvalid", err)
		}
		if err := s.Remove("tok-never"); err != nil {
			t.Errorf("Remove of an unknown token = %v", err)
		}
		if err := s.Put("tok-never", "tok-never.t", time.Time{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put after the removal arrived first = %v, want ErrInvalid", err)
		}
	})

	t.Run("ExpiresByItself", func(t *testing.T) {
		if err := s.Put("tok-3", "tok-3.t", now.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		// Capped at MaxLifetime.
		if err := s.Put("tok-4", "tok-4.t", now.Add(100*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		next, err := s.Expire()
		if err != nil || !next.Equal(now.Add(time.Minute)) {
			t.Fatalf("Expire = %v %v, want next at tok-1's expiry", next, err)
		}
		now = now.Add(90 * time.Second)
		if next, err = s.Expire(); err != nil || !next.Equal(now.Add(30*time.Second)) {
			t.Fatalf("Expire = %v %v", next, err)
		}
		if _, ok := s.Get("tok-1"); ok {
			t.Error("tok-1 served after its expiry")
		}
		if _, ok := s.Get("tok-3"); !ok {
			t.Error("tok-3 removed before its expiry")
		}
		now = now.Add(MaxLifetime)
		if next, err = s.Expire(); err != nil || !next.IsZero() {
			t.Fatalf("Expire = %v %v, want nothing left", next, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("directory not empty after every expiry: %v", entries)
		}
	})
}

func TestStoreRunExpires(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.Run(ctx, func(err error) { t.Error(err) }); close(done) }()
	defer func() { cancel(); <-done }()
	if err := s.Put("tok", "tok.t", time.Now().Add(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := s.Get("tok"); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("token not expired by Run")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOpenRefusesRelativeDir(t *testing.T) {
	t.Parallel()
	if _, err := Open("acme"); err == nil {
		t.Error("Open(relative) succeeded")
	}
}
