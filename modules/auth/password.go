package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
)

// argonParams are the argon2id cost parameters of new password hashes. Stored
// hashes carry their own parameters (PHC string format), so raising these
// later only affects passwords set afterwards.
type argonParams struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	SaltLen int
	KeyLen  uint32
}

// owaspArgon2id is OWASP's recommended minimum for argon2id: 19 MiB, two
// iterations, one lane.
var owaspArgon2id = argonParams{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// hashPassword returns password's argon2id hash in PHC string format:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> (unpadded standard base64).
func hashPassword(password string, p argonParams) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errMalformedHash = errors.New("malformed argon2id hash")

// Password hashing is bounded: every argon2id computation (a login's check, a
// new password's hash) takes one of auth.password_hash_concurrency slots
// (default twice GOMAXPROCS), so a burst of logins costs at most that many
// times 19 MiB instead of 19 MiB per request. A caller waits for a slot with
// its request context, at most hashSlotWait; after that it gets
// ErrPasswordHashingBusy (503 with Retry-After) rather than queueing without
// bound. Logins are counted by the throttle before they wait, so a refused
// login never takes a slot.
const hashSlotWait = 5 * time.Second

// hashEvent is what hashHook observes of one password hash.
type hashEvent int

const (
	hashWaiting hashEvent = iota // asks for a slot
	hashStarted                  // holds a slot and starts hashing
	hashDone                     // finished hashing; the slot is released right after
)

// hashSlotsFor is the number of concurrent password hashes for configured n.
func hashSlotsFor(n int) int {
	if n > 0 {
		return n
	}
	return 2 * runtime.GOMAXPROCS(0)
}

// withHashSlot runs fn, which hashes a password, holding one hashing slot.
func (s *Service) withHashSlot(ctx context.Context, fn func()) error {
	if s.hashHook != nil {
		s.hashHook(hashWaiting)
	}
	timer := time.NewTimer(s.hashWait)
	defer timer.Stop()
	select {
	case s.hashSlots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for a password hashing slot: %w", ctx.Err())
	case <-timer.C:
		s.logger.WarnContext(ctx, "password hashing is saturated; refusing with 503",
			"slots", cap(s.hashSlots), "waited", s.hashWait)
		return ErrPasswordHashingBusy
	}
	defer func() { <-s.hashSlots }()
	if s.hashHook != nil {
		s.hashHook(hashStarted)
		defer s.hashHook(hashDone)
	}
	fn()
	return nil
}

// newPasswordHash hashes password with the service's parameters in a hashing slot.
func (s *Service) newPasswordHash(ctx context.Context, password string) (string, error) {
	var (
		hash string
		err  error
	)
	if serr := s.withHashSlot(ctx, func() { hash, err = hashPassword(password, s.argon) }); serr != nil {
		return "", serr
	}
	return hash, err
}

// checkPassword reports whether password matches the PHC-encoded argon2id
// hash, comparing in constant time.
func checkPassword(encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errMalformedHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errMalformedHash
	}
	var p argonParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil ||
		p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		return false, errMalformedHash
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, errMalformedHash
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errMalformedHash
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
