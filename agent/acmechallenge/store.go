// Package acmechallenge keeps the agent's ACME HTTP-01 challenge files: one
// file per token in a directory the agent owns, which nginx serves under
// /.well-known/acme-challenge/ (render.Options.ACMEChallengeDir).
//
// The directory holds nothing else: Open empties it (tokens from before a
// restart have no known expiry), a file is named exactly after its token
// (1 to 128 of A-Z a-z 0-9 _ -, the base64url alphabet of RFC 8555 tokens)
// and contains exactly the key authorization, with mode 0644 so that
// nginx's unprivileged workers can read it. Every token expires by itself at
// the time the master gave (at most MaxLifetime away), whether or not the
// master asks for its removal.
package acmechallenge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Limits of what the store accepts.
const (
	MaxTokenLength   = 128
	MaxKeyAuthLength = 512
	// MaxLifetime caps how long a token stays served.
	MaxLifetime = 24 * time.Hour
	// DefaultLifetime applies when the master gave no expiry.
	DefaultLifetime = time.Hour
)

// ErrInvalid is wrapped by the errors of tokens and key authorizations the
// store refuses.
var ErrInvalid = errors.New("invalid ACME challenge")

// Store is the challenge directory. Its methods are safe for concurrent use.
type Store struct {
	dir string
	now func() time.Time

	mu      sync.Mutex
	expires map[string]time.Time
	// removed remembers removed tokens until then: a challenge and its
	// removal may be handled out of order, and ACME tokens are never
	// reused, so a Put after a Remove is stale.
	removed map[string]time.Time
	wake    chan struct{}
}

// Open creates dir (0755) if needed, removes every file in it, and returns
// the store. dir must be absolute.
func Open(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("acme challenge directory %q must be an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create acme challenge directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("acme challenge directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read acme challenge directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return nil, fmt.Errorf("clear acme challenge directory: %w", err)
		}
	}
	return &Store{dir: dir, now: time.Now, expires: map[string]time.Time{}, removed: map[string]time.Time{}, wake: make(chan struct{}, 1)}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// ValidToken reports whether token may name a challenge file.
func ValidToken(token string) bool {
	if token == "" || len(token) > MaxTokenLength {
		return false
	}
	for i := 0; i < len(token); i++ {
		if !tokenByte(token[i]) {
			return false
		}
	}
	return true
}

func tokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// validKeyAuth reports whether ka looks like a key authorization:
// "<token>.<base64url thumbprint>".
func validKeyAuth(token, ka string) bool {
	rest, ok := strings.CutPrefix(ka, token+".")
	if !ok || rest == "" || len(ka) > MaxKeyAuthLength {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if !tokenByte(rest[i]) {
			return false
		}
	}
	return true
}

// path returns the file of a valid token, checked to lie directly in the
// directory.
func (s *Store) path(token string) (string, error) {
	if !ValidToken(token) {
		return "", fmt.Errorf("%w: token %q: want 1 to %d of A-Z a-z 0-9 _ -", ErrInvalid, token, MaxTokenLength)
	}
	p := filepath.Join(s.dir, token)
	if filepath.Dir(p) != s.dir || filepath.Base(p) != token {
		return "", fmt.Errorf("%w: token %q does not name a file of the directory", ErrInvalid, token)
	}
	return p, nil
}

// Put writes the key authorization of token, served until expiresAt (zero:
// DefaultLifetime from now; never more than MaxLifetime away). The file
// appears whole or not at all (written beside, then renamed).
func (s *Store) Put(token, keyAuth string, expiresAt time.Time) error {
	p, err := s.path(token)
	if err != nil {
		return err
	}
	if !validKeyAuth(token, keyAuth) {
		return fmt.Errorf("%w: key authorization of token %q: want <token>.<thumbprint> (base64url), at most %d bytes", ErrInvalid, token, MaxKeyAuthLength)
	}
	now := s.now()
	switch {
	case expiresAt.IsZero():
		expiresAt = now.Add(DefaultLifetime)
	case expiresAt.After(now.Add(MaxLifetime)):
		expiresAt = now.Add(MaxLifetime)
	case !expiresAt.After(now):
		return fmt.Errorf("%w: token %q expired at %s", ErrInvalid, token, expiresAt.UTC().Format(time.RFC3339))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.removed[token]; ok {
		return fmt.Errorf("%w: token %q was removed already", ErrInvalid, token)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write challenge %s: %w", token, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(keyAuth); err != nil {
		tmp.Close()
		return fmt.Errorf("write challenge %s: %w", token, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write challenge %s: %w", token, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write challenge %s: %w", token, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("write challenge %s: %w", token, err)
	}
	s.expires[token] = expiresAt
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Get returns the key authorization stored for token.
func (s *Store) Get(token string) (string, bool) {
	p, err := s.path(token)
	if err != nil {
		return "", false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Remove stops serving token; removing an unknown token is not an error.
func (s *Store) Remove(token string) error {
	p, err := s.path(token)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed[token] = s.now().Add(DefaultLifetime)
	return s.removeLocked(token, p)
}

func (s *Store) removeLocked(token, p string) error {
	delete(s.expires, token)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove challenge %s: %w", token, err)
	}
	return nil
}

// Expire removes the tokens whose time has come and returns when the next
// one expires (zero when none is left).
func (s *Store) Expire() (time.Time, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	var errs []error
	for token, at := range s.removed {
		if !at.After(now) {
			delete(s.removed, token)
		}
	}
	for token, at := range s.expires {
		if at.After(now) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		if err := s.removeLocked(token, filepath.Join(s.dir, token)); err != nil {
			s.expires[token] = at
			errs = append(errs, err)
		}
	}
	return next, errors.Join(errs...)
}

// Run expires tokens on time until ctx ends; report, if set, gets the
// errors of removals (which are tried again at the next expiry).
func (s *Store) Run(ctx context.Context, report func(error)) {
	for {
		next, err := s.Expire()
		if err != nil && report != nil {
			report(err)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 10*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}
